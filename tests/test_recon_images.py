"""--source images: pycolmap SfM registers a small ray-cast sequence with the true trajectory's shape."""

from __future__ import annotations

import json

import numpy as np
import pytest

from recon.build import reconstruct
from recon.dataset import read_cameras
from recon.scene import Scene
from recon.sfm import align_sim3, camera_centres, centre_error, point_confidence
from recon.sources import ReconOptions
from test_recon_helpers import render_room


@pytest.fixture(scope="module")
def sfm_scene(tmp_path_factory):
    seq = render_room(tmp_path_factory.mktemp("room") / "seq", frames=8, size=(240, 180))
    out = tmp_path_factory.mktemp("scene") / "scene"
    report = reconstruct(seq, out, ReconOptions(progress=False, dense=False))
    return seq, Scene.load(out), report


def test_registers_every_frame_with_small_centre_error(sfm_scene):
    seq, scene, report = sfm_scene
    assert report["frames_registered"] == report["frames_total"] == 8
    truth = {c.image: c.cam_from_world for c in read_cameras(seq)}
    names = [f.image.rsplit("/", 1)[-1] for f in scene.frames]
    est = camera_centres(np.stack([f.cam_from_world for f in scene.frames]))
    gt = camera_centres(np.stack([truth[n] for n in names]))
    assert centre_error(est, gt)["mean_percent"] < 2.0


def test_focal_length_is_self_calibrated(sfm_scene):
    _, scene, _ = sfm_scene
    assert abs(scene.frames[0].K[0, 0] - 0.9 * 240) < 0.05 * 0.9 * 240


def test_links_are_track_observations(sfm_scene):
    _, scene, _ = sfm_scene
    for f, frame in enumerate(scene.frames):
        point, v, u = scene.links.frame(f)
        cam = scene.cloud.xyz[point].astype(np.float64) @ frame.cam_from_world[:3, :3].T + frame.cam_from_world[:3, 3]
        pix = cam @ frame.K.T
        pix = pix[:, :2] / pix[:, 2:]
        assert np.median(np.abs(pix - np.stack([u + 0.5, v + 0.5], 1))) < 1.5  # pixel cell + small residual
    assert 0 <= scene.cloud.conf.min() and scene.cloud.conf.max() <= 1


def test_weak_and_gt_labels_are_voted_from_observations(sfm_scene):
    _, scene, _ = sfm_scene
    assert scene.cloud.label is not None and (scene.cloud.label != 255).mean() > 0.9
    weak = scene.cloud.weak_label != 255
    assert weak.any() and (scene.cloud.weak_label[weak] == scene.cloud.label[weak]).mean() > 0.9


def test_report_and_exports(sfm_scene, tmp_path):
    _, scene, report = sfm_scene
    for key in ("frames_total", "frames_registered", "points", "seconds", "stages"):
        assert key in report
    saved = json.loads((scene.root / "report.json").read_text())
    assert saved["points"] == len(scene.cloud) and "features" in saved["stages"]
    assert (scene.root / "cloud.ply").stat().st_size > 0 and (scene.root / "cloud.glb").stat().st_size > 0


def test_point_confidence_rises_with_track_length_and_falls_with_error():
    conf = point_confidence(np.array([2, 5, 5]), np.array([0.5, 0.5, 2.0]))
    assert conf[1] > conf[0] and conf[1] > conf[2] and ((0 <= conf) & (conf <= 1)).all()


def test_umeyama_recovers_a_similarity():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(20, 3))
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    R = q * np.sign(np.linalg.det(q))
    dst = 2.5 * src @ R.T + np.array([1.0, -2.0, 3.0])
    s, R_est, t = align_sim3(src, dst)
    assert abs(s - 2.5) < 1e-9 and np.allclose(R_est, R) and np.allclose(t, [1, -2, 3])


def test_dense_path_fuses_stereo_depth_with_links(sfm_scene, tmp_path, monkeypatch):
    """recon.stereo stood in by the true depth: checks the depth ranges handed over, fusion and links."""
    import sys
    import types

    import torch

    from recon.dataset import read_depth

    seq, scene, _ = sfm_scene
    truth = {c.image: c.cam_from_world for c in read_cameras(seq)}

    def fake_estimate_depths(images, K, cam_from_world, depth_range, progress=True, **overrides):
        assert images.shape == (8, 3, 180, 240) and (depth_range[:, 0] < depth_range[:, 1]).all()
        depth = torch.stack([torch.from_numpy(read_depth(seq / "depth" / f"{i:06d}.npy")) for i in range(8)])
        # SfM's scale is arbitrary: express the true depth in it through the first two camera centres
        est = camera_centres(cam_from_world.double().numpy())
        gt = camera_centres(np.stack([truth[f"{i:06d}.png"] for i in range(8)]))
        scale = np.linalg.norm(est[-1] - est[0]) / np.linalg.norm(gt[-1] - gt[0])
        return depth * float(scale), torch.ones_like(depth)

    monkeypatch.setitem(sys.modules, "recon.stereo", types.SimpleNamespace(estimate_depths=fake_estimate_depths))
    out = tmp_path / "dense"
    report = reconstruct(seq, out, ReconOptions(progress=False, dense=True, stride=4, drop_fraction=0.1))
    dense = Scene.load(out)
    assert report["dense"]["status"] == "ok"
    n_sfm = report["sfm_points"]
    assert len(dense.cloud) == n_sfm + report["dense"]["points"]
    assert report["dense"]["points"] == 8 * int(0.9 * 45 * 60 + 0.5)
    point, v, u = dense.links.frame(3)
    dense_links = point >= n_sfm
    assert (dense.cloud.source_frame[point[dense_links]] == 3).all()
    assert dense.cloud.label is not None and (dense.cloud.label[n_sfm:] != 255).all()
