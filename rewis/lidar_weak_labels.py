"""Weak labels on LiDAR scans, derived from dense labels, for every scan reader of rewis/scans.py:
- `scribbles`: ScribbleKITTI-style curves (rewis/lidar_scribbles.py), about 8 % of the points;
- `points`: `per_class` random points of every class present in a scan (default 20: 0.2-0.3 % of a
  SemanticKITTI scan), seeded per scan id;
- `semi`: the semi-supervised setting: a `fraction` of the scans (at least one, drawn by the seed) keep their
  dense labels, every other scan is all unlabeled.
Each kind goes to its own folder beside the dense labels (WEAK_FOLDERS: scribbles/, clicks/, semi/), as uint32
`.label` files in the folder's own label encoding, so weak and dense labels go through the same decoder. A
folder is replaced only with `overwrite`, and only once all of its new files are written.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from recon.atomic import staged_folder
from recon.dataset import IGNORE_INDEX
from recon.errors import InputError
from rewis.lidar_scribbles import LidarScribbleParams, make_lidar_scribbles, rank_in_group, read_scan
from rewis.scans import WEAK_KINDS, ScanFolder, ScanSource, find_scan_folders, scan_candidates
from rewis.weak_labels import Coverage

POINTS_PER_CLASS = 20
SEMI_FRACTION = 0.1


@dataclass(frozen=True)
class LidarWeakSpec:
    kind: str  # scribbles | points | semi
    seed: int = 0
    per_class: int = POINTS_PER_CLASS
    fraction: float = SEMI_FRACTION
    scribbles: LidarScribbleParams = field(default_factory=LidarScribbleParams)

    def check(self) -> None:
        if self.kind not in WEAK_KINDS:
            raise InputError(f"--kind {self.kind}: LiDAR weak labels are {', '.join(WEAK_KINDS)}")
        if self.per_class < 1:
            raise InputError(f"--per-class {self.per_class}: give at least 1 point per class")
        if not 0 < self.fraction <= 1:
            raise InputError(f"--fraction {self.fraction}: give the share of fully labelled scans in (0, 1]")


def random_points_per_class(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """(N,) uint8: `per_class` random points of every class keep their label (all of a smaller class)."""
    rank = rank_in_group(rng.random(len(labels)), labels.astype(np.int64))
    keep = (rank < per_class) & (labels != IGNORE_INDEX)
    return np.where(keep, labels, IGNORE_INDEX).astype(np.uint8)


def semi_scans(total: int, fraction: float, seed: int) -> set[int]:
    """Indices of the fully labelled scans: round(fraction * total), at least one."""
    count = min(total, max(1, round(fraction * total)))
    return set(np.random.default_rng(seed).choice(total, count, replace=False).tolist())


def scan_rng(seed: int, scan: str) -> np.random.Generator:
    """One generator per (seed, scan id): a scan's points do not change when other scans are added."""
    return np.random.default_rng([seed, zlib.crc32(scan.encode())])


def weak_labels_of(spec: LidarWeakSpec, scan: str, xyz: np.ndarray, labels: np.ndarray, dense: bool) -> np.ndarray:
    if spec.kind == "scribbles":
        return make_lidar_scribbles(xyz, labels, spec.scribbles)
    if spec.kind == "points":
        return random_points_per_class(labels, spec.per_class, scan_rng(spec.seed, scan))
    return labels.astype(np.uint8) if dense else np.full(len(labels), IGNORE_INDEX, np.uint8)


def raw_kitti(folder: ScanSource) -> bool:
    """A KITTI-layout folder without a class list: its weak labels are made per stored id (the lower 16 bits, at
    most 255) and written as those same ids, as `rewis labels` always did; training maps them like the labels."""
    return isinstance(folder, ScanFolder) and folder.label_map == "semantickitti"


def dense_labels(folder: ScanSource, scan: str, num_points: int) -> np.ndarray:
    if raw_kitti(folder):
        return read_scan(folder.path, scan)[1]
    return folder.labels(scan, "labels", num_points)


def encode(folder: ScanSource, weak: np.ndarray) -> np.ndarray:
    return weak.astype(np.uint32) if raw_kitti(folder) else folder.encode(weak)


def check_folder(folder: ScanSource, kind: str, overwrite: bool) -> None:
    for scan in folder.scans:
        if not folder.has_labels(scan):
            raise InputError(f"{folder.label_file(scan, 'labels')}: missing; scan {scan} has no dense labels and "
                             "weak labels are derived from them, so add them or remove the scan")
    target = folder.weak_folder(kind)
    if target.exists() and not overwrite:
        raise InputError(f"{target}: LiDAR {kind} already exist; pass --overwrite to replace them")


def label_scans(root: Path, spec: LidarWeakSpec, overwrite: bool = False, progress: bool = True) -> Coverage:
    """Weak labels of kind `spec.kind` for every scan folder at or below `root` (see find_scan_folders)."""
    spec.check()
    root = Path(root)
    if not scan_candidates(root, depth=2):
        raise InputError(f"{root}: no LiDAR data (scans with dense labels) here, in {root / 'lidar'} or in its "
                         "sequence folders; render with 'rewis synth --lidar' or use a layout of docs/FORMATS.md")
    folders = find_scan_folders(root, depth=2)
    for folder in folders:
        check_folder(folder, spec.kind, overwrite)
    total = sum(len(f.scans) for f in folders)
    dense = semi_scans(total, spec.fraction, spec.seed) if spec.kind == "semi" else set()
    coverage, index = Coverage(f"lidar {spec.kind}", element="points"), 0
    for folder in folders:
        # overwrite=True: check_folder already refused an existing folder without --overwrite
        with staged_folder(folder.weak_folder(spec.kind), overwrite=True) as staging:
            for scan in tqdm(folder.scans, desc=f"{folder.path.name} {spec.kind}", unit="scan", disable=not progress):
                points = folder.points(scan)
                labels = dense_labels(folder, scan, len(points))
                weak = weak_labels_of(spec, scan, points[:, :3], labels, index in dense)
                encode(folder, weak).astype("<u4").tofile(staging / f"{scan}.label")
                coverage.add_mask(weak, labels, () if raw_kitti(folder) else folder.classes.names)
                index += 1
    return coverage
