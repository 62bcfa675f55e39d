"""Metric scale of image-only scenes (recon/scale.py): the user's scale or known distance, measured depth, the
ground plane under the cameras, each with a confidence."""

from __future__ import annotations

import json

import numpy as np
import pytest

from apps.cli import main
from recon.dataset import read_cameras
from recon.scale import ScaleRequest, camera_centres, fit_ground, metric_scale, scale_line
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
    assert report["method"] == "ground plane" and report["confidence"] == "high", report["reasons"]
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
    assert report["confidence"] == "none" and "--known-distance" in scale_line(report)
    assert np.array_equal(scene.cloud.xyz, before)


def test_few_ground_points_give_low_confidence():
    xyz, poses = room_like(np.random.default_rng(0))
    sparse_floor = np.concatenate([xyz[:80], xyz[4500:]])  # the floor is xyz[:3000], the table xyz[3000:4500]
    report = metric_scale(_scene(sparse_floor, poses), CAMERA_HEIGHT)
    assert report["confidence"] == "low"
    assert any("ground points" in r for r in report["reasons"])
    line = scale_line(report)
    assert line.startswith("scale: ground plane, low confidence (") and line.endswith("pass --scale or --known-distance")


def test_a_table_taken_for_the_floor_is_doubted():
    """The floor mostly hidden: the table top wins the fit, and the floor points beneath it give it away."""
    xyz, poses = room_like(np.random.default_rng(0))
    hidden_floor = np.concatenate([xyz[:400], xyz[3000:]])
    report = metric_scale(_scene(hidden_floor, poses), CAMERA_HEIGHT)
    assert report["confidence"] == "low"
    assert any("below the plane" in r for r in report["reasons"]), report["reasons"]


def test_a_compact_loop_is_an_indoor_like_trajectory():
    xyz, _ = room_like(np.random.default_rng(0))
    angles = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    loop = np.stack([look_along_x(np.array([4 + np.cos(a), np.sin(a), CAMERA_HEIGHT]), 12.0) for a in angles])
    report = metric_scale(_scene(xyz, loop), CAMERA_HEIGHT)
    assert report["confidence"] == "low"
    assert any("indoor-like trajectory" in r for r in report["reasons"])


def test_user_scale_wins_over_the_ground_plane():
    xyz, poses = room_like(np.random.default_rng(0))
    scene = _scene(xyz, poses)
    report = metric_scale(scene, ScaleRequest(scale=2.0))
    assert (report["method"], report["confidence"], report["factor"]) == ("--scale", "given", 2.0)
    assert np.allclose(scene.cloud.xyz, 2 * xyz, atol=1e-5)


# ------------------------------------------------------------------------------ on a rendered sequence
@pytest.fixture(scope="module")
def street(synth_sequence):
    return synth_sequence("street", frames=8, seed=0)


def recon(seq, out, *extra) -> int:
    return main(["recon", str(seq), "--out", str(out), "--no-dense", "--use-intrinsics", "--quiet", *extra])


def size_over_truth(seq, scene_dir) -> float:
    """Median ratio of reconstructed to true distances between camera centres."""
    truth = {c.image: c.cam_from_world for c in read_cameras(seq)}
    scene = Scene.load(scene_dir)
    est = camera_centres(np.stack([f.cam_from_world for f in scene.frames]))
    gt = camera_centres(np.stack([truth[f.image.split("/")[-1]] for f in scene.frames]))
    i, j = np.triu_indices(len(est), 1)
    return float(np.median(np.linalg.norm(est[i] - est[j], axis=1) / np.linalg.norm(gt[i] - gt[j], axis=1)))


def test_depth_beside_the_images_gives_the_true_scale(street, tmp_path, capsys):
    assert recon(street, tmp_path / "s") == 0
    report = json.loads((tmp_path / "s" / "report.json").read_text())
    assert report["scale"]["method"] == "depth" and report["scale"]["confidence"] == "high"
    assert size_over_truth(street, tmp_path / "s") == pytest.approx(1.0, abs=0.03)
    assert "scale: depth, high confidence" in capsys.readouterr().out


def test_known_distance_between_two_frames_sets_the_scale(street, tmp_path, capsys):
    cams = {c.image: c.cam_from_world for c in read_cameras(street)}
    a, b = camera_centres(np.stack([cams["000000.png"], cams["000007.png"]]))
    metres = float(np.linalg.norm(a - b))
    assert recon(street, tmp_path / "s", "--known-distance", "000000", "000007.png", str(metres)) == 0
    report = json.loads((tmp_path / "s" / "report.json").read_text())
    assert report["scale"]["method"] == "--known-distance"
    assert size_over_truth(street, tmp_path / "s") == pytest.approx(1.0, abs=0.03)
    assert "scale: from --known-distance" in capsys.readouterr().out


def test_scale_option_multiplies_sfm_units(street, tmp_path):
    assert recon(street, tmp_path / "one", "--scale", "1") == 0
    assert recon(street, tmp_path / "three", "--scale", "3") == 0
    one, three = Scene.load(tmp_path / "one"), Scene.load(tmp_path / "three")
    assert np.allclose(three.cloud.xyz, 3 * one.cloud.xyz, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("extra, words", [
    (["--known-distance", "000000", "nosuchframe", "2"], "no frame 'nosuchframe'"),
    (["--known-distance", "000000", "000003", "far"], "positive number of metres"),
    (["--known-distance", "000000", "000000", "2"], "given twice"),
    (["--scale", "-1"], "must be a positive factor"),
    (["--scale", "2", "--known-distance", "000000", "000003", "2"], "give only one"),
])
def test_bad_scale_options_fail_in_one_line(street, tmp_path, capsys, extra, words):
    assert recon(street, tmp_path / "s", *extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("rewis recon: error:") and words in err[-1]
    assert not (tmp_path / "s").exists()


def _scene(xyz, poses) -> Scene:
    n = len(xyz)
    cloud = Cloud(xyz=xyz.astype(np.float32), rgb=np.zeros((n, 3), np.uint8), conf=np.ones(n, np.float32),
                  weak_label=np.full(n, 255, np.uint8), source_frame=np.full(n, -1, np.int32))
    frames = [Frame(image=f"{i}.png", width=64, height=48, K=np.eye(3), cam_from_world=p) for i, p in enumerate(poses)]
    return Scene(classes=None, frames=frames, cloud=cloud, links=None, source="images")
