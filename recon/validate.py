"""Pose validation after SfM: which registered frames have a pose that cannot be trusted, and why.

SfM can "succeed" with broken geometry: on real drives it has registered a camera 755 m from the rest, a 47 m
jump where the median step is 1.5 m and a 158-degree turn between consecutive frames, with report.json
reading as a success. Every check here gives a frame it fails a reason; a frame with any reason is left out
of the 3D (recon/source_images.py). The checks, per frame:
- observations: enough inliers (reprojection error <= inlier_error_px), low median reprojection error, and
  its observed points in front of the camera;
- two-view geometry: its relative pose to its neighbours against their verified matches in the database;
- continuity along the sequence (frames in name order = time order): no jump against the local median step,
  no isolated sharp turn, no camera far from every other.
A broken frame also disturbs the checks of its good neighbours (a jumped frame makes two large steps, into
and out of it), so each check blames the frame whose removal restores consistency.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from recon.colmap_adapter import SfmModel, project_observations
from recon.scale import camera_centres


@dataclass(frozen=True)
class PoseChecks:
    """Thresholds of the pose validation. The defaults keep every frame of the synthetic sequences the tests
    reconstruct, and catch the failures seen on real drives with room to spare (a 47 m jump at 1.5 m steps
    is 31x the median step, a 755 m outlier hundreds of steps, a 158 deg turn 3.5x max_turn_deg)."""

    # COLMAP's own observation filter (filter_max_reproj_error): a larger error is an outlier, not noise
    inlier_error_px: float = 4.0
    # a pose has six degrees of freedom: on fewer observations one wrong match moves it freely. Low on
    # purpose: after bundle adjustment and filtering, correct frames at the end of a fast synthetic drive keep
    # 6-14 (tests/test_recon_robust.py's sequences); frames left with 1-5 were off by metres there
    min_inliers: int = 6
    # after bundle adjustment a good frame sits well below 1 px; only a frame the BA could not fit reaches 2
    max_median_error_px: float = 2.0
    # triangulation keeps points in front of every camera that sees them, so a handful behind means a wrong pose
    min_in_front: float = 0.9
    # verified matches of a pair that a good relative pose explains within inlier_error_px; a flipped or
    # swung camera explains almost none of its pairs' matches
    min_epipolar_share: float = 0.5
    two_view_reach: int = 3  # pairs with up to this many frames ahead in name order
    # a jump: a step (per frame of sequence distance) this many times the local median step
    max_step_ratio: float = 5.0
    step_window: int = 5  # local median over this many steps on each side
    # floor of the local median, as a share of the sequence's median step: while a car waits at a light its
    # steps are noise, and driving off again must not count as a jump
    min_reference_share: float = 0.25
    # an isolated turn: more than this between consecutive frames, both into and out of the frame ...
    max_turn_deg: float = 45.0
    # ... at either end of the sequence, where only one side exists, while the next frame turns less than this
    calm_turn_deg: float = 15.0
    # a far outlier: the nearest other camera this many local median steps away
    max_isolation_ratio: float = 10.0


def validate_poses(model: SfmModel, positions: np.ndarray | None = None,
                   two_view: dict[tuple[int, int], tuple] | None = None,
                   checks: PoseChecks = PoseChecks()) -> dict[int, list[str]]:
    """Frame index -> reasons, for every frame of `model` that fails a check. `positions`: each frame's place
    in the input sequence (frames SfM left out make gaps); default consecutive. `two_view`: (i, j) ->
    the pair's verified matches from the matching database (colmap_adapter.two_view_matches)."""
    found = [observation_failures(model, checks), two_view_failures(model, two_view or {}, checks)]
    if model.num_frames >= 3:  # continuity needs a neighbour on each side of some frame
        positions = np.arange(model.num_frames) if positions is None else np.asarray(positions)
        centres = camera_centres(model.cam_from_world)
        reference = local_reference(centres, positions, checks)
        found += [jump_failures(centres, positions, reference, checks),
                  turn_failures(model.cam_from_world[:, :3, :3], checks),
                  isolation_failures(centres, reference, checks)]
    reasons: dict[int, list[str]] = {}
    for failures in found:
        for frame, reason in failures.items():
            reasons.setdefault(int(frame), []).append(reason)
    return dict(sorted(reasons.items()))


