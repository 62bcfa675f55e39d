"""Images source: pycolmap SfM (recon/sfm.py) -> registered frames, pose validation (recon/validate.py), SfM
points with track links from the frames that pass, and optionally dense plane-sweep stereo (recon/stereo.py)
fused into the same cloud (recon/fusion.py). Frames that fail stay in the scene without links."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from recon.colmap_adapter import SfmModel, two_view_matches
from recon.dataset import exif_orientation, read_cameras, read_label
from recon.errors import InputError
from recon.fusion import densify, vote_labels
from recon.scale import ScaleRequest, metric_scale
from recon.scene import UNLABELED, Cloud, Links, Scene
from recon.moving import write_moving_masks
from recon.sfm import SfmOptions, point_confidence, run_sfm
from recon.sources import ReconOptions, Sequence, Stages, image_sizes
from recon.validate import PoseChecks, validate_poses, without_frames


def build(seq: Sequence, options: ReconOptions, stages: Stages) -> tuple[Scene, dict]:
    from recon import windows  # it builds on this module's helpers

    images = seq.images
    if len(images) < 2:
        raise InputError(f"{seq.image_dir}: only {len(images)} image; SfM needs at least 2 overlapping views "
                         "(3 or more recommended)")
    with stages("read images"):
        sizes = image_sizes(images)
    check_upright(images)  # first: a rotated file also looks like a size mismatch
    check_sizes(images, sizes, options.shared_camera, dense=options.dense is not False)
    check_known_frames(options.known_distance, images)
    windows.check_options(options)
    sfm_options = sfm_options_from(options, seq)
    work = Path(tempfile.mkdtemp(prefix="rewis-sfm-"))
    try:
        masks = moving_masks(seq, images, sizes, work / "masks", options)
        sfm_options.mask_dir = work / "masks" if masks else None
        if options.windows == "always":
            return windows.build_windows(seq, work, sfm_options, options, stages, masks, whole=None)
        result = run_sfm(seq.image_dir, [p.name for p in images], work, sfm_options, stages)
        registered = 0 if result.model is None else result.model.num_frames
        if not windows.eligible(options, len(images)):  # else a failed whole model falls back to windows
            check_registered(registered, len(images), options.min_registered, result)
        with stages("validate poses"):
            rejected = {} if result.model is None else \
                validate_model(result.model, result.database, [p.name for p in images], PoseChecks())
        if windows.wanted(options, registered - len(rejected), len(images)):
            whole = {"registered": registered, "validated": registered - len(rejected)}
            voter = None if result.model is None else windows.whole_voter(seq, result.model, rejected)
            return windows.build_windows(seq, work, sfm_options, options, stages, masks, whole, voter)
        verification = None
        if windows.verifies(options, len(images)):
            verdict = windows.verify_whole(seq, work, sfm_options, options, stages, masks, result.model, rejected)
            if verdict.windowed is not None:
                return verdict.windowed
            rejected, verification = {**rejected, **verdict.rejected}, verdict.info
            rejected = dict(sorted(rejected.items()))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    passed = registered - len(rejected)
    check_registered(passed, len(images), options.min_registered, result, rejected)
    with stages("sfm scene"):
        scene = scene_from_model(seq, without_frames(result.model, rejected), "images")
    info = {"frames_total": len(images), "frames_registered": passed, "frames_sfm_registered": registered,
            "frames_rejected": [{"image": result.model.names[f], "reasons": r} for f, r in rejected.items()],
            "matching": result.matching, "attempts": result.attempts, "best_attempt": result.best,
            "sfm_points": len(scene.cloud), "camera_model": result.model.camera_model,
            "camera_params": result.model.camera_params[0], "moving_masks": masks, "verification": verification}
    sfm_points = len(scene.cloud)
    if options.dense is not False:
        scene, info["dense"] = densify(scene, options, stages)
    # after fusion: a few hundred SfM points rarely hold enough of the ground
    with stages("metric scale"):
        info["scale"] = metric_scale(scene, scale_request(options), sfm_points)
    if rejected:  # after densifying and scaling, which must not see their poses
        scene = with_unlinked_frames(scene, seq, result.model, list(rejected), info["scale"]["factor"])
    return scene, info


def moving_masks(seq: Sequence, images: list[Path], sizes: np.ndarray, out: Path, options: ReconOptions) -> dict | None:
    """Keypoint masks over the moving classes that the frames' labels and weak labels mark (recon/moving.py)."""
    kinds = {"auto": ("label", "weak_label"), "weak": ("weak_label",), "off": ()}[options.mask_moving]
    frames = []
    for image, (width, height) in zip(images, sizes):
        side = seq.side_files(image)
        frames.append((image, (int(width), int(height)), [Path(side[k]) for k in kinds if side[k]]))
    return write_moving_masks(frames, seq.classes, out, options.moving_classes)


