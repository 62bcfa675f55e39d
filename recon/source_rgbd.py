"""RGB-D source: depth + poses + intrinsics back-projected into the scene cloud ("real 3D").

Layouts: the rewis dataset folder (images/, depth/, cameras.json with poses; what `rewis synth` writes and
what NYU-style exports are converted to) and ScanNet exports (color/, depth/, pose/<i>.txt camera-to-world,
intrinsic/intrinsic_color.txt and intrinsic_depth.txt; depth is resampled onto the colour grid).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from recon.dataset import list_images, read_cameras, read_depth
from recon.errors import InputError
from recon.fusion import DepthView, FusionOptions, depth_confidence, fuse_views, vote_across_views
from recon.scene import Frame, Scene
from recon.sources import ReconOptions, Sequence, Stages, read_frame_depth, read_frame_pixels


def build(seq: Sequence, options: ReconOptions, stages: Stages) -> tuple[Scene, dict]:
    with stages("read cameras"):
        frames = scannet_frames(seq) if is_scannet(seq.root) else dataset_frames(seq)
    views = []
    with stages("read depth"):
        for frame in tqdm(frames, desc="rgbd frames", disable=not options.progress, leave=False):
            views.append(_view(frame, options, seq.root))
    with stages("fuse"):
        cloud, links = fuse_views(views, FusionOptions(drop_fraction=options.drop_fraction, stride=options.stride))
    if options.cross_view_labels:
        with stages("vote labels"):
            cloud.weak_label = vote_across_views(cloud.xyz, views)
    scene = Scene(classes=seq.classes, frames=frames, cloud=cloud, links=links, source="rgbd")
    return scene, {"frames_total": len(frames), "frames_registered": len(frames)}


def dataset_frames(seq: Sequence) -> list[Frame]:
    if not (seq.root / "cameras.json").is_file():
        raise InputError(f"{seq.root / 'cameras.json'}: missing; --source rgbd needs intrinsics and poses "
                         "(see docs/FORMATS.md, cameras.json) or a ScanNet export (color/ depth/ pose/ intrinsic/)")
    by_name = {c.image: c for c in read_cameras(seq.root)}
    frames = []
    for image in seq.images:
        cam = by_name.get(image.name)
        if cam is None or cam.cam_from_world is None:
            raise InputError(f"{seq.root / 'cameras.json'}: no pose for {image.name}; --source rgbd needs a "
                             "cam_from_world per frame (use --source images to estimate poses)")
        frames.append(seq.frame(image, cam.width, cam.height, cam.K, cam.cam_from_world))
    return frames


def _view(frame: Frame, options: ReconOptions, root: Path) -> DepthView:
    rgb, weak, label = read_frame_pixels(frame)
    depth = _scannet_depth(frame, root) if is_scannet(root) else read_frame_depth(frame)
    conf = depth_confidence(depth, options.depth_conf, options.depth_half_range)
    return DepthView(depth=depth, conf=conf, rgb=rgb, K=frame.K, cam_from_world=frame.cam_from_world,
                     weak_label=weak, label=label)


# ----------------------------------------------------------------------------------------------- ScanNet
def is_scannet(root: Path) -> bool:
    return all((Path(root) / d).is_dir() for d in ("color", "depth", "pose", "intrinsic"))


def scannet_frames(seq: Sequence) -> list[Frame]:
    root = seq.root
    K = _read_matrix(root / "intrinsic" / "intrinsic_color.txt")[:3, :3]
    frames = []
    for image in list_images(root / "color"):
        pose_path = root / "pose" / f"{image.stem}.txt"
        world_from_cam = _read_matrix(pose_path)
        if not np.isfinite(world_from_cam).all():
            continue  # ScanNet marks frames with lost tracking by -inf poses
        rgb_size = _image_size(image)
        frame = seq.frame(image, rgb_size[0], rgb_size[1], K, np.linalg.inv(world_from_cam))
        frame.depth = str((root / "depth" / f"{image.stem}.png").resolve())
        frames.append(frame)
    if not frames:
        raise InputError(f"{root}: ScanNet layout without usable frames (color/*.jpg with finite pose/*.txt)")
    return frames


def _scannet_depth(frame: Frame, root: Path) -> np.ndarray:
    """Depth resampled (nearest) onto the colour grid: both cameras share a centre, so pixels map by
    K_depth K_color^-1, independent of depth."""
    depth = read_depth(Path(frame.depth))
    K_depth = _read_matrix(Path(root) / "intrinsic" / "intrinsic_depth.txt")[:3, :3]
    v, u = np.mgrid[:frame.height, :frame.width]
    pix = np.stack([u + 0.5, v + 0.5, np.ones_like(u, float)], -1) @ (K_depth @ np.linalg.inv(frame.K)).T
    du, dv = np.floor(pix[..., 0]).astype(int), np.floor(pix[..., 1]).astype(int)
    inside = (du >= 0) & (du < depth.shape[1]) & (dv >= 0) & (dv < depth.shape[0])
    out = np.zeros((frame.height, frame.width), np.float32)
    out[inside] = depth[dv[inside], du[inside]]
    return out


def _read_matrix(path: Path) -> np.ndarray:
    if not path.is_file():
        raise InputError(f"{path}: file not found (ScanNet layout needs it)")
    try:
        return np.loadtxt(path, dtype=np.float64).reshape(4, 4)
    except ValueError as e:
        raise InputError(f"{path}: expected a 4x4 matrix of numbers ({e})") from None


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        return im.size

