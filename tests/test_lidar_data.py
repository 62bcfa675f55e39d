"""The data side of the LiDAR modes: scan readers (KITTI layout, .npy folders, nuScenes sample and v1.0 tables),
weak label kinds on scans (points, semi), the rgb feature, and their bad input. Real scans come from
shared/data (SemanticKITTI, nuScenes: CC BY-NC-SA); the nuScenes tables are written by hand in tmp_path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from apps.cli import main
from recon.errors import InputError

REPO = Path(__file__).resolve().parents[1]
TINY_LIDAR = REPO / "configs" / "tiny_lidar.yaml"


def lidar_config(train, out: Path, *overrides: str):
    from rewis.modes import load_config

    return load_config(TINY_LIDAR, [f"data.train=[{train}]", f"run.out={out}", *overrides])


@pytest.fixture(scope="module")
def synth_lidar(synth_sequence, tmp_path_factory):
    """A synthetic sequence with lidar/ (KITTI layout, image_2/ and calib.txt) and LiDAR click labels."""
    from rewis.lidar_weak_labels import LidarWeakSpec, label_scans

    seq = tmp_path_factory.mktemp("lidar_data") / "seq"
    shutil.copytree(synth_sequence("street", frames=3, seed=0, size=(96, 72), lidar=True), seq)
    label_scans(seq, LidarWeakSpec("points", per_class=30), progress=False)
    return seq


def copy_seq01(tmp_path: Path, scans=("000000", "000001")) -> Path:
    out = tmp_path / "seq01"
    out.mkdir()
    for scan in scans:
        for kind in ("points", "labels"):
            shutil.copy(REPO.parent / "shared" / "data" / "semantickitti_seq01" / f"{kind}_{scan}.npy", out)
    return out


# ---------------------------------------------------------------------------------------------- readers

def test_npy_readers_on_the_shared_semantickitti_scans(shared_data):
    from rewis.scans import SEMANTICKITTI, find_scan_folders
    from rewis.scans_formats import NpyScanFolder

    (scans,) = find_scan_folders(shared_data / "semantickitti_scans")
    assert isinstance(scans, NpyScanFolder) and scans.label_map == "semantickitti_train"
    assert scans.scans == ["000700", "000750"] and scans.classes.names == SEMANTICKITTI.names
    points = scans.points("000700")
    assert points.shape == (85962, 4) and points.dtype == np.float32 and not points[:, 3].any()
    raw = np.load(shared_data / "semantickitti_scans" / "labels" / "000700.npy").ravel()
    labels = scans.labels("000700", "labels", len(points))
    assert np.array_equal(labels, np.where(raw == 0, 255, raw - 1))
    assert (labels == SEMANTICKITTI.names.index("vegetation")).sum() == (raw == 15).sum()
    scans.check("labels")
    # world frame: the sensor estimate sits inside the scan, ~100 m from the origin; seq01 is sensor-centred
    assert np.linalg.norm(scans.sensor_xy("000700", points)) > 90
    (seq,) = find_scan_folders(shared_data / "semantickitti_seq01")
    assert seq.scans == ["000000", "000001", "000002"] and len(seq.points("000001")) == 90318
    present = set(np.unique(seq.labels("000002", "labels", 90449)).tolist())
    assert present == {255, 0, 8, 13, 14, 16, 17, 18}  # training ids 0, 1, 9, 14, 15, 17, 18, 19
    assert not seq.sensor_xy("000000", seq.points("000000")).any()


def test_nuscenes_sample_folder_reads_points_and_colours_of_six_cameras(shared_data, monkeypatch):
    from rewis import scan_colour
    from rewis.scans import find_scan_folders
    from rewis.scans_formats import NUSCENES16

    (sample,) = find_scan_folders(shared_data / "nuscenes_sample")
    assert sample.scans == ["LIDAR_TOP"] and sample.classes == NUSCENES16 and sample.label_map == "nuscenes"
    points = sample.points("LIDAR_TOP")
    raw = np.fromfile(shared_data / "nuscenes_sample" / "LIDAR_TOP.pcd.bin", "<f4").reshape(-1, 5)
    assert points.shape == (34688, 4) and np.allclose(points[:, 3], raw[:, 3] / 255) and points[:, 3].max() <= 1
    monkeypatch.setattr(scan_colour, "MIN_DEPTH", 0.5)  # the depth limit of the README's counts
    colours = sample.colours("LIDAR_TOP", points[:, :3])
    assert int(colours[:, 3].sum()) == 20206  # seen by at least one camera (shared/data/README.md)
    assert not colours[colours[:, 3] == 0].any() and colours[colours[:, 3] == 1, :3].std() > 0.05
    with pytest.raises(InputError, match="LIDAR_TOP_lidarseg.bin: missing"):
        sample.labels("LIDAR_TOP", "labels", len(points))


def rotation_wxyz(axis, degrees: float) -> list[float]:
    from scipy.spatial.transform import Rotation

    x, y, z, w = Rotation.from_rotvec(np.radians(degrees) * np.asarray(axis, float)).as_quat()
    return [w, x, y, z]


def wxyz_of_matrix(matrix: np.ndarray) -> list[float]:
    from scipy.spatial.transform import Rotation

    x, y, z, w = Rotation.from_matrix(matrix).as_quat()
    return [w, x, y, z]


def matrix_of(record: dict) -> np.ndarray:
    """4x4 from a (w, x, y, z) rotation and translation, with scipy (independent of recon.nuscenes)."""
    from scipy.spatial.transform import Rotation

    w, x, y, z = record["rotation"]
    out = np.eye(4)
    out[:3, :3], out[:3, 3] = Rotation.from_quat([x, y, z, w]).as_matrix(), record["translation"]
    return out


CAMERA_K = [[50.0, 0.0, 32.0], [0.0, 50.0, 24.0], [0.0, 0.0, 1.0]]


def write_tables(root: Path, version: str = "v1.0-mini") -> dict:
    """A hand-made v1.0 table set: 2 samples, each with a LIDAR_TOP sweep (6 points) and a CAM_FRONT image
    taken 20 ms later from a moved ego pose; lidarseg labels; the 32 categories in their official order."""
    from recon.nuscenes import LIDARSEG_CATEGORIES

    tables = {name: [] for name in ("sample", "sample_data", "calibrated_sensor", "ego_pose", "sensor", "lidarseg",
                                    "category")}
    tables["sensor"] = [{"token": "s_lidar", "channel": "LIDAR_TOP", "modality": "lidar"},
                        {"token": "s_cam", "channel": "CAM_FRONT", "modality": "camera"}]
    # LiDAR -y = ego x (forward); the camera looks forward (OpenCV: z forward -> ego x, x right -> ego -y,
    # y down -> ego -z)
    cam_rotation = wxyz_of_matrix(np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]], float))
    tables["calibrated_sensor"] = [
        {"token": "c_lidar", "sensor_token": "s_lidar", "translation": [0.9, 0.0, 1.8],
         "rotation": rotation_wxyz([0, 0, 1], 90.0), "camera_intrinsic": []},
        {"token": "c_cam", "sensor_token": "s_cam", "translation": [1.7, 0.0, 1.5], "rotation": cam_rotation,
         "camera_intrinsic": CAMERA_K}]
    (root / "samples" / "LIDAR_TOP").mkdir(parents=True)
    (root / "samples" / "CAM_FRONT").mkdir(parents=True)
    (root / "lidarseg" / version).mkdir(parents=True)
    image = np.zeros((48, 64, 3), np.uint8)
    image[:, :, 0] = 200  # a red image
    for k in range(2):
        t = 1_000_000 + k * 500_000
        tables["sample"].append({"token": f"sample{k}", "timestamp": t, "scene_token": "scene0"})
        for sensor, dt, yaw in (("lidar", 0, 10.0 * k), ("cam", 20_000, 10.0 * k + 2.0)):
            tables["ego_pose"].append({"token": f"e_{sensor}{k}", "timestamp": t + dt,
                                       "translation": [100.0 + 5 * k + dt / 1e5, 50.0, 0.0],
                                       "rotation": rotation_wxyz([0, 0, 1], yaw)})
        lidar_file = f"samples/LIDAR_TOP/sweep{k}.pcd.bin"
        points = np.array([[0, -8, 0, 10, 0], [0.5, -12, 0.3, 20, 1], [0, 8, 0, 30, 2], [-3, 0, 0, 40, 3],
                           [0, -20, 1, 50, 4], [0, 5, -1, 255, 5]], "<f4")  # LiDAR frame; -y = forward
        points.tofile(root / lidar_file)
        Image.fromarray(image).save(root / f"samples/CAM_FRONT/img{k}.png")
        tables["sample_data"] += [
            {"token": f"lidar{k}", "sample_token": f"sample{k}", "ego_pose_token": f"e_lidar{k}",
             "calibrated_sensor_token": "c_lidar", "timestamp": t, "fileformat": "pcd", "is_key_frame": True,
             "height": 0, "width": 0, "filename": lidar_file, "prev": "", "next": ""},
            {"token": f"cam{k}", "sample_token": f"sample{k}", "ego_pose_token": f"e_cam{k}",
             "calibrated_sensor_token": "c_cam", "timestamp": t + 20_000, "fileformat": "png", "is_key_frame": True,
             "height": 48, "width": 64, "filename": f"samples/CAM_FRONT/img{k}.png", "prev": "", "next": ""}]
        seg = f"lidarseg/{version}/lidar{k}_lidarseg.bin"
        np.array([17, 24, 1, 2, 30, 0], np.uint8).tofile(root / seg)  # car, driveable, animal, adult, veg., noise
        tables["lidarseg"].append({"token": f"ls{k}", "sample_data_token": f"lidar{k}", "filename": seg})
    tables["category"] = [{"token": f"cat{i}", "name": name, "description": "", "index": i}
                          for i, name in enumerate(LIDARSEG_CATEGORIES)]
    (root / version).mkdir()
    for name, rows in tables.items():
        (root / version / f"{name}.json").write_text(json.dumps(rows))
    return tables


def test_nuscenes_tables_give_scans_labels_and_the_lidar_to_camera_chain(tmp_path):
    from rewis.scans import find_scan_folders
    from rewis.scans_formats import NUSCENES16, NuScenesFolder

    tables = write_tables(tmp_path / "nuscenes")
    (folder,) = find_scan_folders(tmp_path / "nuscenes")
    assert isinstance(folder, NuScenesFolder) and folder.scans == ["lidar0", "lidar1"]
    points = folder.points("lidar1")
    assert points.shape == (6, 4) and points[-1, 3] == 1.0
    labels = folder.labels("lidar1", "labels", 6)
    names = [NUSCENES16.names[c] if c != 255 else None for c in labels]
    assert names == ["car", "driveable_surface", None, "pedestrian", "vegetation", None]
    folder.check("labels")
    records = {r["token"]: r for rows in tables.values() for r in rows}
    for scan, k in (("lidar0", 0), ("lidar1", 1)):
        (link,) = folder.camera_links(scan)
        assert link.channel == "CAM_FRONT" and (link.width, link.height) == (64, 48)
        assert np.allclose(link.K, CAMERA_K)
        global_from_lidar = matrix_of(records[f"e_lidar{k}"]) @ matrix_of(records["c_lidar"])
        global_from_cam = matrix_of(records[f"e_cam{k}"]) @ matrix_of(records["c_cam"])
        xyz1 = np.c_[points[:, :3], np.ones(6)]
        expected = (np.linalg.inv(global_from_cam) @ global_from_lidar @ xyz1.T).T
        assert np.allclose((link.cam_from_lidar @ xyz1.T).T, expected, atol=1e-9)
    colours = folder.colours("lidar0", points[:, :3])
    seen = colours[:, 3] == 1
    assert seen[[0, 1, 4]].all() and not seen[[2, 3]].any()  # ahead of the camera; behind or beside it
    assert np.allclose(colours[seen, :3], [200 / 255, 0, 0])
    assert main(["labels", str(tmp_path / "nuscenes"), "--kind", "points", "--quiet"]) == 0
    clicks = tmp_path / "nuscenes" / "weak" / "v1.0-mini" / "clicks" / "lidar1.label"
    assert np.fromfile(clicks, "<u4").tolist() == [17, 24, 0, 2, 30, 0]  # lidarseg indices; 0 = unlabeled
    assert np.array_equal(folder.labels("lidar1", "points", 6), labels)  # 20 per class: every labelled point


def test_nuscenes_bad_tables_and_labels_fail_with_one_line_naming_the_file(tmp_path):
    from rewis.scans import find_scan_folders

    root = tmp_path / "nuscenes"
    write_tables(root)
    seg = root / "lidarseg" / "v1.0-mini" / "lidar0_lidarseg.bin"
    np.array([17, 24, 1], np.uint8).tofile(seg)
    (folder,) = find_scan_folders(root)
    with pytest.raises(InputError, match=f"{seg}: 3 labels for 6 points"):
        folder.check("labels")
    np.array([17, 24, 1, 2, 99, 0], np.uint8).tofile(seg)
    with pytest.raises(InputError, match=r"raw ids \[99\] are not in the lidarseg categories"):
        folder.labels("lidar0", "labels", 6)
    sweep = root / "samples" / "LIDAR_TOP" / "sweep1.pcd.bin"
    sweep.write_bytes(sweep.read_bytes()[:-4])
    with pytest.raises(InputError, match=f"{sweep}: .* not a multiple of 5"):
        folder.check(None)
    (root / "v1.0-mini" / "ego_pose.json").unlink()
    with pytest.raises(InputError, match="ego_pose.json: table not found"):
        find_scan_folders(root)


# ---------------------------------------------------------------------------------------------- weak labels

def test_points_and_semi_weak_labels_on_npy_scans_through_rewis_labels(tmp_path, capsys):
    from rewis.scans import find_scan_folders

    seq = copy_seq01(tmp_path, ("000000", "000001", "000002"))
    assert main(["labels", str(seq), "--kind", "points", "--per-class", "15", "--seed", "3", "--quiet"]) == 0
    (folder,) = find_scan_folders(seq)
    first = (seq / "clicks" / "000000.label").read_bytes()
    for scan in folder.scans:
        n = folder.point_count(scan)
        dense, clicks = folder.labels(scan, "labels", n), folder.labels(scan, "points", n)
        words = np.fromfile(seq / "clicks" / f"{scan}.label", "<u4")
        assert set(np.unique(words).tolist()) <= set(range(20))  # semantickitti_train encoding: 0 = unlabeled
        labelled = clicks != 255
        assert (clicks[labelled] == dense[labelled]).all()
        counts = np.bincount(clicks[labelled], minlength=19)
        present = np.bincount(dense[dense != 255], minlength=19)
        assert (counts == np.minimum(present, 15)).all()
    capsys.readouterr()
    assert main(["labels", str(seq), "--kind", "points", "--seed", "3", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "clicks" in err and "--overwrite" in err and len(err.splitlines()) == 1
    assert main(["labels", str(seq), "--kind", "points", "--per-class", "15", "--seed", "3", "--overwrite",
                 "--quiet"]) == 0
    assert (seq / "clicks" / "000000.label").read_bytes() == first  # same seed, same files
    assert main(["labels", str(seq), "--kind", "semi", "--fraction", "0.01", "--seed", "1", "--quiet"]) == 0
    full = [s for s in folder.scans if (folder.labels(s, "semi", folder.point_count(s)) != 255).any()]
    assert len(full) == 1  # at least one scan, even at a tiny fraction
    scan = full[0]
    n = folder.point_count(scan)
    assert np.array_equal(folder.labels(scan, "semi", n), folder.labels(scan, "labels", n))
    assert main(["labels", str(seq), "--kind", "coarse", "--lidar", "--quiet"]) == 2
    assert "scribbles, points, semi" in capsys.readouterr().err


def test_weak_labels_key_picks_the_weak_folder_of_lidar_weak_and_scribblekitti(synth_lidar, tmp_path):
    from rewis.modes import load_config
    from rewis.modes.scribblekitti import ScribbleKittiMode
    from rewis.trainer import train

    cfg = lidar_config(synth_lidar, tmp_path / "r0", "method.weak_labels=points")
    mode = ScribbleKittiMode(cfg, ScribbleKittiMode.read_classes(cfg))
    data, _ = mode.dataset()
    folder, scan = data.items[0]
    clicks = folder.labels(scan, "points", folder.point_count(scan))
    assert data.kind == "points" and np.array_equal(data.labels(0, len(clicks)), clicks)
    run = tmp_path / "sk"
    train(lidar_config(synth_lidar, run, "method.weak_labels=points", "run.max_steps=4"))
    stats = json.loads((run / "stages" / "retrain" / "stats.json").read_text())
    assert stats["scans"] == 3 and stats["pseudo_labelled_points"] > 0
    pseudo = np.fromfile(run / "stages" / "retrain" / "0.label", "<u4")
    assert (pseudo[clicks != 255] == 255).all()  # pseudo-labels never replace the clicks
    # lidar_weak without the weak folder of its kind fails before training, naming it
    assert main(["train", str(TINY_LIDAR), "mode=lidar_weak", "method.weak_labels=semi", f"data.train=[{synth_lidar}]",
                 f"run.out={tmp_path / 'r1'}"]) == 2
    with pytest.raises(InputError, match="method.weak_labels"):
        load_config(TINY_LIDAR, [f"data.train=[{synth_lidar}]", "method.weak_labels=boxes"])


# ---------------------------------------------------------------------------------------------- rgb

def test_rgb_feature_colours_points_by_the_pixel_they_project_to(synth_lidar, tmp_path):
    """Label images as camera images: the colour a point gets is its own class's palette colour where the
    camera sees it (P2 and Tr of calib.txt applied the right way round)."""
    from rewis.scans import find_scan_folders

    seq = tmp_path / "seq"
    shutil.copytree(synth_lidar, seq)
    for image, label in zip(sorted((seq / "lidar" / "image_2").glob("*.png")), sorted((seq / "labels").glob("*.png"))):
        Image.open(label).convert("RGB").save(image)
    (folder,) = find_scan_folders(seq)
    scan = folder.scans[0]
    points = folder.points(scan)
    colours = folder.colours(scan, points[:, :3])
    labels = folder.labels(scan, "labels", len(points))
    seen = (colours[:, 3] == 1) & (labels != 255)
    assert 0.1 < seen.mean() < 0.5
    palette = np.asarray(folder.classes.palette, np.float32)[labels[seen]] / 255
    assert (np.abs(colours[seen, :3] - palette).max(1) < 1e-6).mean() > 0.9


def test_rgb_model_trains_exports_its_features_and_predict_refuses_bare_clouds(synth_lidar, tmp_path, capsys):
    from rewis.trainer import train

    run = tmp_path / "run"
    train(lidar_config(synth_lidar, run, "mode=lidar_full", "method.features=[remission,rgb]", "run.max_steps=2"))
    config = json.loads((run / "export" / "config.json").read_text())
    assert config["features"] == ["remission", "rgb"] and config["feature_columns"] == 5
    assert main(["eval", "--model", str(run), "--data", str(synth_lidar), "--quiet"]) == 0
    clouds = tmp_path / "clouds"
    clouds.mkdir()
    shutil.copy(synth_lidar / "lidar" / "velodyne" / "000000.bin", clouds)
    capsys.readouterr()
    assert main(["predict", "--model", str(run), "--input", str(clouds), "--output", str(tmp_path / "out"),
                 "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "camera" in err and "rgb" in err and len(err.splitlines()) == 1 and not (tmp_path / "out").exists()
    npy = copy_seq01(tmp_path, ("000000",))
    assert main(["train", str(TINY_LIDAR), "mode=lidar_full", "method.features=[rgb]", f"data.train=[{npy}]",
                 f"run.out={tmp_path / 'r2'}"]) == 2
    assert "no camera image" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- npy end to end

def test_train_on_npy_scans_and_rewis_eval_on_the_shared_folder(shared_data, tmp_path):
    from rewis.trainer import train

    run = tmp_path / "run"
    seq = copy_seq01(tmp_path, ("000000",))
    train(lidar_config(seq, run, "mode=lidar_full", "data.batch_size=1", "run.max_steps=2"))
    config = json.loads((run / "export" / "config.json").read_text())
    assert config["label_map"] == "semantickitti_train" and len(config["head_classes"]) == 19
    out = tmp_path / "eval.json"
    assert main(["eval", "--model", str(run), "--data", str(shared_data / "semantickitti_scans"), "--json", str(out),
                 "--quiet"]) == 0
    report = json.loads(out.read_text())
    assert report["scans"] == 2 and report["gt_points"]["vegetation"] == 28992 + 32682


def test_bad_npy_scans_fail_with_one_line_naming_the_file(tmp_path, capsys):
    from rewis.scans import find_scan_folders

    seq = copy_seq01(tmp_path, ("000000",))
    labels = seq / "labels_000000.npy"
    np.save(labels, np.load(labels)[:-3])
    assert main(["train", str(TINY_LIDAR), "mode=lidar_full", f"data.train=[{seq}]", f"run.out={tmp_path / 'r'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert str(labels) in err and "90401 labels for 90404 points" in err and len(err.splitlines()) == 1
    np.save(labels, np.full((90404, 1), 25, np.int32))
    (folder,) = find_scan_folders(seq)
    with pytest.raises(InputError, match=r"raw ids \[25\] are not in the 20 SemanticKITTI training ids"):
        folder.labels("000000", "labels", 90404)
    np.save(seq / "points_000000.npy", np.zeros((4, 5), np.float32))
    with pytest.raises(InputError, match=r"points_000000.npy: array of shape \(4, 5\)"):
        folder.points("000000")
    (tmp_path / "empty" / "points").mkdir(parents=True)
    with pytest.raises(InputError, match="no LiDAR scans"):
        find_scan_folders(tmp_path / "empty")
