"""The robust SfM driver: features -> matches -> mapping attempts -> the best model, merged with the others.

Robustness measures (each can be switched off to measure what it contributes, see benchmarks/recon.py):
- fixed seeds everywhere (COLMAP's PRNG, two-view RANSAC, mapper, triangulator, rotation averaging),
  single-threaded feature extraction (image ids in name order: parallel extraction numbers the images in
  the order the threads finish, and the mappers depend on that order), single-threaded mapping including
  Ceres, and every mapping attempt in a fresh process, so that repeated runs give the same model;
- a focal prior: EXIF when present, else `focal_factor * max(W, H)`; optionally (`focal_prior`) flagged as a
  trusted prior in the database, so that verification fits essential matrices and the global mapper gets the
  calibration it asks for (off by default: in first runs it cost registrations as often as it helped);
- relaxed initialisation: when the first incremental run leaves frames unregistered, a run with a small
  triangulation angle, fewer inliers, forward motion allowed and more initial pairs, as in drives where
  neighbouring frames see the scene from nearly the same direction;
- retries: the relaxed run again with another seed (another initial pair and RANSAC samples);
- pycolmap's global mapper (GLOMAP): first when the intrinsics are known (`mapper="auto"`), else as a fallback;
  it solves all rotations and positions at once and does not depend on one good initial pair, which is what
  fails on forward motion (there the incremental mapper can register every frame with wrong poses);
- focal search, when all of that leaves frames out and the intrinsics are unknown: the global mapper again on
  database copies whose cameras start from the focal the view graph implies (GLOMAP's view-graph
  calibration), then from other multiples of max(W, H); a focal guess 2x off is what sinks the global mapper
  on real dash-cam drives;
- the best model wins (registered frames, then the lower mean reprojection error), and models from all
  attempts that share frames with it are merged into it (Sim(3) from shared camera centres and points).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from recon import colmap_adapter as colmap
from recon.scale import camera_centres
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
    mask_dir: Path | None = None  # COLMAP keypoint masks (recon/moving.py); None = none
    focal_factor: float = 1.2
    max_features: int = 8192
    seed: int = 0
    # first attempt: incremental | global | auto (global with known intrinsics, else incremental). With a fixed,
    # known K the global mapper solved 11 of the quality benchmark's 12 training sequences (street and room,
    # 240x180, 10 frames) with relative rotation errors <= 1.7 deg, where the incremental one registered every
    # frame of 3 of those 11 with poses off by 6-14 deg and scale drift (benchmarks/RESULTS.md, "Training quality on
    # an H100: three seeds"; the 12th is off with either). Without K it needs a usable focal guess, so it comes after
    # the incremental attempts there.
    mapper: str = "auto"
    robust: bool = True  # False = the first attempt only: none of the measures below
    focal_prior: bool = False  # measured: more often costs registrations than it gains (benchmarks/RESULTS.md)
    relaxed_init: bool = True
    retries: bool = True
    global_fallback: bool = True
    merge: bool = True
    num_threads: int = -1
    good_fraction: float = 1.0  # stop trying once this share of frames is registered
    # last resort without known intrinsics: the global mapper again from other focal starting points (GLOMAP
    # needs a usable focal to turn verified pairs into relative poses): first the focal the view graph implies,
    # then these factors of max(W, H). Measured: a 3 m-step drive at 480x360 went from 2/20 to 19-20/20.
    focal_search: tuple[float, ...] = (0.6, 0.8, 1.8)
    min_search_fraction: float = 0.95  # the focal search stops at this registered share
    deterministic: bool = True  # single-threaded extraction (image ids in name order) and mapping


@dataclass
class SfmResult:
    model: colmap.SfmModel | None
    matching: str
    attempts: list[dict] = field(default_factory=list)
    best: str = ""
    merged: list[str] = field(default_factory=list)  # attempts whose frames were merged into the best model
    database: Path | None = None  # the matching database (inside the caller's work folder)


def matching_mode(options: SfmOptions, num_images: int) -> str:
    if options.matching != "auto":
        return options.matching
    return "exhaustive" if num_images <= options.exhaustive_max else "sequential"


def run_sfm(image_dir: Path, names: list[str], work: Path, options: SfmOptions, stages: Stages) -> SfmResult:
    """A result with model None when no attempt produced a model."""
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    database, log = work / "database.db", work / "colmap.log"
    mode = matching_mode(options, len(names))
    colmap.set_seed(options.seed)
    # parallel extraction writes images in the order the threads finish: the image ids, and with them the
    # mapper's pair order and initial pair, would change from run to run although every feature is the same
    extraction_threads = 1 if options.deterministic else options.num_threads
    with colmap.quiet_native_logs(log):
        with stages("features"):
            colmap.extract_features(database, image_dir, names, shared_camera=options.shared_camera,
                                    camera_model="PINHOLE" if options.camera_params else "SIMPLE_RADIAL",
                                    camera_params=options.camera_params, focal_factor=options.focal_factor,
                                    max_features=options.max_features, num_threads=extraction_threads,
                                    mask_dir=options.mask_dir)
            if options.robust and options.focal_prior:
                colmap.set_focal_prior(database)  # before matching: verification uses it
        with stages(f"matching ({mode})"):
            colmap.match_features(database, mode, overlap=options.overlap, loop_detection=options.loop_detection,
                                  num_threads=options.num_threads, seed=options.seed)
        with stages("mapping"):
            result = map_database(database, image_dir, work, options, len(names), mode)
    result.database = database  # for the pose validation's two-view check, while `work` still exists
    return result


def map_database(database: Path, image_dir: Path, work: Path, options: SfmOptions, total: int, mode: str) -> SfmResult:
    # one mapping thread: COLMAP's threaded RANSAC, initial-pair search and Ceres differ run to run even with seeds
    threads = 1 if options.deterministic else options.num_threads
    base = colmap.MapperSettings(seed=options.seed, num_threads=threads,
                                 refine_focal=options.camera_params is None, refine_extra=options.camera_params is None)
    attempts, candidates = [], []  # candidates: (attempt name, SfmModel, mean reprojection error)
    for name, kind, settings in attempt_plan(options, base):
        models, record = _run_attempt(database, image_dir, work / name, name, kind, settings)
        attempts.append(record)
        candidates += [(name, colmap.to_arrays(m), colmap.mean_reprojection_error(m)) for m in models]
        if max((c[1].num_frames for c in candidates), default=0) >= options.good_fraction * total:
            break
    else:
        for name, kind, settings, db in focal_search_plan(database, work, options, base):
            models, record = _run_attempt(db, image_dir, work / name, name, kind, settings)
            attempts.append(record)
            candidates += [(name, colmap.to_arrays(m), colmap.mean_reprojection_error(m)) for m in models]
            if max((c[1].num_frames for c in candidates), default=0) >= options.min_search_fraction * total:
                break
    if not candidates:
        return SfmResult(model=None, matching=mode, attempts=attempts)
    candidates.sort(key=lambda c: (-c[1].num_frames, c[2]))  # stable: earlier attempts win ties
    best_name, best, _ = candidates[0]
    merged = []
    if options.robust and options.merge:
        best, merged = merge_candidates(best, [(n, m) for n, m, _ in candidates[1:]])
    return SfmResult(model=best, matching=mode, attempts=attempts, best=best_name, merged=merged)


def _run_attempt(database: Path, image_dir: Path, out: Path, name: str, kind: str,
                 settings: colmap.MapperSettings) -> tuple[list, dict]:
    start = time.perf_counter()
    try:  # a fresh process per attempt: no mapper state carries over between attempts or runs
        models, error = colmap.map_in_fresh_process(kind, database, image_dir, out, settings), None
    except RuntimeError as e:  # a failed attempt is not fatal while others remain
        models, error = [], str(e)
    sizes = sorted((colmap.num_registered(m) for m in models), reverse=True)
    record = {"name": name, "models": len(models), "registered": sizes[0] if sizes else 0, "model_sizes": sizes,
              "seconds": round(time.perf_counter() - start, 2)}
    return models, record | ({"error": error} if error else {})


def first_mapper(options: SfmOptions) -> str:
    """The mapper of the first attempt: `mapper`, with `auto` resolved by whether the intrinsics are known."""
    if options.mapper == "auto":
        return "global" if options.camera_params is not None else "incremental"
    return options.mapper


def attempt_plan(options: SfmOptions, base: colmap.MapperSettings) -> list[tuple[str, str, colmap.MapperSettings]]:
    """Ordered (name, mapper kind, settings). Self-calibrating, incremental first: on well-conditioned input it
    registers everything in one cheap run; the later attempts only run while frames remain unregistered."""
    mapper = first_mapper(options)
    first = (mapper, mapper, base)
    if not options.robust:
        return [first]
    plan = [first]
    relaxed = replace(base, **RELAXED) if options.relaxed_init else base
    if options.relaxed_init:
        plan.append(("incremental-relaxed", "incremental", relaxed))
    if options.retries:
        plan.append(("incremental-seed2", "incremental", replace(relaxed, seed=base.seed + 1)))
    if mapper == "global":
        plan.append(("incremental", "incremental", base))
    elif options.global_fallback:
        plan.append(("global", "global", base))
    return plan


def focal_search_plan(database: Path, work: Path, options: SfmOptions, base: colmap.MapperSettings):
    """Global-mapper attempts on copies of the database whose cameras start from other focal lengths (lazy:
    each copy is made only when the previous attempt was not good enough)."""
    if not options.robust or options.camera_params is not None or not options.global_fallback:
        return
    starts = [("global-calibrated", None)] + [(f"global-focal{f:g}", f) for f in options.focal_search
                                              if abs(f - options.focal_factor) > 1e-6]
    for name, factor in starts:
        copy = work / f"{name}.db"
        shutil.copyfile(database, copy)
        if factor is None:
            if not colmap.calibrate_view_graph(copy, options.seed):
                continue
        else:
            colmap.reset_focal(copy, factor)
        yield name, "global", base, copy


# ----------------------------------------------------------------------------------------- merging
def merge_candidates(best: colmap.SfmModel, others: list[tuple[str, colmap.SfmModel]],
                     min_shared: int = 3) -> tuple[colmap.SfmModel, list[str]]:
    """Grow `best` with every other model that shares >= min_shared frames with it and adds new ones;
    repeated until nothing changes, so a chain of overlapping models joins up."""
    merged, pending = [], list(others)
    while pending:
        for i, (name, other) in enumerate(pending):
            grown = merge_models(best, other, min_shared)
            if grown is not None:
                best, _ = grown, pending.pop(i)
                merged.append(name)
                break
        else:
            break
    return best, merged


def merge_models(base: colmap.SfmModel, other: colmap.SfmModel, min_shared: int = 3,
                 max_misfit: float = 0.05) -> colmap.SfmModel | None:
    """`other`'s new frames and points in `base`'s coordinates; None when they share too few frames, add
    nothing, or do not agree (shared camera centres misfit by more than max_misfit of base's extent).

    The shared frames keep base's poses and observations. Points are identified across the models through
    shared observations (same frame, same keypoint): such a point of `other` becomes the base point."""
    shared = [n for n in other.names if n in set(base.names)]
    new_frames = [i for i, n in enumerate(other.names) if n not in set(base.names)]
    if len(shared) < min_shared or not new_frames:
        return None
    point_pairs = shared_points(base, other)
    scale, R, t = _fit_similarity(base, other, shared, point_pairs)
    base_c = camera_centres(base.cam_from_world[[base.names.index(n) for n in shared]])
    other_c = camera_centres(other.cam_from_world[[other.names.index(n) for n in shared]])
    misfit = np.linalg.norm(scale * other_c @ R.T + t - base_c, axis=1).max()
    extent = np.linalg.norm(np.ptp(camera_centres(base.cam_from_world), axis=0))
    if misfit > max_misfit * max(extent, 1e-12):
        return None
    return _join(base, other, new_frames, point_pairs, scale, R, t)


def shared_points(base: colmap.SfmModel, other: colmap.SfmModel) -> dict[int, int]:
    """other point index -> base point index, for points observed at the same keypoint of the same frame.
    Both models come from one database, so a shared keypoint has bit-identical coordinates."""
    def keyed(model):
        return {(model.names[f], x, y): p for p, f, (x, y) in zip(model.obs_point, model.obs_frame, model.obs_xy)}
    in_base = keyed(base)
    return {int(p): int(in_base[k]) for k, p in keyed(other).items() if k in in_base}


def _fit_similarity(base, other, shared: list[str], point_pairs: dict[int, int]):
    """Umeyama on shared camera centres plus shared points; the points pin down the roll about a straight
    trajectory that centres alone leave free. One refit without the worst-fitting 20 %."""
    src = [camera_centres(other.cam_from_world[[other.names.index(n) for n in shared]])]
    dst = [camera_centres(base.cam_from_world[[base.names.index(n) for n in shared]])]
    if point_pairs:
        src.append(other.xyz[list(point_pairs)])
        dst.append(base.xyz[list(point_pairs.values())])
    src, dst = np.concatenate(src), np.concatenate(dst)
    scale, R, t = align_sim3(src, dst)
    if len(src) >= 10:
        residual = np.linalg.norm(scale * src @ R.T + t - dst, axis=1)
        keep = residual <= np.quantile(residual, 0.8)
        scale, R, t = align_sim3(src[keep], dst[keep])
    return scale, R, t


def _join(base, other, new_frames: list[int], point_pairs: dict[int, int], scale, R, t) -> colmap.SfmModel:
    # other's world -> base's world: X_b = s R X_o + t; a pose [Rc | tc] becomes [Rc R^T | s tc - Rc R^T t]
    poses = other.cam_from_world[new_frames].copy()
    rot = poses[:, :3, :3] @ R.T
    poses[:, :3, 3] = scale * poses[:, :3, 3] - rot @ t
    poses[:, :3, :3] = rot
    in_new = np.isin(other.obs_frame, new_frames)
    used = np.unique(other.obs_point[in_new])
    fresh = np.array([p for p in used if p not in point_pairs], np.int64)
    point_index = {int(p): int(q) for p, q in point_pairs.items()}
    point_index |= {int(p): len(base.xyz) + i for i, p in enumerate(fresh)}
    frame_index = {f: base.num_frames + i for i, f in enumerate(new_frames)}
    obs_point = np.concatenate([base.obs_point, [point_index[int(p)] for p in other.obs_point[in_new]]])
    obs_frame = np.concatenate([base.obs_frame, [frame_index[int(f)] for f in other.obs_frame[in_new]]])
    joined = colmap.SfmModel(
        names=base.names + [other.names[f] for f in new_frames],
        sizes=np.concatenate([base.sizes, other.sizes[new_frames]]),
        K=np.concatenate([base.K, other.K[new_frames]]),
        cam_from_world=np.concatenate([base.cam_from_world, poses]),
        camera_params=base.camera_params + [other.camera_params[f] for f in new_frames],
        camera_model=base.camera_model,
        xyz=np.concatenate([base.xyz, scale * other.xyz[fresh].reshape(-1, 3) @ R.T + t]),
        rgb=np.concatenate([base.rgb, other.rgb[fresh].reshape(-1, 3)]),
        error=np.concatenate([base.error, other.error[fresh]]),
        track_length=np.zeros(0, np.int64),
        obs_point=obs_point.astype(np.int64), obs_frame=obs_frame.astype(np.int64),
        obs_xy=np.concatenate([base.obs_xy, other.obs_xy[in_new]]))
    joined.track_length = np.bincount(joined.obs_point, minlength=len(joined.xyz)).astype(np.int64)
    return sort_frames(joined)


def sort_frames(model: colmap.SfmModel) -> colmap.SfmModel:
    """Frames in name order (the SfmModel contract), observations renumbered to match."""
    order = np.argsort(model.names, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    model.names = [model.names[i] for i in order]
    model.sizes, model.K, model.cam_from_world = model.sizes[order], model.K[order], model.cam_from_world[order]
    model.camera_params = [model.camera_params[i] for i in order]
    model.obs_frame = rank[model.obs_frame]
    return model


def mean_error(model: colmap.SfmModel) -> float:
    """Mean reprojection error over observations (COLMAP weighs points by track length)."""
    return float(np.average(model.error, weights=model.track_length)) if len(model.error) else 0.0


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


def pose_residuals(source_pose: np.ndarray, target_pose: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Two estimates of the same cameras (F, 4, 4 cam_from_world) in different similarity frames: per camera the
    centre distance (target units) and rotation angle (deg) left after aligning source onto target, and the
    target path length. The rotation comes from the cameras' orientations (a short, nearly straight stretch
    leaves the roll about the travel axis open to a fit of centres alone); scale and shift fit the centres."""
    src, tgt = camera_centres(source_pose), camera_centres(target_pose)
    src_wc, tgt_wc = np.swapaxes(source_pose[:, :3, :3], 1, 2), np.swapaxes(target_pose[:, :3, :3], 1, 2)
    U, _, Vt = np.linalg.svd(np.einsum("nij,nkj->ik", tgt_wc, src_wc))
    R = U @ np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))]) @ Vt
    a, b = src @ R.T - (src @ R.T).mean(0), tgt - tgt.mean(0)
    scale = float((a * b).sum() / max((a * a).sum(), 1e-12))
    errors = np.linalg.norm(scale * a - b, axis=1)
    cos = (np.einsum("nij,nij->n", R @ src_wc, tgt_wc) - 1.0) / 2.0
    turned = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    return errors, turned, float(np.linalg.norm(np.diff(tgt, axis=0), axis=1).sum())


def centre_error(estimated: np.ndarray, truth: np.ndarray) -> dict:
    """Camera centre error after Sim(3) alignment, absolute and relative to the true trajectory length."""
    scale, R, t = align_sim3(estimated, truth)
    aligned = scale * estimated @ R.T + t
    errors = np.linalg.norm(aligned - truth, axis=1)
    length = float(np.linalg.norm(np.diff(truth, axis=0), axis=1).sum())
    return {"mean": float(errors.mean()), "max": float(errors.max()), "trajectory_length": length,
            "mean_percent": 100.0 * float(errors.mean()) / max(length, 1e-12),
            "max_percent": 100.0 * float(errors.max()) / max(length, 1e-12)}
