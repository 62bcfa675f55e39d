"""Dense stereo at a capped working resolution, links mapped back to the stored pixels, and fusion to a point
budget by voxel merging (recon/stereo.py, recon/fusion.py)."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch

from recon.build import reconstruct
from recon.dataset import read_depth
from recon.fusion import stored_pixels, voxel_merge
from recon.scene import Cloud, Links, Scene
from recon.sources import ReconOptions
from recon.stereo import StereoOptions, estimate_depths, working_size


def test_working_size_caps_the_long_side_and_keeps_small_images():
    options = StereoOptions()
    assert working_size(1920, 1080, options) == (480, 270)  # portrait phone photos
    assert working_size(1920, 1080, StereoOptions(max_side=640)) == (640, 360)
    assert working_size(180, 240, options) == (180, 240)
    assert working_size(1920, 1080, StereoOptions(max_side=0)) == (960, 540)  # the old half resolution


def test_stored_pixels_lie_under_the_working_pixel_centres():
    v, u = np.meshgrid(np.arange(90), np.arange(120), indexing="ij")
    rows, cols = stored_pixels(v.ravel(), u.ravel(), (90, 120), (180, 240))
    assert np.array_equal(rows, 2 * v.ravel() + 1) and np.array_equal(cols, 2 * u.ravel() + 1)
    rows, cols = stored_pixels(v.ravel(), u.ravel(), (90, 120), (1000, 333))
    assert rows.max() < 1000 and cols.max() < 333 and len(np.unique(rows)) == 90


def test_voxel_merge_meets_the_budget_and_keeps_every_link():
    rng = np.random.default_rng(0)
    n = 20000
    xyz = rng.uniform(0, 1, (n, 3)) * [4, 4, 0.01]  # a thin slab, like a surface
    conf = rng.uniform(0.1, 1, n).astype(np.float32)
    weak = np.where(xyz[:, 0] < 2, 1, 2).astype(np.uint8)
    cloud = Cloud(xyz=xyz.astype(np.float32), rgb=np.full((n, 3), 100, np.uint8), conf=conf, weak_label=weak,
                  source_frame=rng.integers(0, 4, n).astype(np.int32), label=weak.copy())
    links = Links(offsets=np.array([0, n // 2, n]), point=rng.permutation(n), v=np.zeros(n, np.int32),
                  u=np.zeros(n, np.int32))
    merged, merged_links, size = voxel_merge(cloud, links, 2000)
    assert 1800 <= len(merged) <= 2000 and size > 0
    assert np.array_equal(merged_links.offsets, links.offsets) and len(merged_links.point) == n
    # each link now points at the merge of the point it pointed at: within a voxel of it
    moved = np.linalg.norm(merged.xyz[merged_links.point] - cloud.xyz[links.point], axis=1)
    assert moved.max() <= np.sqrt(3) * size + 1e-5
    assert merged.conf.max() == pytest.approx(conf.max()) and merged.conf.min() >= conf.min()
    assert set(np.unique(merged.weak_label)) <= {1, 2} and merged.label is not None
    same, _, _ = voxel_merge(cloud, links, n)  # within budget: untouched
    assert same is cloud


def test_cap_leaves_images_below_it_bit_identical(synth_sequence):
    from recon.dataset import read_cameras, read_rgb

    seq = synth_sequence("street", frames=3, seed=0, size=(96, 72))
    cams = read_cameras(seq)
    images = torch.from_numpy(np.stack([read_rgb(seq / "images" / c.image) for c in cams])).permute(0, 3, 1, 2)
    K = torch.from_numpy(np.stack([c.K for c in cams])).float()
    poses = torch.from_numpy(np.stack([c.cam_from_world for c in cams])).float()
    ranges = torch.tensor([[1.0, 60.0]] * 3)
    fast = {"planes": 16, "axis_planes": 0, "slanted_hypotheses": 0, "progress": False, "device": "cpu"}
    capped = estimate_depths(images, K, poses, ranges, max_side=640, **fast)
    uncapped = estimate_depths(images.float() / 255.0, K, poses, ranges, max_side=0, **fast)
    assert all(torch.equal(a, b) for a, b in zip(capped, uncapped))
    small = estimate_depths(images, K, poses, ranges, max_side=48, upsample=False, **fast)
    assert small[0].shape == (3, 36, 48)


@pytest.fixture(scope="module")
def capped_scene(synth_sequence, tmp_path_factory):
    """A 240x180 street through the images source with stereo stood in by the true depth, sampled at a 120x90
    working resolution the way the stereo returns it, and a point budget below what fusion yields."""
    seq = synth_sequence("street", frames=8, seed=0)
    calls = {}

    def fake_estimate_depths(images, K, cam_from_world, depth_range, progress=True, max_side=0, upsample=True):
        calls.update(max_side=max_side, upsample=upsample, shape=tuple(images.shape))
        height, width = images.shape[-2:]
        h, w = working_size(height, width, StereoOptions(max_side=max_side))
        rows, cols = stored_pixels(np.arange(h)[:, None], np.arange(w)[None, :], (h, w), (height, width))
        depth = np.stack([read_depth(seq / "depth" / f"{i:06d}.npy")[rows, cols] for i in range(len(images))])
        # the fake is metric; the scene is in SfM units until the metric-scale stage: express it in them
        return torch.from_numpy(depth) / fake_estimate_depths.metres_per_unit, torch.ones(depth.shape)

    fake_estimate_depths.metres_per_unit = 1.0
    monkey = pytest.MonkeyPatch()
    monkey.setitem(sys.modules, "recon.stereo", types.SimpleNamespace(estimate_depths=fake_estimate_depths))
    try:
        # first without dense stereo, to learn SfM's units from the depth scale it reports
        plain = reconstruct(seq, tmp_path_factory.mktemp("plain") / "s",
                            ReconOptions(progress=False, dense=False, use_intrinsics=True))
        fake_estimate_depths.metres_per_unit = plain["scale"]["factor"]
        out = tmp_path_factory.mktemp("capped") / "s"
        report = reconstruct(seq, out, ReconOptions(progress=False, dense=True, use_intrinsics=True, stride=1,
                                                    drop_fraction=0.0, stereo_max_side=120, points_per_frame=4000))
    finally:
        monkey.undo()
    return seq, Scene.load(out), report, calls


def test_dense_links_point_at_stored_pixels_that_see_the_point(capped_scene):
    seq, scene, report, calls = capped_scene
    assert calls == {"max_side": 120, "upsample": False, "shape": (8, 3, 180, 240)}
    assert report["dense"]["working_size"] == [120, 90]
    n_sfm = report["sfm_points"]
    labels = {}
    for f, frame in enumerate(scene.frames):
        point, v, u = scene.links.frame(f)
        dense = point >= n_sfm
        point, v, u = point[dense], v[dense], u[dense]
        assert len(point) > 0.3 * 120 * 90
        assert v.max() < 180 and u.max() < 240 and v.max() > 170 and u.max() > 230  # the whole stored image
        cam = scene.cloud.xyz[point] @ frame.cam_from_world[:3, :3].T + frame.cam_from_world[:3, 3]
        pix = cam @ frame.K.T
        error = np.hypot(pix[:, 0] / pix[:, 2] - (u + 0.5), pix[:, 1] / pix[:, 2] - (v + 0.5))
        # merged points sit within a voxel of their parts: most links still land on their pixel
        assert np.median(error) < 2.0, np.median(error)
        labels[f] = (point, v, u)
    # ground truth labels were read at the linked stored pixels
    from recon.dataset import read_label

    point, v, u = labels[3]
    truth = read_label(seq / "labels" / "000003.png")[v, u]
    assert np.mean(scene.cloud.label[point] == truth) > 0.9


def test_dense_points_meet_the_budget(capped_scene):
    _, scene, report, _ = capped_scene
    dense = report["dense"]
    assert dense["points_fused"] > 8 * 4000 >= dense["points"] > 0.9 * 8 * 4000 and dense["voxel_size"] > 0
    # merged points keep every link of their parts: one per fused pixel
    assert (scene.links.point >= report["sfm_points"]).sum() == dense["points_fused"]
