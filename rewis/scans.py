"""LiDAR scans as training data: one sample = one scan (docs/FORMATS.md, LiDAR section).

Four readers share one interface (`ScanSource`: `.path`, `.scans`, `.classes`, `.label_map`, `.points(scan)` ->
(N, 4) float32 x, y, z, remission, `.labels(scan, kind, n)`, `.check(kind)`, `.cameras(scan)`):
- `ScanFolder`: the KITTI odometry layout (`velodyne/<id>.bin`, `labels/<id>.label`, a sequence's `lidar/`);
- `NpyScanFolder` (rewis/scans_formats.py): `.npy` scans, `points/<id>.npy` + `labels/<id>.npy` or
  `points_<id>.npy` + `labels_<id>.npy` side by side (the Open3D-ML SemanticKITTI samples);
- `NuScenesSampleFolder`: one nuScenes sweep with `sample.json` (the mmdetection3d demo layout);
- `NuScenesFolder`: a nuScenes dataroot with the official v1.0 tables and lidarseg.
Dense labels are read from each format's own file; weak labels (`scribbles`, `points`, `semi`; folders in
WEAK_FOLDERS) are uint32 `.label` files in the same label encoding, and both pass the same decoder. Label
encodings (`label_map`):
- `ids`: class ids of the folder's own class list (`meta.json` or the sequence's classes.json; the synthetic
  rig writes these), 255 = unlabeled;
- `semantickitti`: raw SemanticKITTI ids, mapped through the official learning map to the 19 training classes
  (and back with `raw_ids` when predictions are written);
- `semantickitti_train`: the 20 SemanticKITTI training ids as the Open3D-ML samples store them: 0 = unlabeled,
  1..19 = our classes 0..18;
- `nuscenes`: nuScenes-lidarseg category indices (category.json), mapped to the 16 standard training classes.
`auto` takes `ids` where the folder has a class list, else the format's own encoding (`semantickitti` for
KITTI-layout folders). Folders found: a folder of any format itself, its `lidar/`, or those of the folders
(sequences) below it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from recon.dataset import IGNORE_INDEX, ClassList
from recon.errors import InputError
from rewis import augment

LEARNING_MAP = {  # raw SemanticKITTI id -> training id (1..19; 0 = unlabeled), semantic-kitti.yaml
    0: 0, 1: 0, 10: 1, 11: 2, 13: 5, 15: 3, 16: 5, 18: 4, 20: 5, 30: 6, 31: 7, 32: 8, 40: 9, 44: 10, 48: 11, 49: 12,
    50: 13, 51: 14, 52: 0, 60: 9, 70: 15, 71: 16, 72: 17, 80: 18, 81: 19, 99: 0, 252: 1, 253: 7, 254: 6, 255: 8,
    256: 5, 257: 5, 258: 4, 259: 5}
LEARNING_MAP_INV = {0: 0, 1: 10, 2: 11, 3: 15, 4: 18, 5: 20, 6: 30, 7: 31, 8: 32, 9: 40, 10: 44, 11: 48, 12: 49,
                    13: 50, 14: 51, 15: 70, 16: 71, 17: 72, 18: 80, 19: 81}
SEMANTICKITTI = ClassList(
    names=("car", "bicycle", "motorcycle", "truck", "other-vehicle", "person", "bicyclist", "motorcyclist", "road",
           "parking", "sidewalk", "other-ground", "building", "fence", "vegetation", "trunk", "terrain", "pole",
           "traffic-sign"),
    palette=((100, 150, 245), (100, 230, 245), (30, 60, 150), (80, 30, 180), (100, 80, 250), (255, 30, 30),
             (255, 40, 200), (150, 30, 90), (255, 0, 255), (255, 150, 255), (75, 0, 75), (175, 0, 75),
             (255, 200, 0), (255, 120, 50), (0, 175, 0), (135, 60, 0), (150, 240, 80), (255, 240, 150),
             (255, 0, 0)))
LABEL_MAPS = ("auto", "ids", "semantickitti", "semantickitti_train", "nuscenes")
FEATURE_COLUMNS = {"remission": 1, "rgb": 4}  # per-point inputs besides xyz, and their column counts
FEATURES = tuple(FEATURE_COLUMNS)
WEAK_FOLDERS = {"scribbles": "scribbles", "points": "clicks", "semi": "semi"}  # weak kind -> folder of .label files
WEAK_KINDS = tuple(WEAK_FOLDERS)
UNKNOWN = 254  # marks raw ids outside the learning map while mapping
MAP_NAMES = {"semantickitti": "the SemanticKITTI learning map",
             "semantickitti_train": "the 20 SemanticKITTI training ids (0 = unlabeled, 1..19)",
             "nuscenes": "the lidarseg categories of category.json"}


def _learning_lut() -> np.ndarray:
    lut = np.full(1 << 16, UNKNOWN, np.uint8)
    for raw, train in LEARNING_MAP.items():
        lut[raw] = IGNORE_INDEX if train == 0 else train - 1
    return lut


def _training_ids_lut() -> np.ndarray:
    lut = np.full(1 << 16, UNKNOWN, np.uint8)
    lut[0] = IGNORE_INDEX
    lut[1:20] = np.arange(19)
    return lut


LEARNING_LUT = _learning_lut()
TRAINING_IDS_LUT = _training_ids_lut()


def raw_ids(train_ids: np.ndarray) -> np.ndarray:
    """Training ids (0..18, 255 = unlabeled) -> raw SemanticKITTI ids (unlabeled -> 0)."""
    lut = np.zeros(256, np.uint32)
    for train, raw in LEARNING_MAP_INV.items():
        if train:
            lut[train - 1] = raw
    return lut[np.asarray(train_ids, np.uint8)]


def inverse_lut(lut: np.ndarray) -> np.ndarray:
    """(256,) uint32: class id (255 = unlabeled) -> the smallest raw id that maps to it."""
    raw = np.flatnonzero(lut != UNKNOWN)
    classes, first = np.unique(lut[raw], return_index=True)  # first occurrence = smallest raw id
    out = np.zeros(256, np.uint32)
    out[classes] = raw[first]
    return out


# ---------------------------------------------------------------------------------------------- files

def read_points(path: Path) -> np.ndarray:
    """(N, 4) float32 x, y, z, remission of a velodyne .bin."""
    path = Path(path)
    size = path.stat().st_size
    if size % 16:
        raise InputError(f"{path}: {size} bytes is not a multiple of 16 (4 float32 per point: x, y, z, remission); "
                         "the file is cut off or not a KITTI velodyne scan")
    return np.fromfile(path, dtype="<f4").reshape(-1, 4)


def decode_labels(words: np.ndarray, num_points: int, path: Path, label_map: str, num_classes: int,
                  lut: np.ndarray | None = None) -> np.ndarray:
    """Class ids (N,) uint8, 255 = unlabeled, of the stored labels `words` of one scan (dense or weak: the class
    in the lower 16 bits) in encoding `label_map`; `lut` maps raw ids for every encoding but `ids`."""
    if len(words) != num_points:
        raise InputError(f"{path}: {len(words)} labels for {num_points} points; every point needs one label")
    ids = np.asarray(words).astype(np.int64) & 0xFFFF
    if label_map != "ids":
        out = lut[ids]
        if (out == UNKNOWN).any():
            bad = sorted(set(ids[out == UNKNOWN].tolist()))[:5]
            raise InputError(f"{path}: raw ids {bad} are not in {MAP_NAMES[label_map]}; fix the file or use "
                             "labels in class ids with a classes.json")
        return out
    bad = (ids >= num_classes) & (ids != IGNORE_INDEX)
    if bad.any():
        raise InputError(f"{path}: class ids {sorted(set(ids[bad].tolist()))[:5]} exceed the {num_classes} classes "
                         "of classes.json (255 = unlabeled)")
    return ids.astype(np.uint8)


def read_point_labels(path: Path, num_points: int, label_map: str, num_classes: int) -> np.ndarray:
    """Class ids (N,) uint8 of a .label file (labels or scribbles), 255 = unlabeled."""
    lut = {"semantickitti": LEARNING_LUT, "semantickitti_train": TRAINING_IDS_LUT}.get(label_map)
    return decode_labels(np.fromfile(Path(path), dtype="<u4"), num_points, Path(path), label_map, num_classes, lut)


def label_file_count(path: Path) -> int:
    size = path.stat().st_size
    if size % 4:
        raise InputError(f"{path}: {size} bytes is not a whole number of uint32 labels")
    return size // 4


@dataclass
class ScanSource:
    """What every scan reader offers; subclasses say where points, dense labels and cameras are."""
    path: Path  # the folder (or dataroot) the scans belong to
    scans: list[str]  # scan ids, sorted
    classes: ClassList
    label_map: str  # ids | semantickitti | semantickitti_train | nuscenes

    def points(self, scan: str) -> np.ndarray:
        """(N, 4) float32 x, y, z, remission."""
        raise NotImplementedError

    def point_count(self, scan: str) -> int:
        """Points of a scan from its header or size alone (no full read)."""
        raise NotImplementedError

    def dense_file(self, scan: str) -> Path:
        raise NotImplementedError

    def dense_words(self, scan: str) -> np.ndarray:
        """The stored dense labels of one scan, raw (before the label map)."""
        return np.fromfile(self.dense_file(scan), dtype="<u4")

    def dense_count(self, scan: str) -> int:
        return label_file_count(self.dense_file(scan))

    def weak_folder(self, kind: str) -> Path:
        return self.path / WEAK_FOLDERS[kind]

    def cameras(self, scan: str) -> list:
        """The camera views (rewis.scan_colour.CameraView) that see this scan; [] without images."""
        return []

    def sensor_xy(self, scan: str, points: np.ndarray) -> np.ndarray:
        """(2,) horizontal position of the sensor in the scan's frame (ranges are measured from it)."""
        return np.zeros(2)

    def lut(self) -> np.ndarray | None:
        return {"semantickitti": LEARNING_LUT, "semantickitti_train": TRAINING_IDS_LUT}.get(self.label_map)

    # ------------------------------------------------------------------------------------------ labels
    def label_file(self, scan: str, kind: str) -> Path:
        return self.dense_file(scan) if kind == "labels" else self.weak_folder(kind) / f"{scan}.label"

    def has_labels(self, scan: str, kind: str = "labels") -> bool:
        return self.label_file(scan, kind).is_file()

    def labels(self, scan: str, kind: str, num_points: int) -> np.ndarray:
        """`kind` = labels | scribbles | points | semi: the dense labels or weak labels of one scan."""
        path = self.label_file(scan, kind)
        if not path.is_file():
            make = "" if kind == "labels" else f" (rewis labels --kind {kind} --lidar makes them from dense labels)"
            raise InputError(f"{path}: missing; scan {scan} needs {kind}{make}")
        words = self.dense_words(scan) if kind == "labels" else np.fromfile(path, dtype="<u4")
        return decode_labels(words, num_points, path, self.label_map, self.classes.num_classes, self.lut())

    def encode(self, class_ids: np.ndarray) -> np.ndarray:
        """Class ids (255 = unlabeled) -> uint32 words in this folder's label encoding (weak label files)."""
        ids = np.asarray(class_ids, np.uint8)
        if self.label_map == "ids":
            return ids.astype(np.uint32)
        if self.label_map == "semantickitti":
            return raw_ids(ids)
        return inverse_lut(self.lut())[ids]

    def check(self, kind: str | None, features: tuple[str, ...] = ()) -> None:
        """Point and label counts of every scan (and of its `kind` labels), from headers and sizes alone: a
        broken file fails before training starts, not hours into it; with `rgb` in `features`, its images."""
        for scan in self.scans:
            count = self.point_count(scan)
            if kind is not None:
                path = self.label_file(scan, kind)
                if not path.is_file():
                    self.labels(scan, kind, count)  # raises the one-line error
                labels = self.dense_count(scan) if kind == "labels" else label_file_count(path)
                if labels != count:
                    raise InputError(f"{path}: {labels} labels for {count} points; every point needs one label")
            if "rgb" in features:
                self.check_cameras(scan)

    def check_cameras(self, scan: str) -> list:
        views = self.cameras(scan)
        if not views:
            raise InputError(f"{self.path}: scan {scan} has no camera image; method.features 'rgb' needs one "
                             "(KITTI layout: image_2/<id>.png and calib.txt; nuScenes: the camera sample_data)")
        for view in views:
            if not Path(view.image).is_file():
                raise InputError(f"{view.image}: camera image of scan {scan} not found (method.features 'rgb')")
        return views

    def colours(self, scan: str, xyz: np.ndarray) -> np.ndarray:
        """(N, 4) float32 r, g, b in [0, 1] and seen (1 where a camera of the scan sees the point, else 0)."""
        from rewis.scan_colour import colour_features

        return colour_features(xyz, self.check_cameras(scan))