# ----------------------------------------------------------------------------------------- observations
def observation_failures(model: SfmModel, checks: PoseChecks) -> dict[int, str]:
    num_frames = model.num_frames
    pixels, depth = project_observations(model)
    error = np.linalg.norm(pixels - model.obs_xy, axis=1)
    in_front = depth > 0
    inlier = in_front & (error <= checks.inlier_error_px)
    count = np.bincount(model.obs_frame, minlength=num_frames)
    inliers = np.bincount(model.obs_frame, weights=inlier, minlength=num_frames)
    front_share = np.bincount(model.obs_frame, weights=in_front, minlength=num_frames) / np.maximum(count, 1)
    median = grouped_median(np.where(in_front, error, np.inf), model.obs_frame, num_frames)
    failures = {}
    for f in range(num_frames):
        if count[f] and front_share[f] < checks.min_in_front:
            failures[f] = f"only {front_share[f]:.0%} of its {count[f]} observed points lie in front of the camera"
        elif inliers[f] < checks.min_inliers:
            failures[f] = (f"only {int(inliers[f])} observations within {checks.inlier_error_px:g} px "
                           f"(need {checks.min_inliers})")
        elif median[f] > checks.max_median_error_px:
            failures[f] = (f"median reprojection error {median[f]:.2f} px "
                           f"(at most {checks.max_median_error_px:g})")
    return failures


def grouped_median(values: np.ndarray, group: np.ndarray, num_groups: int) -> np.ndarray:
    """Median of `values` within each group (upper median for even counts; inf for an empty group)."""
    order = np.lexsort((values, group))
    count = np.bincount(group, minlength=num_groups)
    start = np.concatenate([[0], np.cumsum(count)[:-1]])
    middle = np.minimum(start + count // 2, max(len(values) - 1, 0))
    return np.where(count > 0, values[order][middle] if len(values) else np.inf, np.inf)


# ----------------------------------------------------------------------------------------- two-view geometry
def two_view_failures(model: SfmModel, two_view: dict[tuple[int, int], tuple], checks: PoseChecks) -> dict[int, str]:
    """A frame whose relative pose to most of its neighbours (at least two) breaks the epipolar geometry of
    the pair's verified matches: a wrong frame disagrees with every neighbour, while its good neighbours
    still agree with each other."""
    if not two_view:
        return {}
    pairs = np.array(list(two_view), np.int64)
    agreeing = np.array([epipolar_agreement(model, i, j, *two_view[(i, j)], checks) for i, j in pairs])
    bad = agreeing < checks.min_epipolar_share
    ends = pairs.reshape(-1)
    total = np.bincount(ends, minlength=model.num_frames)
    disagreeing = np.bincount(ends, weights=np.repeat(bad, 2), minlength=model.num_frames)
    lowest = np.ones(model.num_frames)
    np.minimum.at(lowest, ends, np.repeat(agreeing, 2))
    failing = np.flatnonzero((disagreeing >= 2) & (disagreeing > total / 2))
    return {int(f): (f"its pose breaks the epipolar geometry of {int(disagreeing[f])} of its {int(total[f])} "
                     f"image pairs (as few as {lowest[f]:.0%} of a pair's verified matches within "
                     f"{checks.inlier_error_px:g} px; at least {checks.min_epipolar_share:.0%})") for f in failing}


def epipolar_agreement(model: SfmModel, i: int, j: int, first: np.ndarray, second: np.ndarray,
                       checks: PoseChecks) -> float:
    """Share of the matches (normalised coordinates) whose Sampson error under the model's relative pose of
    frames i and j is within inlier_error_px. A pure rotation (no baseline) has no epipolar geometry: 1."""
    relative = model.cam_from_world[j] @ np.linalg.inv(model.cam_from_world[i])
    rotation, baseline = relative[:3, :3], relative[:3, 3]
    if np.linalg.norm(baseline) < 1e-12:
        return 1.0
    essential = np.cross(np.eye(3), baseline / np.linalg.norm(baseline)) @ rotation  # [t]x R
    x1, x2 = np.c_[first, np.ones(len(first))], np.c_[second, np.ones(len(second))]
    line2, line1 = x1 @ essential.T, x2 @ essential
    residual = np.einsum("ij,ij->i", x2, line2)
    sampson = np.abs(residual) / np.sqrt(line2[:, 0] ** 2 + line2[:, 1] ** 2 + line1[:, 0] ** 2 + line1[:, 1] ** 2)
    focal = 0.5 * (model.K[i, 0, 0] + model.K[j, 0, 0])
    return float(np.mean(sampson * focal <= checks.inlier_error_px))


def rotation_angle_deg(rotation: np.ndarray) -> np.ndarray:
    """Angle of each rotation in a (..., 3, 3) stack, in degrees."""
    cosine = (np.trace(rotation, axis1=-2, axis2=-1) - 1.0) / 2.0
    return np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0)))


