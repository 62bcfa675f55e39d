"""Metric scale for image-only reconstructions.

SfM recovers a scene up to an unknown scale (COLMAP's gauge), while everything downstream speaks metres: the
3D network's voxel size, the 3D augmentations' jitter. A camera carried by a car or a person sits at a known
height above the ground (1.4-1.8 m), so the ground plane under the cameras fixes the scale: find the ground among
the reconstructed points (the fused dense cloud when there is one; a few hundred SfM points rarely hold enough of
it) by RANSAC over near-horizontal planes below the cameras, measure the cameras' height above it in SfM units,
and scale the scene so that it equals the given height. Pose helpers live here because this module needs no
pycolmap (training imports them too).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_TILT_DEG = 30.0  # ground normal within this angle of the cameras' up direction
# A camera carried along the ground travels parallel to it: along an elongated trajectory only planes that contain
# the travel direction are candidates. Without that, depth noise on a drive's far road tilted the plane by ~5 deg,
# so the cameras stood 1.9 m above it at one end and 1.3 m at the other, and the median made the street scenes
# 5-24 % too small (benchmarks/RESULTS.md, session 8).
ELONGATED = 3.0  # trajectory spread along its main axis over the spread across it, for a travel direction
INLIER_FRACTION_OF_DEPTH = 0.01  # RANSAC inlier band = 1 % of the median camera-to-point distance
MIN_GROUND_POINTS = 30


@dataclass
class GroundFit:
    normal: np.ndarray  # (3,) unit, pointing from the ground towards the cameras
    offset: float  # plane: normal . x + offset = 0
    inliers: int
    camera_height: float  # median height of the cameras above the plane, in scene units


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
    height = float(np.median(centres @ normal + offset))
    if height <= 0:
        return None
    return GroundFit(normal=normal, offset=offset, inliers=len(inliers), camera_height=height)


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


def metric_scale(scene, camera_height: float) -> dict:
    """Scale an SfM scene so that its cameras stand `camera_height` metres above the ground; returns what was
    found for report.json (the scene is left as it is when no ground plane is found)."""
    poses = np.stack([f.cam_from_world for f in scene.frames])
    fit = fit_ground(scene.cloud.xyz, poses)
    if fit is None:
        return {"method": "none", "reason": "no ground plane under the cameras among the SfM points; lengths are "
                "in SfM units (set --camera-height 0 to silence, or rescale the scene yourself)"}
    factor = camera_height / fit.camera_height
    scale_scene(scene, factor)
    return {"method": "ground plane", "camera_height_m": camera_height, "factor": round(factor, 6),
            "ground_points": fit.inliers}