def scan_rgb(folder: ScanSource, scan: str, points: np.ndarray, features: tuple[str, ...]) -> np.ndarray | None:
    """The `rgb` feature columns of these points of a scan, or None when `features` lacks rgb."""
    return folder.colours(scan, points[:, :3]) if "rgb" in features else None


@dataclass
class ScanFolder(ScanSource):
    """KITTI odometry layout: velodyne/<id>.bin, labels/<id>.label, image_2/<id>.png + calib.txt (P2, Tr)."""

    def points(self, scan: str) -> np.ndarray:
        return read_points(self.path / "velodyne" / f"{scan}.bin")

    def point_count(self, scan: str) -> int:
        path = self.path / "velodyne" / f"{scan}.bin"
        size = path.stat().st_size
        if size % 16:
            read_points(path)  # raises the one-line error
        return size // 16

    def dense_file(self, scan: str) -> Path:
        return self.path / "labels" / f"{scan}.label"

    def cameras(self, scan: str) -> list:
        from recon.kitti import read_odometry_calib
        from rewis.scan_colour import CameraView

        image, calib = self.path / "image_2" / f"{scan}.png", self.path / "calib.txt"
        if not (image.is_file() and calib.is_file()):
            return []
        odometry = read_odometry_calib(calib)
        K, cam_from_cam0 = odometry.camera("P2")
        return [CameraView(image, K, cam_from_cam0 @ odometry.velo_to_cam0)]


