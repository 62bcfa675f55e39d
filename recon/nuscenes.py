"""nuScenes sample reader for the layout of shared/data/nuscenes_sample (one LiDAR sweep, six cameras).

Folder: LIDAR_TOP.pcd.bin (float32 N x 5: x, y, z, intensity, ring; LiDAR frame), CAM_*.jpg, sample.json
(per camera K, lidar2cam, cam2ego; lidar2ego; ego2global; boxes). Pixel of a LiDAR point in camera c:
K_c @ lidar2cam_c @ [x y z 1] (recon.projection with cam_from_world = lidar2cam, world = LiDAR frame).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from recon.errors import InputError

LIDAR_COLUMNS = 5


@dataclass(frozen=True)
class Camera:
    name: str
    image: Path
    width: int
    height: int
    K: np.ndarray  # (3, 3)
    lidar2cam: np.ndarray  # (4, 4)
    cam2ego: np.ndarray  # (4, 4)


@dataclass(frozen=True)
class Sample:
    root: Path
    points: np.ndarray  # float32 (N, 5)
    cameras: tuple[Camera, ...]
    lidar2ego: np.ndarray
    ego2global: np.ndarray
    meta: dict = field(repr=False)  # the whole sample.json (boxes, classes, tokens)

    @property
    def xyz(self) -> np.ndarray:
        return self.points[:, :3]

    def stacked_cameras(self) -> tuple[np.ndarray, np.ndarray, list[int], list[int]]:
        """K (V, 3, 3), cam_from_lidar (V, 4, 4), widths, heights, in camera order, for recon.projection."""
        return (np.stack([c.K for c in self.cameras]), np.stack([c.lidar2cam for c in self.cameras]),
                [c.width for c in self.cameras], [c.height for c in self.cameras])


def read_sample(folder: str | Path) -> Sample:
    root = Path(folder)
    meta_path = root / "sample.json"
    if not meta_path.is_file():
        raise InputError(f"{meta_path}: file not found (expected a nuScenes sample folder)")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as err:
        raise InputError(f"{meta_path}: not valid JSON ({err})") from None
    lidar = _field(meta, "lidar", meta_path)
    points = _read_points(root / str(_field(lidar, "file", meta_path, "lidar.file")))
    cameras = tuple(_camera(name, spec, root, meta_path) for name, spec in _field(meta, "cameras", meta_path).items())
    return Sample(root=root, points=points, cameras=cameras,
                  lidar2ego=_matrix(lidar, "lidar2ego", (4, 4), meta_path, "lidar.lidar2ego"),
                  ego2global=_matrix(meta, "ego2global", (4, 4), meta_path), meta=meta)


def _read_points(path: Path) -> np.ndarray:
    if not path.is_file():
        raise InputError(f"{path}: LiDAR file not found")
    data = np.fromfile(path, dtype=np.float32)
    if data.size % LIDAR_COLUMNS:
        raise InputError(f"{path}: {data.size} float32 values is not a multiple of {LIDAR_COLUMNS} columns")
    return data.reshape(-1, LIDAR_COLUMNS)


def _camera(name: str, spec: dict, root: Path, where: Path) -> Camera:
    image = root / str(_field(spec, "file", where, f"cameras.{name}.file"))
    if not image.is_file():
        raise InputError(f"{image}: image of camera {name} not found")
    with Image.open(image) as im:  # reads the header only
        width, height = im.size
    return Camera(name=name, image=image, width=width, height=height,
                  K=_matrix(spec, "K", (3, 3), where, f"cameras.{name}.K"),
                  lidar2cam=_matrix(spec, "lidar2cam", (4, 4), where, f"cameras.{name}.lidar2cam"),
                  cam2ego=_matrix(spec, "cam2ego", (4, 4), where, f"cameras.{name}.cam2ego"))


def _field(data: dict, key: str, where: Path, name: str | None = None):
    if not isinstance(data, dict) or key not in data:
        raise InputError(f"{where}: field '{name or key}' is missing")
    return data[key]


def _matrix(data: dict, key: str, shape: tuple[int, int], where: Path, name: str | None = None) -> np.ndarray:
    try:
        m = np.asarray(_field(data, key, where, name), dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{where}: field '{name or key}' must be a {shape[0]}x{shape[1]} matrix of numbers") from None
    if m.shape != shape:
        raise InputError(f"{where}: field '{name or key}' has shape {m.shape}, expected {shape}")
    return m
