"""LiDAR scans as training data: one sample = one scan (docs/FORMATS.md, KITTI odometry layout).

A scan folder holds `velodyne/<id>.bin` (float32 x, y, z, remission), and optionally `labels/<id>.label` (dense)
and `scribbles/<id>.label` (weak), both uint32 with the class in the lower 16 bits. Two label encodings:
- `ids`: class ids of the folder's own class list (`meta.json` or the sequence's classes.json; the synthetic
  rig writes these), 255 = unlabeled;
- `semantickitti`: raw SemanticKITTI ids, mapped through the official learning map to the 19 training classes
  (and back with `raw_ids` when predictions are written).
`auto` takes `ids` where the folder has a class list, else `semantickitti`. Labels and scribbles are read by the
same function. Folders found: a KITTI-layout folder itself, `SEQ/lidar/`, or those of the sequences below a
dataset folder.
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
LABEL_MAPS = ("auto", "ids", "semantickitti")
FEATURES = ("remission",)  # per-point inputs besides xyz
UNKNOWN = 254  # marks raw ids outside the learning map while mapping


def _learning_lut() -> np.ndarray:
    lut = np.full(1 << 16, UNKNOWN, np.uint8)
    for raw, train in LEARNING_MAP.items():
        lut[raw] = IGNORE_INDEX if train == 0 else train - 1
    return lut


LEARNING_LUT = _learning_lut()


def raw_ids(train_ids: np.ndarray) -> np.ndarray:
    """Training ids (0..18, 255 = unlabeled) -> raw SemanticKITTI ids (unlabeled -> 0)."""
    lut = np.zeros(256, np.uint32)
    for train, raw in LEARNING_MAP_INV.items():
        if train:
            lut[train - 1] = raw
    return lut[np.asarray(train_ids, np.uint8)]


# ---------------------------------------------------------------------------------------------- files

def read_points(path: Path) -> np.ndarray:
    """(N, 4) float32 x, y, z, remission of a velodyne .bin."""
    path = Path(path)
    size = path.stat().st_size
    if size % 16:
        raise InputError(f"{path}: {size} bytes is not a multiple of 16 (4 float32 per point: x, y, z, remission); "
                         "the file is cut off or not a KITTI velodyne scan")
    return np.fromfile(path, dtype="<f4").reshape(-1, 4)


def read_point_labels(path: Path, num_points: int, label_map: str, num_classes: int) -> np.ndarray:
    """Class ids (N,) uint8 of a .label file (labels or scribbles), 255 = unlabeled."""
    path = Path(path)
    raw = np.fromfile(path, dtype="<u4")
    if len(raw) != num_points:
        raise InputError(f"{path}: {len(raw)} labels for {num_points} points; every point needs one uint32 label")
    ids = raw & 0xFFFF
    if label_map == "semantickitti":
        out = LEARNING_LUT[ids]
        if (out == UNKNOWN).any():
            bad = sorted(set(ids[out == UNKNOWN].tolist()))[:5]
            raise InputError(f"{path}: raw ids {bad} are not in the SemanticKITTI learning map; fix the file or use "
                             "labels in class ids with a classes.json")
        return out
    bad = (ids >= num_classes) & (ids != IGNORE_INDEX)
    if bad.any():
        raise InputError(f"{path}: class ids {sorted(set(ids[bad].tolist()))[:5]} exceed the {num_classes} classes "
                         "of classes.json (255 = unlabeled)")
    return ids.astype(np.uint8)


@dataclass
class ScanFolder:
    path: Path  # the folder holding velodyne/
    scans: list[str]  # scan ids (file stems), sorted
    classes: ClassList
    label_map: str  # ids | semantickitti

    def points(self, scan: str) -> np.ndarray:
        return read_points(self.path / "velodyne" / f"{scan}.bin")

    def check(self, kind: str | None) -> None:
        """File sizes of every scan (and of its `kind` labels), read from the directory alone: a broken file
        fails before training starts, not hours into it."""
        for scan in self.scans:
            path = self.path / "velodyne" / f"{scan}.bin"
            size = path.stat().st_size
            if size % 16:
                read_points(path)  # raises the one-line error
            label = self.path / str(kind) / f"{scan}.label"
            if kind is not None and label.is_file() and label.stat().st_size != size // 4:
                raise InputError(f"{label}: {label.stat().st_size // 4} labels for {size // 16} points in "
                                 f"{path.name}; every point needs one uint32 label")

    def labels(self, scan: str, kind: str, num_points: int) -> np.ndarray:
        """`kind` = labels | scribbles: the folder's dense labels or weak labels of one scan."""
        path = self.path / kind / f"{scan}.label"
        if not path.is_file():
            raise InputError(f"{path}: missing; scan {scan} needs {kind} (rewis labels --kind scribbles --lidar "
                             "makes scribbles from dense labels)")
        return read_point_labels(path, num_points, self.label_map, self.classes.num_classes)


def find_scan_folders(path: Path, label_map: str = "auto") -> list[ScanFolder]:
    from rewis.lidar_scribbles import lidar_classes

    path = Path(path)
    if not path.is_dir():
        raise InputError(f"{path}: folder not found; give a KITTI-layout folder (velodyne/), a sequence with lidar/ "
                         "or a folder of such sequences")
    if (path / "velodyne").is_dir():
        candidates = [path]
    elif (path / "lidar" / "velodyne").is_dir():
        candidates = [path / "lidar"]
    else:
        candidates = sorted(p / "lidar" for p in path.iterdir() if (p / "lidar" / "velodyne").is_dir())
    folders = []
    for folder in candidates:
        scans = sorted(p.stem for p in (folder / "velodyne").glob("*.bin"))
        if not scans:
            continue
        own = lidar_classes(folder)
        kind = ("ids" if own is not None else "semantickitti") if label_map == "auto" else label_map
        if kind == "ids" and own is None:
            raise InputError(f"{folder}: label map 'ids' needs a class list (meta.json or ../classes.json)")
        folders.append(ScanFolder(folder, scans, own if kind == "ids" else SEMANTICKITTI, kind))
    if not folders:
        raise InputError(f"{path}: no LiDAR scans (velodyne/*.bin) here, in {path / 'lidar'} or in its sequences")
    return folders


def scan_folders(paths: list[str], label_map: str, where: str) -> list[ScanFolder]:
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
    labels of `kind` (labels | scribbles), or pseudo-labels from `pseudo` (a folder of <index>.label files in
    training ids, written by a pseudo-labelling stage) where the scan has no weak label. Sample k of epoch e
    draws from `default_rng([seed, e, k])` only (exact resume)."""

    def __init__(self, folders: list[ScanFolder], kind: str, features: tuple[str, ...], max_points: int, seed: int,
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
        return {"xyz": torch.from_numpy(np.ascontiguousarray(xyz)), "xyz_aug": torch.from_numpy(xyz_aug),
                "features": torch.from_numpy(point_features(points, self.features)),
                "label": torch.from_numpy(labels.astype(np.int64))}


def point_features(points: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    """(N, len(names)) float32 inputs besides xyz."""
    columns = {"remission": points[:, 3:4]}
    return np.ascontiguousarray(np.concatenate([columns[n] for n in names], 1) if names
                                else np.zeros((len(points), 0), np.float32), dtype=np.float32)


def collate_scans(samples: list[dict]) -> dict:
    out = {k: torch.cat([s[k] for s in samples]) for k in samples[0]}
    out["batch"] = torch.cat([torch.full((len(s["label"]),), b, dtype=torch.long) for b, s in enumerate(samples)])
    return out
