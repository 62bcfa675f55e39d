"""ScribbleKITTI-style scribbles on LiDAR points, derived from dense per-point labels.

Annotators of ScribbleKITTI drew lines in a bird's-eye view; we do the same per class: rasterise the class's
points into a BEV grid, close the gaps between scan rings, skeletonise every connected region (medial axis) and
keep its main curve. Where the curve's cells hold more than about 8 % of the class's points (walls, poles, trees:
points stacked in height), only the points nearest each cell's median height are kept; where they hold fewer
(ground), the curve is widened inside its region. Only points of the class itself are labeled, so scribbles never
disagree with the ground truth. Files: every scan reader of rewis/scans.py (docs/FORMATS.md, LiDAR)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage.morphology import disk, medial_axis

from recon.dataset import IGNORE_INDEX, ClassList, read_classes, read_json
from recon.errors import InputError
from rewis.weak_labels import EIGHT_CONNECTED, FOUR_CONNECTED, Coverage, main_curves


@dataclass(frozen=True)
class LidarScribbleParams:
    cell: float = 0.2            # BEV cell size, metres
    gap: float = 0.6             # holes and ring gaps up to about twice this are closed, metres
    target: float = 0.08         # fraction of each class's points to label (ScribbleKITTI: ~8 %)
    max_widen_steps: int = 6     # cells the curve may grow on each side: keeps scribbles curves, not areas
    min_points_per_piece: int = 6  # small objects (poles, signs) keep a short stroke, not one stray point


# ---------------------------------------------------------------------------------------------- geometry

def bev_cells(xy: np.ndarray, params: LidarScribbleParams) -> tuple[np.ndarray, tuple[int, int]]:
    """Grid cell (row, col) of each point, with a margin wide enough for the closing not to hit the edge."""
    margin = int(np.ceil(params.gap / params.cell)) + 2
    cells = np.floor((xy - xy.min(axis=0)) / params.cell).astype(np.int64) + margin
    return cells, tuple(int(n) for n in cells.max(axis=0) + margin + 1)


def class_regions(occupied: np.ndarray, params: LidarScribbleParams) -> np.ndarray:
    """Occupied cells with ring gaps and holes of the class closed: what an annotator sees as one area."""
    brush = disk(max(1, int(round(params.gap / params.cell))))
    return ndimage.binary_closing(occupied, brush) | occupied


def widen_to_target(curve, region, points_per_cell, target_count, max_steps) -> np.ndarray:
    """Grow the curve inside its region one cell at a time; keep the width whose point count is nearest target."""
    best, best_error = curve, abs(points_per_cell[curve].sum() - target_count)
    for _ in range(max_steps):
        if points_per_cell[curve].sum() >= target_count:
            break
        curve = ndimage.binary_dilation(curve, FOUR_CONNECTED, mask=region)
        error = abs(points_per_cell[curve].sum() - target_count)
        if error < best_error:
            best, best_error = curve, error
    return best


def rank_in_group(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """0 for the smallest value of each group, 1 for the next, ..."""
    order = np.lexsort((values, groups))
    sorted_groups = groups[order]
    rank = np.empty(values.size, np.int64)
    rank[order] = np.arange(values.size) - np.searchsorted(sorted_groups, sorted_groups, side="left")
    return rank


def height_band(z: np.ndarray, cell_key: np.ndarray, piece: np.ndarray, target_count: float,
                min_per_piece: int) -> np.ndarray:
    """Among points on the curve, the ones nearest their cell's median height: the target count overall, and at
    least `min_per_piece` per region so small objects keep a stroke rather than a stray point.

    A BEV line over a wall, pole or tree covers every point stacked above it; a horizontal band around the
    median height (the line an annotator draws across the object in a side view) keeps such scribbles thin.
    """
    order = np.lexsort((z, cell_key))
    sorted_keys = cell_key[order]
    first, end = np.searchsorted(sorted_keys, sorted_keys, "left"), np.searchsorted(sorted_keys, sorted_keys, "right")
    sorted_z = z[order]
    offset = np.empty(z.size)
    offset[order] = np.abs(sorted_z - sorted_z[(first + end - 1) // 2])
    limit = np.partition(offset, int(target_count) - 1)[int(target_count) - 1] if target_count >= 1 else -1.0
    return (offset <= limit) | (rank_in_group(offset, piece) < min_per_piece)


@dataclass
class ClassGrid:
    """One class's points in a BEV grid: cell of each point, points per cell, closed region."""
    cells: np.ndarray
    points_per_cell: np.ndarray
    region: np.ndarray


def class_grid(xy: np.ndarray, params: LidarScribbleParams) -> ClassGrid:
    cells, shape = bev_cells(xy, params)
    points_per_cell = np.zeros(shape, np.int64)
    np.add.at(points_per_cell, (cells[:, 0], cells[:, 1]), 1)
    return ClassGrid(cells, points_per_cell, class_regions(points_per_cell > 0, params))


def main_curves_of_each(regions: list[np.ndarray]) -> list[np.ndarray]:
    """main_curves(medial_axis(region)) of every region, computed in one call on the regions laid side by side.

    medial_axis rather than skeletonize: thinning shrinks a compact blob to a dot, the medial axis reaches its
    ends. One call for all: medial_axis has a fixed cost (~35 ms) per call. The grids' empty margins keep the
    regions apart on the canvas.
    """
    widths = [r.shape[1] for r in regions]
    starts = np.concatenate([[0], np.cumsum(widths)[:-1]])
    canvas = np.zeros((max(r.shape[0] for r in regions), sum(widths)), bool)
    for region, start in zip(regions, starts):
        canvas[:region.shape[0], start:start + region.shape[1]] = region
    curves = main_curves(medial_axis(canvas, rng=0))
    return [curves[:r.shape[0], start:start + r.shape[1]] for r, start in zip(regions, starts)]


