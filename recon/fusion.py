"""Depth maps -> one scene cloud whose every point links back to the pixel it came from.

Used by the RGB-D source (measured depth) and by dense stereo (estimated depth + confidence). Points keep
the colour, weak label and ground-truth label of their source pixel; the least confident fraction of each
view is dropped (docs/METHODS.md, "3D data": 10 % by default). Dense stereo runs at a capped working resolution,
so its depth pixels stand for blocks of the stored image's pixels (links point at the stored pixel under each
working pixel's centre), and its cloud is merged to a point budget by voxels (a 50-frame phone capture gave
15.9 M points, 1.1 GB).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recon.scene import UNLABELED, Cloud, Links


@dataclass
class DepthView:
    """One frame's depth map with everything read at its pixels (all (H, W) arrays share one size)."""

    depth: np.ndarray  # float32 z in metres, 0 = none
    conf: np.ndarray  # float32 in [0, 1]
    rgb: np.ndarray  # uint8 (H, W, 3)
    K: np.ndarray  # (3, 3)
    cam_from_world: np.ndarray  # (4, 4)
    weak_label: np.ndarray | None = None  # uint8, 255 = none
    label: np.ndarray | None = None  # uint8 ground truth
    image_size: tuple[int, int] | None = None  # (H, W) of the stored image links point into; None = depth's size


@dataclass
class FusionOptions:
    drop_fraction: float = 0.1  # least confident share of each view's points to drop
    stride: int = 1  # keep every stride-th pixel in both directions
    min_conf: float = 0.0  # points below this confidence are dropped as well


def depth_confidence(depth: np.ndarray, mode: str = "range", half_range: float = 10.0) -> np.ndarray:
    """Confidence of measured depth. 'range': 1 / (1 + (z / half_range)^2), since depth sensors' noise grows
    roughly with z^2 (0.5 at `half_range` metres); 'constant': 1 wherever depth exists."""
    valid = depth > 0
    if mode == "constant":
        return valid.astype(np.float32)
    if mode == "range":
        return np.where(valid, 1.0 / (1.0 + (depth / half_range) ** 2), 0.0).astype(np.float32)
    raise ValueError(f"unknown depth confidence mode {mode!r}; use 'range' or 'constant'")


def backproject(depth: np.ndarray, K: np.ndarray, cam_from_world: np.ndarray, v: np.ndarray, u: np.ndarray) -> np.ndarray:
    """World points of pixels (v, u) through their centres (u + 0.5, v + 0.5) at depth z (float64, (M, 3))."""
    z = depth[v, u].astype(np.float64)
    pix = np.stack([u + 0.5, v + 0.5, np.ones_like(z)], axis=1)
    cam = (pix @ np.linalg.inv(K).T) * z[:, None]
    world_from_cam = np.linalg.inv(cam_from_world)
    return cam @ world_from_cam[:3, :3].T + world_from_cam[:3, 3]


def select_pixels(view: DepthView, options: FusionOptions) -> tuple[np.ndarray, np.ndarray]:
    """Pixels kept from one view: with depth, on the stride grid, above min_conf, minus the least confident."""
    grid = np.zeros(view.depth.shape, bool)
    grid[::options.stride, ::options.stride] = True
    keep = grid & (view.depth > 0) & np.isfinite(view.depth) & (view.conf >= options.min_conf)
    v, u = np.nonzero(keep)
    if options.drop_fraction > 0 and len(v):
        conf = view.conf[v, u]
        # rank-based so that ties (e.g. constant confidence) still drop exactly the requested share
        order = np.argsort(conf, kind="stable")
        kept = np.sort(order[int(round(options.drop_fraction * len(order))):])
        v, u = v[kept], u[kept]
    return v, u


def fuse_views(views: list[DepthView], options: FusionOptions | None = None) -> tuple[Cloud, Links]:
    """Back-project every view and concatenate; each point is linked to its source pixel in its source frame."""
    options = options or FusionOptions()
    parts, per_frame, start = [], [], 0
    for f, view in enumerate(views):
        v, u = select_pixels(view, options)
        n = len(v)
        parts.append(_view_points(view, v, u, f))
        per_frame.append((np.arange(start, start + n), *stored_pixels(v, u, view.depth.shape, view.image_size)))
        start += n
    cloud = _concat_clouds(parts, with_label=any(view.label is not None for view in views))
    return cloud, Links.from_per_frame(per_frame)