def resolve_label_map(folder: Path, label_map: str, native: str, allowed: tuple[str, ...]) -> tuple[str, ClassList]:
    """(encoding, class list) of a folder: `auto` -> `ids` with a class list of its own, else `native`."""
    from rewis.lidar_scribbles import lidar_classes

    if label_map not in LABEL_MAPS:
        raise InputError(f"{folder}: label map {label_map!r} is unknown; choose one of {', '.join(LABEL_MAPS)}")
    own = lidar_classes(folder) if "ids" in allowed else None
    kind = ("ids" if own is not None else native) if label_map == "auto" else label_map
    if kind not in allowed:
        raise InputError(f"{folder}: label map {kind!r} does not apply to this folder; use auto or one of "
                         f"{', '.join(allowed)}")
    if kind == "ids" and own is None:
        raise InputError(f"{folder}: label map 'ids' needs a class list (meta.json or ../classes.json)")
    return kind, own if kind == "ids" else SEMANTICKITTI


def open_kitti(folder: Path, label_map: str) -> ScanFolder:
    scans = sorted(p.stem for p in (folder / "velodyne").glob("*.bin"))
    kind, classes = resolve_label_map(folder, label_map, "semantickitti", ("ids", "semantickitti",
                                                                          "semantickitti_train"))
    return ScanFolder(folder, scans, classes, kind)