def scribble_on_grid(grid: ClassGrid, curve: np.ndarray, z: np.ndarray, params: LidarScribbleParams) -> np.ndarray:
    """Which points of the class the scribble covers: the curve, narrowed in height or widened to the target."""
    rows, cols = grid.cells[:, 0], grid.cells[:, 1]
    target_count = params.target * len(z)
    if grid.points_per_cell[curve].sum() <= target_count:
        scribble = widen_to_target(curve, grid.region, grid.points_per_cell, target_count, params.max_widen_steps)
        return scribble[rows, cols]
    on_curve = np.flatnonzero(curve[rows, cols])
    pieces = ndimage.label(grid.region, EIGHT_CONNECTED)[0]
    cell_key = rows[on_curve] * grid.region.shape[1] + cols[on_curve]
    chosen = np.zeros(len(z), bool)
    chosen[on_curve] = height_band(z[on_curve], cell_key, pieces[rows, cols][on_curve], target_count,
                                   params.min_points_per_piece)
    return chosen


def make_lidar_scribbles(xyz: np.ndarray, labels: np.ndarray,
                         params: LidarScribbleParams = LidarScribbleParams()) -> np.ndarray:
    """Scribble class per point (uint8, 255 = unlabeled) from xyz (N, 3+) and class ids (N,)."""
    scribbles = np.full(len(labels), IGNORE_INDEX, np.uint8)
    classes = [c for c in np.unique(labels) if c != IGNORE_INDEX]
    if not classes:
        return scribbles
    members = [np.flatnonzero(labels == c) for c in classes]
    grids = [class_grid(xyz[m, :2], params) for m in members]
    curves = main_curves_of_each([g.region for g in grids])
    for c, m, grid, curve in zip(classes, members, grids, curves):
        scribbles[m[scribble_on_grid(grid, curve, xyz[m, 2], params)]] = c
    return scribbles


# ---------------------------------------------------------------------------------------------- files

def read_scan(folder: Path, scan_id: str) -> tuple[np.ndarray, np.ndarray]:
    """Points (N, 4) and class ids (N,) of one scan; class = lower 16 bits of the .label words."""
    points_path = folder / "velodyne" / f"{scan_id}.bin"
    label_path = folder / "labels" / f"{scan_id}.label"
    points = np.fromfile(points_path, dtype=np.float32)
    if points.size % 4:
        raise InputError(f"{points_path}: size is not a multiple of 4 float32 (x, y, z, intensity)")
    points = points.reshape(-1, 4)
    labels = np.fromfile(label_path, dtype=np.uint32) & 0xFFFF
    if len(labels) != len(points):
        raise InputError(f"{label_path}: {len(labels)} labels for {len(points)} points in {points_path.name}; "
                         f"every point needs one uint32 label")
    if labels.size and labels.max() > IGNORE_INDEX:
        raise InputError(f"{label_path}: class id {labels.max()} is above 255; labels must hold classes.json ids "
                         f"(255 = unlabeled), so map raw SemanticKITTI ids first")
    return points, labels.astype(np.uint8)


def write_scribble_file(path: Path, scribbles: np.ndarray) -> None:
    """Same encoding as labels/: uint32, class in the lower 16 bits; no instance ids (scribbles carry none)."""
    scribbles.astype(np.uint32).tofile(path)


def is_lidar_folder(folder: Path) -> bool:
    return (folder / "velodyne").is_dir() and (folder / "labels").is_dir()


def find_lidar_folders(root: Path) -> list[Path]:
    """`root` if it is a KITTI-layout folder, else `lidar/` of root or of the sequence folders below it."""
    if is_lidar_folder(root):
        return [root]
    if is_lidar_folder(root / "lidar"):
        return [root / "lidar"]
    found = []
    for child in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for sub in (child, *sorted(p for p in child.iterdir() if p.is_dir())):
            if is_lidar_folder(sub / "lidar"):
                found.append(sub / "lidar")
    return found


def lidar_classes(folder: Path) -> ClassList | None:
    meta = folder / "meta.json"
    meta_data = read_json(meta) if meta.is_file() else {}
    if "classes" in meta_data:
        return ClassList.from_json(meta_data["classes"], where=f"{meta}: classes")
    if (folder.parent / "classes.json").is_file():
        return read_classes(folder.parent)
    return None


def scribble_lidar(root: Path, overwrite: bool = False, params: LidarScribbleParams = LidarScribbleParams(),
                   progress: bool = True) -> Coverage:
    """Scribbles for a scan folder of any reader (rewis/scans.py), a sequence's lidar/, or every sequence of a
    dataset folder, into scribbles/ beside the dense labels (rewis/lidar_weak_labels.py)."""
    from rewis.lidar_weak_labels import LidarWeakSpec, label_scans

    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: folder not found; pass a KITTI-layout LiDAR folder (velodyne/, labels/) "
                         f"or a sequence folder with lidar/")
    return label_scans(root, LidarWeakSpec("scribbles", scribbles=params), overwrite, progress)