def stored_pixels(v: np.ndarray, u: np.ndarray, shape: tuple[int, int], image_size: tuple[int, int] | None):
    """Rows and columns of the stored image's pixels under the centres of pixels (v, u) of a `shape` grid."""
    if image_size is None or tuple(image_size) == tuple(shape):
        return v, u
    rows = np.minimum(((v + 0.5) * (image_size[0] / shape[0])).astype(np.int64), image_size[0] - 1)
    cols = np.minimum(((u + 0.5) * (image_size[1] / shape[1])).astype(np.int64), image_size[1] - 1)
    return rows, cols


def _view_points(view: DepthView, v: np.ndarray, u: np.ndarray, frame: int) -> dict:
    n = len(v)
    return {"xyz": backproject(view.depth, view.K, view.cam_from_world, v, u).astype(np.float32),
            "rgb": view.rgb[v, u].astype(np.uint8),
            "conf": np.clip(view.conf[v, u], 0, 1).astype(np.float32),
            "weak_label": _read_at(view.weak_label, v, u),
            "label": _read_at(view.label, v, u),
            "source_frame": np.full(n, frame, np.int32)}


def _read_at(image: np.ndarray | None, v: np.ndarray, u: np.ndarray) -> np.ndarray:
    if image is None:
        return np.full(len(v), UNLABELED, np.uint8)
    return image[v, u].astype(np.uint8)


def _concat_clouds(parts: list[dict], with_label: bool) -> Cloud:
    if not parts:
        return Cloud.from_xyz(np.zeros((0, 3), np.float32), label=np.zeros(0, np.uint8) if with_label else None)
    fields = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    if not with_label:
        fields["label"] = None
    return Cloud(**fields)


def vote_labels(point: np.ndarray, labels: np.ndarray, num_points: int) -> np.ndarray:
    """Per point, the most frequent non-255 label among its observations (255 where it has none); ties go to
    the smaller class id. Used to accumulate weak labels over all pixels a point is seen at."""
    out = np.full(num_points, UNLABELED, np.uint8)
    labelled = labels != UNLABELED
    point, labels = point[labelled].astype(np.int64), labels[labelled].astype(np.int64)
    if not len(point):
        return out
    keys, counts = np.unique(point * 256 + labels, return_counts=True)
    pts, cls = keys // 256, keys % 256
    # for each point, the (count desc, class asc) best entry comes first after this sort
    order = np.lexsort((cls, -counts, pts))
    first = np.ones(len(order), bool)
    first[1:] = pts[order][1:] != pts[order][:-1]
    best = order[first]
    out[pts[best]] = cls[best].astype(np.uint8)
    return out


def vote_across_views(xyz: np.ndarray, views: list[DepthView], own: np.ndarray | None = None,
                      abs_tol: float = 0.05, rel_tol: float = 0.03) -> np.ndarray:
    """Accumulated weak labels (docs/METHODS.md, "3D data"): per point, the majority weak label over every frame
    that sees it - the point projects into the frame and agrees with that frame's depth map within
    abs_tol + rel_tol * D - so a scene cloud gathers the scribbles of all its frames, not only of the pixel it
    came from. Ties go to the smaller class id; 255 where no frame that sees the point has a label there.
    `own` (optional, per point) is a label voted elsewhere (e.g. along SfM tracks) that counts as one vote."""
    import torch

    from recon.projection import compute_links

    labelled = [v for v in views if v.weak_label is not None]
    num_classes = max([int(v.weak_label[v.weak_label != UNLABELED].max(initial=0)) + 1 for v in labelled] + [1])
    counts = torch.zeros(len(xyz) * num_classes, dtype=torch.int32)
    points = torch.from_numpy(np.ascontiguousarray(xyz, dtype=np.float32))
    for view in labelled:
        h, w = view.depth.shape
        (point, v, u), = compute_links(points, view.K, view.cam_from_world, w, h, visibility="depth",
                                       depth_maps=view.depth[None], abs_tol=abs_tol, rel_tol=rel_tol)
        label = torch.from_numpy(view.weak_label.astype(np.int64))[v.long(), u.long()]
        hit = label != UNLABELED
        key = point[hit] * num_classes + label[hit]
        counts.index_add_(0, key, torch.ones(len(key), dtype=torch.int32))
    counts = counts.view(len(xyz), num_classes)
    if own is not None:
        mine = torch.from_numpy(own.astype(np.int64))
        has = (mine != UNLABELED) & (mine < num_classes)
        counts[has.nonzero().squeeze(1), mine[has]] += 1
    best = counts.argmax(1).numpy().astype(np.uint8)  # argmax takes the first maximum: the smaller class id
    return np.where(counts.sum(1).numpy() > 0, best, UNLABELED).astype(np.uint8)


