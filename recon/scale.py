"""Metric scale for image-only reconstructions.

SfM recovers a scene up to an unknown scale (COLMAP's gauge), while everything downstream speaks metres: the
3D network's voxel size, the 3D augmentations' jitter. A camera carried by a car or a person sits at a known
height above the ground (1.4-1.8 m), so the ground plane under the cameras fixes the scale: find the ground among
the reconstructed points (the fused dense cloud when there is one; a few hundred SfM points rarely hold enough of
it) by RANSAC over near-horizontal planes below the cameras, measure the cameras' height above it in SfM units,
and scale the scene so that it equals the given height. Pose helpers live here because this module needs no
pycolmap (training imports them too).

The ground plane is a guess, and it can be wrong without failing (a kitchen counter taken for the floor made a
handheld walk 2.2x too large), so the scale comes with a confidence and from the best source available, in
this order: the user (`--scale`, `--known-distance`), measured depth beside the images (SEQ/depth/), then the
ground plane.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recon.errors import InputError

MAX_TILT_DEG = 30.0  # ground normal within this angle of the cameras' up direction
# A camera carried along the ground travels parallel to it: along an elongated trajectory only planes that contain
# the travel direction are candidates. Without that, depth noise on a drive's far road tilted the plane by ~5 deg,
# so the cameras stood 1.9 m above it at one end and 1.3 m at the other, and the median made the street scenes
# 5-24 % too small (benchmarks/RESULTS.md, "Training quality on an H100: three seeds").
ELONGATED = 3.0  # trajectory spread along its main axis over the spread across it, for a travel direction
INLIER_FRACTION_OF_DEPTH = 0.01  # RANSAC inlier band = 1 % of the median camera-to-point distance
MIN_GROUND_POINTS = 30
# Below these the ground plane still sets the scale, but with low confidence (see ground_doubts).
CONFIDENT_GROUND_POINTS = 200
MIN_GROUND_SHARE = 0.15  # ground inliers / points below the cameras
MAX_SHARE_UNDER_GROUND = 0.05  # points well below the plane: it is a table or counter top, not the floor
MAX_HEIGHT_SPREAD = 0.25  # interquartile range of the cameras' heights / their median height
INDOOR_EXTENT_M = 8.0  # a compact, non-elongated trajectory within this many metres: floors hide under furniture
# depth: ratios of measured to SfM depth at the SfM points of each frame
MIN_DEPTH_RATIOS = 20  # per frame, to count it
CONFIDENT_DEPTH_FRAMES = 3
MAX_DEPTH_SPREAD = 0.05  # median relative deviation of the per-frame ratios from the overall one


@dataclass
class GroundFit:
    normal: np.ndarray  # (3,) unit, pointing from the ground towards the cameras
    offset: float  # plane: normal . x + offset = 0
    inliers: int
    camera_height: float  # median height of the cameras above the plane, in scene units
    below: int = 0  # points below the cameras that were candidates
    under: int = 0  # of those, points more than 3 inlier bands below the plane
    height_spread: float = 0.0  # interquartile range of the cameras' heights / camera_height


def camera_centres(cam_from_world: np.ndarray) -> np.ndarray:
    """(F, 3) centres of (F, 4, 4) poses: c = -R^T t."""
    R, t = cam_from_world[:, :3, :3], cam_from_world[:, :3, 3]
    return -np.einsum("fji,fj->fi", R, t)


def cameras_up(cam_from_world) -> np.ndarray:
    """World up = minus the mean camera y axis (OpenCV cameras look along +z with y pointing down); +z when the
    cameras disagree completely."""
    up = -np.stack([np.asarray(T, np.float64)[1, :3] for T in cam_from_world]).mean(0)
    n = np.linalg.norm(up)
    return up / n if n > 1e-8 else np.array([0.0, 0.0, 1.0])


def fit_ground(xyz: np.ndarray, cam_from_world: np.ndarray, iterations: int = 2048, seed: int = 0,
               max_points: int = 20000) -> GroundFit | None:
    """The ground under the cameras: the near-horizontal plane below the cameras with the most points (RANSAC,
    then least squares on its inliers, twice); a lower plane parallel to it with a third as many points wins
    (a floor under a table top). Along an elongated trajectory only planes parallel to the travel direction
    are candidates."""
    xyz = np.asarray(xyz, np.float64)
    cam_from_world = np.asarray(cam_from_world, np.float64)
    if len(xyz) < MIN_GROUND_POINTS or len(cam_from_world) == 0:
        return None
    centres, up = camera_centres(cam_from_world), cameras_up(cam_from_world)
    centre = np.median(centres, axis=0)
    rng = np.random.default_rng(seed)
    if len(xyz) > max_points:
        xyz = xyz[np.sort(rng.choice(len(xyz), max_points, replace=False))]
    band = INLIER_FRACTION_OF_DEPTH * float(np.median(np.linalg.norm(xyz - centre, axis=1)))
    below = xyz[(xyz - centre) @ up < 0]  # the ground is below the cameras
    if len(below) < MIN_GROUND_POINTS:
        return None
    travel = travel_direction(centres)
    normals, offsets = _hypotheses(below, up, iterations, rng, travel)
    if len(normals) == 0:
        return None
    counts = (np.abs(below @ normals.T + offsets) <= band).sum(0)
    best = int(np.argmax(counts))
    if counts[best] < MIN_GROUND_POINTS:
        return None
    heights = centre @ normals.T + offsets
    parallel = normals @ normals[best] >= np.cos(np.deg2rad(5.0))
    lower = parallel & (heights > heights[best] + 3 * band) & (counts >= counts[best] / 3)
    k = int(np.argmax(np.where(lower, heights, -np.inf))) if lower.any() else best
    normal, offset = normals[k], offsets[k]
    for _ in range(2):
        inliers = below[np.abs(below @ normal + offset) <= band]
        normal, offset = _refine(inliers, normal, travel)
    heights = centres @ normal + offset
    height = float(np.median(heights))
    if height <= 0:
        return None
    quartiles = np.percentile(heights, [25, 75])
    return GroundFit(normal=normal, offset=offset, inliers=len(inliers), camera_height=height, below=len(below),
                     under=int((below @ normal + offset < -3 * band).sum()),
                     height_spread=float(quartiles[1] - quartiles[0]) / height)


def travel_direction(centres: np.ndarray) -> np.ndarray | None:
    """Unit main axis of the camera centres when the trajectory is elongated (a drive, a walk), else None."""
    if len(centres) < 3:
        return None
    spread = np.linalg.svd(centres - centres.mean(0), full_matrices=False)
    if spread[1][0] <= 1e-9 or spread[1][0] < ELONGATED * spread[1][1]:
        return None
    return spread[2][0]


def _hypotheses(points: np.ndarray, up: np.ndarray, count: int, rng,
                travel: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Planes through random point triples, or through point pairs and the travel direction when there is one;
    normals towards `up`, within MAX_TILT_DEG of it."""
    sample = points[rng.integers(0, len(points), size=(count, 3))]  # (K, 3 points, 3)
    second = travel[None] if travel is not None else sample[:, 2] - sample[:, 0]
    normals = np.cross(sample[:, 1] - sample[:, 0], second)
    length = np.linalg.norm(normals, axis=1)
    ok = length > 1e-12
    normals = normals[ok] / length[ok, None]
    normals *= np.sign(normals @ up)[:, None]
    offsets = -np.einsum("kj,kj->k", normals, sample[ok, 0])
    flat = normals @ up >= np.cos(np.deg2rad(MAX_TILT_DEG))
    return normals[flat], offsets[flat]


