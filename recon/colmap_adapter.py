"""The only module that touches pycolmap's API (it changes between versions; this targets pycolmap 4.x).

Everything returned is plain numpy (`SfmModel`), so the rest of rewis never sees a pycolmap object.
glog output goes to a log file (`quiet_native_logs`) so our own per-stage progress stays readable.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pycolmap

from recon.errors import InputError


@dataclass
class SfmModel:
    """A registered model as arrays; frames sorted by image name."""

    names: list[str]
    sizes: np.ndarray  # (F, 2) int width, height
    K: np.ndarray  # (F, 3, 3)
    cam_from_world: np.ndarray  # (F, 4, 4)
    camera_params: list[list[float]]  # raw COLMAP parameters per frame (e.g. f, cx, cy, k)
    camera_model: str
    xyz: np.ndarray  # (P, 3)
    rgb: np.ndarray  # (P, 3) uint8
    error: np.ndarray  # (P,) mean reprojection error in pixels
    track_length: np.ndarray  # (P,)
    obs_point: np.ndarray  # (L,) index into the points
    obs_frame: np.ndarray  # (L,) index into the frames
    obs_xy: np.ndarray  # (L, 2) continuous pixel coordinates (COLMAP convention: pixel centre at +0.5)

    @property
    def num_frames(self) -> int:
        return len(self.names)


@contextlib.contextmanager
def quiet_native_logs(log_path: Path):
    """Send the C++ libraries' stderr (glog, Ceres) to `log_path` for the duration of the block."""
    pycolmap.logging.minloglevel = 1  # warnings and errors only, and those go to the file
    sys.stderr.flush()
    saved = os.dup(2)
    python_stderr = sys.stderr
    # Python's own messages (our progress, tqdm) keep going to the terminal through a copy of fd 2
    sys.stderr = open(os.dup(saved), "w", buffering=1, closefd=True)
    with open(log_path, "ab") as log:
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.close()
            sys.stderr = python_stderr
            os.dup2(saved, 2)
            os.close(saved)


def set_seed(seed: int) -> None:
    pycolmap.set_random_seed(int(seed))


def extract_features(database: Path, image_dir: Path, names: list[str], *, shared_camera: bool = True,
                     camera_model: str = "SIMPLE_RADIAL", camera_params: list[float] | None = None,
                     focal_factor: float = 1.2, max_features: int = 8192, num_threads: int = -1,
                     mask_dir: Path | None = None) -> None:
    """SIFT on the CPU. Without EXIF focal length COLMAP starts from focal = focal_factor * max(W, H). With
    `mask_dir`, no keypoint is detected where `mask_dir/<image name>.png` is 0."""
    reader = pycolmap.ImageReaderOptions()
    if mask_dir is not None:
        reader.mask_path = str(mask_dir)
    reader.camera_model = camera_model
    reader.default_focal_length_factor = float(focal_factor)
    if camera_params is not None:
        reader.camera_params = ",".join(f"{p:.10g}" for p in camera_params)
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.num_threads = num_threads
    extraction.sift.max_num_features = int(max_features)
    mode = pycolmap.CameraMode.SINGLE if shared_camera else pycolmap.CameraMode.PER_IMAGE
    pycolmap.extract_features(database, image_dir, image_names=list(names), camera_mode=mode,
                              reader_options=reader, extraction_options=extraction, device=pycolmap.Device.cpu)


def match_features(database: Path, mode: str = "sequential", *, overlap: int = 10, loop_detection: bool = False,
                   num_threads: int = -1, seed: int = 0) -> None:
    matching = pycolmap.FeatureMatchingOptions()
    matching.num_threads = num_threads
    verification = pycolmap.TwoViewGeometryOptions()
    verification.ransac.random_seed = int(seed)  # else each pair's RANSAC differs run to run
    if mode == "exhaustive":
        pycolmap.match_exhaustive(database, matching_options=matching, verification_options=verification,
                                  device=pycolmap.Device.cpu)
    elif mode == "sequential":
        pairing = pycolmap.SequentialPairingOptions()
        pairing.overlap = int(overlap)
        pairing.loop_detection = bool(loop_detection)
        pycolmap.match_sequential(database, matching_options=matching, pairing_options=pairing,
                                  verification_options=verification, device=pycolmap.Device.cpu)
    else:
        raise ValueError(f"unknown matching mode {mode!r}")