def validate_model(model: SfmModel, database: Path, names: list[str], checks: PoseChecks) -> dict[int, list[str]]:
    """Frame index -> reasons, for the registered frames whose pose fails validation (recon/validate.py)."""
    position = {name: i for i, name in enumerate(names)}
    positions = np.array([position[name] for name in model.names])
    return validate_poses(model, positions, two_view_matches(database, model, checks.two_view_reach), checks)


def with_unlinked_frames(scene: Scene, seq: Sequence, model: SfmModel, frames: list[int], scale: float) -> Scene:
    """`scene` with the given model frames put back in name order, without links: their images still train
    the 2D network, while their untrusted poses (kept, scaled like the scene's) serve no 3D."""
    poses = model.cam_from_world[frames].copy()
    poses[:, :3, 3] *= scale
    extra = [seq.frame(seq.image_dir / model.names[f], *model.sizes[f], model.K[f], pose)
             for f, pose in zip(frames, poses)]
    merged = scene.frames + extra
    order = np.argsort([Path(f.image).name for f in merged], kind="stable")
    new_index = np.argsort(order)[:len(scene.frames)]  # old frame -> its place in the merged order
    counts = np.zeros(len(merged), np.int64)
    counts[new_index] = np.diff(scene.links.offsets)
    scene.links.offsets = np.concatenate([[0], np.cumsum(counts)])
    linked = scene.cloud.source_frame >= 0
    scene.cloud.source_frame[linked] = new_index[scene.cloud.source_frame[linked]]
    scene.frames = [merged[i] for i in order]
    return scene


def scale_request(options: ReconOptions) -> ScaleRequest:
    return ScaleRequest(scale=options.scale, known_distance=options.known_distance,
                        camera_height=options.camera_height, use_depth=options.depth_scale)


def check_known_frames(known_distance: tuple | None, images: list[Path]) -> None:
    """Before minutes of SfM: both frames of --known-distance must be images of the sequence."""
    if known_distance is None:
        return
    names = {p.name for p in images} | {p.stem for p in images}
    for name in known_distance[:2]:
        if name not in names:
            raise InputError(f"--known-distance: no frame {name!r} in {images[0].parent}; give two image file "
                             f"names or stems, such as {images[0].stem} and {images[-1].stem}")
    if known_distance[0] == known_distance[1]:
        raise InputError(f"--known-distance: {known_distance[0]} given twice; name two different frames")


def sfm_options_from(options: ReconOptions, seq: Sequence) -> SfmOptions:
    return SfmOptions(matching=options.matching, exhaustive_max=options.exhaustive_max, overlap=options.overlap,
                      loop_detection=options.loop_detection, shared_camera=options.shared_camera,
                      camera_params=known_intrinsics(seq) if options.use_intrinsics else None,
                      focal_factor=options.focal_factor, max_features=options.max_features, seed=options.seed,
                      mapper=options.mapper, robust=options.robust, num_threads=options.num_threads,
                      deterministic=options.deterministic)


def known_intrinsics(seq: Sequence) -> list[float]:
    """PINHOLE fx, fy, cx, cy from SEQ/cameras.json (one shared camera)."""
    if not (seq.root / "cameras.json").is_file():
        raise InputError(f"{seq.root / 'cameras.json'}: missing; --use-intrinsics needs it (see docs/FORMATS.md)")
    cams = read_cameras(seq.root)
    if not cams:
        raise InputError(f"{seq.root / 'cameras.json'}: no frames listed")
    K = cams[0].K
    return [K[0, 0], K[1, 1], K[0, 2], K[1, 2]]