def _refine(points: np.ndarray, normal: np.ndarray, travel: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Least-squares plane through the inliers (smallest singular vector), oriented like `normal`; with a travel
    direction, turned to contain it (least squares would tilt it back towards a far, noisy stretch)."""
    mean = points.mean(0)
    refined = np.linalg.svd(points - mean, full_matrices=False)[2][-1]
    if travel is not None:
        refined = refined - (refined @ travel) * travel
        refined /= np.linalg.norm(refined)
    refined *= np.sign(refined @ normal) or 1.0
    return refined, float(-refined @ mean)


def scale_scene(scene, factor: float) -> None:
    """Multiply every length of the scene (points, camera positions) by `factor`, in place."""
    scene.cloud.xyz = (scene.cloud.xyz * factor).astype(np.float32)
    for frame in scene.frames:
        pose = frame.cam_from_world.copy()
        pose[:3, 3] *= factor
        frame.cam_from_world = pose


@dataclass
class ScaleRequest:
    """What the user said about the scale; `scale` and `known_distance` exclude each other."""
    scale: float | None = None  # multiply SfM units by this
    known_distance: tuple[str, str, float] | None = None  # two frames' names and their centres' distance, metres
    camera_height: float = 1.6  # for the ground plane; 0 = no ground plane
    use_depth: bool = True  # SEQ/depth/ beside the images, when there


def metric_scale(scene, request: ScaleRequest | float = 1.6, sfm_points: int | None = None) -> dict:
    """Scale an SfM scene into metres from the best source available (user > depth > ground plane), in place;
    returns what was used, its factor, confidence ('given', 'high', 'low', 'none') and doubts for report.json.
    `sfm_points`: the cloud's first points that are SfM points (their links are track observations)."""
    if not isinstance(request, ScaleRequest):
        request = ScaleRequest(camera_height=float(request))
    found = (user_scale(scene, request)
             or (depth_scale(scene, sfm_points) if request.use_depth else None)
             or (ground_scale(scene, request.camera_height) if request.camera_height > 0 else None))
    if found is None:
        why = ("no ground plane under the cameras among the points" if request.camera_height > 0
               else "--camera-height 0 turns the ground plane off")
        return {"method": "none", "confidence": "none", "factor": 1.0,
                "reason": f"{why} and no depth beside the images; lengths are in SfM units"}
    scale_scene(scene, found["factor"])
    return found


def user_scale(scene, request: ScaleRequest) -> dict | None:
    if request.scale is not None:
        return {"method": "--scale", "confidence": "given", "factor": float(request.scale), "reasons": []}
    if request.known_distance is None:
        return None
    first, second, metres = request.known_distance
    centres = camera_centres(np.stack([f.cam_from_world for f in scene.frames]))
    a, b = (frame_index(scene, name) for name in (first, second))
    distance = float(np.linalg.norm(centres[a] - centres[b]))
    if distance <= 1e-9 * max(1.0, float(np.abs(centres).max())):
        raise InputError(f"--known-distance {first} {second}: the two cameras stand at the same place; "
                         "choose two frames taken some distance apart")
    return {"method": "--known-distance", "confidence": "given", "factor": metres / distance,
            "frames": [first, second], "distance_m": metres, "reasons": []}


def frame_index(scene, name: str) -> int:
    """The scene frame whose image file name or stem is `name`."""
    from pathlib import Path

    for f, frame in enumerate(scene.frames):
        if name in (Path(frame.image).name, Path(frame.image).stem):
            return f
    raise InputError(f"--known-distance: frame {name!r} was not registered by SfM or failed pose validation; "
                     "choose two frames that reconstructed (see the frames in the progress output)")


def depth_scale(scene, sfm_points: int | None) -> dict | None:
    """Median over frames of the median ratio of measured depth to SfM depth at the frame's SfM points:
    the measured depth's outliers (edges, reflections) fall out of the medians."""
    ratios = [frame_depth_ratios(scene, f, sfm_points) for f, frame in enumerate(scene.frames) if frame.depth]
    ratios = [r for r in ratios if len(r) >= MIN_DEPTH_RATIOS]
    if not ratios:
        return None
    per_frame = np.array([np.median(r) for r in ratios])
    factor = float(np.median(per_frame))
    spread = float(np.median(np.abs(per_frame / factor - 1)))
    doubts = []
    if len(ratios) < CONFIDENT_DEPTH_FRAMES:
        doubts.append(f"depth at the SfM points of only {len(ratios)} frames")
    if spread > MAX_DEPTH_SPREAD:
        doubts.append(f"frames disagree by {100 * spread:.0f} % (depth not registered to the images?)")
    return {"method": "depth", "confidence": "low" if doubts else "high", "factor": factor,
            "depth_frames": len(ratios), "depth_points": int(sum(len(r) for r in ratios)),
            "frame_spread": round(spread, 4), "reasons": doubts}


def frame_depth_ratios(scene, f: int, sfm_points: int | None) -> np.ndarray:
    from recon.sources import read_frame_depth

    frame = scene.frames[f]
    point, v, u = scene.links.frame(f)
    sfm = point < (len(scene.cloud) if sfm_points is None else sfm_points)
    point, v, u = point[sfm], v[sfm], u[sfm]
    z_sfm = scene.cloud.xyz[point].astype(np.float64) @ frame.cam_from_world[2, :3] + frame.cam_from_world[2, 3]
    measured = read_frame_depth(frame)[v, u].astype(np.float64)
    ok = (measured > 0) & np.isfinite(measured) & (z_sfm > 0)
    return measured[ok] / z_sfm[ok]


def ground_scale(scene, camera_height: float) -> dict | None:
    poses = np.stack([f.cam_from_world for f in scene.frames])
    fit = fit_ground(scene.cloud.xyz, poses)
    if fit is None:
        return None
    factor = camera_height / fit.camera_height
    doubts = ground_doubts(fit, camera_centres(poses) * factor)
    return {"method": "ground plane", "confidence": "low" if doubts else "high", "factor": factor,
            "camera_height_m": camera_height, "ground_points": fit.inliers,
            "ground_share": round(fit.inliers / max(1, fit.below), 4), "reasons": doubts}


def ground_doubts(fit: GroundFit, centres_m: np.ndarray) -> list[str]:
    """Why the ground plane may not be the floor or road the camera height refers to (empty: no doubt)."""
    doubts = []
    if fit.inliers < CONFIDENT_GROUND_POINTS:
        doubts.append(f"{fit.inliers} ground points")
    if fit.inliers < MIN_GROUND_SHARE * fit.below:
        doubts.append(f"ground holds {100 * fit.inliers / fit.below:.0f} % of the points below the cameras")
    if fit.under > MAX_SHARE_UNDER_GROUND * fit.below:
        doubts.append(f"{100 * fit.under / fit.below:.0f} % of the points lie below the plane (a table or counter?)")
    if fit.height_spread > MAX_HEIGHT_SPREAD:
        doubts.append(f"cameras not level above it (heights vary by {100 * fit.height_spread:.0f} %)")
    extent = float(np.ptp(centres_m, axis=0).max()) if len(centres_m) else 0.0
    if travel_direction(centres_m) is None and extent < INDOOR_EXTENT_M:
        doubts.append(f"indoor-like trajectory (cameras within {extent:.1f} m, not along a path)")
    return doubts


def scale_line(scale: dict) -> str:
    """The scale part of the CLI's final line, e.g. 'scale: ground plane, low confidence (41 ground points);
    pass --scale or --known-distance'."""
    method, confidence = scale.get("method", "none"), scale.get("confidence", "none")
    if method == "none":
        return f"scale: none ({scale.get('reason', 'not estimated')}); pass --scale or --known-distance"
    if confidence == "given":
        return f"scale: from {method} (x{scale['factor']:.4g})"
    line = f"scale: {method}, {confidence} confidence (x{scale['factor']:.4g}"
    line += f"; {'; '.join(scale['reasons'])})" if scale.get("reasons") else ")"
    return line + ("; pass --scale or --known-distance" if confidence != "high" else "")
