"""recon.stereo: the output contract, an analytic plane, and the quality criteria on small synthetic
sequences (true poses): AbsRel <= 0.05 where confidence >= 0.5, those pixels cover >= 40 % of the non-sky
pixels, and the error falls from the least to the most confident quartile."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recon.stereo import StereoOptions, estimate_depths, prepare_views, smallest


def rotation_y(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def plane_texture(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Smooth random-phase texture on the plane (world x, y in metres) -> RGB in [0, 1]."""
    rng = np.random.default_rng(0)
    value = np.zeros_like(x)
    for _ in range(24):
        freq = rng.uniform(2.0, 12.0, size=2)
        value += np.sin(freq[0] * x + freq[1] * y + rng.uniform(0, 2 * np.pi))
    grey = 0.5 + 0.08 * value / np.sqrt(12)
    return np.stack([grey, grey * 0.9 + 0.05, grey * 0.8 + 0.1], 0).clip(0, 1)


def render_plane(K: np.ndarray, cam_from_world: np.ndarray, depth: float, width: int, height: int):
    """Image of the textured plane z = depth (world) and its camera-frame depth map."""
    v, u = np.mgrid[0:height, 0:width]
    rays = np.linalg.inv(K) @ np.stack([u.ravel() + 0.5, v.ravel() + 0.5, np.ones(u.size)])
    world_from_cam = np.linalg.inv(cam_from_world)
    dirs = world_from_cam[:3, :3] @ rays
    centre = world_from_cam[:3, 3]
    t = (depth - centre[2]) / dirs[2]
    points = centre[:, None] + dirs * t
    image = plane_texture(points[0], points[1]).reshape(3, height, width)
    z = (cam_from_world[:3, :3] @ points + cam_from_world[:3, 3:])[2].reshape(height, width)
    return image, z


def plane_sequence(frames: int = 5, width: int = 96, height: int = 72, depth: float = 4.0):
    K = np.array([[80.0, 0, width / 2], [0, 80.0, height / 2], [0, 0, 1]])
    images, poses, depths = [], [], []
    for i in range(frames):
        pose = np.eye(4)
        pose[:3, :3] = rotation_y(0.01 * (i - frames // 2))
        pose[:3, 3] = -pose[:3, :3] @ np.array([0.15 * (i - frames // 2), 0.02 * i, 0.0])
        image, z = render_plane(K, pose, depth, width, height)
        images.append(image), poses.append(pose), depths.append(z)
    as_float = lambda x: torch.tensor(np.stack(x), dtype=torch.float32)
    return as_float(images), as_float([K] * frames), as_float(poses), as_float(depths)


def test_output_contract_and_options():
    images, K, poses, _ = plane_sequence(frames=3, width=40, height=32)
    ranges = torch.tensor([[1.0, 20.0]] * 3)
    depth, conf = estimate_depths(images, K, poses, ranges, progress=False, planes=16, device="cpu")
    assert depth.shape == conf.shape == (3, 32, 40)
    assert depth.dtype == conf.dtype == torch.float32
    assert depth.device == images.device
    assert bool((depth >= 0).all()) and bool(((conf >= 0) & (conf <= 1)).all())
    assert bool((conf[depth == 0] == 0).all())
    same = estimate_depths(images, K, poses, ranges, progress=False, options=StereoOptions(planes=16, device="cpu"))
    assert torch.equal(same[0], depth)
    with pytest.raises(TypeError, match="unknown stereo option"):
        estimate_depths(images, K, poses, ranges, progress=False, plane=16)
    with pytest.raises(ValueError, match="depth_range"):
        estimate_depths(images, K, poses, ranges[:2], progress=False)


def test_recovers_fronto_parallel_plane():
    images, K, poses, truth = plane_sequence()
    ranges = torch.tensor([[1.0, 20.0]] * len(images))
    depth, conf = estimate_depths(images, K, poses, ranges, progress=False, device="cpu")
    sure = conf >= 0.5
    assert sure.float().mean() > 0.5
    rel = (depth - truth).abs() / truth
    assert rel[sure].mean() < 0.01


def test_smallest_matches_sort():
    values = torch.rand(5, 3, 7)
    for k in (1, 2, 3, 5):
        assert torch.equal(smallest(values, k), values.sort(0).values[:k])


def test_working_resolution_keeps_small_images_whole():
    images = torch.rand(2, 3, 90, 120)
    K = torch.tensor([[100.0, 0, 60], [0, 100.0, 45], [0, 0, 1]]).expand(2, 3, 3)
    ranges = torch.tensor([[1.0, 10.0]] * 2)
    views = prepare_views(images, K, torch.eye(4).expand(2, 4, 4), ranges, scale=0.5, min_width=240, device="cpu")
    assert views.size == (90, 120)
    views = prepare_views(images, K, torch.eye(4).expand(2, 4, 4), ranges, scale=0.5, min_width=60, device="cpu")
    assert views.size == (45, 60)
    assert torch.allclose(views.K[0, 0, 2], torch.tensor(30.0, dtype=torch.float64))
