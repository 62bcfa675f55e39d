"""Weak labels derived from dense ground truth: points, scribbles, coarse polygons, boxes and tags.

Every generator takes a dense class-id map (255 = void) and returns a sparse map (255 = unlabeled) that agrees
with it everywhere it is labeled. Scribbles follow Scribbles4All: the skeleton (medial axis) of each eroded
connected component, reduced to its longest curve. All work is done per class or per component with scipy/skimage;
randomness comes from a generator seeded by (seed, frame name, kind), so a seed reproduces a whole dataset.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components, dijkstra
from skimage.draw import polygon as fill_polygon
from skimage.measure import approximate_polygon, find_contours
from skimage.morphology import disk, medial_axis
from tqdm import tqdm

from recon.dataset import (IGNORE_INDEX, ClassList, find_beside, read_classes, read_label, sequence_images,
                           write_json, write_label)
from recon.errors import InputError

MASK_KINDS = ("points", "scribbles", "coarse")
KINDS = MASK_KINDS + ("boxes", "tags")
EIGHT_CONNECTED = np.ones((3, 3), bool)
FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)


@dataclass(frozen=True)
class WeakLabelParams:
    point_min_area: int = 20        # components smaller than this get no click
    max_points: int = 6             # clicks per component grow with log(area) up to this
    scribble_min_area: int = 12     # smaller components are skipped (unless their class would go untouched)
    scribble_erosion: float = 4.0   # px kept free between a scribble's core and the class boundary
    scribble_radius: int = 1        # stroke half-width: 1 -> 3 px wide
    coarse_margin: int = 3          # no coarse pixel within this many px (chessboard) of a class boundary
    coarse_min_area: int = 20       # smaller polygon pieces are dropped
    coarse_tolerance: tuple[float, float] = (1.5, 3.0)  # polygon simplification, drawn per frame


# ---------------------------------------------------------------------------------------------- geometry

def present_classes(gt: np.ndarray) -> np.ndarray:
    values = np.unique(gt)
    return values[values != IGNORE_INDEX]


def class_boundaries(gt: np.ndarray) -> np.ndarray:
    """Pixels with a 4-neighbour of another value (void included); the image border is no boundary."""
    edge = np.zeros(gt.shape, bool)
    vertical = gt[1:, :] != gt[:-1, :]
    horizontal = gt[:, 1:] != gt[:, :-1]
    edge[1:, :] |= vertical
    edge[:-1, :] |= vertical
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    return edge


def depth_inside_class(gt: np.ndarray) -> np.ndarray:
    """How deep each labeled pixel lies inside its class region: 1 on its edge (a 4-neighbour of another value or
    the frame border), else 1 + the distance to the nearest edge pixel; 0 on void. One distance transform for
    all classes; counting the frame border keeps clicks and strokes off it, where an annotator would not go.
    """
    framed = np.pad(gt.astype(np.int16), 1, constant_values=-1)
    edge = class_boundaries(framed)[1:-1, 1:-1]
    depth = ndimage.distance_transform_edt(~edge) + 1.0
    depth[gt == IGNORE_INDEX] = 0.0
    return depth


def class_components(gt: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Connected components of every class in one id map (0 = void), their class and area (index = id)."""
    components = np.zeros(gt.shape, np.int32)
    component_class = [IGNORE_INDEX]
    for c in present_classes(gt):
        ids, count = ndimage.label(gt == c, structure=EIGHT_CONNECTED)
        components[ids > 0] = ids[ids > 0] + len(component_class) - 1
        component_class += [int(c)] * count
    area = np.bincount(components.ravel(), minlength=len(component_class))
    area[0] = 0
    return components, np.array(component_class), area