def set_focal_prior(database: Path, focal: float | None = None) -> None:
    """Mark every camera's focal length as a prior (optionally setting it first).

    Without EXIF, COLMAP flags the default focal as a guess: two-view verification then only fits
    fundamental matrices, and the global mapper, which needs calibrated pairs, fails on forward motion.
    Flagged as a prior, verification fits essential matrices with it (BA still refines it)."""
    db = pycolmap.Database.open(database)
    try:
        for camera in db.read_all_cameras():
            if focal is not None:
                for i in camera.focal_length_idxs():
                    camera.params[i] = float(focal)
            camera.has_prior_focal_length = True
            db.update_camera(camera)
    finally:
        db.close()


def reset_focal(database: Path, factor: float) -> None:
    """Start every camera's focal length at factor * max(W, H) again (still a guess, refined by BA)."""
    db = pycolmap.Database.open(database)
    try:
        for camera in db.read_all_cameras():
            for i in camera.focal_length_idxs():
                camera.params[i] = float(factor) * max(camera.width, camera.height)
            db.update_camera(camera)
    finally:
        db.close()


def calibrate_view_graph(database: Path, seed: int = 0) -> bool:
    """Estimate focal lengths from the fundamental matrices of all verified pairs and upgrade the pairs to
    calibrated ones (GLOMAP's view-graph calibration). False when too few pairs could be calibrated."""
    options = pycolmap.ViewGraphCalibrationOptions()
    options.random_seed = int(seed)
    return bool(pycolmap.calibrate_view_graph(database, options))


def camera_focals(database: Path) -> list[float]:
    db = pycolmap.Database.open(database)
    try:
        return [float(c.mean_focal_length()) for c in db.read_all_cameras()]
    finally:
        db.close()


@dataclass
class MapperSettings:
    seed: int = 0
    num_threads: int = -1
    refine_focal: bool = True
    refine_extra: bool = True
    # relaxed initialisation for forward motion (small triangulation angles between neighbouring frames)
    init_min_tri_angle: float = 16.0
    init_min_num_inliers: int = 100
    init_max_forward_motion: float = 0.95
    init_num_trials: int = 200
    init_pair: tuple[int, int] | None = None  # COLMAP image ids (1-based, in import order)
    min_model_size: int = 3


def incremental_mapping(database: Path, image_dir: Path, out_dir: Path, settings: MapperSettings) -> list:
    options = pycolmap.IncrementalPipelineOptions()
    options.random_seed = settings.seed
    options.num_threads = settings.num_threads
    options.min_model_size = settings.min_model_size
    options.ba_refine_focal_length = settings.refine_focal
    options.ba_refine_extra_params = settings.refine_extra
    options.init_num_trials = settings.init_num_trials
    if settings.init_pair is not None:
        options.init_image_id1, options.init_image_id2 = settings.init_pair
    mapper = options.mapper
    mapper.random_seed = settings.seed
    mapper.init_min_tri_angle = settings.init_min_tri_angle
    mapper.init_min_num_inliers = settings.init_min_num_inliers
    mapper.init_max_forward_motion = settings.init_max_forward_motion
    mapper.abs_pose_refine_focal_length = settings.refine_focal
    mapper.abs_pose_refine_extra_params = settings.refine_extra
    options.triangulation.random_seed = settings.seed
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    models = pycolmap.incremental_mapping(database, image_dir, out_dir, options=options)
    return list(models.values())


def global_mapping(database: Path, image_dir: Path, out_dir: Path, settings: MapperSettings) -> list:
    options = pycolmap.GlobalPipelineOptions()
    options.random_seed = settings.seed
    options.num_threads = settings.num_threads
    options.min_model_size = settings.min_model_size
    options.mapper.random_seed = settings.seed
    options.mapper.num_threads = settings.num_threads
    options.mapper.rotation_averaging.random_seed = settings.seed
    options.mapper.global_positioning.random_seed = settings.seed
    options.mapper.global_positioning.use_gpu = False
    options.mapper.bundle_adjustment.ceres.use_gpu = False
    options.mapper.bundle_adjustment.refine_focal_length = settings.refine_focal
    options.mapper.bundle_adjustment.refine_extra_params = settings.refine_extra
    # Ceres' threaded solvers sum in a varying order: with more than one thread the poses differ run to run
    options.mapper.bundle_adjustment.ceres.solver_options.num_threads = settings.num_threads
    options.mapper.retriangulation.random_seed = settings.seed
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    models = pycolmap.global_mapping(database, image_dir, out_dir, options=options)
    return list(models.values())


