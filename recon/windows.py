"""Windowed reconstruction of ordered sequences: when the whole-sequence SfM model leaves too many frames
unvalidated, reconstruct overlapping windows of consecutive frames independently and keep them as local
sub-clouds of one Scene (docs/FORMATS.md, "Scene": `Frame.window`, `cloud.npz` `window`).

On hard drives the whole-sequence model often has long stretches that are right locally and wrong globally
(two segments of one street 40 m apart), while training only needs the geometry around one view. Each window
gets its own SfM run (own database), the same pose validation, dense stereo and metric scale, in its own
coordinates. Windows then vouch for each other (`corroborate`): on synthetic drives a third of the windows
were bent inside while every one of their frames passed validation, so a frame is kept only where a second
reconstruction confirms it. Every frame kept belongs to one window: among those where it passed, the one whose
middle it lies nearest (farthest from the window's loose ends). A frame's links point into its own window's points
only, and a window keeps the points that its own frames link.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from recon.errors import InputError
from recon.fusion import densify
from recon.scale import camera_centres, metric_scale
from recon.scene import UNLABELED, Cloud, Frame, Links, Scene
from recon.sfm import SfmOptions, run_sfm
from recon.sources import ReconOptions, Sequence, Stages
from recon.validate import PoseChecks, without_frames

WINDOW_MODES = ("auto", "always", "off")
# auto: windows once fewer than this share of the frames pass whole-sequence validation. The synthetic street
# and room sequences pass 100 %, and a real drive that loses a tenth of its frames has a broken stretch
MIN_PASSED_SHARE = 0.9
MIN_WINDOW_FRAMES = 3  # validated frames a window needs to give local geometry (pose validation needs 3)
CONFIDENCE_ORDER = ("none", "low", "high", "given")  # worst first
# two windows agree on a shared frame when, after one similarity between them fitted to all their shared frames,
# its centre lies within this share of their shared path and its orientation within AGREE_DEGREES. Correct
# window pairs of the synthetic drives agreed within 0.2-1.5 % and 2.6 deg, bent ones differed by 7-23 %
# or 7-50 deg
AGREE_SHARE = 0.05
AGREE_DEGREES = 5.0
# ... and confirm each other only when they agree on this share of their shared frames: a pair that disagrees on
# half of them is wrong somewhere, and the frames it happens to agree on say little
MIN_AGREE_SHARE = 2 / 3
WHOLE = -1  # WindowPart.index of the whole-sequence model when it takes part in corroboration
MIN_STEP_SHARE = 0.25  # floor of the shared path per step, as a share of the window's median step (stops)


@dataclass
class WindowPart:
    """One window's reconstruction: its validated frames in its own metric coordinates."""

    index: int
    frames: list[int]  # sequence positions of the window's frames
    registered: int = 0
    scene: Scene | None = None  # None: too few frames passed
    positions: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # sequence position per frame
    rejected: dict[int, tuple[Frame, list[str]]] = field(default_factory=dict)  # position -> scaled frame, reasons
    confirmed: set[int] = field(default_factory=set)  # validated positions another reconstruction confirms
    distrusted: set[int] = field(default_factory=set)  # validated positions that no second window confirms
    info: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return "the whole-sequence model" if self.index == WHOLE else f"window {self.index}"

    @property
    def middle(self) -> float:
        return 0.5 * (self.frames[0] + self.frames[-1])

    def poses(self, positions: np.ndarray) -> np.ndarray:
        """(F, 4, 4) cam_from_world of validated frames, by sequence position."""
        index = {int(p): k for k, p in enumerate(self.positions)}
        return np.stack([self.scene.frames[index[int(p)]].cam_from_world for p in positions])

    @property
    def trusted(self) -> np.ndarray:
        """Validated positions that corroboration kept."""
        return self.positions[~np.isin(self.positions, list(self.distrusted))]

    def distrust(self, positions, reason: str) -> None:
        """Validated frames out: kept with their pose and the reason among the rejected ones, owned by no window."""
        index = {int(p): k for k, p in enumerate(self.positions)}
        for p in positions:
            self.rejected[int(p)] = (self.scene.frames[index[int(p)]], [reason])
            self.distrusted.add(int(p))


def check_options(options: ReconOptions) -> None:
    if options.windows not in WINDOW_MODES:
        raise InputError(f"windows={options.windows!r}: choose one of {', '.join(WINDOW_MODES)}")
    if options.window_frames < MIN_WINDOW_FRAMES + 1:
        raise InputError(f"window_frames={options.window_frames}: must be >= {MIN_WINDOW_FRAMES + 1} (20-30 suits "
                         "drives)")


