"""Scan readers besides the KITTI layout (rewis/scans.py), and the layout detection of find_scan_folders.

- `NpyScanFolder`: `points/<id>.npy` + `labels/<id>.npy`, or `points_<id>.npy` + `labels_<id>.npy` side by side.
  Points float32 (N, 3) x, y, z (remission 0) or (N, 4); labels int (N,) or (N, 1), by default in the 20
  SemanticKITTI training ids (label map `semantickitti_train`: 0 = unlabeled, 1..19 = classes 0..18).
- `NuScenesSampleFolder`: `LIDAR_TOP.pcd.bin` float32 (N, 5) x, y, z, intensity 0..255 (remission =
  intensity / 255), ring; `sample.json` with the cameras (recon/nuscenes.py); optional
  `LIDAR_TOP_lidarseg.bin` (uint8 per point, the v1.0 lidarseg category index).
- `NuScenesFolder`: a dataroot with `v1.0-*/` tables; one scan per key-frame LiDAR sample_data (its token),
  dense labels from lidarseg.json's files, weak labels in `weak/<version>/<folder>/<token>.label`.
nuScenes labels map to the 16 classes of the standard nuScenes-lidarseg benchmark (NUSCENES_TRAINING).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from recon.dataset import IGNORE_INDEX, ClassList
from recon.errors import InputError
from recon.nuscenes import LIDARSEG_CATEGORIES, NuScenesTables, read_lidar_points, read_sample, table_versions
from rewis.scans import UNKNOWN, WEAK_FOLDERS, ScanSource, open_kitti, resolve_label_map

NUSCENES16 = ClassList(
    names=("barrier", "bicycle", "bus", "car", "construction_vehicle", "motorcycle", "pedestrian", "traffic_cone",
           "trailer", "truck", "driveable_surface", "other_flat", "sidewalk", "terrain", "manmade", "vegetation"),
    palette=((255, 120, 50), (255, 192, 203), (255, 255, 0), (0, 150, 245), (0, 255, 255), (200, 180, 0),
             (255, 0, 0), (255, 240, 150), (135, 60, 0), (160, 32, 240), (255, 0, 255), (139, 137, 137),
             (75, 0, 75), (150, 240, 80), (230, 230, 250), (0, 175, 0)))
NUSCENES_TRAINING = {  # lidarseg category -> training class; the other 12 categories are ignored
    "movable_object.barrier": "barrier", "vehicle.bicycle": "bicycle", "vehicle.bus.bendy": "bus",
    "vehicle.bus.rigid": "bus", "vehicle.car": "car", "vehicle.construction": "construction_vehicle",
    "vehicle.motorcycle": "motorcycle", "human.pedestrian.adult": "pedestrian", "human.pedestrian.child": "pedestrian",
    "human.pedestrian.construction_worker": "pedestrian", "human.pedestrian.police_officer": "pedestrian",
    "movable_object.trafficcone": "traffic_cone", "vehicle.trailer": "trailer", "vehicle.truck": "truck",
    "flat.driveable_surface": "driveable_surface", "flat.other": "other_flat", "flat.sidewalk": "sidewalk",
    "flat.terrain": "terrain", "static.manmade": "manmade", "static.vegetation": "vegetation"}
NUSCENES_COLUMNS = 5
FAR_ORIGIN = 10.0  # metres: an origin this far from the scan's densest area means the scan is not sensor-centred


def nuscenes_lut(categories: dict[int, str]) -> np.ndarray:
    """(65536,) uint8: lidarseg category index -> NUSCENES16 class (255 = ignored, UNKNOWN = not a category)."""
    lut = np.full(1 << 16, UNKNOWN, np.uint8)
    for index, name in categories.items():
        lut[index] = NUSCENES16.names.index(NUSCENES_TRAINING[name]) if name in NUSCENES_TRAINING else IGNORE_INDEX
    return lut


def estimate_sensor_xy(xy: np.ndarray, cell: float = 1.0, top: int = 20) -> np.ndarray:
    """Horizontal sensor position of a scan in a world frame: the median of the points in its `top` densest
    `cell`-metre cells (a spinning LiDAR's point density falls with range). Off by a few metres (3-5 m on the
    shared SemanticKITTI scans), enough for 5 m range rings."""
    cells = np.floor((xy - xy.min(0)) / cell).astype(np.int64)
    keys = cells[:, 0] * (cells[:, 1].max() + 1) + cells[:, 1]
    _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    densest = np.argsort(counts)[-top:]
    return np.median(xy[np.isin(inverse, densest)], axis=0)


def load_npy(path: Path, mmap: bool = False) -> np.ndarray:
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise InputError(f"{path}: not a readable .npy array ({err})") from None


@dataclass
class NpyScanFolder(ScanSource):
    points_name: str = "points/{}.npy"  # file of a scan id, relative to path
    labels_name: str = "labels/{}.npy"

    def points_file(self, scan: str) -> Path:
        return self.path / self.points_name.format(scan)

    def points(self, scan: str) -> np.ndarray:
        path = self.points_file(scan)
        data = load_npy(path)
        if data.ndim != 2 or data.shape[1] not in (3, 4):
            raise InputError(f"{path}: array of shape {data.shape}; expected (N, 3) x, y, z or (N, 4) with remission")
        out = np.zeros((len(data), 4), np.float32)
        out[:, :data.shape[1]] = data
        return out

    def point_count(self, scan: str) -> int:
        return len(load_npy(self.points_file(scan), mmap=True))

    def dense_file(self, scan: str) -> Path:
        return self.path / self.labels_name.format(scan)

    def dense_words(self, scan: str) -> np.ndarray:
        path = self.dense_file(scan)
        data = load_npy(path)
        if data.ndim not in (1, 2) or (data.ndim == 2 and data.shape[1] != 1) or data.dtype.kind not in "iu":
            raise InputError(f"{path}: array of shape {data.shape} ({data.dtype}); expected integer labels (N,) "
                             "or (N, 1)")
        return data.reshape(-1)

    def dense_count(self, scan: str) -> int:
        return len(load_npy(self.dense_file(scan), mmap=True))

    def sensor_xy(self, scan: str, points: np.ndarray) -> np.ndarray:
        """The origin for sensor-centred scans; an estimate for scans stored in a world frame (no poses here)."""
        estimate = estimate_sensor_xy(points[:, :2].astype(np.float64))
        return estimate if np.linalg.norm(estimate) > FAR_ORIGIN else np.zeros(2)


def open_npy(folder: Path, label_map: str) -> NpyScanFolder:
    split = (folder / "points").is_dir()
    points_name, labels_name = ("points/{}.npy", "labels/{}.npy") if split else ("points_{}.npy", "labels_{}.npy")
    pattern = "points/*.npy" if split else "points_*.npy"
    scans = sorted(p.stem if split else p.stem[len("points_"):] for p in folder.glob(pattern))
    kind, classes = resolve_label_map(folder, label_map, "semantickitti_train",
                                      ("ids", "semantickitti", "semantickitti_train"))
    return NpyScanFolder(folder, scans, classes, kind, points_name, labels_name)


def nuscenes_points(path: Path) -> np.ndarray:
    data = read_lidar_points(path)
    out = np.empty((len(data), 4), np.float32)
    out[:, :3] = data[:, :3]
    out[:, 3] = data[:, 3] / 255.0
    return out


def nuscenes_point_count(path: Path) -> int:
    if not path.is_file():
        raise InputError(f"{path}: LiDAR file not found")
    size = path.stat().st_size
    if size % (4 * NUSCENES_COLUMNS):
        read_lidar_points(path)  # raises the one-line error
    return size // (4 * NUSCENES_COLUMNS)


class NuScenesLabels:
    """Dense labels of nuScenes: one uint8 lidarseg category index per point."""

    def dense_words(self, scan: str) -> np.ndarray:
        path = self.dense_file(scan)
        if not path.is_file():
            raise InputError(f"{path}: missing; nuScenes scan {scan} has no lidarseg labels")
        return np.fromfile(path, dtype=np.uint8)

    def dense_count(self, scan: str) -> int:
        return self.dense_file(scan).stat().st_size


@dataclass
class NuScenesSampleFolder(NuScenesLabels, ScanSource):
    """One nuScenes sweep as in shared/data/nuscenes_sample (scan id `LIDAR_TOP`)."""

    def points(self, scan: str) -> np.ndarray:
        return nuscenes_points(self.path / f"{scan}.pcd.bin")

    def point_count(self, scan: str) -> int:
        return nuscenes_point_count(self.path / f"{scan}.pcd.bin")

    def dense_file(self, scan: str) -> Path:
        return self.path / f"{scan}_lidarseg.bin"

    def lut(self) -> np.ndarray:
        return nuscenes_lut(dict(enumerate(LIDARSEG_CATEGORIES)))

    def cameras(self, scan: str) -> list:
        from rewis.scan_colour import CameraView

        return [CameraView(c.image, c.K, c.lidar2cam) for c in read_sample(self.path).cameras]


@dataclass
class NuScenesFolder(NuScenesLabels, ScanSource):
    """A nuScenes dataroot, one version; scan ids are LiDAR sample_data tokens."""
    tables: NuScenesTables | None = field(default=None, repr=False)

    def points(self, scan: str) -> np.ndarray:
        return nuscenes_points(self.tables.file(scan))

    def point_count(self, scan: str) -> int:
        return nuscenes_point_count(self.tables.file(scan))

    def dense_file(self, scan: str) -> Path:
        official = self.path / "lidarseg" / self.tables.version / f"{scan}_lidarseg.bin"
        return self.tables.lidarseg_file(scan) or official

    def weak_folder(self, kind: str) -> Path:
        return self.path / "weak" / self.tables.version / WEAK_FOLDERS[kind]

    def lut(self) -> np.ndarray:
        return nuscenes_lut(self.tables.categories or dict(enumerate(LIDARSEG_CATEGORIES)))

    def camera_links(self, scan: str) -> list:
        """recon.nuscenes.CameraLink of every camera of the scan's sample (K, lidar -> camera, image size)."""
        return self.tables.camera_links(scan)

    def cameras(self, scan: str) -> list:
        from rewis.scan_colour import CameraView

        return [CameraView(link.image, link.K, link.cam_from_lidar) for link in self.camera_links(scan)]


