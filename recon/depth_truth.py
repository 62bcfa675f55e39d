"""A rendered sequence with its true poses and depth as tensors: what dense stereo is measured against
(tests/test_stereo_quality.py, benchmarks/stereo.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from recon.dataset import find_beside, read_cameras, read_depth, read_rgb


def load_posed_sequence(seq: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images (F, 3, H, W) in [0, 1], K (F, 3, 3), cam_from_world (F, 4, 4), true depth (F, H, W)) of a
    `rewis synth` folder, in cameras.json order."""
    seq = Path(seq)
    cameras = read_cameras(seq)
    images = [read_rgb(seq / "images" / c.image) for c in cameras]
    depth = [read_depth(find_beside(seq, "depth", Path(c.image).stem, (".npy", ".png"))) for c in cameras]
    images = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    K = torch.from_numpy(np.stack([c.K for c in cameras])).float()
    poses = torch.from_numpy(np.stack([c.cam_from_world for c in cameras])).float()
    return images, K, poses, torch.from_numpy(np.stack(depth)).float()


def ranges_like_sfm(depth: torch.Tensor) -> torch.Tensor:
    """(F, 2) near/far as recon.fusion.depth_ranges derives them from SfM points: the 1st / 99th percentile of
    each frame's depth, widened by 20 %."""
    rows = []
    for d in depth:
        z = d[d > 0].numpy()
        rows.append([np.percentile(z, 1) * 0.8, np.percentile(z, 99) * 1.2])
    return torch.tensor(rows, dtype=torch.float32)