def scan_candidates(path: Path, depth: int) -> list[Path]:
    """`path` or its lidar/ when either holds scans, else the same for its subfolders, `depth` levels down."""
    from rewis.scans_formats import scan_layout

    here = [p for p in (path, path / "lidar") if scan_layout(p)][:1]
    if here or depth == 0:
        return here
    children = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    return [p for child in children for p in scan_candidates(child, depth - 1)]


def find_scan_folders(path: Path, label_map: str = "auto", depth: int = 1) -> list[ScanSource]:
    """The scan folders at `path`: itself, its lidar/, or those of its subfolders (sequences; with depth 2 also
    the sequences inside train/ and val/)."""
    from rewis.scans_formats import open_layout

    path = Path(path)
    if not path.is_dir():
        raise InputError(f"{path}: folder not found; give a scan folder (KITTI velodyne/, .npy points, nuScenes), "
                         "a sequence with lidar/ or a folder of such sequences")
    candidates = scan_candidates(path, depth)
    folders = [f for p in candidates for f in open_layout(p, label_map) if f.scans]
    if not folders:
        raise InputError(f"{path}: no LiDAR scans (velodyne/*.bin, points/*.npy, points_*.npy, nuScenes "
                         f"LIDAR_TOP or v1.0-*/ tables) here, in {path / 'lidar'} or in its sequences")
    return folders


