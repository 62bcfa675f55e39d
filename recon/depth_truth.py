"""A rendered sequence with its true poses and depth as tensors: what dense stereo is measured against
(tests/test_stereo_quality.py, benchmarks/stereo.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def load_posed_sequence(seq: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images (F, 3, H, W) in [0, 1], K (F, 3, 3), cam_from_world (F, 4, 4), true depth (F, H, W)) of a
    `rewis synth` folder, in cameras.json order."""
    seq = Path(seq)
    frames = json.loads((seq / "cameras.json").read_text())["frames"]
    images, K, poses, depth = [], [], [], []
    for frame in frames:
        stem = frame["image"].rsplit(".", 1)[0]
        images.append(np.asarray(Image.open(seq / "images" / frame["image"]).convert("RGB")))
        depth.append(np.load(seq / "depth" / f"{stem}.npy"))
        K.append(frame["K"])
        poses.append(frame["cam_from_world"])
    images = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    return images, torch.tensor(K).float(), torch.tensor(poses).float(), torch.from_numpy(np.stack(depth)).float()


def ranges_like_sfm(depth: torch.Tensor) -> torch.Tensor:
    """(F, 2) near/far as recon.fusion.depth_ranges derives them from SfM points: the 1st / 99th percentile of
    each frame's depth, widened by 20 %."""
    rows = []
    for d in depth:
        z = d[d > 0].numpy()
        rows.append([np.percentile(z, 1) * 0.8, np.percentile(z, 99) * 1.2])
    return torch.tensor(rows, dtype=torch.float32)
