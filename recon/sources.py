"""What every reconstruction source shares: options, stage timing, the sequence folder and its side files.

A source module (`recon/source_<kind>.py`) exposes `build(seq: Sequence, options: ReconOptions,
stages: Stages) -> tuple[Scene, dict]`; the dict is merged into report.json.
"""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recon.dataset import (ClassList, find_beside, list_images, read_classes, read_depth, read_label, read_rgb)
from recon.errors import InputError
from recon.scene import Frame

SOURCE_KINDS = ("images", "rgbd", "lidar", "colmap")
FALLBACK_CLASSES = ClassList(names=("object",), palette=((128, 128, 128),))


@dataclass
class ReconOptions:
    source: str | None = None  # None = detect
    dense: bool | None = None  # None = on for images, off elsewhere
    weak_kind: str | None = None  # None = scribbles if present
    progress: bool = True
    # fusion (rgbd, dense stereo)
    stride: int = 2
    drop_fraction: float = 0.1
    depth_conf: str = "range"
    depth_half_range: float = 10.0
    cross_view_labels: bool = True  # weak label of a point = majority over every frame that sees it
    # images (SfM)
    matching: str = "auto"  # auto | sequential | exhaustive
    exhaustive_max: int = 20  # auto: exhaustive up to this many frames
    overlap: int = 10
    loop_detection: bool = False
    shared_camera: bool = True
    # no SfM keypoints on classes that move (recon/moving.py) where marked by: auto = the dense labels and weak
    # labels the frames have, weak = weak labels only (a benchmark that must not see dense labels), off = nowhere
    mask_moving: str = "auto"
    moving_classes: tuple[str, ...] | None = None  # the classes that move; None = classes.json's `moving` (or none)
    use_intrinsics: bool = False  # take K from SEQ/cameras.json instead of self-calibrating
    camera_height: float = 1.6  # metres above the ground: gives SfM's arbitrary scale metres (0 = no ground plane)
    scale: float | None = None  # the user's factor from SfM units to metres (wins over everything else)
    known_distance: tuple[str, str, float] | None = None  # two frames and the metres between their cameras
    depth_scale: bool = True  # scale from SEQ/depth/ when the images have it (before the ground plane)
    stereo_max_side: int = 480  # dense stereo's working resolution: long side at most this many pixels (0 = no cap)
    points_per_frame: int = 40000  # dense points kept per frame on average, by voxel merging (0 = keep all); above
    #                               what stride-1 stereo gives at 240x180, so the benchmark scenes stay unchanged
    focal_factor: float = 1.2  # focal prior = factor * max(W, H) when EXIF has none
    max_features: int = 8192
    seed: int = 0
    mapper: str = "auto"  # incremental | global | auto: global with known intrinsics (recon/sfm.py)
    robust: bool = True  # retries, relaxed initialisation, global fallback (recon/sfm.py)
    min_registered: float = 0.5  # fail below this fraction of registered frames
    # ordered sequences: reconstruct overlapping windows of window_frames frames (half overlap) as local
    # sub-clouds when the whole-sequence model fails validation (auto), always, or never (recon/windows.py)
    windows: str = "auto"
    window_frames: int = 24
    num_threads: int = -1
    deterministic: bool = True  # single-threaded mapping: same model on every run
    # colmap import
    model: str | None = None  # sparse model folder; None = search SEQ/sparse[/0]
    # lidar
    max_scans: int | None = None  # odometry layout: accumulate at most this many scans
    scan: str | None = None  # KITTI object layout: which scan (file stem); None = the first
    visibility: str = "zbuffer"  # zbuffer | none (in image and in front of the camera only)