def nuscenes_label_map(folder: Path, label_map: str) -> str:
    if label_map not in ("auto", "nuscenes"):
        raise InputError(f"{folder}: label map {label_map!r} does not apply to nuScenes data; use auto or nuscenes")
    return "nuscenes"


def open_nuscenes(folder: Path, label_map: str) -> list[NuScenesFolder]:
    kind = nuscenes_label_map(folder, label_map)
    out = []
    for version in table_versions(folder):
        tables = NuScenesTables(folder, version)
        scans = [sd["token"] for sd in tables.lidar_keyframes()]
        out.append(NuScenesFolder(folder, scans, NUSCENES16, kind, tables))
    return out


def scan_layout(path: Path) -> str | None:
    """kitti | npy | nuscenes_sample | nuscenes, or None when `path` holds no scans of a known layout."""
    if not path.is_dir():
        return None
    if (path / "velodyne").is_dir():
        return "kitti"
    if ((path / "points").is_dir() and any((path / "points").glob("*.npy"))) or any(path.glob("points_*.npy")):
        return "npy"
    if (path / "LIDAR_TOP.pcd.bin").is_file():
        return "nuscenes_sample"
    if table_versions(path):
        return "nuscenes"
    return None


def open_layout(path: Path, label_map: str) -> list[ScanSource]:
    layout = scan_layout(path)
    if layout == "kitti":
        return [open_kitti(path, label_map)]
    if layout == "npy":
        return [open_npy(path, label_map)]
    if layout == "nuscenes_sample":
        return [NuScenesSampleFolder(path, ["LIDAR_TOP"], NUSCENES16, nuscenes_label_map(path, label_map))]
    return open_nuscenes(path, label_map)