def scan_folders(paths: list[str], label_map: str, where: str) -> list[ScanSource]:
    """The scan folders of several paths; they must share one class list."""
    if not paths:
        raise InputError(f"{where} is empty; list scan folders (velodyne/) or sequences with lidar/")
    folders = [f for p in paths for f in find_scan_folders(Path(p), label_map)]
    for f in folders[1:]:
        if f.classes.names != folders[0].classes.names:
            raise InputError(f"{f.path}: classes differ from those of {folders[0].path}; all scans must share one "
                             "class list")
    return folders


# ---------------------------------------------------------------------------------------------- samples

@dataclass
class ScanAugment:
    rotate: bool = True
    scale: tuple[float, float] = (0.95, 1.05)
    flip: bool = True
    jitter_sigma: float = 0.005
    jitter_clip: float = 0.02


class ScanDataset(Dataset):
    """Training samples, one per scan: at most `max_points` random points (all when 0), their features and
    labels of `kind` (labels | scribbles | points | semi), or pseudo-labels from `pseudo` (a folder of
    <index>.label files in training ids, written by a pseudo-labelling stage) where the scan has no weak label.
    Sample k of epoch e draws from `default_rng([seed, e, k])` only (exact resume)."""

    def __init__(self, folders: list[ScanSource], kind: str, features: tuple[str, ...], max_points: int, seed: int,
                 aug: ScanAugment, pseudo: Path | None = None):
        self.items = [(f, s) for f in folders for s in f.scans]
        self.kind, self.features, self.max_points, self.seed = kind, tuple(features), max_points, seed
        self.aug, self.pseudo = aug, pseudo

    def __len__(self) -> int:
        return len(self.items)

    def labels(self, index: int, num_points: int) -> np.ndarray:
        folder, scan = self.items[index]
        labels = folder.labels(scan, self.kind, num_points)
        if self.pseudo is not None:
            pseudo = np.fromfile(self.pseudo / f"{index}.label", dtype="<u4").astype(np.uint8)
            labels = np.where(labels == IGNORE_INDEX, pseudo, labels)  # pseudo-labels never replace scribbles
        return labels

    def __getitem__(self, key: int) -> dict:
        epoch, k = divmod(int(key), len(self))
        rng = np.random.default_rng([self.seed, epoch, k])
        folder, scan = self.items[k]
        points = folder.points(scan)
        labels = self.labels(k, len(points))
        if 0 < self.max_points < len(points):
            pick = np.sort(rng.choice(len(points), self.max_points, replace=False))
            points, labels = points[pick], labels[pick]
        xyz = points[:, :3]
        a = self.aug
        xyz_aug = augment.augment_points(rng, xyz, np.array([0.0, 0.0, 1.0]), np.zeros(3), a.rotate, a.scale, a.flip,
                                         a.jitter_sigma, a.jitter_clip)
        rgb = scan_rgb(folder, scan, points, self.features)
        return {"xyz": torch.from_numpy(np.ascontiguousarray(xyz)), "xyz_aug": torch.from_numpy(xyz_aug),
                "features": torch.from_numpy(point_features(points, self.features, rgb)),
                "label": torch.from_numpy(labels.astype(np.int64))}


def feature_channels(names: tuple[str, ...] | list[str]) -> int:
    """Input columns of `names` (rgb brings 4: r, g, b and the seen flag)."""
    return sum(FEATURE_COLUMNS[n] for n in names)


def point_features(points: np.ndarray, names: tuple[str, ...], rgb: np.ndarray | None = None) -> np.ndarray:
    """(N, feature_channels(names)) float32 inputs besides xyz; `rgb` (N, 4) from ScanSource.colours."""
    if "rgb" in names and rgb is None:
        raise InputError("the 'rgb' feature needs camera colours of the scan (image and calibration); "
                         "bare point clouds carry none")
    columns = {"remission": lambda: points[:, 3:4], "rgb": lambda: rgb}
    return np.ascontiguousarray(np.concatenate([columns[n]() for n in names], 1) if names
                                else np.zeros((len(points), 0), np.float32), dtype=np.float32)


def collate_scans(samples: list[dict]) -> dict:
    out = {k: torch.cat([s[k] for s in samples]) for k in samples[0]}
    out["batch"] = torch.cat([torch.full((len(s["label"]),), b, dtype=torch.long) for b, s in enumerate(samples)])
    return out
