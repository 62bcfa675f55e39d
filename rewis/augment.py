"""Augmentations. 2D geometry (rescale, crop, flip) is drawn per sample from a numpy RNG and applied to the
image and labels with torch/kornia resampling and to the (v, u) links as index arithmetic, so a link always
points at the pixel that shows its point. Photometric strong-view augmentation (student only) runs batched
with kornia. 3D augmentation (3D student only) never breaks links: they are index based.

Pixel convention (docs/FORMATS.md): pixel (v, u) covers [v, v+1) x [u, u+1); a rescale by s maps its centre
(v + 0.5) to (v + 0.5) * s, hence `floor((v + 0.5) * s)`, the same rule as 'nearest-exact' resampling.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # SegformerImageProcessor's normalisation
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Geometry:
    """Rescale the source (H, W) to `scaled` (h, w), crop `crop` (h, w) at (y0, x0), then maybe flip."""
    scaled: tuple[int, int]
    y0: int
    x0: int
    crop: tuple[int, int]
    flip: bool
    source: tuple[int, int]


def draw_geometry(rng: np.random.Generator, source: tuple[int, int], height: int, crop: tuple[int, int],
                  scale_range: tuple[float, float] = (1.0, 1.0), flip: bool = False) -> Geometry:
    h0, w0 = source
    s = height / h0 * rng.uniform(*scale_range)
    s = max(s, crop[0] / h0, crop[1] / w0)  # the crop must fit
    scaled = (max(crop[0], round(h0 * s)), max(crop[1], round(w0 * s)))
    y0 = int(rng.integers(0, scaled[0] - crop[0] + 1))
    x0 = int(rng.integers(0, scaled[1] - crop[1] + 1))
    return Geometry(scaled, y0, x0, tuple(crop), bool(flip and rng.random() < 0.5), (h0, w0))


def resize_image(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(3, H, W) uint8 or float -> float (3, h, w) in [0, 255], bilinear with antialiasing when shrinking."""
    x = image.float()[None]
    if tuple(x.shape[-2:]) == tuple(size):
        return x[0]
    import kornia

    return kornia.geometry.transform.resize(x, size, interpolation="bilinear", antialias=True)[0]


def resize_label(label: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(H, W) integer labels -> (h, w) by 'nearest-exact' (pixel-centre rule)."""
    if tuple(label.shape) == tuple(size):
        return label
    return F.interpolate(label[None, None].float(), size=size, mode="nearest-exact")[0, 0].to(label.dtype)


def apply_geometry(g: Geometry, image: torch.Tensor, labels: list[torch.Tensor]) -> tuple[torch.Tensor, list]:
    ch, cw = g.crop
    sl = (slice(g.y0, g.y0 + ch), slice(g.x0, g.x0 + cw))
    img = resize_image(image, g.scaled)[:, sl[0], sl[1]]
    outs = [resize_label(lab, g.scaled)[sl[0], sl[1]] for lab in labels]
    if g.flip:
        img = img.flip(-1)
        outs = [o.flip(-1) for o in outs]
    return img.contiguous(), [o.contiguous() for o in outs]


def remap_pixels(g: Geometry, v: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(v', u', keep): link pixels after the geometry; `keep` marks links that stay inside the crop."""
    sy, sx = g.scaled[0] / g.source[0], g.scaled[1] / g.source[1]
    vs = np.floor((v.astype(np.float64) + 0.5) * sy).astype(np.int64) - g.y0
    us = np.floor((u.astype(np.float64) + 0.5) * sx).astype(np.int64) - g.x0
    keep = (vs >= 0) & (vs < g.crop[0]) & (us >= 0) & (us < g.crop[1])
    if g.flip:
        us = g.crop[1] - 1 - us
    return vs[keep], us[keep], keep


def normalize(images: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 255] (B, 3, H, W) -> ImageNet-normalised model input."""
    mean = images.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255.0
    std = images.new_tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255.0
    return (images - mean) / std


class StrongAug(torch.nn.Module):
    """The student's strong view: colour jitter, gaussian blur and one cutout, batched (kornia), drawn from
    torch's global RNG (restored exactly on resume). Input and output: float (B, 3, H, W) in [0, 255]."""

    def __init__(self, color: float = 0.4, blur: float = 0.5, cutout: float = 0.5):
        super().__init__()
        import kornia.augmentation as K

        ops = []
        if color > 0:
            ops.append(K.ColorJiggle(color, color, color, min(0.5, color / 4), p=0.8))
        if blur > 0:
            ops.append(K.RandomGaussianBlur((5, 5), (0.1, 2.0), p=blur))
        if cutout > 0:
            ops.append(K.RandomErasing(scale=(0.02, 0.2), ratio=(0.3, 3.3), value=0.5, p=cutout))
        self.ops = K.AugmentationSequential(*ops) if ops else None

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.ops is None:
            return images
        return (self.ops(images / 255.0).clamp(0, 1) * 255.0).to(images.dtype)


# -------------------------------------------------------------------------------------------------- 3D

def axis_vector(name: str) -> np.ndarray:
    sign = -1.0 if name.startswith("-") else 1.0
    vec = np.zeros(3)
    vec["xyz".index(name[-1])] = sign
    return vec


def augment_points(rng: np.random.Generator, xyz: np.ndarray, up: np.ndarray, centre: np.ndarray,
                   rotate: bool = True, scale: tuple[float, float] = (0.9, 1.1), flip: bool = True,
                   jitter_sigma: float = 0.005, jitter_clip: float = 0.02) -> np.ndarray:
    """Rotation about the up axis (through `centre`), uniform scale, mirror flips of the two horizontal axes,
    clipped gaussian jitter. Returns a new float32 array."""
    up = up / np.linalg.norm(up)
    a = np.cross(up, [1.0, 0.0, 0.0] if abs(up[0]) < 0.9 else [0.0, 1.0, 0.0])
    a /= np.linalg.norm(a)
    b = np.cross(up, a)
    M = np.eye(3)
    if rotate:
        t = rng.uniform(0, 2 * np.pi)
        K = np.array([[0, -up[2], up[1]], [up[2], 0, -up[0]], [-up[1], up[0], 0]])
        M = (np.eye(3) + np.sin(t) * K + (1 - np.cos(t)) * K @ K) @ M
    if flip:
        for axis in (a, b):
            if rng.random() < 0.5:
                M = (np.eye(3) - 2 * np.outer(axis, axis)) @ M
    M = M * rng.uniform(*scale)
    out = (xyz.astype(np.float64) - centre) @ M.T + centre
    if jitter_sigma > 0:
        out += np.clip(rng.normal(0, jitter_sigma, out.shape), -jitter_clip, jitter_clip)
    return out.astype(np.float32)