def eligible(options: ReconOptions, total: int) -> bool:
    """Whether windows could replace the whole-sequence model (auto: only when it would give >= 2 windows)."""
    return options.windows == "always" or (options.windows == "auto" and total > options.window_frames)


def wanted(options: ReconOptions, passed: int, total: int) -> bool:
    return eligible(options, total) and (options.windows == "always" or passed < MIN_PASSED_SHARE * total)


def window_plan(total: int, size: int) -> list[list[int]]:
    """Windows of `size` consecutive positions with half overlap; the last one ends at the last frame."""
    if total <= size:
        return [list(range(total))]
    starts = list(range(0, total - size + 1, max(1, size // 2)))
    if starts[-1] + size < total:
        starts.append(total - size)
    return [list(range(s, s + size)) for s in starts]


def verifies(options: ReconOptions, total: int) -> bool:
    """Whether windows check a whole-sequence model that passed validation (auto, more frames than a window)."""
    return options.windows == "auto" and total > options.window_frames


def build_windows(seq: Sequence, work: Path, sfm_options: SfmOptions, options: ReconOptions, stages: Stages,
                  masks: dict | None, whole: dict | None, voter: WindowPart | None = None,
                  parts: list[WindowPart] | None = None) -> tuple[Scene, dict]:
    """The windowed Scene and its report fields. `whole`: what the whole-sequence model gave (None: not run);
    `voter`: that model's validated frames (whole_voter), which corroboration weighs beside the windows;
    `parts`: windows already reconstructed and corroborated (verify_whole)."""
    if parts is None:
        parts = reconstruct_windows(seq, work, sfm_options, options, stages)
        if len(parts) > 1 or voter is not None:
            corroborate(parts, voter)
    owner = owners(parts, len(seq.images))
    check_passed(int((owner >= 0).sum()), len(seq.images), options.min_registered, parts)
    with stages("merge windows"):
        scene = merge_windows(parts, owner, seq.classes)
    return scene, window_report(seq, parts, owner, scene, masks, whole)


def reconstruct_windows(seq: Sequence, work: Path, sfm_options: SfmOptions, options: ReconOptions,
                        stages: Stages) -> list[WindowPart]:
    plan = window_plan(len(seq.images), options.window_frames)
    parts = []
    for index, frames in enumerate(plan):
        with stages(f"window {index + 1}/{len(plan)}"):
            parts.append(reconstruct_window(seq, index, frames, work / f"window{index:03d}", sfm_options, options,
                                            stages))
    return parts


def whole_voter(seq: Sequence, model, rejected: dict) -> WindowPart | None:
    """The whole-sequence model's validated frames as a voter of corroboration (None: fewer than 3)."""
    from recon.source_images import scene_from_model

    kept = without_frames(model, rejected)
    if kept.num_frames < MIN_WINDOW_FRAMES:
        return None
    position = {p.name: i for i, p in enumerate(seq.images)}
    return WindowPart(WHOLE, list(range(len(seq.images))), registered=model.num_frames,
                      scene=scene_from_model(seq, kept, "images"),
                      positions=np.array([position[n] for n in kept.names], np.int64))


@dataclass
class Verdict:
    """verify_whole's answer: frames of the whole model no window confirms (model frame -> reasons) and the
    report's `verification`, or the windowed scene and report that replace the whole model."""
    rejected: dict[int, list[str]] = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    windowed: tuple[Scene, dict] | None = None


def verify_whole(seq: Sequence, work: Path, sfm_options: SfmOptions, options: ReconOptions, stages: Stages,
                 masks: dict | None, model, rejected: dict[int, list[str]]) -> Verdict:
    """A whole-sequence model that passed validation, checked against windows reconstructed on their own: it
    stays where they confirm it while it keeps MIN_PASSED_SHARE of the frames or at least as many as the windows
    would; else the windowed scene, with the whole model as one more voter, replaces it. On synthetic drives,
    whole models that passed validation on 97-100 % of the frames were bent (up to 64 deg, 58 frames off)."""
    voter = whole_voter(seq, model, rejected)
    parts = reconstruct_windows(seq, work, sfm_options, options, stages)
    corroborate(parts, voter)
    total = len(seq.images)
    kept = 0 if voter is None else len(voter.trusted)
    windowed = int((owners(parts, total) >= 0).sum())
    info = {"windows": len(parts), "validated": model.num_frames - len(rejected), "confirmed": kept,
            "kept_in_windows": windowed}
    if kept >= MIN_PASSED_SHARE * total or kept >= windowed:
        index = {name: f for f, name in enumerate(model.names)}
        name_of = [p.name for p in seq.images]
        doubts = {} if voter is None else {index[name_of[p]]: reasons for p, (_, reasons) in voter.rejected.items()}
        return Verdict(rejected=doubts, info=info)
    whole = {"registered": model.num_frames, "validated": info["validated"], "confirmed": kept}
    return Verdict(info=info, windowed=build_windows(seq, work, sfm_options, options, stages, masks, whole,
                                                    parts=parts))


def reconstruct_window(seq: Sequence, index: int, frames: list[int], work: Path, sfm_options: SfmOptions,
                       options: ReconOptions, stages: Stages) -> WindowPart:
    from recon.source_images import scene_from_model, validate_model  # that module calls this one

    names = [seq.images[i].name for i in frames]
    part = WindowPart(index, frames)
    result = run_sfm(seq.image_dir, names, work, sfm_options, stages)
    part.info = {"attempts": result.attempts, "best_attempt": result.best}
    if result.model is None:
        return part
    model, position = result.model, {name: frames[k] for k, name in enumerate(names)}
    part.registered = model.num_frames
    rejected = validate_model(model, result.database, names, PoseChecks()) if model.num_frames >= 2 else {}
    kept = without_frames(model, rejected)
    if kept.num_frames < MIN_WINDOW_FRAMES:
        few = f"window {index} kept only {kept.num_frames} validated frames (need {MIN_WINDOW_FRAMES})"
        rejected = {f: rejected.get(f, []) + [few] for f in range(model.num_frames)}
        part.rejected = rejected_frames(seq, model, rejected, 1.0)
        return part
    part.scene = scene_from_model(seq, kept, "images")
    part.positions = np.array([position[n] for n in kept.names], np.int64)
    part.info |= {"camera_params": kept.camera_params[0], "camera_model": kept.camera_model,
                  "sfm_points": len(part.scene.cloud)}
    if options.dense is not False:
        part.scene, part.info["dense"] = densify(part.scene, options, stages)
    with stages("metric scale"):
        part.info["scale"] = metric_scale(part.scene, window_scale_request(options, kept.names),
                                          part.info["sfm_points"])
    part.rejected = rejected_frames(seq, model, rejected, part.info["scale"]["factor"])
    return part


def window_scale_request(options: ReconOptions, names: list[str]):
    """The scale request, less a --known-distance whose frames are not both validated in this window."""
    from recon.source_images import scale_request

    request = scale_request(options)
    if request.known_distance is not None:
        present = {n for n in names} | {Path(n).stem for n in names}
        if not set(request.known_distance[:2]) <= present:
            request = replace(request, known_distance=None)
    return request


def rejected_frames(seq: Sequence, model, rejected: dict[int, list[str]], scale: float) -> dict:
    """Sequence position -> (frame with its window pose, scaled like the window, reasons)."""
    by_name = {p.name: i for i, p in enumerate(seq.images)}
    out = {}
    for f, reasons in rejected.items():
        pose = model.cam_from_world[f].copy()
        pose[:3, 3] *= scale
        frame = seq.frame(seq.image_dir / model.names[f], *model.sizes[f], model.K[f], pose)
        out[by_name[model.names[f]]] = (frame, reasons)
    return out


def owners(parts: list[WindowPart], total: int) -> np.ndarray:
    """Per sequence position: the window it passed validation in whose middle it lies nearest; -1 = none
    (ties: the earlier window)."""
    owner, distance = np.full(total, -1, np.int64), np.full(total, np.inf)
    for part in parts:
        if part.scene is None:
            continue
        trusted = part.trusted
        d = np.abs(trusted - part.middle)
        closer = d < distance[trusted]
        owner[trusted[closer]] = part.index
        distance[trusted[closer]] = d[closer]
    return owner


def check_passed(passed: int, total: int, min_fraction: float, parts: list[WindowPart]) -> None:
    needed = max(2, int(np.ceil(min_fraction * total)))
    if passed >= needed:
        return
    per_window = ", ".join(f"{p.index}: {0 if p.scene is None else len(p.trusted)}/{len(p.frames)}" for p in parts)
    raise InputError(f"only {passed} of {total} frames passed pose validation in {len(parts)} windows with a second "
                     f"reconstruction confirming them (need {needed}; kept per window {per_window}); try more overlap "
                     "between frames (--overlap, fewer skipped frames), larger windows (--window-frames), "
                     "--use-intrinsics when cameras.json has K, or --focal-factor")


# ----------------------------------------------------------------------------------------- corroboration
def corroborate(parts: list[WindowPart], whole: WindowPart | None = None) -> None:
    """Keep a validated frame of a reconstruction only where another one confirms it. Overlapping windows are
    compared on the frames both validated, and `whole` (the whole-sequence model, holding every frame) with each
    window (pair_agreement). Per frame, a reconstruction that disagrees with two others and agrees with none is
    outvoted; among the rest, one is kept where some comparison agrees and none disagrees. Without `whole`
    (--windows always), a frame that no comparison judged is kept when no other window holds it (the
    sequence's ends) and its window is confirmed on MIN_WINDOW_FRAMES frames; with it, never: on synthetic drives
    such frames were kept in a window bent between its confirmed and its lone half (12 frames, 41 deg off). The
    others move to the rejected frames with the reason."""
    members = parts + ([whole] if whole is not None else [])
    voters = [v for v in members if v.scene is not None]
    pairs = [(a, b) for a, b in zip(parts, parts[1:]) if a.scene is not None and b.scene is not None]
    pairs += [(whole, v) for v in parts if whole is not None and whole.scene is not None and v.scene is not None]
    verdicts: dict[int, list[tuple[WindowPart, WindowPart, str | None]]] = {}  # position -> (a, b, reason or None)
    for a, b in pairs:
        agreed, against = pair_agreement(a, b)
        for p in agreed:
            verdicts.setdefault(p, []).append((a, b, None))
        for p, reason in against.items():
            verdicts.setdefault(p, []).append((a, b, reason))
    kept, reasons = frame_votes(verdicts)
    holders = {}  # the windows planned over a frame, and the whole model where it validated the frame
    for v in members:
        for p in (v.positions.tolist() if v.index == WHOLE else v.frames):
            holders.setdefault(p, []).append(v)
    for v in voters:
        v.confirmed = {p for p in v.positions.tolist() if (id(v), p) in kept}
        for p in v.positions.tolist():
            if p in v.confirmed:
                continue
            others = [o for o in holders[p] if o is not v]
            if (id(v), p) in reasons:
                v.distrust([p], reasons[(id(v), p)])
            elif others:
                v.distrust([p], unconfirmed_reason(v, others[0], p))
            elif whole is not None:
                v.distrust([p], f"neither another window nor the whole-sequence model confirms {v.label}'s pose of "
                           "it")
            elif len(v.confirmed) < MIN_WINDOW_FRAMES:
                v.distrust([p], f"{v.label} agrees with no overlapping reconstruction on {MIN_WINDOW_FRAMES} or more "
                           "frames: nothing confirms its poses")


def frame_votes(verdicts: dict) -> tuple[set, dict]:
    """From each frame's comparisons (a, b, None where they agree, else the reason): the (id(reconstruction),
    position) pairs kept, and the reasons of the judged ones that are not."""
    kept, reasons = set(), {}
    for p, edges in verdicts.items():
        nodes = {id(x): x for a, b, _ in edges for x in (a, b)}
        agree = {n: sum(r is None and n in (id(a), id(b)) for a, b, r in edges) for n in nodes}
        against = {n: [r for a, b, r in edges if r is not None and n in (id(a), id(b))] for n in nodes}
        outvoted = {n for n in nodes if not agree[n] and len(against[n]) >= 2}
        for n in nodes:
            live = [(a, b, r) for a, b, r in edges if n in (id(a), id(b)) and not {id(a), id(b)} & (outvoted - {n})]
            if n not in outvoted and any(r is None for *_, r in live) and all(r is None for *_, r in live):
                kept.add((n, p))
            else:
                reasons[(n, p)] = "; ".join(against[n]) or "its only agreement is with an outvoted reconstruction"
    return kept, reasons


def unconfirmed_reason(part: WindowPart, other: WindowPart, position: int) -> str:
    if other.scene is not None and position in other.positions:
        return (f"{part.label} and {other.label} both validated it but share fewer than {MIN_WINDOW_FRAMES} "
                "validated frames: no comparison confirms its pose")
    return (f"{part.label} validated it but {other.label}, which holds it too, did not: no second "
            "reconstruction confirms its pose")


def pair_agreement(a: WindowPart, b: WindowPart) -> tuple[list[int], dict[int, str]]:
    """Compare two reconstructions on the frames both validated: one similarity from b's coordinates into a's,
    fitted to all of them (recon.sfm.pose_residuals). Returns the positions they agree on and the others with
    the reason; fewer than MIN_WINDOW_FRAMES shared frames: no comparison. A pair that agrees on fewer than
    MIN_AGREE_SHARE of its shared frames confirms none of them."""
    from recon.sfm import pose_residuals

    shared = np.intersect1d(a.positions, b.positions)
    if len(shared) < MIN_WINDOW_FRAMES:
        return [], {}
    errors, turned, path = pose_residuals(b.poses(shared), a.poses(shared))
    centres = camera_centres(a.poses(a.positions))
    floor = MIN_STEP_SHARE * float(np.median(np.linalg.norm(np.diff(centres, axis=0), axis=1))) * (len(shared) - 1)
    path = max(path, floor, 1e-12)
    agree = (errors <= AGREE_SHARE * path) & (turned <= AGREE_DEGREES)
    against = {int(p): (f"{a.label} and {b.label} place it {100 * e / path:.0f} % of their shared path and "
                        f"{t:.0f} deg apart (at most {100 * AGREE_SHARE:g} % and {AGREE_DEGREES:g} deg)")
               for p, e, t in zip(shared[~agree], errors[~agree], turned[~agree])}
    if agree.sum() < max(MIN_WINDOW_FRAMES, MIN_AGREE_SHARE * len(shared)):
        disputed = (f"{a.label} and {b.label} disagree on {int((~agree).sum())} of their {len(shared)} shared "
                    "frames: neither confirms the other")
        return [], against | {int(p): disputed for p in shared[agree]}
    return shared[agree].tolist(), against


# ----------------------------------------------------------------------------------------- merging
def merge_windows(parts: list[WindowPart], owner: np.ndarray, classes) -> Scene:
    """One Scene: each window's owned frames with their links and the points they link, in name order, plus
    the frames registered somewhere but validated nowhere, without links."""
    entries, clouds, offset = [], [], 0  # entries: (position, frame, (point, v, u))
    for part in parts:
        if part.scene is None:
            continue
        own = np.flatnonzero(owner[part.positions] == part.index)
        cloud, new_index = owned_points(part, own)
        for f in own:
            point, v, u = part.scene.links.frame(int(f))
            frame = replace(part.scene.frames[f], window=part.index)
            entries.append((int(part.positions[f]), frame, (new_index[point] + offset, v, u)))
        clouds.append(cloud)
        offset += len(cloud)
    entries += unlinked_entries(parts, owner)
    entries.sort(key=lambda e: e[0])
    merged_index = np.full(len(owner), -1, np.int64)
    merged_index[[e[0] for e in entries]] = np.arange(len(entries))
    cloud = concat_clouds(clouds)
    known = cloud.source_frame >= 0
    cloud.source_frame[known] = merged_index[cloud.source_frame[known]]
    links = Links.from_per_frame([e[2] for e in entries])
    return Scene(classes=classes, frames=[e[1] for e in entries], cloud=cloud, links=links, source="images")


def owned_points(part: WindowPart, own: np.ndarray) -> tuple[Cloud, np.ndarray]:
    """The window's points linked by its owned frames (window id set, source_frame as a sequence position, -1
    where the source frame is owned elsewhere), and each old point's new index."""
    scene, links = part.scene, part.scene.links
    counts = np.diff(links.offsets)
    owned_link = np.repeat(np.isin(np.arange(len(scene.frames)), own), counts)
    used = np.zeros(len(scene.cloud), bool)
    used[links.point[owned_link]] = True
    new_index = np.cumsum(used) - 1
    source = scene.cloud.source_frame[used]
    owned_source = (source >= 0) & np.isin(source, own)
    position = np.where(owned_source, part.positions[np.maximum(source, 0)], -1).astype(np.int32)
    c = scene.cloud
    cloud = Cloud(xyz=c.xyz[used], rgb=c.rgb[used], conf=c.conf[used], weak_label=c.weak_label[used],
                  source_frame=position, label=None if c.label is None else c.label[used],
                  window=np.full(int(used.sum()), part.index, np.int32))
    return cloud, new_index


def unlinked_entries(parts: list[WindowPart], owner: np.ndarray) -> list[tuple]:
    """Frames registered in some window but validated in none: the pose (and reasons) of the window whose
    middle they lie nearest, without links, as the whole-sequence path keeps its rejected frames."""
    chosen: dict[int, tuple[float, int, Frame]] = {}
    for part in parts:
        for position, (frame, _) in part.rejected.items():
            d = abs(position - part.middle)
            if owner[position] < 0 and (position not in chosen or d < chosen[position][0]):
                chosen[position] = (d, part.index, frame)
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0, np.int32))
    return [(p, replace(frame, window=w), empty) for p, (_, w, frame) in chosen.items()]


def concat_clouds(clouds: list[Cloud]) -> Cloud:
    def cat(name, dtype, fill=None):
        parts = [getattr(c, name) if getattr(c, name) is not None else np.full(len(c), fill, dtype) for c in clouds]
        return np.concatenate(parts).astype(dtype, copy=False)

    with_label = any(c.label is not None for c in clouds)
    return Cloud(xyz=cat("xyz", np.float32).reshape(-1, 3), rgb=cat("rgb", np.uint8).reshape(-1, 3),
                 conf=cat("conf", np.float32), weak_label=cat("weak_label", np.uint8),
                 source_frame=cat("source_frame", np.int32), window=cat("window", np.int32),
                 label=cat("label", np.uint8, UNLABELED) if with_label else None)


# ----------------------------------------------------------------------------------------- report
def window_report(seq: Sequence, parts: list[WindowPart], owner: np.ndarray, scene: Scene, masks: dict | None,
                  whole: dict | None) -> dict:
    names = [p.name for p in seq.images]
    registered = set()
    for part in parts:
        registered |= set(part.rejected) | set(part.positions.tolist())
    reasons = {}
    for part in sorted(parts, key=lambda p: p.index):
        for position, (_, why) in part.rejected.items():
            if owner[position] < 0:
                reasons.setdefault(position, []).extend(f"window {part.index}: {r}" for r in why)
    first = next((p for p in parts if p.scene is not None), parts[0])
    return {"frames_total": len(names), "frames_registered": int((owner >= 0).sum()),
            "frames_sfm_registered": len(registered),
            "frames_rejected": [{"image": names[p], "reasons": r} for p, r in sorted(reasons.items())],
            "matching": "windows", "attempts": first.info.get("attempts", []),
            "best_attempt": first.info.get("best_attempt", ""),
            "sfm_points": int(sum(p.info.get("sfm_points", 0) for p in parts)),
            "camera_model": first.info.get("camera_model"), "camera_params": first.info.get("camera_params"),
            "moving_masks": masks, "whole_sequence": whole,
            "windows": [window_entry(part, names, owner, scene) for part in parts],
            "scale": scale_summary(parts)}


def window_entry(part: WindowPart, names: list[str], owner: np.ndarray, scene: Scene) -> dict:
    scale = part.info.get("scale", {"method": "none", "confidence": "none", "factor": 1.0})
    entry = {"window": part.index, "frames": [names[p] for p in part.frames],
             "owned": [names[p] for p in part.frames if owner[p] == part.index],
             "registered": part.registered, "validated": int(len(part.positions)),
             "confirmed": len(part.confirmed), "kept": int(len(part.trusted)),
             "points": int((scene.cloud.window == part.index).sum()),
             "scale": {k: scale[k] for k in ("method", "confidence", "factor") if k in scale} |
             {"reasons": scale.get("reasons", [])},
             "attempts": [{k: a[k] for k in ("name", "registered", "seconds") if k in a}
                          for a in part.info.get("attempts", [])]}
    if "dense" in part.info:
        entry["dense"] = part.info["dense"]
    return entry


def scale_summary(parts: list[WindowPart]) -> dict:
    """The scene-level scale fields: every window's method, the least confident window's confidence, the
    median factor, and each window's doubts."""
    scales = [(p.index, p.info["scale"]) for p in parts if "scale" in p.info]
    if not scales:
        return {"method": "none", "confidence": "none", "factor": 1.0, "reason": "no window reconstructed"}
    methods = sorted({s["method"] for _, s in scales})
    if methods == ["none"]:
        return {"method": "none", "confidence": "none", "factor": 1.0, "reason": scales[0][1].get("reason", ""),
                "per_window": True}
    confidence = min((s["confidence"] for _, s in scales), key=CONFIDENCE_ORDER.index)
    return {"method": " / ".join(methods) + " per window", "confidence": confidence,
            "factor": float(np.median([s["factor"] for _, s in scales])),
            "reasons": [f"window {w}: {r}" for w, s in scales for r in s.get("reasons", [])]
            + [f"window {w}: no scale" for w, s in scales if s["method"] == "none"], "per_window": True}
