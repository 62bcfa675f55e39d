"""--source lidar: KITTI object, nuScenes sample (counts of shared/data/README.md) and synthetic odometry."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from recon.build import reconstruct
from recon.dataset import read_label
from recon.scene import Scene
from recon.sources import ReconOptions

KITTI_IN_IMAGE = {"000000": 20285, "000001": 18630, "000002": 20210}
NUSCENES_IN_IMAGE = {"CAM_FRONT": 3067, "CAM_FRONT_RIGHT": 3079, "CAM_FRONT_LEFT": 3704, "CAM_BACK": 4826,
                     "CAM_BACK_LEFT": 4097, "CAM_BACK_RIGHT": 3379}


def lidar_scene(folder, out, **options):
    report = reconstruct(folder, out, ReconOptions(source="lidar", progress=False, **options))
    return Scene.load(out), report


@pytest.mark.parametrize("scan", sorted(KITTI_IN_IMAGE))
def test_kitti_object_link_counts(shared_data, tmp_path, scan):
    scene, report = lidar_scene(shared_data / "kitti_object", tmp_path / "s", scan=scan, visibility="none")
    assert report["links_per_frame"] == [KITTI_IN_IMAGE[scan]]
    zbuffered, _ = lidar_scene(shared_data / "kitti_object", tmp_path / "z", scan=scan)
    assert 0.8 * KITTI_IN_IMAGE[scan] < len(zbuffered.links.point) <= KITTI_IN_IMAGE[scan]


def test_nuscenes_link_counts(shared_data, tmp_path):
    scene, report = lidar_scene(shared_data / "nuscenes_sample", tmp_path / "s", visibility="none")
    names = [f.image.rsplit("/", 1)[-1].rsplit(".", 1)[0] for f in scene.frames]
    assert dict(zip(names, report["links_per_frame"])) == NUSCENES_IN_IMAGE
    assert report["points_linked"] == 20206 and len(scene.cloud) == 34688
    # coloured from the camera images: not the grey of unseen points
    seen = np.unique(scene.links.point)
    assert (scene.cloud.rgb[seen] != 128).any(axis=1).mean() > 0.9


def test_synthetic_odometry_scans_are_accumulated_and_linked(synth_sequence, tmp_path):
    seq = synth_sequence("street", frames=3, size=(120, 90), lidar=True)
    scene, report = lidar_scene(seq, tmp_path / "s")
    assert report["layout"] == "odometry" and report["scans"] == 3
    assert set(np.unique(scene.cloud.source_frame)) == {0, 1, 2}
    assert scene.cloud.label is not None
    for f, frame in enumerate(scene.frames):
        point, v, u = scene.links.frame(f)
        assert len(point) > 1000
        gt = read_label(frame.label)
        assert (gt[v, u] == scene.cloud.label[point]).mean() > 0.95  # same class in 2D and 3D


def test_no_lidar_data_is_one_clear_error(tmp_path):
    from recon.errors import InputError

    (tmp_path / "seq" / "images").mkdir(parents=True)
    with pytest.raises(InputError, match="no LiDAR data"):
        reconstruct(tmp_path / "seq", tmp_path / "s", ReconOptions(source="lidar", progress=False))


def test_a_subset_of_scans_keeps_each_scan_with_its_own_pose_and_image(synth_sequence, tmp_path):
    seq = tmp_path / "seq"
    shutil.copytree(synth_sequence("street", frames=3, size=(120, 90), lidar=True), seq)
    for stale in ("lidar/velodyne/000000.bin", "lidar/labels/000000.label", "images/000000.png"):
        (seq / stale).unlink()
    scene, report = lidar_scene(seq, tmp_path / "s")
    assert report["scans"] == 2 and [f.image.rsplit("/", 1)[-1] for f in scene.frames] == ["000001.png", "000002.png"]
    for f, frame in enumerate(scene.frames):
        point, v, u = scene.links.frame(f)
        gt = read_label(frame.label)
        assert (gt[v, u] == scene.cloud.label[point]).mean() > 0.95  # pose line i stays with scan i


def test_nuscenes_points_belong_to_no_single_camera(shared_data, tmp_path):
    scene, report = lidar_scene(shared_data / "nuscenes_sample", tmp_path / "s", visibility="none")
    assert (scene.cloud.source_frame == -1).all() and report["scans"] == 1