# ----------------------------------------------------------------------------------------- dense stereo
def merge_clouds(a: Cloud, links_a: Links, b: Cloud, links_b: Links) -> tuple[Cloud, Links]:
    """One cloud holding a's points then b's; links of each frame concatenated (b's indices shifted)."""
    with_label = a.label is not None or b.label is not None
    fields = {}
    for name in ("xyz", "rgb", "conf", "weak_label", "source_frame", "label"):
        parts = [getattr(c, name) for c in (a, b)]
        if name == "label":
            if not with_label:
                fields[name] = None
                continue
            parts = [p if p is not None else np.full(len(c), UNLABELED, np.uint8) for p, c in zip(parts, (a, b))]
        fields[name] = np.concatenate(parts)
    per_frame = []
    for f in range(links_a.num_frames):
        pa, va, ua = links_a.frame(f)
        pb, vb, ub = links_b.frame(f)
        per_frame.append((np.concatenate([pa, pb + len(a)]), np.concatenate([va, vb]), np.concatenate([ua, ub])))
    return Cloud(**fields), Links.from_per_frame(per_frame)


def depth_ranges(scene, margin: float = 0.2, percentile: float = 1.0) -> np.ndarray:
    """(F, 2) near/far per frame from the z of the SfM points linked to it, widened by `margin`."""
    xyz = scene.cloud.xyz.astype(np.float64)
    ranges = np.zeros((len(scene.frames), 2))
    for f, frame in enumerate(scene.frames):
        point, _, _ = scene.links.frame(f)
        z = xyz[point] @ frame.cam_from_world[2, :3] + frame.cam_from_world[2, 3]
        z = z[z > 0]
        if len(z):
            ranges[f] = np.percentile(z, percentile) * (1 - margin), np.percentile(z, 100 - percentile) * (1 + margin)
    seen = ranges[:, 1] > 0
    if seen.any() and not seen.all():
        ranges[~seen] = ranges[seen, 0].min(), ranges[seen, 1].max()
    ranges[:, 0] = np.maximum(ranges[:, 0], 1e-3)
    return ranges


def densify(scene, options, stages) -> tuple[object, dict]:
    """Dense plane-sweep stereo (recon.stereo, when installed) at a capped working resolution, fused into the
    scene's cloud and merged to `options.points_per_frame` points per frame."""
    import sys

    try:
        from recon.stereo import estimate_depths
    except ModuleNotFoundError as e:
        if e.name != "recon.stereo":
            raise
        if options.progress:
            print("[recon] dense stereo not available yet; keeping the SfM cloud", file=sys.stderr)
        return scene, {"status": "dense stereo not available yet"}
    import torch

    from recon.sources import read_frame_pixels

    with stages("dense read"):
        pixels = [read_frame_pixels(f) for f in scene.frames]
        # uint8: the stereo converts frame by frame, so full-size float copies of all frames never exist
        images = torch.from_numpy(np.stack([p[0] for p in pixels])).permute(0, 3, 1, 2)
        K = torch.from_numpy(np.stack([f.K for f in scene.frames])).float()
        poses = torch.from_numpy(np.stack([f.cam_from_world for f in scene.frames])).float()
        near_far = torch.from_numpy(depth_ranges(scene)).float()
    with stages("dense stereo"):
        depth, conf = estimate_depths(images, K, poses, near_far, progress=options.progress,
                                      max_side=options.stereo_max_side, upsample=False)
        del images
    with stages("dense fusion"):
        views = [working_view(d.numpy(), c.numpy(), p, f) for d, c, p, f in zip(depth, conf, pixels, scene.frames)]
        del pixels
        dense, dense_links = fuse_views(views, FusionOptions(drop_fraction=options.drop_fraction, stride=options.stride))
        fused = len(dense)
        dense, dense_links, voxel = voxel_merge(dense, dense_links, options.points_per_frame * len(scene.frames))
        sfm_votes = np.concatenate([scene.cloud.weak_label, np.full(len(dense), UNLABELED, np.uint8)])
        scene.cloud, scene.links = merge_clouds(scene.cloud, scene.links, dense, dense_links)
    if options.cross_view_labels:
        with stages("vote labels"):
            scene.cloud.weak_label = vote_across_views(scene.cloud.xyz, views, own=sfm_votes)
    return scene, {"status": "ok", "working_size": list(depth.shape[:0:-1]), "points": len(dense),
                   "points_fused": fused, "voxel_size": voxel, "pixels_with_depth": int((depth > 0).sum()),
                   "pixels_total": int(depth.numel())}