def first_per_group(keys: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """Index of the largest key in each group 0..n_groups-1 (every group must be non-empty)."""
    order = np.lexsort((-keys, groups))
    return order[np.searchsorted(groups[order], np.arange(n_groups))]


# ---------------------------------------------------------------------------------------------- points

def points_per_component(area: np.ndarray, params: WeakLabelParams) -> np.ndarray:
    big = area >= params.point_min_area
    count = 1 + np.floor(np.log2(np.maximum(area, 1) / params.point_min_area) / 2).astype(int)
    return np.where(big, np.clip(count, 1, params.max_points), 0)


def make_points(gt: np.ndarray, rng: np.random.Generator, params: WeakLabelParams = WeakLabelParams()) -> np.ndarray:
    components, _, area = class_components(gt)
    wanted = points_per_component(area, params)
    flat_components = components.ravel()
    candidates = np.flatnonzero(wanted[flat_components] > 0)
    # Weighted sampling without replacement (Efraimidis-Spirakis); the squared depth keeps clicks off edges.
    weight = depth_inside_class(gt).ravel()[candidates] ** 2
    keys = np.log(rng.random(candidates.size)) / weight
    group = flat_components[candidates]
    order = np.lexsort((-keys, group))
    group = group[order]
    rank = np.arange(order.size) - np.searchsorted(group, group, side="left")
    chosen = candidates[order[rank < wanted[group]]]
    weak = np.full(gt.shape, IGNORE_INDEX, np.uint8)
    weak.flat[chosen] = gt.flat[chosen]
    return weak


# ---------------------------------------------------------------------------------------------- scribbles

def skeleton_graph(skeleton: np.ndarray) -> tuple[np.ndarray, csr_matrix]:
    """The 8-neighbour graph of the skeleton pixels (flat indices), edges weighted by their length."""
    h, w = skeleton.shape
    nodes = np.flatnonzero(skeleton)
    index = np.full(skeleton.shape, -1, np.int64)
    index.flat[nodes] = np.arange(nodes.size)
    sources, targets, lengths = [], [], []
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        x0, x1 = max(0, -dx), w - max(0, dx)
        a = index[0:h - dy, x0:x1]
        b = index[dy:h, x0 + dx:x1 + dx]
        both = (a >= 0) & (b >= 0)
        sources.append(a[both])
        targets.append(b[both])
        lengths.append(np.full(both.sum(), np.hypot(dy, dx)))
    graph = csr_matrix((np.concatenate(lengths), (np.concatenate(sources), np.concatenate(targets))),
                       shape=(nodes.size, nodes.size))
    return nodes, graph


def main_curves(skeleton: np.ndarray) -> np.ndarray:
    """Per skeleton component, the longest shortest path (the tree's diameter): its main curve, no spurs."""
    curves = np.zeros(skeleton.shape, bool)
    nodes, graph = skeleton_graph(skeleton)
    if nodes.size == 0:
        return curves
    n_parts, part = connected_components(graph, directed=False)
    start = first_per_group(np.zeros(nodes.size), part, n_parts)

    def farthest(sources):
        dist = dijkstra(graph, directed=False, indices=sources, min_only=True)
        return dist, first_per_group(dist, part, n_parts)

    _, end_a = farthest(start)
    from_a, end_b = farthest(end_a)
    from_b, _ = farthest(end_b)
    on_path = np.abs(from_a + from_b - from_a[end_b][part]) < 1e-6
    curves.flat[nodes[on_path]] = True
    return curves


def make_scribbles(gt: np.ndarray, rng: np.random.Generator,
                   params: WeakLabelParams = WeakLabelParams()) -> np.ndarray:
    """rng only breaks ties between equally deep skeleton pixels."""
    components, component_class, area = class_components(gt)
    depth = depth_inside_class(gt)
    ids = np.arange(1, area.size)
    deepest = np.zeros(area.size)
    deepest[ids] = ndimage.maximum(depth, components, ids)
    # Erode by a fixed margin, but thin parts (poles, far objects) only down to their ridge so they keep a stroke.
    # Depth > 1 everywhere keeps the cores of different classes apart (no shared 8-neighbour), so one medial
    # axis of all cores at once equals the per-class axes (medial_axis has a large fixed cost per call).
    erosion = np.clip(0.5 * deepest, 1.0, params.scribble_erosion)
    core = (depth > erosion[components]) & (area[components] >= params.scribble_min_area)
    # medial_axis rather than skeletonize: thinning shrinks a compact blob to a dot and stops a bar's skeleton
    # half a width short of its ends, while the medial axis reaches the corners, as a human stroke would.
    curves = main_curves(medial_axis(core, rng=rng))
    stroke = ndimage.binary_dilation(curves, disk(params.scribble_radius)) & core
    weak = np.full(gt.shape, IGNORE_INDEX, np.uint8)
    weak[stroke] = gt[stroke]
    dots = dots_for_missed_parts(weak, gt, components, component_class, area, depth, params.scribble_min_area)
    paint_dots(weak, gt, dots)
    return weak


def dots_for_missed_parts(weak, gt, components, component_class, area, depth, min_area) -> np.ndarray:
    """Dots at the most interior pixel of each part the strokes missed (too thin to keep a core), and of the
    deepest part of every class still untouched, however small: every class present gets at least a dot."""
    ids = np.arange(1, component_class.size)
    touched = np.zeros(component_class.size, bool)
    touched[components[weak != IGNORE_INDEX]] = True
    missed = ids[~touched[ids]]
    if missed.size == 0:
        return np.zeros((0, 2), np.int64)
    peaks = np.array(ndimage.maximum_position(depth, components, missed)).reshape(-1, 2)
    wanted = area[missed] >= min_area
    untouched = np.setdiff1d(present_classes(gt), np.concatenate([weak[weak != IGNORE_INDEX],
                                                                  component_class[missed[wanted]]]))
    of_untouched = np.flatnonzero(np.isin(component_class[missed], untouched))
    if of_untouched.size:
        peak_depth = depth[peaks[of_untouched, 0], peaks[of_untouched, 1]]
        group = np.searchsorted(untouched, component_class[missed[of_untouched]])
        wanted[of_untouched[first_per_group(peak_depth, group, untouched.size)]] = True
    return peaks[wanted]


def paint_dots(weak, gt, dots: np.ndarray) -> None:
    """A dot is its pixel plus the 4-neighbours of the same class."""
    if dots.size == 0:
        return
    centre = np.zeros(gt.shape, bool)
    centre[dots[:, 0], dots[:, 1]] = True
    dot_class = np.where(centre, gt.astype(np.int32) + 1, 0)
    spread = ndimage.grey_dilation(dot_class, footprint=FOUR_CONNECTED) - 1
    paint = ((spread == gt) & (weak == IGNORE_INDEX)) | centre
    weak[paint] = gt[paint]


# ---------------------------------------------------------------------------------------------- coarse

def far_from_boundaries(gt: np.ndarray, margin: int) -> np.ndarray:
    near = ndimage.binary_dilation(class_boundaries(gt), np.ones((2 * margin + 1,) * 2, bool))
    return ~near & (gt != IGNORE_INDEX)


def filled_polygons(region: np.ndarray, tolerance: float) -> np.ndarray:
    """The region's outlines simplified to polygons and filled (holes are filled too; callers mask them)."""
    filled = np.zeros(region.shape, bool)
    padded = np.pad(region, 1).astype(np.float32)  # pad so outlines touching the image border close
    for contour in find_contours(padded, 0.5):
        corners = approximate_polygon(contour - 1, tolerance)
        rr, cc = fill_polygon(corners[:, 0], corners[:, 1], shape=region.shape)
        filled[rr, cc] = True
    return filled


def make_coarse(gt: np.ndarray, rng: np.random.Generator, params: WeakLabelParams = WeakLabelParams()) -> np.ndarray:
    allowed = far_from_boundaries(gt, params.coarse_margin)
    pieces, count = ndimage.label(allowed & (gt != IGNORE_INDEX), structure=EIGHT_CONNECTED)
    big_enough = np.bincount(pieces.ravel(), minlength=count + 1) >= params.coarse_min_area
    big_enough[0] = False
    region = big_enough[pieces]
    tolerance = rng.uniform(*params.coarse_tolerance)
    weak = np.full(gt.shape, IGNORE_INDEX, np.uint8)
    for c in present_classes(gt):
        class_region = region & (gt == c)
        inside = filled_polygons(class_region, tolerance) & class_region
        weak[inside] = c
    return weak


# ---------------------------------------------------------------------------------------------- boxes, tags

def make_boxes(gt: np.ndarray, instances: np.ndarray) -> list[dict]:
    """Box of each instance's visible pixels; class = majority non-void label under it (ties: lowest id)."""
    inside = (instances > 0) & (gt != IGNORE_INDEX)
    pairs, counts = np.unique(instances[inside].astype(np.int64) * 256 + gt[inside], return_counts=True)
    instance_ids, classes = pairs // 256, pairs % 256
    order = np.lexsort((classes, -counts, instance_ids))
    first = np.unique(instance_ids[order], return_index=True)[1]
    majority = dict(zip(instance_ids[order][first].tolist(), classes[order][first].tolist()))
    slices = ndimage.find_objects(instances.astype(np.int64))
    boxes = []
    for instance_id, cls in sorted(majority.items()):
        rows, cols = slices[instance_id - 1]
        boxes.append({"class": cls, "instance": instance_id,
                      "box": [cols.start, rows.start, cols.stop, rows.stop]})
    return boxes


def make_tags(gt: np.ndarray) -> list[int]:
    return present_classes(gt).tolist()


MASK_MAKERS = {"points": make_points, "scribbles": make_scribbles, "coarse": make_coarse}


def frame_rng(seed: int, stem: str, kind: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(stem.encode()), zlib.crc32(kind.encode())])


