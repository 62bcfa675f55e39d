"""LiDAR source: scans (accumulated in one world frame with their poses) linked to camera pixels by
projection with a z-buffer (recon/projection.py). Layouts:

- KITTI odometry (SEQ/lidar/ as `rewis synth --lidar` writes it, or a folder with calib.txt, poses.txt,
  velodyne/): every scan moved to the world (camera 0 of the first scan), camera P2 at every pose;
- KITTI object benchmark (calib/, velodyne/, image_2/): one scan (--scan, default the first) and its image;
- nuScenes sample (sample.json, LIDAR_TOP.pcd.bin, CAM_*.jpg): one sweep and its six cameras.

Per point: GT class from labels/*.label where present, weak label from lidar/scribbles/*.label or else the
2D weak labels voted over the linked pixels, colour from the first camera that sees it, confidence 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recon import kitti, nuscenes
from recon.dataset import find_beside, read_label, read_rgb
from recon.errors import InputError
from recon.fusion import vote_labels
from recon.projection import compute_links
from recon.scene import UNLABELED, Cloud, Frame, Links, Scene
from recon.sources import ReconOptions, Sequence, Stages

MIN_DEPTH = {"odometry": 0.1, "object": 0.1, "nuscenes": 0.5}  # metres, as in shared/data/README.md


@dataclass
class Scans:
    xyz: np.ndarray  # (N, 3) world
    scan: np.ndarray  # (N,) scan index
    label: np.ndarray | None  # (N,) uint8 GT
    weak: np.ndarray | None  # (N,) uint8 LiDAR scribbles
    frames: list[Frame]
    layout: str


def build(seq: Sequence, options: ReconOptions, stages: Stages) -> tuple[Scene, dict]:
    with stages("read scans"):
        scans = read_scans(seq, options)
    with stages("project"):
        links = project(scans, options)
    with stages("colour and labels"):
        cloud = make_cloud(scans, links)
    scene = Scene(classes=seq.classes, frames=scans.frames, cloud=cloud, links=links, source="lidar")
    per_frame = np.diff(links.offsets).tolist()
    return scene, {"frames_total": len(scans.frames), "frames_registered": len(scans.frames), "layout": scans.layout,
                   "scans": max(1, int(scans.scan.max(initial=-1) + 1)), "links_per_frame": per_frame,
                   "points_linked": int(len(np.unique(links.point)))}


def read_scans(seq: Sequence, options: ReconOptions) -> Scans:
    root = seq.root
    if (root / "sample.json").is_file():
        return nuscenes_scans(seq)
    for folder in (root, root / "training"):
        if all((folder / d).is_dir() for d in ("calib", "velodyne", "image_2")):
            return object_scans(seq, folder, options.scan)
    for folder in (root / "lidar", root):
        if (folder / "calib.txt").is_file() and (folder / "velodyne").is_dir():
            return odometry_scans(seq, folder, options.max_scans)
    raise InputError(f"{root}: no LiDAR data found; expected SEQ/lidar/ (KITTI odometry: calib.txt, poses.txt, "
                     "velodyne/), a KITTI object folder (calib/, velodyne/, image_2/) or a nuScenes sample.json")


def odometry_scans(seq: Sequence, folder: Path, max_scans: int | None) -> Scans:
    calib = kitti.read_odometry_calib(folder / "calib.txt")
    poses = kitti.read_poses(folder / "poses.txt")
    bins = sorted((folder / "velodyne").glob("*.bin"))[:max_scans]
    pose_index = _scan_numbers(bins, len(poses), folder)  # poses.txt line i belongs to scan i, not to list slot i
    K, cam_from_world = kitti.lidar_cameras(calib, poses[pose_index], "P2")
    world_from_velo = kitti.lidar_to_world(calib, poses[pose_index])
    images = _odometry_images(seq, folder, bins)
    xyz, scan, label, weak = [], [], [], []
    for i, path in enumerate(bins):
        pts = kitti.read_velodyne(path)[:, :3].astype(np.float64)
        xyz.append(pts @ world_from_velo[i, :3, :3].T + world_from_velo[i, :3, 3])
        scan.append(np.full(len(pts), i, np.int32))
        label.append(_label_file(folder / "labels" / f"{path.stem}.label", len(pts)))
        weak.append(_label_file(folder / "scribbles" / f"{path.stem}.label", len(pts)))
    frames = [_frame(seq, img, K, pose) for img, pose in zip(images, cam_from_world)]
    return Scans(xyz=np.concatenate(xyz), scan=np.concatenate(scan), label=_all_or_none(label),
                 weak=_all_or_none(weak), frames=frames, layout="odometry")


def _scan_numbers(bins: list[Path], num_poses: int, folder: Path) -> np.ndarray:
    if not bins:
        raise InputError(f"{folder / 'velodyne'}: no .bin scans")
    if not all(b.stem.isdigit() for b in bins):
        bad = next(b for b in bins if not b.stem.isdigit())
        raise InputError(f"{bad}: scan files must be named by their number (000000.bin, ...) to find their pose")
    index = np.array([int(b.stem) for b in bins])
    if index.max() >= num_poses:
        raise InputError(f"{folder / 'poses.txt'}: {num_poses} poses, but scan {bins[int(index.argmax())].name} "
                         f"needs line {int(index.max()) + 1}; poses.txt needs one line per scan")
    return index


def _odometry_images(seq: Sequence, folder: Path, bins: list[Path]) -> list[Path]:
    """The image of each scan by its number: SEQ/images/<stem> (beside labels and weak labels) when the LiDAR
    folder sits inside a sequence folder, else lidar/image_2/<stem>."""
    def image_of(scan: Path) -> Path | None:
        beside = find_beside(seq.root, "images", scan.stem, (".png", ".jpg")) if folder != seq.root else None
        return beside or find_beside(folder, "image_2", scan.stem, (".png", ".jpg"))

    images = [image_of(b) for b in bins]
    if any(i is None for i in images):
        raise InputError(f"{folder / 'image_2'}: no image for scan {bins[images.index(None)].stem}")
    return images


def object_scans(seq: Sequence, folder: Path, scan_id: str | None) -> Scans:
    stems = [p.stem for p in sorted((folder / "velodyne").glob("*.bin"))]
    if not stems:
        raise InputError(f"{folder / 'velodyne'}: no .bin scans")
    stem = scan_id if scan_id is not None else stems[0]
    if stem not in stems:
        raise InputError(f"--scan {scan_id}: not in {folder / 'velodyne'} (have {', '.join(stems[:5])} ...)")
    calib = kitti.read_object_calib(folder / "calib" / f"{stem}.txt")
    K, cam_from_lidar = calib.camera("P2")
    xyz = kitti.read_velodyne(folder / "velodyne" / f"{stem}.bin")[:, :3].astype(np.float64)
    image = find_beside(folder, "image_2", stem, (".png", ".jpg"))
    if image is None:
        raise InputError(f"{folder / 'image_2'}: no image for scan {stem}")
    return Scans(xyz=xyz, scan=np.zeros(len(xyz), np.int32), label=None, weak=None,
                 frames=[_frame(seq, image, K, cam_from_lidar)], layout="object")


def nuscenes_scans(seq: Sequence) -> Scans:
    sample = nuscenes.read_sample(seq.root)
    frames = [_frame(seq, cam.image, cam.K, cam.lidar2cam) for cam in sample.cameras]
    xyz = sample.xyz.astype(np.float64)
    # one sweep seen by six cameras: no point comes from one frame in particular
    return Scans(xyz=xyz, scan=np.full(len(xyz), -1, np.int32), label=None, weak=None, frames=frames,
                 layout="nuscenes")


def project(scans: Scans, options: ReconOptions) -> Links:
    frames = scans.frames
    per_view = compute_links(scans.xyz, np.stack([f.K for f in frames]), np.stack([f.cam_from_world for f in frames]),
                             [f.width for f in frames], [f.height for f in frames], visibility=options.visibility,
                             min_depth=MIN_DEPTH[scans.layout])
    return Links.from_per_frame([tuple(t.cpu().numpy() for t in view) for view in per_view])


def make_cloud(scans: Scans, links: Links) -> Cloud:
    n = len(scans.xyz)
    frame_of_link = np.repeat(np.arange(links.num_frames), np.diff(links.offsets))
    rgb = np.full((n, 3), 128, np.uint8)
    # colour from the first link of each point (links are ordered by frame)
    first = np.unique(links.point, return_index=True)[1]
    for f, frame in enumerate(scans.frames):
        mine = first[frame_of_link[first] == f]
        if len(mine):
            rgb[links.point[mine]] = read_rgb(frame.image)[links.v[mine], links.u[mine]]
    weak = scans.weak if scans.weak is not None else _vote(scans.frames, links, "weak_label", n)
    return Cloud(xyz=scans.xyz.astype(np.float32), rgb=rgb, conf=np.ones(n, np.float32), weak_label=weak,
                 label=scans.label, source_frame=scans.scan.astype(np.int32))


def _vote(frames: list[Frame], links: Links, attr: str, n: int) -> np.ndarray:
    values = np.full(len(links.point), UNLABELED, np.uint8)
    for f, frame in enumerate(frames):
        if getattr(frame, attr):
            s = slice(int(links.offsets[f]), int(links.offsets[f + 1]))
            values[s] = read_label(getattr(frame, attr))[links.v[s], links.u[s]]
    return vote_labels(links.point, values, n)


def _frame(seq: Sequence, image: Path, K: np.ndarray, cam_from_world: np.ndarray) -> Frame:
    from PIL import Image

    with Image.open(image) as im:
        width, height = im.size
    return seq.frame(Path(image), width, height, K, cam_from_world)


def _label_file(path: Path, n: int) -> np.ndarray | None:
    if not path.is_file():
        return None
    cls, _ = kitti.read_labels(path, n)
    return np.where(cls < UNLABELED, cls, UNLABELED).astype(np.uint8)


def _all_or_none(parts: list) -> np.ndarray | None:
    return None if any(p is None for p in parts) else np.concatenate(parts)