def check_sizes(images: list[Path], sizes: np.ndarray, shared_camera: bool, dense: bool) -> None:
    if len(np.unique(sizes, axis=0)) == 1:
        return
    other = int(np.argmax((sizes != sizes[0]).any(axis=1)))
    differ = (f"{images[0].parent}: images differ in size ({images[0].name} is {sizes[0][0]}x{sizes[0][1]}, "
              f"{images[other].name} is {sizes[other][0]}x{sizes[other][1]})")
    if shared_camera:
        raise InputError(f"{differ} but one camera is shared; resize them to one size or pass --camera per-image")
    if dense:  # the plane sweep stacks frames: say so now rather than after minutes of SfM
        raise InputError(f"{differ}; dense stereo needs one size: resize them or pass --no-dense")


def check_upright(images: list[Path]) -> None:
    """COLMAP reads stored pixels while every other reader applies EXIF orientation: refuse rotated files
    rather than reconstruct one pixel grid and label another."""
    rotated = next((p for p in images if exif_orientation(p) != 1), None)
    if rotated is not None:
        raise InputError(f"{rotated}: EXIF says the image is stored rotated (orientation {exif_orientation(rotated)}); "
                         "save the frames upright first (e.g. 'mogrify -auto-orient *.jpg')")


def check_registered(registered: int, total: int, min_fraction: float, result,
                     rejected: dict[int, list[str]] | None = None) -> None:
    needed = max(2, int(np.ceil(min_fraction * total)))
    if registered >= needed:
        return
    tried = ", ".join(f"{a['name']}: {a['registered']}" for a in result.attempts) or "none"
    if rejected:
        examples = "; ".join(f"{result.model.names[f]}: {reasons[0]}" for f, reasons in list(rejected.items())[:3])
        what = (f"only {registered} of {total} frames passed pose validation ({len(rejected)} registered frames "
                f"rejected, e.g. {examples})")
    else:
        what = f"SfM registered only {registered} of {total} frames"
    raise InputError(f"{what} (need {needed}; attempts {tried}); "
                     "try more overlap between frames (--overlap, fewer skipped frames), --matching exhaustive, "
                     "--use-intrinsics when cameras.json has K, --focal-factor, or --mapper global")


def scene_from_model(seq: Sequence, model: SfmModel, source: str) -> Scene:
    """Registered frames, SfM points (conf from track length and reprojection error) and track links."""
    by_name = {p.name: p for p in seq.images}
    frames = [seq.frame(by_name[n] if n in by_name else seq.image_dir / n, w, h, K, pose)
              for n, (w, h), K, pose in zip(model.names, model.sizes, model.K, model.cam_from_world)]
    u = np.clip(np.floor(model.obs_xy[:, 0]), 0, model.sizes[model.obs_frame, 0] - 1).astype(np.int32)
    v = np.clip(np.floor(model.obs_xy[:, 1]), 0, model.sizes[model.obs_frame, 1] - 1).astype(np.int32)
    offsets = np.zeros(len(frames) + 1, np.int64)
    np.cumsum(np.bincount(model.obs_frame, minlength=len(frames)), out=offsets[1:])
    order = np.argsort(model.obs_frame, kind="stable")
    links = Links(offsets=offsets, point=model.obs_point[order], v=v[order], u=u[order])
    n = len(model.xyz)
    weak = _vote_at_observations(frames, links, "weak_label", n)
    label = _vote_at_observations(frames, links, "label", n) if any(f.label for f in frames) else None
    source_frame = np.full(n, np.iinfo(np.int32).max, np.int64)
    np.minimum.at(source_frame, model.obs_point, model.obs_frame)
    cloud = Cloud(xyz=model.xyz.astype(np.float32), rgb=model.rgb, conf=point_confidence(model.track_length, model.error),
                  weak_label=weak, label=label,
                  source_frame=np.where(source_frame == np.iinfo(np.int32).max, -1, source_frame).astype(np.int32))
    return Scene(classes=seq.classes, frames=frames, cloud=cloud, links=links, source=source)


def _vote_at_observations(frames, links: Links, attr: str, num_points: int) -> np.ndarray:
    """Majority over all pixels a point is observed at, of the per-frame label image `attr`."""
    values = np.full(len(links.point), UNLABELED, np.uint8)
    for f, frame in enumerate(frames):
        path = getattr(frame, attr)
        if path:
            s = slice(int(links.offsets[f]), int(links.offsets[f + 1]))
            values[s] = read_label(path)[links.v[s], links.u[s]]
    return vote_labels(links.point, values, num_points)
