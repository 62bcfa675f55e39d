"""Windowed reconstruction of ordered sequences: when the whole-sequence SfM model leaves too many frames
unvalidated, reconstruct overlapping windows of consecutive frames independently and keep them as local
sub-clouds of one Scene (docs/FORMATS.md, "Scene": `Frame.window`, `cloud.npz` `window`).

On hard drives the whole-sequence model often has long stretches that are right locally and wrong globally
(two segments of one street 40 m apart), while training only needs the geometry around one view. Each window
gets its own SfM run (own database), the same pose validation, dense stereo and metric scale, in its own
coordinates. Every frame belongs to one window: among those where it passes validation, the one whose middle
it lies nearest (farthest from the window's loose ends). A frame's links point into its own window's points
only, and a window keeps the points that its own frames link.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from recon.errors import InputError
from recon.fusion import densify
from recon.scale import metric_scale
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


@dataclass
class WindowPart:
    """One window's reconstruction: its validated frames in its own metric coordinates."""

    index: int
    frames: list[int]  # sequence positions of the window's frames
    registered: int = 0
    scene: Scene | None = None  # None: too few frames passed
    positions: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # sequence position per frame
    rejected: dict[int, tuple[Frame, list[str]]] = field(default_factory=dict)  # position -> scaled frame, reasons
    info: dict = field(default_factory=dict)

    @property
    def middle(self) -> float:
        return 0.5 * (self.frames[0] + self.frames[-1])


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


def build_windows(seq: Sequence, work: Path, sfm_options: SfmOptions, options: ReconOptions, stages: Stages,
                  masks: dict | None, whole: dict | None) -> tuple[Scene, dict]:
    """The windowed Scene and its report fields. `whole`: what the whole-sequence model gave (None: not run)."""
    plan = window_plan(len(seq.images), options.window_frames)
    parts = []
    for index, frames in enumerate(plan):
        with stages(f"window {index + 1}/{len(plan)}"):
            parts.append(reconstruct_window(seq, index, frames, work / f"window{index:03d}", sfm_options, options,
                                            stages))
    owner = owners(parts, len(seq.images))
    check_passed(int((owner >= 0).sum()), len(seq.images), options.min_registered, parts)
    with stages("merge windows"):
        scene = merge_windows(parts, owner, seq.classes)
    return scene, window_report(seq, parts, owner, scene, masks, whole)


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
        d = np.abs(part.positions - part.middle)
        closer = d < distance[part.positions]
        owner[part.positions[closer]] = part.index
        distance[part.positions[closer]] = d[closer]
    return owner


def check_passed(passed: int, total: int, min_fraction: float, parts: list[WindowPart]) -> None:
    needed = max(2, int(np.ceil(min_fraction * total)))
    if passed >= needed:
        return
    per_window = ", ".join(f"{p.index}: {0 if p.scene is None else len(p.positions)}/{len(p.frames)}" for p in parts)
    raise InputError(f"only {passed} of {total} frames passed pose validation in {len(parts)} windows (need "
                     f"{needed}; validated per window {per_window}); try more overlap between frames (--overlap, "
                     "fewer skipped frames), larger windows (--window-frames), --use-intrinsics when cameras.json "
                     "has K, or --focal-factor")


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