def map_in_fresh_process(kind: str, database: Path, image_dir: Path, out_dir: Path,
                         settings: MapperSettings) -> list:
    """Run one mapper (`incremental` or `global`) in a new Python process and read its models back.

    GLOMAP keeps state between calls inside one process: the second global mapping of the same database in
    a process gives another model than the first (seeds, threads and database all equal). A fresh process
    starts from nothing, so every attempt, and every `rewis recon` run, maps the same way; a crash of the
    native code then only fails this attempt. A plain `python -c` child rather than multiprocessing's
    spawn: spawn re-imports the caller's main module, which breaks scripts without a main guard.
    Raises RuntimeError when the mapper fails or the process dies."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    request = {"kind": kind, "database": str(database), "image_dir": str(image_dir), "out_dir": str(out_dir),
               "settings": asdict(settings)}
    code = "import json, sys; from recon.colmap_adapter import mapping_worker; mapping_worker(json.loads(sys.argv[1]))"
    package_root = str(Path(__file__).resolve().parents[1])
    env = os.environ | {"PYTHONPATH": os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)}
    # the child's output joins ours on fd 2, which quiet_native_logs points at the log file
    done = subprocess.run([sys.executable, "-c", code, json.dumps(request)], env=env, stdin=subprocess.DEVNULL,
                          stdout=2, stderr=2, check=False)  # failure is told by the missing result file
    result_file = out_dir / "result.json"
    if not result_file.is_file():
        raise RuntimeError(f"{kind} mapping process died (exit code {done.returncode})")
    result = json.loads(result_file.read_text())
    if "error" in result:
        raise RuntimeError(result["error"])
    return [read_model(Path(f)) for f in result["models"]]


def mapping_worker(request: dict) -> None:
    """In the child: map, write each model to out_dir/model<k> in pycolmap's order, list them in
    out_dir/result.json (or the error message)."""
    out_dir = Path(request["out_dir"])
    settings = request["settings"]
    if settings.get("init_pair") is not None:
        settings["init_pair"] = tuple(settings["init_pair"])
    settings = MapperSettings(**settings)
    pycolmap.logging.minloglevel = 1
    set_seed(settings.seed)
    mapper = global_mapping if request["kind"] == "global" else incremental_mapping
    try:
        models = mapper(Path(request["database"]), Path(request["image_dir"]), out_dir, settings)
    except RuntimeError as e:
        (out_dir / "result.json").write_text(json.dumps({"error": str(e)}))
        return
    folders = []
    for k, model in enumerate(models):
        folders.append(str(out_dir / f"model{k}"))
        write_model(model, Path(folders[-1]))
    (out_dir / "result.json").write_text(json.dumps({"models": folders}))


def num_registered(model) -> int:
    return int(model.num_reg_images())


def mean_reprojection_error(model) -> float:
    return float(model.compute_mean_reprojection_error())


def read_model(path: Path):
    """A COLMAP sparse model folder (cameras/images/points3D as .bin or .txt)."""
    path = Path(path)
    has_bin = all((path / f"{n}.bin").is_file() for n in ("cameras", "images", "points3D"))
    has_txt = all((path / f"{n}.txt").is_file() for n in ("cameras", "images", "points3D"))
    if not (has_bin or has_txt):
        raise InputError(f"{path}: no COLMAP model (cameras, images, points3D as .bin or .txt); point at the "
                         "folder holding them, e.g. sparse/0")
    model = pycolmap.Reconstruction()
    try:
        model.read_binary(path) if has_bin else model.read_text(path)
    except Exception as e:  # pycolmap raises plain RuntimeError/ValueError on broken files
        raise InputError(f"{path}: cannot read the COLMAP model ({e})") from None
    return model


def write_model(model, path: Path) -> None:
    Path(path).mkdir(parents=True, exist_ok=True)
    model.write(path)


def to_arrays(model) -> SfmModel:
    """Copy a pycolmap Reconstruction into numpy arrays (pycolmap has no bulk accessors, hence the loops)."""
    image_ids = sorted(model.reg_image_ids(), key=lambda i: model.images[i].name)
    frame_of_image = {image_id: f for f, image_id in enumerate(image_ids)}
    point_ids = np.array(sorted(model.point3D_ids()), np.int64)
    point_index = {int(pid): i for i, pid in enumerate(point_ids)}
    frames = [_frame_arrays(model, model.images[i]) for i in image_ids]
    obs = [_observations(model.images[i], frame_of_image[i], point_index) for i in image_ids]
    points = [model.points3D[int(pid)] for pid in point_ids]
    cams = [model.cameras[model.images[i].camera_id] for i in image_ids]
    return SfmModel(
        names=[model.images[i].name for i in image_ids],
        sizes=np.array([[c.width, c.height] for c in cams], np.int64).reshape(-1, 2),
        K=np.array([f[0] for f in frames], np.float64).reshape(-1, 3, 3),
        cam_from_world=np.array([f[1] for f in frames], np.float64).reshape(-1, 4, 4),
        camera_params=[list(map(float, c.params)) for c in cams],
        camera_model=cams[0].model_name if cams else "",
        xyz=np.array([p.xyz for p in points], np.float64).reshape(-1, 3),
        rgb=np.array([p.color for p in points], np.uint8).reshape(-1, 3),
        error=np.array([p.error for p in points], np.float64),
        track_length=np.array([p.track.length() for p in points], np.int64),
        obs_point=np.concatenate([o[0] for o in obs]) if obs else np.zeros(0, np.int64),
        obs_frame=np.concatenate([o[1] for o in obs]) if obs else np.zeros(0, np.int64),
        obs_xy=np.concatenate([o[2] for o in obs]) if obs else np.zeros((0, 2)),
    )


def _frame_arrays(model, image) -> tuple[np.ndarray, np.ndarray]:
    camera = model.cameras[image.camera_id]
    pose = np.eye(4)
    pose[:3] = image.cam_from_world().matrix()
    return camera.calibration_matrix(), pose


def _observations(image, frame: int, point_index: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    seen = [(p.xy[0], p.xy[1], point_index[p.point3D_id]) for p in image.points2D if p.has_point3D()]
    arr = np.array(seen, np.float64).reshape(-1, 3)
    return arr[:, 2].astype(np.int64), np.full(len(arr), frame, np.int64), arr[:, :2]


def pycolmap_cameras(model: SfmModel) -> list:
    return [pycolmap.Camera(model=model.camera_model, width=int(w), height=int(h), params=list(params))
            for (w, h), params in zip(model.sizes, model.camera_params)]


def project_observations(model: SfmModel) -> tuple[np.ndarray, np.ndarray]:
    """Each observation's point projected into its frame with the frame's full camera model (distortion
    included): (L, 2) pixels in COLMAP's convention, like obs_xy, and (L,) depth along the optical axis."""
    pixels, depth = np.zeros((len(model.obs_point), 2)), np.zeros(len(model.obs_point))
    order = np.argsort(model.obs_frame, kind="stable")
    bounds = np.searchsorted(model.obs_frame[order], np.arange(model.num_frames + 1))
    for f, camera in enumerate(pycolmap_cameras(model)):
        rows = order[bounds[f]:bounds[f + 1]]
        pose = model.cam_from_world[f]
        in_camera = model.xyz[model.obs_point[rows]] @ pose[:3, :3].T + pose[:3, 3]
        depth[rows] = in_camera[:, 2]
        if len(rows):
            pixels[rows] = camera.img_from_cam(in_camera, check_cheirality=False)
    return pixels, depth