class Stages:
    """Wall time per named stage, with a one-line progress message per stage on stderr."""

    def __init__(self, progress: bool = True):
        self.times: dict[str, float] = {}
        self.progress = progress

    @contextlib.contextmanager
    def __call__(self, name: str):
        if self.progress:
            print(f"[recon] {name} ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        try:
            yield
        finally:
            self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - start
            if self.progress:
                print(f"[recon] {name} done in {self.times[name]:.1f} s", file=sys.stderr, flush=True)


@dataclass
class Sequence:
    """A sequence folder: its images, classes and which weak-label kind to read."""

    root: Path
    image_dir: Path
    images: list[Path]
    classes: ClassList
    weak_kind: str | None

    def side_files(self, image: Path) -> dict:
        stem = image.stem
        weak = find_beside(self.root, f"weak/{self.weak_kind}", stem) if self.weak_kind else None
        return {"depth": _path_or_none(find_beside(self.root, "depth", stem, (".npy", ".png"))),
                "label": _path_or_none(find_beside(self.root, "labels", stem)),
                "weak_label": _path_or_none(weak)}

    def frame(self, image: Path, width: int, height: int, K: np.ndarray, cam_from_world: np.ndarray) -> Frame:
        return Frame(image=str(image.resolve()), width=int(width), height=int(height), K=np.asarray(K, np.float64),
                     cam_from_world=np.asarray(cam_from_world, np.float64), **self.side_files(image))


def open_sequence(root: Path, weak_kind: str | None = None, need_images: bool = True) -> Sequence:
    """SEQ/images/* (the dataset layout), SEQ/color/* (ScanNet exports) or a plain folder of images."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: folder not found")
    image_dir = next((root / d for d in ("images", "color") if (root / d).is_dir()), root)
    images = list_images(image_dir)
    if need_images and not images:
        raise InputError(f"{root}: no images found (looked in {image_dir}); put png/jpg frames in {root / 'images'}")
    classes = read_classes(root) if (root / "classes.json").is_file() else FALLBACK_CLASSES
    return Sequence(root=root, image_dir=image_dir, images=images, classes=classes,
                    weak_kind=pick_weak_kind(root, weak_kind))


def pick_weak_kind(root: Path, requested: str | None) -> str | None:
    if requested is not None:
        if not (root / "weak" / requested).is_dir():
            raise InputError(f"{root / 'weak' / requested}: no such weak-label folder; create it with "
                             f"'rewis labels {root} --kind {requested}' or drop --weak-kind")
        return requested
    return "scribbles" if (root / "weak" / "scribbles").is_dir() else None


def read_frame_pixels(frame: Frame) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """rgb (H, W, 3), weak label and GT label (H, W) or None, checked against the frame's size."""
    rgb = read_rgb(frame.image)
    arrays = [rgb] + [read_label(p) if p else None for p in (frame.weak_label, frame.label)]
    for path, arr in zip((frame.image, frame.weak_label, frame.label), arrays):
        if arr is not None and arr.shape[:2] != (frame.height, frame.width):
            raise InputError(f"{path}: size {arr.shape[1]}x{arr.shape[0]} differs from the frame's "
                             f"{frame.width}x{frame.height}; labels must match their image")
    return rgb, arrays[1], arrays[2]


def read_frame_depth(frame: Frame) -> np.ndarray:
    if frame.depth is None:
        raise InputError(f"{frame.image}: no depth map beside it (expected depth/<stem>.npy or .png)")
    depth = read_depth(Path(frame.depth))
    if depth.shape != (frame.height, frame.width):
        raise InputError(f"{frame.depth}: depth is {depth.shape[1]}x{depth.shape[0]}, image is "
                         f"{frame.width}x{frame.height}; depth must be registered to the image")
    return depth


def image_sizes(images: list[Path]) -> np.ndarray:
    """(N, 2) width, height of every image, opening each fully so unreadable files fail here, early."""
    return np.array([read_rgb(p).shape[1::-1] for p in images], np.int64).reshape(-1, 2)


def _path_or_none(p: Path | None) -> str | None:
    return None if p is None else str(p.resolve())
