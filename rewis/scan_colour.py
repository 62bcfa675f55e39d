"""The `rgb` point feature: the colour of the camera pixel a LiDAR point projects to.

Four columns per point: r, g, b in [0, 1] and `seen` (1 where a camera sees the point: depth > MIN_DEPTH and
inside the image, else 0 with black colour). The flag is needed because black is a real colour: without it the
network could not tell a dark pixel from a point outside every camera (about 80 % of a KITTI scan). With several
cameras (nuScenes) a point takes the colour of the first camera, in channel order, that sees it. No occlusion
test: a point hidden behind a nearer surface in the image gets that surface's colour (LiDAR-camera parallax is
small for the rigs we read).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from recon.errors import InputError
from recon.projection import in_image_mask, project_points

MIN_DEPTH = 0.1  # metres in front of the camera


@dataclass(frozen=True)
class CameraView:
    image: Path
    K: np.ndarray  # (3, 3)
    cam_from_lidar: np.ndarray  # (4, 4): LiDAR (scan) frame -> this camera (OpenCV axes)


def read_image(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except OSError as err:
        raise InputError(f"{path}: camera image cannot be read ({err})") from None


def colour_features(xyz: np.ndarray, views: list[CameraView]) -> np.ndarray:
    """(N, 4) float32 r, g, b, seen of the points xyz (N, 3) (scan frame) in the images of `views`."""
    out = np.zeros((len(xyz), 4), np.float32)
    points = np.ascontiguousarray(xyz, dtype=np.float32)
    for view in views:
        image = read_image(Path(view.image))
        height, width = image.shape[:2]
        pixels, depth = project_points(points, view.K, view.cam_from_lidar)
        inside = in_image_mask(pixels, depth, width, height, MIN_DEPTH)[0].numpy()
        new = np.flatnonzero(inside & (out[:, 3] == 0))
        uv = np.floor(pixels[0].numpy()[new]).astype(np.int64)
        out[new, :3] = image[uv[:, 1], uv[:, 0]] / 255.0
        out[new, 3] = 1.0
    return out
