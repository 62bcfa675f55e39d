"""The robust SfM driver: features -> matches -> mapping attempts -> the model with most registered frames.

Robustness measures (each can be switched off to measure what it contributes, see benchmarks/recon.py):
- fixed seeds everywhere (COLMAP's PRNG, mapper, triangulator) and single-threaded mapping, so that
  repeated runs give the same model;
- a focal prior: EXIF when present, else `focal_factor * max(W, H)`;
- retries: when the first incremental run leaves frames unregistered, a run with relaxed initialisation
  (small triangulation angle, fewer inliers, forward motion allowed, more initial pairs), as in drives
  where neighbouring frames see the scene from nearly the same direction;
- pycolmap's global mapper (GLOMAP) as a last fallback;
- the best attempt wins (registered frames, then points).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from recon import colmap_adapter as colmap
from recon.sources import Stages

RELAXED = dict(init_min_tri_angle=4.0, init_min_num_inliers=50, init_max_forward_motion=0.995, init_num_trials=400)


@dataclass
class SfmOptions:
    matching: str = "auto"  # auto | sequential | exhaustive
    exhaustive_max: int = 20
    overlap: int = 10
    loop_detection: bool = False
    shared_camera: bool = True
    camera_params: list[float] | None = None  # PINHOLE fx, fy, cx, cy, kept fixed; None = self-calibrate
    focal_factor: float = 1.2
    max_features: int = 8192
    seed: int = 0
    mapper: str = "incremental"  # first attempt: incremental | global
    robust: bool = True
    num_threads: int = -1
    good_fraction: float = 1.0  # stop trying once this share of frames is registered
    deterministic: bool = True  # single-threaded mapping (extraction and matching stay parallel)


@dataclass
class SfmResult:
    model: colmap.SfmModel
    matching: str
    attempts: list[dict] = field(default_factory=list)
    best: str = ""


def matching_mode(options: SfmOptions, num_images: int) -> str:
    if options.matching != "auto":
        return options.matching
    return "exhaustive" if num_images <= options.exhaustive_max else "sequential"


def run_sfm(image_dir: Path, names: list[str], work: Path, options: SfmOptions, stages: Stages) -> SfmResult | None:
    """None when no attempt produced a model."""
    work = Path(work)
    database, log = work / "database.db", work / "colmap.log"
    mode = matching_mode(options, len(names))
    colmap.set_seed(options.seed)
    with colmap.quiet_native_logs(log):
        with stages("features"):
            colmap.extract_features(database, image_dir, names, shared_camera=options.shared_camera,
                                    camera_model="PINHOLE" if options.camera_params else "SIMPLE_RADIAL",
                                    camera_params=options.camera_params, focal_factor=options.focal_factor,
                                    max_features=options.max_features, num_threads=options.num_threads)
        with stages(f"matching ({mode})"):
            colmap.match_features(database, mode, overlap=options.overlap, loop_detection=options.loop_detection,
                                  num_threads=options.num_threads, seed=options.seed)
        with stages("mapping"):
            return _map(database, image_dir, work, options, len(names), mode)


def _map(database: Path, image_dir: Path, work: Path, options: SfmOptions, total: int, mode: str) -> SfmResult | None:
    # one mapping thread: COLMAP's threaded RANSAC and initial-pair search differ run to run even with seeds
    threads = 1 if options.deterministic else options.num_threads
    base = colmap.MapperSettings(seed=options.seed, num_threads=threads,
                                 refine_focal=options.camera_params is None, refine_extra=options.camera_params is None)
    plan = _attempt_plan(options, base)
    best, best_key, attempts = None, None, []
    for name, kind, settings in plan:
        start = time.perf_counter()
        mapper = colmap.global_mapping if kind == "global" else colmap.incremental_mapping
        try:
            models = mapper(database, image_dir, work / name, settings)
        except RuntimeError as e:  # a failed attempt is not fatal while others remain
            models, error = [], str(e)
        else:
            error = None
        sizes = [colmap.num_registered(m) for m in models]
        attempts.append({"name": name, "models": len(models), "registered": max(sizes, default=0),
                         "seconds": round(time.perf_counter() - start, 2), **({"error": error} if error else {})})
        for model, size in zip(models, sizes):
            key = (size, model.num_points3D())
            if best_key is None or key > best_key:
                best, best_key, best_name = model, key, name
        if best_key and best_key[0] >= options.good_fraction * total:
            break
    if best is None:
        return SfmResult(model=None, matching=mode, attempts=attempts)
    return SfmResult(model=colmap.to_arrays(best), matching=mode, attempts=attempts, best=best_name)


def _attempt_plan(options: SfmOptions, base: colmap.MapperSettings) -> list[tuple[str, str, colmap.MapperSettings]]:
    first = ("global" if options.mapper == "global" else "incremental", options.mapper, base)
    if not options.robust:
        return [first]
    relaxed = replace(base, **RELAXED)
    plan = [first, ("incremental-relaxed", "incremental", relaxed),
            ("incremental-relaxed-seed2", "incremental", replace(relaxed, seed=base.seed + 1))]
    other = ("incremental", "incremental", base) if options.mapper == "global" else ("global", "global", base)
    return plan + [other]


# ----------------------------------------------------------------------------------------- point confidence
def point_confidence(track_length: np.ndarray, error: np.ndarray, track_scale: float = 2.0,
                     error_scale: float = 1.0) -> np.ndarray:
    """conf = (1 - exp(-(L - 1) / track_scale)) * exp(-e^2 / (2 error_scale^2)), L = track length (views),
    e = mean reprojection error in pixels. 2-view tracks get 0.39, 5-view 0.86 (times the error term);
    an error of 1 px costs 39 %."""
    length_term = 1.0 - np.exp(-(np.asarray(track_length, np.float64) - 1.0) / track_scale)
    error_term = np.exp(-np.square(np.asarray(error, np.float64)) / (2.0 * error_scale ** 2))
    return np.clip(length_term * error_term, 0.0, 1.0).astype(np.float32)


# ----------------------------------------------------------------------------------------- evaluation
def align_sim3(source: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Umeyama: scale s, rotation R, translation t minimising |s R source + t - target|^2 over (N, 3) points."""
    mu_s, mu_t = source.mean(0), target.mean(0)
    xs, xt = source - mu_s, target - mu_t
    cov = xt.T @ xs / len(source)
    U, D, Vt = np.linalg.svd(cov)
    S = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        S[2, 2] = -1
    R = U @ S @ Vt
    scale = float(np.trace(np.diag(D) @ S) / xs.var(0).sum())
    return scale, R, mu_t - scale * R @ mu_s


def camera_centres(cam_from_world: np.ndarray) -> np.ndarray:
    """(F, 3) centres of (F, 4, 4) poses: c = -R^T t."""
    R, t = cam_from_world[:, :3, :3], cam_from_world[:, :3, 3]
    return -np.einsum("fji,fj->fi", R, t)


def centre_error(estimated: np.ndarray, truth: np.ndarray) -> dict:
    """Camera centre error after Sim(3) alignment, absolute and relative to the true trajectory length."""
    scale, R, t = align_sim3(estimated, truth)
    aligned = scale * estimated @ R.T + t
    errors = np.linalg.norm(aligned - truth, axis=1)
    length = float(np.linalg.norm(np.diff(truth, axis=0), axis=1).sum())
    return {"mean": float(errors.mean()), "max": float(errors.max()), "trajectory_length": length,
            "mean_percent": 100.0 * float(errors.mean()) / max(length, 1e-12),
            "max_percent": 100.0 * float(errors.max()) / max(length, 1e-12)}