def working_view(depth: np.ndarray, conf: np.ndarray, pixels: tuple, frame) -> DepthView:
    """A frame's stereo depth at the working resolution, with colour and labels read at the stored pixel under
    each working pixel's centre (so a point's label is the one at the pixel it links to)."""
    rgb, weak, label = pixels
    K = np.asarray(frame.K, np.float64)
    if depth.shape != rgb.shape[:2]:
        h, w = depth.shape
        rows, cols = stored_pixels(np.arange(h)[:, None], np.arange(w)[None, :], (h, w), rgb.shape[:2])
        rgb, weak, label = (None if a is None else a[rows, cols] for a in (rgb, weak, label))
        # continuous pixel coordinates start at the image corner, so resizing scales K's rows
        K = np.diag([w / frame.width, h / frame.height, 1.0]) @ K
    return DepthView(depth=depth, conf=conf, rgb=rgb, K=K, cam_from_world=frame.cam_from_world, weak_label=weak,
                     label=label, image_size=(frame.height, frame.width))


# ------------------------------------------------------------------------------------------ point budget
def voxel_merge(cloud: Cloud, links: Links, budget: int) -> tuple[Cloud, Links, float]:
    """At most `budget` points: the points sharing a voxel, the smallest voxel that meets the budget, become
    one point, and every link of theirs points at it (a merged point is seen wherever its parts were). Returns
    the voxel size too (0: the cloud was within budget and is returned as it is)."""
    if budget <= 0 or len(cloud) <= budget:
        return cloud, links, 0.0
    xyz = cloud.xyz.astype(np.float64)
    size = budget_voxel_size(xyz, budget)
    groups = voxel_groups(xyz, size)
    merged = Links(offsets=links.offsets, point=groups[links.point], v=links.v, u=links.u)
    return merge_groups(cloud, groups), merged, size


def voxel_groups(xyz: np.ndarray, size: float) -> np.ndarray:
    """Per point, the index of its occupied voxel (0..voxels-1, in key order)."""
    cells = np.floor((xyz - xyz.min(0)) / size).astype(np.int64)
    span = cells.max(0) + 1
    keys = (cells[:, 0] * span[1] + cells[:, 1]) * span[2] + cells[:, 2]
    return np.unique(keys, return_inverse=True)[1].reshape(-1)


def budget_voxel_size(xyz: np.ndarray, budget: int, steps: int = 12) -> float:
    """Smallest voxel (to ~0.3 %, bisecting in log scale) holding the points in at most `budget` voxels."""
    extent = float(np.ptp(xyz, axis=0).max())
    if extent <= 0:
        return 1.0
    small, large = extent * 1e-5, extent  # a cube of the extent holds at most 8 voxels
    for _ in range(steps):
        middle = float(np.sqrt(small * large))
        if voxel_groups(xyz, middle).max() + 1 > budget:
            small = middle
        else:
            large = middle
    return large


def merge_groups(cloud: Cloud, groups: np.ndarray) -> Cloud:
    """One point per group: confidence-weighted mean position and colour, the highest confidence and the
    source frame of the point that has it, majority weak and ground-truth labels."""
    count = int(groups.max()) + 1
    weight = cloud.conf.astype(np.float64) + 1e-6
    total = np.bincount(groups, weight, count)

    def weighted_mean(values: np.ndarray) -> np.ndarray:
        return np.stack([np.bincount(groups, weight * values[:, k], count) for k in range(values.shape[1])], 1) / total[:, None]

    order = np.lexsort((-cloud.conf, groups))  # per group, the most confident point first
    best = order[np.flatnonzero(np.r_[True, np.diff(groups[order]) != 0])]
    label = None if cloud.label is None else vote_labels(groups, cloud.label, count)
    return Cloud(xyz=weighted_mean(cloud.xyz.astype(np.float64)).astype(np.float32),
                 rgb=np.clip(np.round(weighted_mean(cloud.rgb.astype(np.float64))), 0, 255).astype(np.uint8),
                 conf=cloud.conf[best].astype(np.float32), weak_label=vote_labels(groups, cloud.weak_label, count),
                 source_frame=cloud.source_frame[best].astype(np.int32), label=label)