def two_view_matches(database: Path, model: SfmModel, reach: int) -> dict[tuple[int, int], tuple]:
    """(i, j) -> the verified inlier matches of model frames i < j <= i + reach (in name order) as two (M, 2)
    arrays of normalised camera coordinates (undistorted with the model's refined cameras).

    The relative poses themselves are not usable: the database stores none (verification runs without
    compute_relative_pose, and turning it on would change what the mappers read), and decomposing its
    essential matrices here gave the twisted-pair solution (180 deg off) or errors of 24-163 deg on several
    pairs of every synthetic sequence tried. The matches are what the two-view geometry rests on; checking
    them against the model's relative pose needs no decomposition (recon/validate.py)."""
    cameras = pycolmap_cameras(model)
    matches = {}
    db = pycolmap.Database.open(database)
    try:
        ids = [db.read_image_with_name(name).image_id for name in model.names]
        for i in range(model.num_frames):
            for j in range(i + 1, min(i + reach + 1, model.num_frames)):
                if not db.exists_two_view_geometry(ids[i], ids[j]):
                    continue
                inliers = db.read_two_view_geometry(ids[i], ids[j]).inlier_matches
                if len(inliers):
                    first = db.read_keypoints(ids[i])[inliers[:, 0], :2].astype(np.float64)
                    second = db.read_keypoints(ids[j])[inliers[:, 1], :2].astype(np.float64)
                    matches[(i, j)] = (cameras[i].cam_from_img(first), cameras[j].cam_from_img(second))
    finally:
        db.close()
    return matches