# ---------------------------------------------------------------------------------------------- statistics

@dataclass
class Coverage:
    """Coverage of one kind over the frames of one or more sequences (their class lists may differ)."""
    kind: str
    element: str = "pixels"   # what is labeled: pixels, or points for LiDAR
    labeled_fraction: list[float] = field(default_factory=list)   # of non-void pixels, per frame
    classes_touched: list[float] = field(default_factory=list)    # fraction of present classes, per frame
    class_counts: dict[str, int] = field(default_factory=dict)    # pixels / points / boxes / frames per class

    def add_mask(self, weak: np.ndarray, gt: np.ndarray, names: tuple[str, ...] = ()) -> None:
        labeled = weak != IGNORE_INDEX
        self.labeled_fraction.append(labeled.sum() / max(1, (gt != IGNORE_INDEX).sum()))
        self._add(weak[labeled], gt, names)

    def add_classes(self, class_ids, gt: np.ndarray, names: tuple[str, ...] = ()) -> None:
        self._add(np.asarray(class_ids, np.int64), gt, names)

    def _add(self, labeled_ids: np.ndarray, gt: np.ndarray, names: tuple[str, ...]) -> None:
        present = present_classes(gt)
        self.classes_touched.append(np.isin(present, labeled_ids).mean() if present.size else 1.0)
        ids, counts = np.unique(labeled_ids, return_counts=True)
        for class_id, count in zip(ids.tolist(), counts.tolist()):
            name = names[class_id] if class_id < len(names) else str(class_id)
            self.class_counts[name] = self.class_counts.get(name, 0) + count

    def summary(self) -> str:
        lines = [f"{self.kind}: {len(self.classes_touched)} frames"]
        if self.labeled_fraction:
            f = 100 * np.array(self.labeled_fraction)
            lines.append(f"  labeled {self.element}: {f.mean():.2f} % of non-void (min {f.min():.2f}, "
                         f"max {f.max():.2f})")
        if self.classes_touched:
            lines.append(f"  present classes touched: {100 * np.mean(self.classes_touched):.1f} % "
                         f"(worst frame {100 * np.min(self.classes_touched):.1f} %)")
        unit = {"boxes": "boxes", "tags": "frames"}.get(self.kind, self.element)
        counts = ", ".join(f"{name} {n}" for name, n in self.class_counts.items())
        lines.append(f"  per class ({unit}): {counts or 'none'}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- folders

def find_sequences(root: Path, depth: int = 2) -> list[Path]:
    """`root` itself if it is a sequence folder, else the sequence folders below it (e.g. train/, val/)."""
    root = Path(root)
    if (root / "images").is_dir():
        return [root]
    if depth == 0 or not root.is_dir():
        return []
    found = []
    for child in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        found += find_sequences(child, depth - 1)
    return found


def output_paths(seq_dir: Path, kind: str) -> list[Path]:
    weak = Path(seq_dir) / "weak"
    return [weak / kind, weak / "tags.json"] if kind == "tags" else [weak / kind]


@dataclass
class FrameInput:
    stem: str
    label: Path
    instances: Path | None


def check_sequence(seq_dir: Path, kind: str, overwrite: bool) -> tuple[ClassList, list[FrameInput]]:
    """Everything a run needs, validated before anything is written."""
    images = sequence_images(seq_dir)
    classes = read_classes(seq_dir)
    frames = []
    for image in images:
        label = find_beside(seq_dir, "labels", image.stem)
        if label is None:
            raise InputError(f"{seq_dir}: frame {image.name} has no dense label {seq_dir / 'labels' / image.stem}.png;"
                             f" weak labels are derived from dense labels, so add it or remove the frame")
        instances = find_beside(seq_dir, "instances", image.stem)
        if kind == "boxes" and instances is None:
            raise InputError(f"{seq_dir}: frame {image.name} has no instance map "
                             f"{seq_dir / 'instances' / image.stem}.png; boxes are derived from instances")
        frames.append(FrameInput(image.stem, label, instances))
    existing = [p for p in output_paths(seq_dir, kind) if p.exists()]
    if existing and not overwrite:
        raise InputError(f"{existing[0]}: weak {kind} labels already exist; pass --overwrite to replace them")
    return classes, frames


def read_instances(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.array(im).astype(np.int64)


def write_frames(staging: Path, kind: str, classes: ClassList, frames: list[FrameInput], seed: int,
                 params: WeakLabelParams, coverage: Coverage, progress: bool, desc: str) -> None:
    all_tags: set[int] = set()
    for frame in tqdm(frames, desc=desc, unit="frame", disable=not progress):
        gt = read_label(frame.label)
        if kind in MASK_MAKERS:
            weak = MASK_MAKERS[kind](gt, frame_rng(seed, frame.stem, kind), params)
            weak = np.where(weak == gt, weak, IGNORE_INDEX).astype(np.uint8)  # never disagree with the truth
            write_label(staging / kind / f"{frame.stem}.png", weak, classes)
            coverage.add_mask(weak, gt, classes.names)
        elif kind == "boxes":
            instances = read_instances(frame.instances)
            if instances.shape != gt.shape:
                raise InputError(f"{frame.instances}: size {instances.shape[::-1]} differs from its label "
                                 f"{frame.label} {gt.shape[::-1]}; instance maps must match the labels")
            boxes = make_boxes(gt, instances)
            write_json(staging / kind / f"{frame.stem}.json", {"boxes": boxes})
            coverage.add_classes([b["class"] for b in boxes], gt, classes.names)
        else:
            tags = make_tags(gt)
            all_tags.update(tags)
            write_json(staging / kind / f"{frame.stem}.json", {"classes": tags})
            coverage.add_classes(tags, gt, classes.names)
    if kind == "tags":
        write_json(staging / "tags.json", {"classes": sorted(all_tags)})


def move_into_place(staging: Path, targets: list[Path]) -> None:
    """Replace each target by its staged twin; old outputs are removed only once the new ones are in place."""
    for target in targets:
        staged = staging / target.name
        if not staged.exists():
            continue
        if target.is_dir():
            old = staging / f"{target.name}.old"
            target.rename(old)
            staged.rename(target)
        else:
            os.replace(staged, target)


def label_sequence(seq_dir: Path, kind: str, seed: int, classes: ClassList,
                   frames: list[FrameInput], coverage: Coverage, params: WeakLabelParams = WeakLabelParams(),
                   progress: bool = True) -> None:
    weak_dir = Path(seq_dir) / "weak"
    weak_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{kind}.tmp-", dir=weak_dir))
    try:
        write_frames(staging, kind, classes, frames, seed, params, coverage, progress,
                     desc=f"{Path(seq_dir).name} {kind}")
        move_into_place(staging, output_paths(seq_dir, kind))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def label_folder(root: Path, kind: str, seed: int = 0, overwrite: bool = False,
                 params: WeakLabelParams = WeakLabelParams(), progress: bool = True) -> Coverage:
    """Weak labels of one kind for a sequence folder or every sequence of a dataset folder."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: folder not found; pass a sequence folder (images/, labels/, classes.json) "
                         f"or a dataset folder holding such sequences")
    sequences = find_sequences(root)
    if not sequences:
        raise InputError(f"{root}: no images/ folder here or in its sequence folders; put the frames in "
                         f"{root / 'images'} (png or jpg) with dense labels in {root / 'labels'}")
    checked = [(seq, *check_sequence(seq, kind, overwrite)) for seq in sequences]
    coverage = Coverage(kind)
    for seq, classes, frames in checked:
        label_sequence(seq, kind, seed, classes, frames, coverage, params, progress)
    return coverage
