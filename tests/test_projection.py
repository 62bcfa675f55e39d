"""Projection, visibility, links and the KITTI / nuScenes readers.

Real-data counts: KITTI 3D object benchmark (Geiger et al., CC BY-NC-SA 3.0) and nuScenes v1.0-mini
(Caesar et al., CC BY-NC-SA 4.0) samples from shared/data (see its README for attribution)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from recon import kitti, nuscenes
from recon.errors import InputError
from recon.projection import (compute_links, depth_test_visible, homogeneous_4x4, in_image_mask, pack_links,
                              project_points, projection_matrices, unpack_links, zbuffer_visible)

KITTI_COUNTS = {"000000": 20285, "000001": 18630, "000002": 20210}
NUSCENES_COUNTS = {"CAM_FRONT": 3067, "CAM_FRONT_RIGHT": 3079, "CAM_FRONT_LEFT": 3704, "CAM_BACK": 4826,
                   "CAM_BACK_LEFT": 4097, "CAM_BACK_RIGHT": 3379}
EYE_K = np.eye(3)  # pixel = (X / Z, Y / Z): exact arithmetic for hand-built cases


def count(links) -> list[int]:
    return [len(p) for p, _, _ in links]


def links_equal(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for la, lb in zip(a, b) for x, y in zip(la, lb))


# ------------------------------------------------------------------------------------------ real data

@pytest.mark.parametrize("frame", sorted(KITTI_COUNTS))
def test_kitti_object_in_image_counts(shared_data, frame):
    root = shared_data / "kitti_object" / "training"
    calib = kitti.read_object_calib(root / "calib" / f"{frame}.txt")
    scan = kitti.read_velodyne(root / "velodyne" / f"{frame}.bin")
    width, height = Image.open(root / "image_2" / f"{frame}.png").size
    K, cam_from_lidar = calib.camera("P2")
    links = compute_links(scan[:, :3], K, cam_from_lidar, width, height, visibility="none", min_depth=0.1)
    assert count(links) == [KITTI_COUNTS[frame]]
    # the same count straight from P2 @ R0_rect @ Tr_velo_to_cam (z = third row = depth in camera 2)
    h = np.c_[scan[:, :3], np.ones(len(scan))] @ calib.lidar_to_pixel("P2").T
    x, y, z = h[:, 0] / h[:, 2], h[:, 1] / h[:, 2], h[:, 2]
    assert int(((z > 0.1) & (x >= 0) & (x < width) & (y >= 0) & (y < height)).sum()) == KITTI_COUNTS[frame]


def test_nuscenes_counts_per_camera_and_union(shared_data):
    sample = nuscenes.read_sample(shared_data / "nuscenes_sample")
    assert sample.points.shape == (34688, 5)
    assert [c.name for c in sample.cameras] == list(NUSCENES_COUNTS)
    K, cam_from_lidar, widths, heights = sample.stacked_cameras()
    assert set(widths) == {1600} and set(heights) == {900}
    links = compute_links(sample.xyz, K, cam_from_lidar, widths, heights, visibility="none", min_depth=0.5)
    assert count(links) == list(NUSCENES_COUNTS.values())
    assert len(torch.unique(torch.cat([p for p, _, _ in links]))) == 20206
    pixels, depth = project_points(sample.xyz, K, cam_from_lidar)
    inside = in_image_mask(pixels, depth, widths, heights, min_depth=0.5)
    assert inside.sum(1).tolist() == list(NUSCENES_COUNTS.values())
    assert int(inside.any(0).sum()) == 20206


def test_kitti_object_labels(shared_data):
    boxes = kitti.read_object_labels(shared_data / "kitti_object" / "training" / "label_2" / "000000.txt")
    assert len(boxes) == 1 and boxes[0].kind == "Pedestrian"
    assert boxes[0].box_2d == (712.40, 143.00, 810.73, 307.92) and boxes[0].rotation_y == 0.01


# -------------------------------------------------------------------------------------- hand-built cases

def test_zbuffer_hides_points_behind_and_keeps_tolerance():
    points = np.array([[0.5, 0.5, 1.0],    # nearest at pixel (0, 0)
                       [1.0, 1.0, 2.0],    # same pixel, 1 m behind: hidden
                       [0.52, 0.52, 1.04],  # same pixel, 4 cm behind: within abs_tol 0.05
                       [2.5, 0.5, 1.0],    # pixel (2, 0), alone
                       [0.5, 0.5, -1.0]],  # behind the camera
                      dtype=np.float32)
    links = compute_links(points, EYE_K, np.eye(4), 4, 4, abs_tol=0.05, rel_tol=0.0)
    point, v, u = links[0]
    assert point.tolist() == [0, 2, 3] and v.tolist() == [0, 0, 0] and u.tolist() == [0, 0, 2]
    assert compute_links(points, EYE_K, np.eye(4), 4, 4, abs_tol=0.01, rel_tol=0.0)[0][0].tolist() == [0, 3]
    # relative tolerance: 0.05 * z_near = 0.05 m
    assert compute_links(points, EYE_K, np.eye(4), 4, 4, abs_tol=0.0, rel_tol=0.05)[0][0].tolist() == [0, 2, 3]
    assert compute_links(points, EYE_K, np.eye(4), 4, 4, visibility="none")[0][0].tolist() == [0, 1, 2, 3]


def test_image_edges_follow_floor_convention():
    x = np.array([0.0, 3.9990234375, 4.0, -0.0009765625, 1.5])  # exact in float32
    points = np.c_[x, np.full(5, 0.5), np.ones(5)].astype(np.float32)
    assert count(compute_links(points, EYE_K, np.eye(4), 4, 1, visibility="none")) == [3]
    point, v, u = compute_links(points, EYE_K, np.eye(4), 4, 1, visibility="none")[0]
    assert point.tolist() == [0, 1, 4] and u.tolist() == [0, 3, 1] and v.tolist() == [0, 0, 0]
    # y = H is outside too; min_depth is strict
    below = np.array([[0.5, 1.0, 1.0], [0.5, 0.5, 0.25]], np.float32)
    assert count(compute_links(below, EYE_K, np.eye(4), 4, 1, visibility="none", min_depth=0.25)) == [0]


def test_depth_test():
    points = np.array([[1.0, 0.5, 2.0], [3.0, 0.5, 2.0], [5.0, 0.5, 2.0], [7.0, 0.5, 2.0]], np.float32)
    depth = np.array([[[2.03, 2.5, 0.0, 1.98]]], np.float32)  # 1 view, H = 1, W = 4; 0 = no depth
    links = compute_links(points, EYE_K, np.eye(4), 4, 1, visibility="depth", depth_maps=depth, abs_tol=0.05)
    assert links[0][0].tolist() == [0, 3]
    pixels, z = project_points(points, EYE_K, np.eye(4))
    assert depth_test_visible(pixels, z, depth, abs_tol=0.05)[0].tolist() == [True, False, False, True]
    assert depth_test_visible(pixels, z, depth, abs_tol=0.0, rel_tol=0.25)[0].tolist() == [True, True, False, True]


def test_zbuffer_mask_matches_links():
    points, K, T = random_case(np.float32)
    pixels, depth = project_points(points, K, T)
    mask = zbuffer_visible(pixels, depth, 64, 48, min_depth=0.1)
    links = compute_links(points, K, T, 64, 48, min_depth=0.1)
    assert [m.nonzero().squeeze(1).tolist() for m in mask] == [p.tolist() for p, _, _ in links]
    for (point, v, u), view_pixels in zip(links, pixels):
        assert torch.equal(view_pixels[point].floor().long(), torch.stack([u, v], 1).long())


# ------------------------------------------------------------------------------------ consistency

def random_case(dtype, n: int = 20000, views: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    points = np.c_[rng.uniform(-6, 6, n), rng.uniform(-4, 4, n), rng.uniform(-2, 20, n)].astype(dtype)
    K = np.array([[40.0, 0, 32], [0, 40.0, 24], [0, 0, 1]])
    poses = []
    for i in range(views):
        a = 0.1 * i
        T = np.eye(4)
        T[:3, :3] = [[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]]
        T[:3, 3] = [0.3 * i, -0.1 * i, 0.5 * i]
        poses.append(T)
    return points, np.repeat(K[None], views, 0), np.stack(poses)


def test_batched_views_equal_single_view_calls():
    points, K, T = random_case(np.float32)
    batched = compute_links(points, K, T, 64, 48, min_depth=0.1)
    singles = [compute_links(points, K[i], T[i], 64, 48, min_depth=0.1)[0] for i in range(len(K))]
    assert links_equal(batched, singles) and sum(count(batched)) > 1000
    pixels, depth = project_points(points, K, T)
    for i in range(len(K)):
        p1, d1 = project_points(points, K[i], T[i])
        assert torch.equal(pixels[i], p1[0]) and torch.equal(depth[i], d1[0])


def test_chunks_and_workers_do_not_change_links():
    points, K, T = random_case(np.float32)
    reference = compute_links(points, K, T, 64, 48, min_depth=0.1, workers=1)
    assert links_equal(reference, compute_links(points, K, T, 64, 48, min_depth=0.1, chunk_points=777, workers=2))


def test_numpy_and_torch_inputs_agree():
    points, K, T = random_case(np.float32)
    a = compute_links(points, K, T, 64, 48, min_depth=0.1)
    b = compute_links(torch.from_numpy(points), torch.from_numpy(K).float(), torch.from_numpy(T).float(), 64, 48,
                      min_depth=0.1)
    assert links_equal(a, b)


def test_float64_and_float32_agree():
    points, K, T = random_case(np.float64)
    p64, z64 = project_points(points, K, T)
    p32, z32 = project_points(points.astype(np.float32), K, T)
    assert p64.dtype == torch.float64 and p32.dtype == torch.float32
    front = z64 > 0.1
    assert torch.allclose(p32.double()[front], p64[front], rtol=1e-5, atol=1e-3)
    links64 = compute_links(points, K, T, 64, 48, min_depth=0.1)
    links32 = compute_links(points.astype(np.float32), K, T, 64, 48, min_depth=0.1)
    # only points within float32 rounding of a pixel border or of the tolerance may differ
    for (a, _, _), (b, _, _) in zip(links64, links32):
        assert len(set(a.tolist()) ^ set(b.tolist())) <= 2 and len(a) > 100


def test_csr_round_trip():
    points, K, T = random_case(np.float32)
    links = compute_links(points, K, T, 64, 48, min_depth=0.1)
    csr = pack_links(links)
    assert csr["offsets"].dtype == torch.int64 and csr["point"].dtype == torch.int64
    assert csr["v"].dtype == torch.int32 and csr["u"].dtype == torch.int32
    assert csr["offsets"].tolist()[-1] == len(csr["point"]) == sum(count(links))
    assert links_equal(unpack_links(**{k: t.numpy() for k, t in csr.items()}), links)
    assert pack_links([])["offsets"].tolist() == [0]


def test_homogeneous_helpers():
    R = np.arange(9.0).reshape(3, 3)
    M = homogeneous_4x4(R)
    assert M.shape == (4, 4) and M[3].tolist() == [0, 0, 0, 1] and M[:3, :3].tolist() == R.tolist()
    Rt = homogeneous_4x4(np.ones((2, 3, 4)))
    assert Rt.shape == (2, 4, 4) and Rt[:, 3, 3].tolist() == [1, 1]
    assert projection_matrices(np.eye(3), np.eye(4)).shape == (1, 3, 4)


def test_benchmark_baseline_matches_on_a_small_case():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "projection.py"
    spec = importlib.util.spec_from_file_location("bench_projection", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    points = bench.street_scene(20000)
    K, T = bench.street_cameras(3)
    P = projection_matrices(K, T).to(torch.float32).numpy()
    ours = bench.flatten_links(bench.torch_visibility(torch.from_numpy(points), torch.from_numpy(K),
                                                      torch.from_numpy(T)))
    for a, b in zip(ours, bench.numpy_visibility(points, P)):
        assert np.array_equal(a, b)


# -------------------------------------------------------------------------------------- odometry readers

def write_odometry(tmp_path: Path) -> Path:
    P = "500 0 100 0 0 500 50 0 0 0 1 0"
    P1 = "500 0 100 -250 0 500 50 0 0 0 1 0"
    tr = "0 -1 0 0 0 0 -1 0.5 1 0 0 -0.25"
    (tmp_path / "calib.txt").write_text(f"P0: {P}\nP1: {P1}\nP2: {P}\nP3: {P1}\nTr: {tr}\n")
    (tmp_path / "poses.txt").write_text("1 0 0 0 0 1 0 0 0 0 1 0\n1 0 0 0 0 1 0 0 0 0 1 2.5\n")
    np.array([[10, 0, 0, 0.5], [5, -0.5, 0.5, 0.25]], np.float32).tofile(tmp_path / "000000.bin")
    np.array([9 | (3 << 16), 255], np.uint32).tofile(tmp_path / "000000.label")
    return tmp_path


def test_odometry_readers(tmp_path):
    root = write_odometry(tmp_path)
    calib = kitti.read_odometry_calib(root / "calib.txt")
    assert calib.velo_to_cam0.shape == (4, 4) and calib.velo_to_cam0[3].tolist() == [0, 0, 0, 1]
    K, cam1_from_cam0 = calib.camera("P1")
    assert K.tolist() == [[500, 0, 100], [0, 500, 50], [0, 0, 1]] and cam1_from_cam0[0, 3] == -0.5
    poses = kitti.read_poses(root / "poses.txt")
    assert poses.shape == (2, 4, 4) and poses[1, 2, 3] == 2.5
    scan = kitti.read_velodyne(root / "000000.bin")
    assert scan.dtype == np.float32 and scan.shape == (2, 4)
    assert kitti.read_velodyne(root / "000000.bin", columns=2).shape == (4, 2)
    cls, inst = kitti.read_labels(root / "000000.label", num_points=2)
    assert cls.tolist() == [9, 255] and inst.tolist() == [3, 0]
    # velodyne (10, 0, 0) -> camera (0, 0.5, 9.75) -> pixel (100, 50 + 500 * 0.5 / 9.75)
    K2, cam_from_world = kitti.lidar_cameras(calib, poses, "P2")
    world_from_lidar = kitti.lidar_to_world(calib, poses)
    links = compute_links(scan[:, :3], K2, cam_from_world @ world_from_lidar, 200, 100, visibility="none")
    assert [l[0].tolist() for l in links] == [[0, 1], [0, 1]]
    assert links[0][2].tolist()[0] == 100 and links[0][1].tolist()[0] == int(50 + 250 / 9.75)
    h = calib.lidar_to_pixel("P2") @ np.array([10, 0, 0, 1.0])
    assert np.allclose(h[:2] / h[2], [100, 50 + 250 / 9.75])


@pytest.mark.parametrize("content, field", [
    ("P0: 1 2 3\n", "P0"),
    ("P0: 1 0 0 0 0 1 0 0 0 0 1 0\nP1: 1 0 0 0 0 1 0 0 0 0 1 0\nP2: 1 0 0 0 0 1 0 0 0 0 1 0\n"
     "P3: 1 0 0 0 0 1 0 0 0 0 1 0\n", "Tr"),
    ("P0: 1 0 x 0 0 1 0 0 0 0 1 0\n", "P0"),
])
def test_malformed_calib_names_file_and_field(tmp_path, content, field):
    path = tmp_path / "calib.txt"
    path.write_text(content)
    with pytest.raises(InputError, match=rf"calib\.txt.*'{field}'"):
        kitti.read_odometry_calib(path)


def test_malformed_poses_scan_labels(tmp_path):
    (tmp_path / "poses.txt").write_text("1 0 0 0 0 1 0 0 0 0 1 0\n1 0 0\n")
    with pytest.raises(InputError, match=r"poses\.txt.*line 2"):
        kitti.read_poses(tmp_path / "poses.txt")
    np.zeros(7, np.float32).tofile(tmp_path / "bad.bin")
    with pytest.raises(InputError, match=r"bad\.bin.*4 columns"):
        kitti.read_velodyne(tmp_path / "bad.bin")
    np.zeros(3, np.uint32).tofile(tmp_path / "a.label")
    with pytest.raises(InputError, match=r"a\.label.*3 labels.*2 points"):
        kitti.read_labels(tmp_path / "a.label", num_points=2)
    with pytest.raises(InputError, match="not found"):
        kitti.read_velodyne(tmp_path / "missing.bin")
    (tmp_path / "label.txt").write_text("Car 0 0 0 1 2 3\n")
    with pytest.raises(InputError, match=r"label\.txt: line 1"):
        kitti.read_object_labels(tmp_path / "label.txt")


def test_malformed_nuscenes_sample(tmp_path):
    (tmp_path / "sample.json").write_text('{"lidar": {"file": "x.bin", "lidar2ego": [[1]]}, "cameras": {}}')
    np.zeros(10, np.float32).tofile(tmp_path / "x.bin")
    with pytest.raises(InputError, match=r"sample\.json.*'lidar\.lidar2ego'"):
        nuscenes.read_sample(tmp_path)
