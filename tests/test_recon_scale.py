"""Metric scale of image-only scenes from the ground plane under the cameras (recon/scale.py)."""

from __future__ import annotations

import numpy as np
import pytest

from recon.scale import camera_centres, fit_ground, metric_scale
from recon.scene import Cloud, Frame, Scene

CAMERA_HEIGHT = 1.5


def look_along_x(centre: np.ndarray, pitch_deg: float) -> np.ndarray:
    """cam_from_world of an OpenCV camera at `centre` (z-up world) looking along +x, tilted down by pitch."""
    p = np.deg2rad(pitch_deg)
    forward = np.array([np.cos(p), 0.0, -np.sin(p)])
    right = np.array([0.0, -1.0, 0.0])
    down = np.cross(forward, right)
    R = np.stack([right, down, forward])  # rows: camera axes in world
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, -R @ centre
    return T


def room_like(rng) -> tuple[np.ndarray, np.ndarray]:
    """A floor (z = 0), a larger-than-life table top at 0.75 m, a ceiling at 2.8 m and two walls, with noise;
    cameras 1.5 m above the floor walking along x and looking slightly down."""
    def plane(n, x, y, z):
        return np.stack([rng.uniform(*x, n), rng.uniform(*y, n), np.full(n, z) if np.isscalar(z) else rng.uniform(*z, n)], 1)

    floor = plane(3000, (0, 8), (-3, 3), 0.0)
    table = plane(1500, (3, 5), (-1, 1), 0.75)
    ceiling = plane(3000, (0, 8), (-3, 3), 2.8)
    wall = np.concatenate([plane(2000, (0, 8), (3, 3), (0, 2.8)), plane(2000, (0, 8), (-3, -3), (0, 2.8))])
    wall[:, 1] = np.where(wall[:, 1] > 0, 3.0, -3.0)
    xyz = np.concatenate([floor, table, ceiling, wall]) + rng.normal(0, 0.01, (11500, 3))
    poses = np.stack([look_along_x(np.array([x, 0.3 * np.sin(x), CAMERA_HEIGHT]), 12.0) for x in np.linspace(0.5, 3, 8)])
    return xyz, poses


def similarity(xyz, poses, scale: float, seed: int = 1):
    """The same scene in an SfM-like gauge x_g = scale R x + t; camera translations are lengths too."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    R, t = q * np.sign(np.linalg.det(q)), rng.normal(size=3) * 5
    poses_g = poses.copy()
    poses_g[:, :3, :3] = poses[:, :3, :3] @ R.T
    poses_g[:, :3, 3] = scale * poses[:, :3, 3] - poses_g[:, :3, :3] @ t
    return scale * xyz @ R.T + t, poses_g


def test_camera_height_above_the_floor_not_the_table():
    xyz, poses = room_like(np.random.default_rng(0))
    fit = fit_ground(xyz, poses)
    assert fit is not None
    assert fit.camera_height == pytest.approx(CAMERA_HEIGHT, rel=0.02)
    assert fit.normal @ np.array([0.0, 0.0, 1.0]) > 0.999


@pytest.mark.parametrize("gauge_scale", [0.2, 7.0])
def test_metric_scale_undoes_an_sfm_gauge(gauge_scale):
    xyz, poses = room_like(np.random.default_rng(0))
    xyz_g, poses_g = similarity(xyz, poses, gauge_scale)
    scene = _scene(xyz_g, poses_g)
    report = metric_scale(scene, CAMERA_HEIGHT)
    assert report["method"] == "ground plane"
    assert report["factor"] == pytest.approx(1.0 / gauge_scale, rel=0.02)
    # lengths are metres again: the camera path and the cloud's spread are those of the metric scene
    def path(p):
        return np.linalg.norm(np.diff(camera_centres(p), axis=0), axis=1).sum()

    assert path(np.stack([f.cam_from_world for f in scene.frames])) == pytest.approx(path(poses), rel=0.02)
    spread = np.linalg.norm(scene.cloud.xyz - scene.cloud.xyz.mean(0), axis=1).mean()
    assert spread == pytest.approx(np.linalg.norm(xyz - xyz.mean(0), axis=1).mean(), rel=0.02)


def test_no_ground_leaves_the_scene_alone():
    xyz, poses = room_like(np.random.default_rng(0))
    above = xyz[xyz[:, 2] > 2.0]  # ceiling only
    scene = _scene(above, poses)
    before = scene.cloud.xyz.copy()
    report = metric_scale(scene, CAMERA_HEIGHT)
    assert report["method"] == "none" and "ground plane" in report["reason"]
    assert np.array_equal(scene.cloud.xyz, before)


def _scene(xyz, poses) -> Scene:
    n = len(xyz)
    cloud = Cloud(xyz=xyz.astype(np.float32), rgb=np.zeros((n, 3), np.uint8), conf=np.ones(n, np.float32),
                  weak_label=np.full(n, 255, np.uint8), source_frame=np.full(n, -1, np.int32))
    frames = [Frame(image=f"{i}.png", width=64, height=48, K=np.eye(3), cam_from_world=p) for i, p in enumerate(poses)]
    return Scene(classes=None, frames=frames, cloud=cloud, links=None, source="images")