# ----------------------------------------------------------------------------------------- continuity
def jump_failures(centres: np.ndarray, positions: np.ndarray, reference: np.ndarray,
                  checks: PoseChecks) -> dict[int, str]:
    """Cut the trajectory at every jump and keep the longest piece; every other piece comes back when the
    trajectory continues from the last kept frame into it without a jump, and is rejected otherwise. A single
    jumped frame is a piece of one frame the trajectory skips; a shifted stretch is a smaller piece.
    `reference`: each frame's local median step (local_reference)."""
    def jump(a: int, b: int) -> float:  # step from frame a to b per frame of sequence distance, in references
        gap = max(abs(int(positions[b]) - int(positions[a])), 1)
        return float(np.linalg.norm(centres[b] - centres[a])) / gap / max(reference[a], reference[b])

    steps = np.array([jump(f, f + 1) for f in range(len(centres) - 1)])
    piece = np.concatenate([[0], np.cumsum(steps > checks.max_step_ratio)])
    main = int(np.argmax(np.bincount(piece)))
    failures = {}
    for order in (range(main + 1, piece[-1] + 1), range(main - 1, -1, -1)):
        kept = np.flatnonzero(piece == main)[-1 if order.step > 0 else 0]
        for other in order:
            frames = np.flatnonzero(piece == other)
            entry, leave = (frames[0], frames[-1]) if order.step > 0 else (frames[-1], frames[0])
            ratio = jump(kept, entry)
            if ratio <= checks.max_step_ratio:
                kept = leave
                continue
            side = "previous" if order.step > 0 else "next"
            reason = (f"the trajectory jumps into it from the {side} kept frame ({ratio:.0f}x the local median "
                      f"step; at most {checks.max_step_ratio:g}x)")
            failures |= {int(f): reason for f in frames}
    return failures


def local_reference(centres: np.ndarray, positions: np.ndarray, checks: PoseChecks) -> np.ndarray:
    """Per frame: the median step (per frame of sequence distance) in a window of steps around it, floored at a
    share of the overall median."""
    speed = np.linalg.norm(np.diff(centres, axis=0), axis=1) / np.maximum(np.diff(positions), 1)
    w = checks.step_window
    padded = np.pad(speed, w, constant_values=np.nan)
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * w)  # frame i: steps i - w .. i + w - 1
    local = np.nanmedian(windows, axis=1)
    floor = checks.min_reference_share * np.median(speed)
    return np.maximum(local, max(floor, 1e-12))


def turn_failures(rotations: np.ndarray, checks: PoseChecks) -> dict[int, str]:
    """A frame that turns sharply away from both neighbours while they agree with each other (a flipped
    camera); at the ends, a sharp turn that stops at once. A real turn spreads over frames and keeps going."""
    if len(rotations) < 3:
        return {}
    turn = rotation_angle_deg(rotations[1:] @ np.swapaxes(rotations[:-1], 1, 2))
    across = rotation_angle_deg(rotations[2:] @ np.swapaxes(rotations[:-2], 1, 2))
    sharp, calm = turn > checks.max_turn_deg, turn <= checks.calm_turn_deg
    isolated = np.concatenate([[sharp[0] & calm[1]],
                               sharp[:-1] & sharp[1:] & (across <= checks.max_turn_deg),
                               [sharp[-1] & calm[-2]]])
    into = np.concatenate([turn[:1], np.minimum(turn[:-1], turn[1:]), turn[-1:]])
    return {int(f): (f"it turns {into[f]:.0f} deg against its neighbours, which turn little "
                     f"(at most {checks.max_turn_deg:g} deg between consecutive frames)")
            for f in np.flatnonzero(isolated)}


def isolation_failures(centres: np.ndarray, reference: np.ndarray, checks: PoseChecks) -> dict[int, str]:
    """A camera far from every other one (whatever the frame order), measured in its local median step."""
    nearest = cKDTree(centres).query(centres, k=2)[0][:, 1]
    ratio = nearest / reference
    return {int(f): (f"the nearest other camera is {ratio[f]:.0f}x the local median step away (at most "
                     f"{checks.max_isolation_ratio:g}x)") for f in np.flatnonzero(ratio > checks.max_isolation_ratio)}


# ----------------------------------------------------------------------------------------- applying it
def without_frames(model: SfmModel, rejected) -> SfmModel:
    """The model less the rejected frames, their observations, and the points that keep fewer than two
    observations (a point seen once more has nothing left to place it)."""
    keep_frame = np.ones(model.num_frames, bool)
    keep_frame[list(rejected)] = False
    frame_index = np.cumsum(keep_frame) - 1
    keep_obs = keep_frame[model.obs_frame]
    track = np.bincount(model.obs_point[keep_obs], minlength=len(model.xyz))
    keep_point = track >= 2
    keep_obs &= keep_point[model.obs_point]
    point_index = np.cumsum(keep_point) - 1
    frames = np.flatnonzero(keep_frame)
    return SfmModel(names=[model.names[f] for f in frames], sizes=model.sizes[frames], K=model.K[frames],
                    cam_from_world=model.cam_from_world[frames],
                    camera_params=[model.camera_params[f] for f in frames], camera_model=model.camera_model,
                    xyz=model.xyz[keep_point], rgb=model.rgb[keep_point], error=model.error[keep_point],
                    track_length=track[keep_point], obs_point=point_index[model.obs_point[keep_obs]],
                    obs_frame=frame_index[model.obs_frame[keep_obs]], obs_xy=model.obs_xy[keep_obs])
