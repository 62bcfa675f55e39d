"""World -> camera -> pixel projection for V views at once, visibility, and point <-> pixel links (torch).

Conventions (docs/FORMATS.md): OpenCV camera axes; `P = K @ cam_from_world[:3]` (3 x 4) maps a homogeneous
world point to h = (h0, h1, h2); continuous pixel coordinates are x = h0 / h2, y = h1 / h2 and the depth is
z = h2 (the camera-frame z when K's last row is (0, 0, 1)); pixel (u, v) = (floor(x), floor(y)); a point is
inside a W x H image iff 0 <= x < W and 0 <= y < H (this reproduces the KITTI / nuScenes counts of
shared/data/README.md exactly).

Every h_i is computed with one explicit formula, h_i = ((P_i0 x + P_i1 y) + P_i2 z) + P_i3, one rounding per
operation in the points' dtype, so any other implementation that follows it (the numpy baseline of
benchmarks/projection.py) gets bit-identical pixels and depths. Everything runs on the device of `points`
(torch input) or on the CPU (numpy input); there is no Python loop over points, only over chunks.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

Array = np.ndarray | torch.Tensor | Sequence
Links = list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]  # per view: point int64, v int32, u int32

# Points projected at once per view on the CPU: the elementwise work is memory bound, so a chunk whose
# temporaries stay in the caches runs several times faster than whole-array passes.
CPU_CHUNK_POINTS = 1 << 17
DEFAULT_ABS_TOL = 0.05  # metres; our own default (no paper fixes it), see docs/METHODS.md section 1
DEFAULT_REL_TOL = 0.01  # fraction of the reference depth; our own default


# ---------------------------------------------------------------------------------------------- matrices

def as_tensor(x: Array, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> torch.Tensor:
    """numpy / list / tensor -> tensor (no copy when dtype and device already match)."""
    if isinstance(x, torch.Tensor):
        return x.to(device=device or x.device, dtype=dtype or x.dtype)
    return torch.as_tensor(np.asarray(x), dtype=dtype, device=device)


def homogeneous_4x4(matrix: Array) -> torch.Tensor:
    """(..., 3, 3) rotation, (..., 3, 4) [R | t] or (..., 4, 4) -> (..., 4, 4) with last row (0, 0, 0, 1)."""
    m = as_tensor(matrix)
    rows, cols = m.shape[-2:]
    if (rows, cols) == (4, 4):
        return m
    if (rows, cols) not in ((3, 3), (3, 4)):
        raise ValueError(f"expected a 3x3, 3x4 or 4x4 matrix, got shape {tuple(m.shape)}")
    out = torch.zeros(*m.shape[:-2], 4, 4, dtype=m.dtype, device=m.device)
    out[..., :3, :cols] = m
    out[..., 3, 3] = 1
    return out


def projection_matrices(K: Array, cam_from_world: Array) -> torch.Tensor:
    """K (V, 3, 3) or (3, 3), cam_from_world (V, 4, 4) / (V, 3, 4) -> P = K @ [R | t], (V, 3, 4) float64."""
    K64 = as_tensor(K, torch.float64)
    T64 = homogeneous_4x4(as_tensor(cam_from_world, torch.float64))
    K64, T64 = _batched(K64), _batched(T64)
    return K64 @ T64[:, :3, :]


def _batched(matrix: torch.Tensor) -> torch.Tensor:
    return matrix[None] if matrix.dim() == 2 else matrix


def _image_sizes(width: int | Sequence[int], height: int | Sequence[int], views: int) -> tuple[list[int], list[int]]:
    widths = [int(width)] * views if np.ndim(width) == 0 else [int(w) for w in width]
    heights = [int(height)] * views if np.ndim(height) == 0 else [int(h) for h in height]
    if len(widths) != views or len(heights) != views:
        raise ValueError(f"got {len(widths)} widths and {len(heights)} heights for {views} views")
    return widths, heights


def _size_bounds(sizes: list[int], like: torch.Tensor) -> float | torch.Tensor:
    """One bound for all views as a plain number (the fast path), else a (V, 1) column."""
    if len(set(sizes)) == 1:
        return float(sizes[0])
    return torch.tensor(sizes, dtype=like.dtype, device=like.device)[:, None]


# -------------------------------------------------------------------------------------------- projection

def homogeneous_rows(points: torch.Tensor, P: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """h0, h1, h2 (each (V, N)) of points (N, 3) under P (V, 3, 4), by the explicit formula of the module doc."""
    x, y, z = points[:, 0], points[:, 1], points[:, 2]

    def row(i: int) -> torch.Tensor:
        p = P[:, i, :, None]  # (V, 4, 1): broadcasts against the (N,) coordinates
        return ((p[:, 0] * x + p[:, 1] * y) + p[:, 2] * z) + p[:, 3]

    return row(0), row(1), row(2)


def project_points(points: Array, K: Array, cam_from_world: Array) -> tuple[torch.Tensor, torch.Tensor]:
    """points (N, 3) world, K (V, 3, 3), cam_from_world (V, 4, 4) -> pixel coords (V, N, 2) as (x, y), depth (V, N).

    Computed in the dtype of `points` (float32 / float64; other dtypes become float32) on its device."""
    pts = _points_tensor(points)
    P = projection_matrices(K, cam_from_world).to(pts.device, pts.dtype)
    h0, h1, h2 = homogeneous_rows(pts, P)
    return torch.stack((h0 / h2, h1 / h2), dim=-1), h2


def _points_tensor(points: Array) -> torch.Tensor:
    pts = as_tensor(points)
    if not pts.is_floating_point():
        pts = pts.float()
    if pts.dim() != 2 or pts.shape[1] != 3:
        raise ValueError(f"points must have shape (N, 3), got {tuple(pts.shape)}")
    return pts


def in_image_mask(pixels: torch.Tensor, depth: torch.Tensor, width: int | Sequence[int],
                  height: int | Sequence[int], min_depth: float = 0.0) -> torch.Tensor:
    """(V, N) bool: depth > min_depth and 0 <= x < W and 0 <= y < H (per-view sizes allowed)."""
    widths, heights = _image_sizes(width, height, depth.shape[0])
    x, y = pixels[..., 0], pixels[..., 1]
    return _inside(x, y, depth, _size_bounds(widths, x), _size_bounds(heights, x), min_depth)


def _inside(x, y, z, W, H, min_depth: float) -> torch.Tensor:
    inside = z > min_depth
    inside &= x >= 0
    inside &= x < W
    inside &= y >= 0
    inside &= y < H
    return inside


# ------------------------------------------------------------------------------------------- visibility

def zbuffer_visible(pixels: torch.Tensor, depth: torch.Tensor, width: int | Sequence[int],
                    height: int | Sequence[int], min_depth: float = 0.0, abs_tol: float = DEFAULT_ABS_TOL,
                    rel_tol: float = DEFAULT_REL_TOL) -> torch.Tensor:
    """(V, N) bool: in the image and z <= z_near + abs_tol + rel_tol * z_near, z_near = the nearest depth that
    lands on the same pixel of the same view."""
    widths, heights = _image_sizes(width, height, depth.shape[0])
    def keep_fn(view, keys, z):
        nearest = _empty_zbuffer(widths[view] * heights[view], z)
        _scatter_nearest(nearest, keys, z)
        return _view_zbuffer_keep(keys, z, nearest, abs_tol, rel_tol)

    return _mask_visibility(pixels, depth, widths, heights, min_depth, keep_fn)


def depth_test_visible(pixels: torch.Tensor, depth: torch.Tensor, depth_maps: Array, min_depth: float = 0.0,
                       abs_tol: float = DEFAULT_ABS_TOL, rel_tol: float = 0.0) -> torch.Tensor:
    """(V, N) bool: in the image of depth_maps (V, H, W) and |D(v, u) - z| <= abs_tol + rel_tol * D, D > 0
    (D = 0 means no depth)."""
    maps = _depth_stack(depth_maps, depth)
    H, W = maps.shape[-2:]
    keep_fn = lambda view, keys, z: _view_depth_keep(keys, z, maps[view], abs_tol, rel_tol)
    return _mask_visibility(pixels, depth, [W] * len(maps), [H] * len(maps), min_depth, keep_fn)


def _depth_stack(depth_maps: Array, like: torch.Tensor) -> torch.Tensor:
    """(V, H, W) tensor; a list of per-view maps of different sizes is zero padded (0 = no depth)."""
    if isinstance(depth_maps, (list, tuple)):
        maps = [as_tensor(m, like.dtype, like.device) for m in depth_maps]
        H = max(m.shape[0] for m in maps)
        W = max(m.shape[1] for m in maps)
        out = torch.zeros(len(maps), H, W, dtype=like.dtype, device=like.device)
        for i, m in enumerate(maps):
            out[i, :m.shape[0], :m.shape[1]] = m
        return out
    return as_tensor(depth_maps, like.dtype, like.device)


def _view_zbuffer_keep(keys: torch.Tensor, z: torch.Tensor, nearest: torch.Tensor, abs_tol: float,
                       rel_tol: float) -> torch.Tensor:
    """Which in-image points of one view lie within the tolerance of the nearest depth at their pixel;
    `nearest` (H * W,) already holds the per-pixel minimum (see _scatter_nearest)."""
    z_near = nearest.index_select(0, keys)
    return z <= z_near + (abs_tol + rel_tol * z_near)


def _scatter_nearest(nearest: torch.Tensor, keys: torch.Tensor, z: torch.Tensor) -> None:
    nearest.scatter_reduce_(0, keys, z, "amin")


def _empty_zbuffer(num_pixels: int, like: torch.Tensor) -> torch.Tensor:
    return torch.full((num_pixels,), float("inf"), dtype=like.dtype, device=like.device)


def _view_depth_keep(keys: torch.Tensor, z: torch.Tensor, depth_map: torch.Tensor, abs_tol: float,
                     rel_tol: float) -> torch.Tensor:
    d = depth_map.reshape(-1).index_select(0, keys)
    return (d > 0) & ((d - z).abs() <= abs_tol + rel_tol * d)


def _keys(x: torch.Tensor, y: torch.Tensor, width: int) -> torch.Tensor:
    """Row-major pixel index of in-image coordinates (x, y >= 0, so truncation is floor)."""
    return y.to(torch.int64) * width + x.to(torch.int64)


def _mask_visibility(pixels, depth, widths, heights, min_depth, keep_fn) -> torch.Tensor:
    """(V, N) mask from a per-view keep_fn(view, keys, z) over the in-image points."""
    inside = in_image_mask(pixels, depth, widths, heights, min_depth)
    mask = torch.zeros_like(inside)
    for view in range(depth.shape[0]):
        idx = inside[view].nonzero().squeeze(1)
        keys = _keys(pixels[view, idx, 0], pixels[view, idx, 1], widths[view])
        mask[view, idx] = keep_fn(view, keys, depth[view, idx])
    return mask


# ------------------------------------------------------------------------------------------------ links

@dataclass(frozen=True)
class _LinkJob:
    """What every view of one compute_links call shares."""
    xyz: torch.Tensor  # (3, N) contiguous coordinate rows: faster elementwise kernels than (N, 3) columns
    visibility: str
    min_depth: float
    abs_tol: float
    rel_tol: float
    chunk: int


def compute_links(points: Array, K: Array, cam_from_world: Array, width: int | Sequence[int],
                  height: int | Sequence[int], *, visibility: str = "zbuffer", depth_maps: Array | None = None,
                  min_depth: float = 0.0, abs_tol: float = DEFAULT_ABS_TOL, rel_tol: float = DEFAULT_REL_TOL,
                  chunk_points: int | None = None, workers: int | None = None) -> Links:
    """Links of every view: [(point int64, v int32, u int32)] with points in ascending index order.

    visibility: "zbuffer" (nearest depth per pixel among these points), "depth" (test against depth_maps
    (V, H, W) or a list of (H, W) maps; rel_tol scales D), or "none" (in-image and z > min_depth only).
    Memory stays O(points + pixels + links): views are processed one at a time and points in chunks of
    `chunk_points` (default: cache sized on the CPU, all points on a GPU). On the CPU, `workers` threads
    (default: torch's intra-op thread count) each take whole views with single-threaded kernels: the z-buffer
    scatter and the compaction kernels are serial in torch, so views in parallel scale where intra-op
    threads do not."""
    if visibility not in ("zbuffer", "depth", "none"):
        raise ValueError(f"visibility must be 'zbuffer', 'depth' or 'none', got {visibility!r}")
    if visibility == "depth" and depth_maps is None:
        raise ValueError("visibility='depth' needs depth_maps")
    pts = _points_tensor(points)
    P = projection_matrices(K, cam_from_world).to(pts.device, pts.dtype)
    widths, heights = _image_sizes(width, height, P.shape[0])
    maps = _depth_stack(depth_maps, pts) if visibility == "depth" else None
    chunk = chunk_points or (len(pts) if pts.device.type != "cpu" else CPU_CHUNK_POINTS)
    job = _LinkJob(pts.T.contiguous(), visibility, min_depth, abs_tol, rel_tol, max(1, chunk))

    def one_view(view: int):
        depth_map = None if maps is None else maps[view, :heights[view], :widths[view]].contiguous()
        p = P[view].reshape(12).unbind(0)  # 0-dim tensors: the scalar fast path of the elementwise kernels
        return _view_links(job, p, widths[view], heights[view], depth_map)

    if pts.device.type != "cpu":
        return [one_view(v) for v in range(len(P))]
    # Always single-threaded kernels on the CPU, even with one worker: intra-op OpenMP threads on chunk-sized
    # tensors collapse when the cores are busy (measured 100x slower with another process on one core).
    workers = torch.get_num_threads() if workers is None else workers
    return _run_threaded(one_view, len(P), max(1, workers))


def _run_threaded(fn, count: int, workers: int) -> list:
    """fn(i) for i < count in `workers` Python threads (torch kernels release the GIL), one intra-op thread
    each so that the threads do not oversubscribe the cores; the caller's thread setting is restored."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(max_workers=min(workers, count)) as pool:
            return list(pool.map(fn, range(count)))
    finally:
        torch.set_num_threads(previous)


def _view_links(job: _LinkJob, p: Sequence[torch.Tensor], width: int, height: int,
                depth_map: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Links of one view whose projection matrix entries (row-major, 0-dim tensors) are p.

    No compaction until the very end: points outside the image get the guard key W * H (one spare z-buffer
    slot), so every pass runs over dense, cache-sized chunks with reused buffers, and the one expensive
    compaction (nonzero) runs once per view on the final mask."""
    n, guard = job.xyz.shape[1], width * height
    keys = torch.empty(n, dtype=torch.int64, device=job.xyz.device)
    depth = torch.empty(n, dtype=job.xyz.dtype, device=job.xyz.device)
    nearest = _empty_zbuffer(guard + 1, job.xyz) if job.visibility == "zbuffer" else None
    scratch = _ChunkScratch(min(job.chunk, n), job.xyz)
    for start in range(0, n, job.chunk):
        stop = min(start + job.chunk, n)
        _chunk_keys(job.xyz[:, start:stop], p, width, height, job.min_depth, scratch, keys[start:stop],
                    depth[start:stop])
        if nearest is not None:
            nearest.scatter_reduce_(0, keys[start:stop], depth[start:stop], "amin")  # while still in cache
    keep = keys < guard
    if job.visibility == "zbuffer":
        keep &= _view_zbuffer_keep(keys, depth, nearest, job.abs_tol, job.rel_tol)
    elif job.visibility == "depth":
        padded = torch.cat([depth_map.reshape(-1), depth_map.new_zeros(1)])  # guard slot: no depth
        keep &= _view_depth_keep(keys, depth, padded, job.abs_tol, job.rel_tol)
    point = _flat_nonzero(keep)
    kept_keys = keys.index_select(0, point)
    v = torch.div(kept_keys, width, rounding_mode="floor")
    return point, v.to(torch.int32), (kept_keys - v * width).to(torch.int32)


class _ChunkScratch:
    """Buffers reused by every chunk of a view: fresh large tensors cost page faults on each allocation."""

    def __init__(self, size: int, like: torch.Tensor):
        self.h = [torch.empty(size, dtype=like.dtype, device=like.device) for _ in range(3)]
        self.ok = torch.empty(size, dtype=torch.bool, device=like.device)
        self.test = torch.empty(size, dtype=torch.bool, device=like.device)
        self.column = torch.empty(size, dtype=torch.int64, device=like.device)


def _chunk_keys(xyz: torch.Tensor, p: Sequence[torch.Tensor], width: int, height: int, min_depth: float,
                scratch: _ChunkScratch, keys_out: torch.Tensor, depth_out: torch.Tensor) -> None:
    """Pixel keys v * W + u (W * H for points outside the image or too close) and depths of one chunk."""
    size = xyz.shape[1]
    h0, h1, tmp = (b[:size] for b in scratch.h)
    ok, test, column = scratch.ok[:size], scratch.test[:size], scratch.column[:size]
    for row, out in ((0, h0), (4, h1), (8, depth_out)):  # ((p0 x + p1 y) + p2 z) + p3, as the module doc says
        torch.mul(xyz[0], p[row], out=out)
        out.add_(torch.mul(xyz[1], p[row + 1], out=tmp))
        out.add_(torch.mul(xyz[2], p[row + 2], out=tmp))
        out.add_(p[row + 3])
    x, y = h0.div_(depth_out), h1.div_(depth_out)
    torch.gt(depth_out, min_depth, out=ok)
    ok &= torch.ge(x, 0, out=test)
    ok &= torch.lt(x, width, out=test)
    ok &= torch.ge(y, 0, out=test)
    ok &= torch.lt(y, height, out=test)
    # float -> int64 truncates, which is floor where ok (x, y >= 0); values elsewhere get the guard key
    keys_out.copy_(y).mul_(width).add_(column.copy_(x))
    keys_out.masked_fill_(torch.logical_not(ok, out=test), width * height)


def _flat_nonzero(mask: torch.Tensor) -> torch.Tensor:
    """Indices of the True entries, int64. On the CPU through numpy: torch's CPU nonzero is several times
    slower (measured 4 ns vs 0.8 ns per element)."""
    if mask.device.type == "cpu":
        return torch.from_numpy(np.flatnonzero(mask.numpy()))
    return mask.nonzero().squeeze(1)


def pack_links(links: Links) -> dict[str, torch.Tensor]:
    """Per-view links -> CSR dict offsets (V + 1,) int64, point int64, v int32, u int32 (docs/FORMATS.md
    links.npz; `{k: t.cpu().numpy() for ...}` gives the arrays to save)."""
    counts = torch.tensor([len(p) for p, _, _ in links], dtype=torch.int64)
    offsets = torch.zeros(len(links) + 1, dtype=torch.int64)
    torch.cumsum(counts, 0, out=offsets[1:])
    cat = lambda i, dtype: (torch.cat([l[i].cpu() for l in links]) if links else torch.zeros(0)).to(dtype)
    return {"offsets": offsets, "point": cat(0, torch.int64), "v": cat(1, torch.int32), "u": cat(2, torch.int32)}


def unpack_links(offsets: Array, point: Array, v: Array, u: Array) -> Links:
    """CSR arrays (numpy or torch) -> per-view links, the inverse of pack_links."""
    offs = as_tensor(offsets, torch.int64)
    counts = (offs[1:] - offs[:-1]).tolist()
    return list(zip(as_tensor(point, torch.int64).split(counts), as_tensor(v, torch.int32).split(counts),
                    as_tensor(u, torch.int32).split(counts)))
