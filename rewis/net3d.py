"""The 3D point network: a sparse voxel U-Net (MinkUNet style) with a point-wise branch, in plain torch.

Input: points `xyz` (N, 3) in metres, optional per-point `features` (N, in_channels - 3) such as rgb in [0, 1],
and the cloud index `batch` (N,) when several clouds are concatenated. The network builds its own xyz input
channels (each cloud centred on its centroid) so that a cloud's position in the world does not matter, and adds
each point's offset inside its voxel for the point branch.

Output of `forward` (a dict):
  logits      (N, num_classes) per point
  features    (N, point_channels) per point: the last features before the classifier (distillation, IGNet)
  multiscale  list of `LevelFeatures`, one per encoder level, stride 1, 2, 4, ... input voxels (2DPASS)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from torch import Tensor, nn

from rewis.sparse_conv import (CONV_ALGORITHMS, LevelLink, StridedConv3d, SubmanifoldConv3d, TransposedConv3d,
                               VoxelLevel, Voxelization, build_hierarchy, voxelize)

FORMAT = "rewis.SparseUNet3D/1"


@dataclass
class Net3DConfig:
    num_classes: int
    in_channels: int = 6  # 3 xyz (made by the network) + extra per-point features (rgb)
    base_channels: int = 32
    channel_multipliers: tuple[int, ...] = (1, 2, 4, 8, 8)  # one per level; 5 levels = strides 1..16
    blocks: tuple[int, ...] = (1, 1, 2, 2, 2)  # residual blocks per encoder level
    decoder_blocks: int = 1  # residual blocks per decoder level
    point_channels: int = 0  # width of the per-point features; 0 = base_channels
    voxel_size: float = 0.1  # metres
    conv_algorithm: str = "auto"  # auto | im2col | gather (see sparse_conv.SubmanifoldConv3d)
    bn_momentum: float = 0.1

    def __post_init__(self):
        self.channel_multipliers = tuple(self.channel_multipliers)
        self.blocks = tuple(self.blocks)
        if len(self.blocks) != len(self.channel_multipliers):
            raise ValueError("blocks and channel_multipliers need one entry per level")
        if self.in_channels < 3:
            raise ValueError("in_channels counts the 3 xyz channels: it must be at least 3")
        if self.conv_algorithm not in CONV_ALGORITHMS:
            raise ValueError(f"conv_algorithm '{self.conv_algorithm}': choose one of {', '.join(CONV_ALGORITHMS)}")

    @property
    def channels(self) -> tuple[int, ...]:
        return tuple(self.base_channels * m for m in self.channel_multipliers)

    @property
    def feature_channels(self) -> int:
        return self.point_channels or self.base_channels


@dataclass
class LevelFeatures:
    """Voxel features of one level and the map that brings them to the points."""
    features: Tensor  # (M_l, C_l)
    point_to_voxel: Tensor  # (N,)
    stride: int  # in input voxels
    voxel_size: float  # metres

    def per_point(self) -> Tensor:
        return self.features[self.point_to_voxel]


# ------------------------------------------------------------------------------------------------ building blocks

class ConvNormReLU(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, algorithm: str, momentum: float):
        super().__init__()
        self.conv = SubmanifoldConv3d(in_channels, out_channels, algorithm)
        self.norm = nn.BatchNorm1d(out_channels, momentum=momentum)

    def forward(self, x: Tensor, level: VoxelLevel) -> Tensor:
        return torch.relu(self.norm(self.conv(x, level)))


class ResidualBlock(nn.Module):
    """Two 3x3x3 submanifold convs with BN; a linear projection on the shortcut when the width changes."""

    def __init__(self, in_channels: int, out_channels: int, algorithm: str, momentum: float):
        super().__init__()
        self.conv1 = SubmanifoldConv3d(in_channels, out_channels, algorithm)
        self.norm1 = nn.BatchNorm1d(out_channels, momentum=momentum)
        self.conv2 = SubmanifoldConv3d(out_channels, out_channels, algorithm)
        self.norm2 = nn.BatchNorm1d(out_channels, momentum=momentum)
        self.shortcut = (nn.Identity() if in_channels == out_channels else
                         nn.Sequential(nn.Linear(in_channels, out_channels, bias=False),
                                       nn.BatchNorm1d(out_channels, momentum=momentum)))

    def forward(self, x: Tensor, level: VoxelLevel) -> Tensor:
        y = torch.relu(self.norm1(self.conv1(x, level)))
        y = self.norm2(self.conv2(y, level))
        return torch.relu(y + self.shortcut(x))


class Resample(nn.Module):
    """Strided conv down or transposed conv up between two levels, then BN + ReLU."""

    def __init__(self, in_channels: int, out_channels: int, up: bool, momentum: float):
        super().__init__()
        self.conv = (TransposedConv3d if up else StridedConv3d)(in_channels, out_channels)
        self.norm = nn.BatchNorm1d(out_channels, momentum=momentum)

    def forward(self, x: Tensor, link: LevelLink) -> Tensor:
        return torch.relu(self.norm(self.conv(x, link)))


class Stage(nn.Module):
    """Residual blocks at one level."""

    def __init__(self, in_channels: int, out_channels: int, count: int, algorithm: str, momentum: float):
        super().__init__()
        widths = [in_channels] + [out_channels] * count
        self.blocks = nn.ModuleList(ResidualBlock(a, b, algorithm, momentum) for a, b in zip(widths, widths[1:]))

    def forward(self, x: Tensor, level: VoxelLevel) -> Tensor:
        for block in self.blocks:
            x = block(x, level)
        return x


def mlp(widths: list[int], momentum: float) -> nn.Sequential:
    layers = []
    for a, b in zip(widths, widths[1:]):
        layers += [nn.Linear(a, b, bias=False), nn.BatchNorm1d(b, momentum=momentum), nn.ReLU()]
    return nn.Sequential(*layers)


# ------------------------------------------------------------------------------------------------ the network

class SparseUNet3D(nn.Module):
    def __init__(self, num_classes: int, **options):
        super().__init__()
        self.config = config = Net3DConfig(num_classes=num_classes, **options)
        widths, algorithm, momentum = config.channels, config.conv_algorithm, config.bn_momentum
        point_in = config.in_channels + 3  # + the offset inside the voxel
        self.stem = ConvNormReLU(point_in, widths[0], algorithm, momentum)
        self.encoder = nn.ModuleList(Stage(w, w, n, algorithm, momentum) for w, n in zip(widths, config.blocks))
        self.down = nn.ModuleList(Resample(a, b, False, momentum) for a, b in zip(widths, widths[1:]))
        self.up = nn.ModuleList(Resample(b, a, True, momentum) for a, b in zip(widths, widths[1:]))
        self.decoder = nn.ModuleList(Stage(2 * w, w, config.decoder_blocks, algorithm, momentum)
                                     for w in widths[:-1])
        self.point_branch = mlp([point_in, widths[0], widths[0]], momentum)
        self.fuse = mlp([2 * widths[0], config.feature_channels], momentum)
        self.head = nn.Linear(config.feature_channels, num_classes)

    @classmethod
    def from_config(cls, config: Net3DConfig) -> "SparseUNet3D":
        options = {f.name: getattr(config, f.name) for f in fields(config) if f.name != "num_classes"}
        return cls(config.num_classes, **options)

    def forward(self, xyz: Tensor, features: Tensor | None = None, batch: Tensor | None = None) -> dict:
        batch = torch.zeros(len(xyz), dtype=torch.long, device=xyz.device) if batch is None else batch.long()
        voxels = voxelize(xyz, batch, self.config.voxel_size)
        point_input = self.point_input(xyz, features, batch)
        levels, links = build_hierarchy(voxels.level, len(self.config.channels))

        x = self.stem(voxels.mean(point_input), levels[0])
        skips = []
        for depth, (stage, level) in enumerate(zip(self.encoder, levels)):
            if depth > 0:
                x = self.down[depth - 1](x, links[depth - 1])
            x = stage(x, level)
            skips.append(x)
        for depth in reversed(range(len(self.decoder))):
            x = self.up[depth](x, links[depth])
            x = self.decoder[depth](torch.cat([x, skips[depth]], dim=1), levels[depth])

        point_features = torch.cat([x[voxels.point_to_voxel], self.point_branch(point_input)], dim=1)
        features_out = self.fuse(point_features)
        return {"logits": self.head(features_out), "features": features_out,
                "multiscale": self.multiscale(skips, voxels, links)}

    def point_input(self, xyz: Tensor, features: Tensor | None, batch: Tensor) -> Tensor:
        """(N, in_channels + 3): xyz centred per cloud, the extra features, the offset inside the voxel."""
        extra = self.config.in_channels - 3
        if extra and (features is None or features.shape[1] != extra):
            got = "none" if features is None else features.shape[1]
            raise ValueError(f"expected {extra} feature channels per point besides xyz, got {got}")
        centred = xyz - cloud_centroids(xyz, batch)[batch]
        scaled = xyz / self.config.voxel_size
        in_voxel = scaled - torch.floor(scaled) - 0.5
        parts = [centred, features.to(xyz.dtype)] if extra else [centred]
        return torch.cat(parts + [in_voxel], dim=1)

    def multiscale(self, skips: list[Tensor], voxels: Voxelization, links: list[LevelLink]) -> list[LevelFeatures]:
        out, point_to_voxel = [], voxels.point_to_voxel
        for depth, features in enumerate(skips):
            if depth > 0:
                point_to_voxel = links[depth - 1].parent[point_to_voxel]
            out.append(LevelFeatures(features, point_to_voxel, 2 ** depth, self.config.voxel_size * 2 ** depth))
        return out

    # ------------------------------------------------------------------------------------------ checkpoints

    def save(self, path: str | Path) -> None:
        from safetensors.torch import save_file

        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, str(path), metadata={"format": FORMAT, "config": json.dumps(asdict(self.config))})

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> "SparseUNet3D":
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        if metadata.get("format") != FORMAT:
            raise ValueError(f"{path}: not a {FORMAT} checkpoint (metadata format {metadata.get('format')!r})")
        model = cls.from_config(Net3DConfig(**json.loads(metadata["config"])))
        model.load_state_dict(load_file(str(path), device=str(device)))
        return model.to(device)


def cloud_centroids(xyz: Tensor, batch: Tensor) -> Tensor:
    num_clouds = int(batch.max()) + 1 if len(batch) else 0
    sums = xyz.new_zeros(num_clouds, 3).index_add_(0, batch, xyz)
    counts = torch.bincount(batch, minlength=num_clouds).clamp(min=1).unsqueeze(1)
    return sums / counts.to(xyz.dtype)


class PointMLP(nn.Module):
    """Per-point MLP of similar width, no neighbourhood at all: the speed floor in the benchmark."""

    def __init__(self, num_classes: int, in_channels: int = 6, widths: tuple[int, ...] = (32, 64, 128, 64, 32)):
        super().__init__()
        self.body = mlp([in_channels, *widths], 0.1)
        self.head = nn.Linear(widths[-1], num_classes)

    def forward(self, xyz: Tensor, features: Tensor | None = None, batch: Tensor | None = None) -> dict:
        inputs = xyz if features is None else torch.cat([xyz, features], dim=1)
        hidden = self.body(inputs)
        return {"logits": self.head(hidden), "features": hidden}
