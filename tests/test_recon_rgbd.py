"""--source rgbd: back-projected depth reproduces the ray-cast surface, links and labels are exact."""

from __future__ import annotations

import numpy as np
import open3d as o3d
import pytest

from recon.build import reconstruct
from recon.fusion import DepthView, FusionOptions, depth_confidence, fuse_views, vote_labels
from recon.scene import Scene
from recon.sources import ReconOptions
from test_recon_helpers import render_room, room_mesh


@pytest.fixture(scope="module")
def room(tmp_path_factory):
    return render_room(tmp_path_factory.mktemp("room") / "seq", frames=4, size=(80, 60))


@pytest.fixture(scope="module")
def rgbd_scene(room, tmp_path_factory):
    out = tmp_path_factory.mktemp("scene") / "scene"
    report = reconstruct(room, out, ReconOptions(source="rgbd", progress=False, stride=1, drop_fraction=0.0))
    return Scene.load(out), report


def test_points_lie_on_the_true_surface(rgbd_scene):
    scene, report = rgbd_scene
    assert report["frames_registered"] == report["frames_total"] == 4
    assert report["points"] == 4 * 80 * 60
    mesh, _ = room_mesh()
    dist = mesh.compute_distance(o3d.core.Tensor(scene.cloud.xyz)).numpy()
    assert np.percentile(dist, 99) < 2e-3


def test_links_point_back_to_the_source_pixel(rgbd_scene):
    scene, _ = rgbd_scene
    for f, frame in enumerate(scene.frames):
        point, v, u = scene.links.frame(f)
        assert (scene.cloud.source_frame[point] == f).all()
        cam = scene.cloud.xyz[point].astype(np.float64) @ frame.cam_from_world[:3, :3].T + frame.cam_from_world[:3, 3]
        pix = cam @ frame.K.T
        pix = pix[:, :2] / pix[:, 2:]
        assert np.abs(pix - np.stack([u + 0.5, v + 0.5], 1)).max() < 1e-2


def test_labels_come_from_the_source_pixel(room, tmp_path):
    from recon.dataset import read_label
    reconstruct(room, tmp_path / "s", ReconOptions(source="rgbd", progress=False, stride=1, drop_fraction=0.0,
                                                   cross_view_labels=False))
    scene = Scene.load(tmp_path / "s")
    point, v, u = scene.links.frame(0)
    gt = read_label(room / "labels" / "000000.png")
    weak = read_label(room / "weak" / "scribbles" / "000000.png")
    assert (scene.cloud.label[point] == gt[v, u]).all()
    assert (scene.cloud.weak_label[point] == weak[v, u]).all()
    assert scene.frames[0].label and scene.frames[0].weak_label and scene.frames[0].depth


def test_weak_labels_are_gathered_from_every_frame_that_sees_a_point(rgbd_scene, room, tmp_path):
    """The default cloud carries the scribbles of all frames: more points labelled, still right."""
    scene, _ = rgbd_scene
    reconstruct(room, tmp_path / "own", ReconOptions(source="rgbd", progress=False, stride=1, drop_fraction=0.0,
                                                     cross_view_labels=False))
    own = Scene.load(tmp_path / "own").cloud
    voted = scene.cloud
    own_share, voted_share = (own.weak_label != 255).mean(), (voted.weak_label != 255).mean()
    assert voted_share > 1.5 * own_share, (own_share, voted_share)
    labelled = voted.weak_label != 255
    assert (voted.weak_label[labelled] == voted.label[labelled]).mean() > 0.98
    # a scribbled pixel seen by no other frame keeps its own label: the voted set contains the own set
    assert ((own.weak_label != 255) <= labelled).mean() > 0.99


def test_vote_across_views_uses_the_depth_test():
    """Two cameras 1 m apart looking at a wall 5 m away; only the second one has a scribble, on one pixel.
    The wall point under that pixel gets its label; a point 1 m in front of the wall (occluding nothing in the
    second view's depth map) does not."""
    from recon.fusion import vote_across_views

    K = np.array([[10.0, 0, 5], [0, 10.0, 5], [0, 0, 1]])
    second = np.eye(4)
    second[0, 3] = -1.0  # camera centre at x = +1
    views = []
    for pose, scribble in ((np.eye(4), None), (second, (5, 5))):
        weak = np.full((10, 10), 255, np.uint8)
        if scribble:
            weak[scribble] = 7
        views.append(DepthView(depth=np.full((10, 10), 5.0, np.float32), conf=np.ones((10, 10), np.float32),
                               rgb=np.zeros((10, 10, 3), np.uint8), K=K, cam_from_world=pose, weak_label=weak))
    on_wall = np.array([[1.05, 0.05, 5.0]])  # projects to pixel (5, 5) of the second view
    floating = np.array([[1.04, 0.04, 4.0]])  # also projects to pixel (5, 5), but 1 m in front of the wall
    labels = vote_across_views(np.concatenate([on_wall, floating]).astype(np.float32), views)
    assert labels.tolist() == [7, 255]


def test_drop_fraction_removes_least_confident_share():
    depth = np.linspace(1, 20, 100, dtype=np.float32).reshape(10, 10)
    view = DepthView(depth=depth, conf=depth_confidence(depth), rgb=np.zeros((10, 10, 3), np.uint8),
                     K=np.eye(3), cam_from_world=np.eye(4))
    cloud, links = fuse_views([view], FusionOptions(drop_fraction=0.1))
    assert len(cloud) == 90 and cloud.conf.min() >= depth_confidence(depth).ravel()[89]
    assert links.num_frames == 1 and len(links.point) == 90


def test_vote_labels_takes_the_majority():
    point = np.array([0, 0, 0, 1, 1, 2])
    labels = np.array([3, 3, 1, 255, 2, 255], np.uint8)
    assert vote_labels(point, labels, 4).tolist() == [3, 2, 255, 255]


def test_synthetic_depth_is_consistent_across_views(synth_sequence, tmp_path):
    """`rewis synth` depth back-projected from one frame lands on the depth the next frame measured."""
    from recon.dataset import read_depth
    from recon.projection import project_points

    seq = synth_sequence("room", frames=3, size=(96, 72))
    reconstruct(seq, tmp_path / "s", ReconOptions(source="rgbd", progress=False, stride=1, drop_fraction=0.0))
    scene = Scene.load(tmp_path / "s")
    point, _, _ = scene.links.frame(0)
    other = scene.frames[1]
    pix, z = project_points(scene.cloud.xyz[point].astype(np.float64), other.K[None], other.cam_from_world[None])
    pix, z = pix[0].numpy(), z[0].numpy()
    inside = (z > 0) & (pix[:, 0] >= 0) & (pix[:, 0] < other.width) & (pix[:, 1] >= 0) & (pix[:, 1] < other.height)
    measured = read_depth(other.depth)[pix[inside, 1].astype(int), pix[inside, 0].astype(int)]
    close = np.abs(measured - z[inside]) < 0.02 * z[inside] + 0.02
    assert inside.mean() > 0.3 and close.mean() > 0.9
    assert (scene.cloud.label[point] != 255).mean() > 0.9
