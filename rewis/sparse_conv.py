"""Voxelisation and sparse voxel convolutions in plain torch: CPU and CUDA, nothing compiled.

A batch of point clouds becomes a `VoxelLevel`: integer voxel coordinates (M, 4) = (cloud, x, y, z) and their
packed 64-bit keys, sorted ascending. Every neighbour query is a `torch.searchsorted` into those sorted keys, so
no hash table is needed. Coarser levels come from `coords // 2`; a `LevelLink` remembers which fine voxel sits in
which slot of which coarse voxel, so strided and transposed convolutions reuse the same maps. Neighbour maps
are computed once per level and cached on it, so every convolution at that level shares them.

Weights are laid out (kernel offsets, in, out). Offsets are ordered x-major, like the last three dimensions of
a dense `conv3d` weight, so a dense kernel converts with a reshape (see the tests).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

AXIS_BITS = 17  # 131072 voxels per axis: 6.5 km at 5 cm
BATCH_BITS = 63 - 3 * AXIS_BITS  # 12 bits: 4096 clouds per batch, and keys stay positive int64
AXIS_LIMIT = 1 << AXIS_BITS
KERNEL3_OFFSETS = torch.tensor(list(itertools.product((-1, 0, 1), repeat=3)), dtype=torch.long)  # (27, 3)
CENTER_TAP = 13
IM2COL_CHUNK_BYTES = 64 * 2**20  # gathered columns are built this many bytes at a time
CONV_ALGORITHMS = ("auto", "im2col", "gather")
AUTO_IM2COL_OCCUPANCY = 0.5  # share of the 27 taps occupied on average above which "auto" picks im2col


def pack_keys(coords: Tensor) -> Tensor:
    """(M, 4) int64 (cloud, x, y, z) with 0 <= x, y, z < AXIS_LIMIT -> (M,) int64 keys, ordered like the coords."""
    cloud, x, y, z = coords.unbind(1)
    return (((cloud << AXIS_BITS | x) << AXIS_BITS | y) << AXIS_BITS) | z


def unpack_keys(keys: Tensor) -> Tensor:
    mask = AXIS_LIMIT - 1
    z, y, x = keys & mask, (keys >> AXIS_BITS) & mask, (keys >> 2 * AXIS_BITS) & mask
    return torch.stack([keys >> 3 * AXIS_BITS, x, y, z], dim=1)


def lookup(sorted_keys: Tensor, query_coords: Tensor, missing: int) -> Tensor:
    """Index of each query voxel in `sorted_keys`, or `missing` where the voxel is not active."""
    if len(sorted_keys) == 0:
        return torch.full((len(query_coords),), missing, dtype=torch.long, device=query_coords.device)
    spatial = query_coords[:, 1:]
    inside = ((spatial >= 0) & (spatial < AXIS_LIMIT)).all(dim=1)
    query = pack_keys(torch.cat([query_coords[:, :1], spatial.clamp(0, AXIS_LIMIT - 1)], dim=1))
    position = torch.searchsorted(sorted_keys, query).clamp_(max=len(sorted_keys) - 1)
    found = inside & (sorted_keys[position] == query)
    return torch.where(found, position, torch.full_like(position, missing))


class VoxelLevel:
    """Active voxels of one resolution level, with lazily built, cached neighbour maps."""

    def __init__(self, keys: Tensor, stride: int = 1):
        self.keys = keys  # sorted, unique
        self.coords = unpack_keys(keys)
        self.stride = stride  # in input voxels
        self._neighbors: Tensor | None = None
        self._pairs: list[tuple[Tensor, Tensor]] | None = None
        self._occupancy: float | None = None

    @classmethod
    def from_coords(cls, coords: Tensor, stride: int = 1) -> "VoxelLevel":
        check_extent(coords)
        return cls(torch.unique(pack_keys(coords)), stride)

    @property
    def num_voxels(self) -> int:
        return len(self.keys)

    def neighbors(self) -> Tensor:
        """(M, 27) index of the voxel at each 3x3x3 offset; M (a zero padding row) where there is none."""
        if self._neighbors is None:
            offsets = KERNEL3_OFFSETS.to(self.coords.device)
            columns = []
            for offset in offsets:  # one offset at a time keeps the temporaries at O(M)
                shifted = self.coords.clone()
                shifted[:, 1:] += offset
                columns.append(lookup(self.keys, shifted, missing=self.num_voxels))
            self._neighbors = torch.stack(columns, dim=1)
        return self._neighbors

    def tap_occupancy(self) -> float:
        """Mean share of the 27 neighbour taps that hold an active voxel."""
        if self._occupancy is None:
            active = (self.neighbors() < self.num_voxels).sum().item()
            self._occupancy = active / max(27 * self.num_voxels, 1)
        return self._occupancy

    def kernel_pairs(self) -> list[tuple[Tensor, Tensor]]:
        """Per offset: (output voxel indices, input voxel indices) of the active pairs."""
        if self._pairs is None:
            table = self.neighbors()
            self._pairs = []
            for tap in range(table.shape[1]):
                outputs = torch.nonzero(table[:, tap] < self.num_voxels).squeeze(1)
                self._pairs.append((outputs, table[outputs, tap]))
        return self._pairs


@dataclass
class LevelLink:
    """How a fine level nests in the next coarser one (2x2x2 cells)."""
    parent: Tensor  # (M_fine,) coarse voxel of each fine voxel
    slot: Tensor  # (M_fine,) 0..7, position inside the 2x2x2 cell, x-major
    children: Tensor  # (M_coarse, 8) fine voxel in each slot, M_fine (padding row) when empty


def coarsen(fine: VoxelLevel) -> tuple[VoxelLevel, LevelLink]:
    half = fine.coords.clone()
    half[:, 1:] = half[:, 1:] // 2
    coarse_keys, parent = torch.unique(pack_keys(half), return_inverse=True)
    coarse = VoxelLevel(coarse_keys, fine.stride * 2)
    odd = fine.coords[:, 1:] & 1
    slot = odd[:, 0] * 4 + odd[:, 1] * 2 + odd[:, 2]
    children = torch.full((coarse.num_voxels, 8), fine.num_voxels, dtype=torch.long, device=parent.device)
    children[parent, slot] = torch.arange(fine.num_voxels, device=parent.device)
    return coarse, LevelLink(parent, slot, children)


def build_hierarchy(finest: VoxelLevel, num_levels: int) -> tuple[list[VoxelLevel], list[LevelLink]]:
    levels, links = [finest], []
    for _ in range(num_levels - 1):
        coarse, link = coarsen(levels[-1])
        levels.append(coarse)
        links.append(link)
    return levels, links


def check_extent(coords: Tensor) -> None:
    if coords.numel() == 0:
        return
    if int(coords[:, 0].max()) >= 1 << BATCH_BITS:
        raise ValueError(f"at most {1 << BATCH_BITS} clouds per batch")
    spatial = coords[:, 1:]
    if int(spatial.min()) < 0 or int(spatial.max()) >= AXIS_LIMIT:
        raise ValueError(f"a cloud spans more than {AXIS_LIMIT} voxels along an axis: use a larger voxel size "
                         "or crop the cloud")


# ---------------------------------------------------------------------------------------------- voxelisation

@dataclass
class Voxelization:
    level: VoxelLevel  # the active voxels, finest resolution
    point_to_voxel: Tensor  # (N,) voxel index of each point
    counts: Tensor  # (M,) points per voxel

    def mean(self, point_values: Tensor) -> Tensor:
        """Mean of (N, C) point values over each voxel -> (M, C)."""
        sums = point_values.new_zeros(self.level.num_voxels, point_values.shape[1])
        sums.index_add_(0, self.point_to_voxel, point_values)
        return sums / self.counts.unsqueeze(1).to(sums.dtype)


def voxel_grid_coords(xyz: Tensor, batch: Tensor, voxel_size: float) -> Tensor:
    """(N, 4) (cloud, i, j, k) with each cloud's grid shifted so its lowest voxel is 0 along every axis: keys stay
    non-negative, and a translation by whole voxels changes neither the coords nor the 2x2x2 cell grouping."""
    grid = torch.floor(xyz / voxel_size).long()
    num_clouds = int(batch.max()) + 1 if len(batch) else 0
    origin = torch.full((num_clouds, 3), torch.iinfo(torch.long).max, dtype=torch.long, device=xyz.device)
    origin = origin.scatter_reduce(0, batch.unsqueeze(1).expand(-1, 3), grid, reduce="amin")
    return torch.cat([batch.unsqueeze(1), grid - origin[batch]], dim=1)


def voxelize(xyz: Tensor, batch: Tensor, voxel_size: float) -> Voxelization:
    """Points (N, 3) of clouds `batch` (N,) -> unique voxels per cloud and the point -> voxel map."""
    coords = voxel_grid_coords(xyz, batch, voxel_size)
    check_extent(coords)
    keys, point_to_voxel = torch.unique(pack_keys(coords), return_inverse=True)
    counts = torch.bincount(point_to_voxel, minlength=len(keys))
    return Voxelization(VoxelLevel(keys), point_to_voxel, counts)


def concat_clouds(clouds: list[Tensor]) -> tuple[Tensor, Tensor]:
    """[(N_i, C)] -> concatenated (sum N_i, C) and the cloud index (sum N_i,) of every row."""
    sizes = torch.tensor([len(c) for c in clouds], device=clouds[0].device)
    batch = torch.repeat_interleave(torch.arange(len(clouds), device=sizes.device), sizes)
    return torch.cat(clouds), batch


# ---------------------------------------------------------------------------------------------- convolutions
# The im2col, strided and transposed paths have hand-written backward passes. The gradient of a gather is a
# scatter-add (slow on the CPU, atomics on CUDA); here every backward is again a gather + GEMM: a submanifold
# conv's input gradient is the same conv with the kernel mirrored (the neighbour relation is symmetric), and the
# strided and transposed convs are each other's adjoints. Only the inputs are saved, never the (M, 27, C)
# gathered columns, so autograd memory stays O(M * C) per layer.

def _kaiming(taps: int, in_channels: int, out_channels: int) -> nn.Parameter:
    weight = torch.randn(taps, in_channels, out_channels) * (2.0 / (taps * in_channels)) ** 0.5
    return nn.Parameter(weight)


def _autocast(x: Tensor) -> Tensor:
    """Custom autograd functions are invisible to autocast: cast their input to the autocast dtype here."""
    device = x.device.type
    if torch.is_autocast_enabled(device):
        return x.to(torch.get_autocast_dtype(device))
    return x


def _padded(x: Tensor) -> Tensor:
    return torch.cat([x, x.new_zeros(1, x.shape[1])])


def _row_chunks(rows: int, row_bytes: int):
    step = max(1, IM2COL_CHUNK_BYTES // max(row_bytes, 1))
    for start in range(0, rows, step):
        yield start, min(start + step, rows)


def _im2col_matmul(x: Tensor, neighbors: Tensor, weight2d: Tensor) -> Tensor:
    """out[i] = concat_k x[neighbors[i, k]] @ weight2d, gathered in row chunks to bound the temporary."""
    padded, out = _padded(x), x.new_empty(len(neighbors), weight2d.shape[1])
    for start, end in _row_chunks(len(neighbors), neighbors.shape[1] * x.shape[1] * x.element_size()):
        torch.matmul(padded[neighbors[start:end]].flatten(1), weight2d, out=out[start:end])
    return out


def _im2col_weight_grad(x: Tensor, neighbors: Tensor, grad_out: Tensor) -> Tensor:
    padded = _padded(x)
    grad = x.new_zeros(neighbors.shape[1] * x.shape[1], grad_out.shape[1])
    for start, end in _row_chunks(len(neighbors), neighbors.shape[1] * x.shape[1] * x.element_size()):
        grad.addmm_(padded[neighbors[start:end]].flatten(1).t(), grad_out[start:end])
    return grad


class _SubmanifoldIm2col(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, neighbors):
        ctx.save_for_backward(x, weight, neighbors)
        return _im2col_matmul(x, neighbors, weight.to(x.dtype).flatten(0, 1))

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        x, weight, neighbors = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            mirrored = weight.to(grad_out.dtype).flip(0).transpose(1, 2).flatten(0, 1)  # (27 * out, in)
            grad_x = _im2col_matmul(grad_out, neighbors, mirrored)
        if ctx.needs_input_grad[1]:
            grad_w = _im2col_weight_grad(x, neighbors, grad_out).view_as(weight).to(weight.dtype)
        return grad_x, grad_w, None


def _down(x: Tensor, weight: Tensor, children: Tensor) -> Tensor:
    """Strided conv: coarse[p] = sum_k x[children[p, k]] @ weight[k]."""
    return _padded(x)[children].flatten(1) @ weight.flatten(0, 1)


def _up(y: Tensor, weight: Tensor, parent: Tensor, slot: Tensor) -> Tensor:
    """Transposed conv: fine[i] = y[parent[i]] @ weight[slot[i]], all 8 slots in one GEMM then picked."""
    taps, in_channels, out_channels = weight.shape
    per_slot = y @ weight.permute(1, 0, 2).reshape(in_channels, taps * out_channels)
    return per_slot.view(len(y), taps, out_channels)[parent, slot]


class _StridedConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, parent, slot, children):
        ctx.save_for_backward(x, weight, parent, slot, children)
        return _down(x, weight.to(x.dtype), children)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        x, weight, parent, slot, children = ctx.saved_tensors
        w = weight.to(grad_out.dtype)
        grad_x = _up(grad_out, w.transpose(1, 2), parent, slot)
        grad_w = (_padded(x)[children].flatten(1).t() @ grad_out).view_as(weight).to(weight.dtype)
        return grad_x, grad_w, None, None, None


class _TransposedConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y, weight, parent, slot, children):
        ctx.save_for_backward(y, weight, parent, slot, children)
        return _up(y, weight.to(y.dtype), parent, slot)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        y, weight, parent, slot, children = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        w = weight.to(grad_out.dtype)
        grad_y = _down(grad_out, w.transpose(1, 2), children)
        taps, in_channels, out_channels = weight.shape
        per_slot = y.t() @ _padded(grad_out)[children].flatten(1)  # (in, 8 * out)
        grad_w = per_slot.view(in_channels, taps, out_channels).permute(1, 0, 2).to(weight.dtype)
        return grad_y, grad_w, None, None, None


class _SubmanifoldGather(torch.autograd.Function):
    """Per offset: gather the real pairs, GEMM, index_add_ into the outputs; backward walks the same pairs the
    other way. Nothing gathered is kept for backward."""

    @staticmethod
    def forward(ctx, x, weight, pairs):
        ctx.pairs = pairs
        ctx.save_for_backward(x, weight)
        w = weight.to(x.dtype)
        out = x @ w[CENTER_TAP]
        for tap, (outputs, inputs) in enumerate(pairs):
            if tap != CENTER_TAP and len(outputs):
                out.index_add_(0, outputs, x[inputs] @ w[tap])
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        w = weight.to(grad_out.dtype)
        grad_x = grad_out @ w[CENTER_TAP].t()
        grad_w = torch.zeros_like(weight)
        grad_w[CENTER_TAP] = x.t() @ grad_out
        for tap, (outputs, inputs) in enumerate(ctx.pairs):
            if tap != CENTER_TAP and len(outputs):
                picked = grad_out[outputs]
                grad_x.index_add_(0, inputs, picked @ w[tap].t())
                grad_w[tap] = x[inputs].t() @ picked
        return grad_x, grad_w, None


def pick_algorithm(algorithm: str, level: VoxelLevel) -> str:
    """'auto': on the CPU the pair-wise gather was faster at every tap occupancy measured (13 % to 93 %, C 32
    and 64: 1.7x to 7x), because im2col's (M, 27, C) gather costs more memory traffic than its single GEMM
    saves. On CUDA (not measured yet) im2col where most taps are occupied: one large GEMM, no atomics."""
    if algorithm != "auto":
        return algorithm
    if level.keys.device.type == "cpu":
        return "gather"
    return "im2col" if level.tap_occupancy() >= AUTO_IM2COL_OCCUPANCY else "gather"


class SubmanifoldConv3d(nn.Module):
    """3x3x3 convolution evaluated only at active voxels, reading only active neighbours (outputs keep the input
    sparsity pattern, so sparse surfaces do not dilate).

    algorithm "im2col": one GEMM over all 27 gathered taps (missing ones read zeros), in row chunks.
    algorithm "gather": 27 GEMMs over the real (output, input) pairs of each offset, index_add_ into outputs.
    algorithm "auto": chosen per level from the share of occupied taps (see `pick_algorithm`).
    Both have hand-written backward passes and keep only x for backward."""

    def __init__(self, in_channels: int, out_channels: int, algorithm: str = "auto"):
        super().__init__()
        if algorithm not in CONV_ALGORITHMS:
            raise ValueError(f"conv algorithm '{algorithm}': choose one of {', '.join(CONV_ALGORITHMS)}")
        self.algorithm = algorithm
        self.weight = _kaiming(27, in_channels, out_channels)

    def forward(self, x: Tensor, level: VoxelLevel) -> Tensor:
        x = _autocast(x)
        if pick_algorithm(self.algorithm, level) == "im2col":
            return _SubmanifoldIm2col.apply(x, self.weight, level.neighbors())
        return _SubmanifoldGather.apply(x, self.weight, level.kernel_pairs())


class StridedConv3d(nn.Module):
    """Kernel 2, stride 2: each coarse voxel sums its (up to 8) children, one weight per slot."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.weight = _kaiming(8, in_channels, out_channels)

    def forward(self, x: Tensor, link: LevelLink) -> Tensor:
        return _StridedConv.apply(_autocast(x), self.weight, link.parent, link.slot, link.children)


class TransposedConv3d(nn.Module):
    """Kernel 2, stride 2 transposed: each fine voxel reads its parent through the weight of its slot. Only the
    fine voxels that existed are produced (unpooling onto the stored map, no dilation)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.weight = _kaiming(8, in_channels, out_channels)

    def forward(self, y: Tensor, link: LevelLink) -> Tensor:
        return _TransposedConv.apply(_autocast(y), self.weight, link.parent, link.slot, link.children)
