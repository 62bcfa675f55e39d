"""LiDAR modes (lidar_full, lidar_weak, scribblekitti) on tiny synthetic LiDAR sequences; the SemanticKITTI
learning map on the shared real scans; pseudo-label selection by hand; 3D predict / eval and their bad input."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from apps.cli import main
from recon.errors import InputError
from test_train_resume import Killed, train_records

REPO = Path(__file__).resolve().parents[1]
TINY_LIDAR = REPO / "configs" / "tiny_lidar.yaml"


@pytest.fixture(scope="module")
def scribbled(synth_sequence, tmp_path_factory):
    """(train, val) sequences with lidar/ and LiDAR scribbles."""
    from rewis.lidar_scribbles import scribble_lidar

    root = tmp_path_factory.mktemp("lidar")
    out = []
    for seed, frames in ((0, 3), (1, 2)):
        seq = root / f"seq{seed}"
        shutil.copytree(synth_sequence("street", frames=frames, seed=seed, size=(96, 72), lidar=True), seq)
        scribble_lidar(seq, progress=False)
        out.append(seq)
    return tuple(out)


def lidar_config(train: Path, val: Path, out: Path, *overrides: str):
    from rewis.modes import load_config

    return load_config(TINY_LIDAR, [f"data.train=[{train}]", f"data.val=[{val}]", f"run.out={out}", *overrides])


@pytest.mark.parametrize("mode", ["lidar_full", "lidar_weak", "scribblekitti"])
def test_lidar_mode_trains_and_exports_a_3d_model_that_rewis_eval_scores_alike(mode, scribbled, tmp_path):
    from rewis.trainer import train

    run = tmp_path / "run"
    summary = train(lidar_config(*scribbled, run, f"mode={mode}", "run.max_steps=4", "run.eval_every=2"))
    names = {"lidar_full": {"3d/ce", "3d/lovasz"}, "lidar_weak": {"3d/ce"},
             "scribblekitti": {"3d/ce", "3d/consistency", "3d/lovasz"}}[mode]
    for r in train_records(run).values():
        assert names <= set(r) and all(math.isfinite(r[k]) for k in names)
    config = json.loads((run / "export" / "config.json").read_text())
    assert config["format"] == "rewis.model3d/1" and config["label_map"] == "ids"
    assert config["head_classes"] == list(range(9))  # the street classes without sky
    out = tmp_path / "eval.json"
    assert main(["eval", "--model", str(run), "--data", str(scribbled[1]), "--json", str(out), "--quiet"]) == 0
    assert abs(json.loads(out.read_text())["miou"] - summary["best_miou"]) <= 1e-6
    if mode == "scribblekitti":
        stats = json.loads((run / "stages" / "retrain" / "stats.json").read_text())
        assert stats["scans"] == 3 and stats["pseudo_labelled_points"] > 0
        assert sum(c["points"] for c in stats["per_class"].values()) == np.sum(stats["confusion"])


def test_scribblekitti_refuses_an_unknown_ce_normalisation(scribbled, tmp_path):
    with pytest.raises(InputError, match="method.ce_over"):
        lidar_config(*scribbled, tmp_path / "run", "mode=scribblekitti", "method.ce_over=some")


def test_pseudo_label_quality_by_hand():
    from rewis.modes.scribblekitti import pseudo_label_quality

    # rows: dense label, columns: pseudo-label. 4 points labelled a (3 right), 1 labelled b (wrong), none c
    confusion = np.array([[3, 1, 0], [1, 0, 0], [0, 0, 0]])
    q = pseudo_label_quality(confusion, ["a", "b", "c"])
    assert q["accuracy_vs_dense_labels"] == 0.6
    assert q["per_class"]["a"] == {"points": 4, "precision": 0.75}
    assert q["per_class"]["b"] == {"points": 1, "precision": 0.0} and q["per_class"]["c"]["precision"] is None
    assert pseudo_label_quality(np.zeros((3, 3), int), ["a", "b", "c"]) == {"accuracy_vs_dense_labels": None}


@pytest.mark.parametrize("fresh", ["false", "true"])
def test_scribblekitti_resumes_exactly_inside_its_retraining_stage(fresh, scribbled, tmp_path, monkeypatch):
    from rewis import trainer as trainer_module
    from rewis.trainer import train

    args = ("run.max_steps=6", "run.save_every=4", "method.first_share=0.5", f"method.fresh_retrain={fresh}")
    train(lidar_config(*scribbled, tmp_path / "full", *args))
    original = trainer_module.Trainer._after_step

    def dying(self, losses, bar):
        original(self, losses, bar)
        if self.state.step == 5:
            raise Killed

    monkeypatch.setattr(trainer_module.Trainer, "_after_step", dying)
    with pytest.raises(Killed):
        train(lidar_config(*scribbled, tmp_path / "killed", *args))
    monkeypatch.setattr(trainer_module.Trainer, "_after_step", original)
    labels = tmp_path / "killed" / "stages" / "retrain" / "0.label"
    written = labels.stat().st_mtime_ns
    train(lidar_config(*scribbled, tmp_path / "killed", *args), resume="latest")
    assert labels.stat().st_mtime_ns == written  # the pseudo-labels were not recomputed
    a, b = train_records(tmp_path / "full"), train_records(tmp_path / "killed")
    for step in range(1, 7):
        assert {k: v for k, v in b[step].items() if not k.startswith("lr/")} == \
            {k: v for k, v in a[step].items() if not k.startswith("lr/")}, step
    # pseudo-labels never replace a scribble
    from rewis.scans import find_scan_folders

    folder = find_scan_folders(scribbled[0])[0]
    scribbles = folder.labels(folder.scans[0], "scribbles", len(folder.points(folder.scans[0])))
    pseudo = np.fromfile(labels, "<u4")
    assert (pseudo[scribbles != 255] == 255).all() and (pseudo != 255).any()


def test_class_range_balanced_selection_by_hand():
    from rewis.modes.scribblekitti import ScanCells, ring_class_thresholds

    # ring 0 (0-5 m), class 0: confidences .95 .85 .75 .65 -> the top half (.95, .85) is kept;
    # ring 1 (5-10 m), class 1: .55 .45 -> .55; a scribbled point and one beyond 10 m are never pseudo-labelled
    xy = np.array([[1, 0], [2, 0], [3, 0], [4, 0], [6, 0], [7, 0], [1, 1], [12, 0]], float)
    classes = np.array([0, 0, 0, 0, 1, 1, 0, 0])
    conf = np.array([0.95, 0.85, 0.75, 0.65, 0.55, 0.45, 0.99, 0.99])
    weak = np.array([255, 255, 255, 255, 255, 255, 1, 255])
    cells = ScanCells.of(xy, classes, conf, weak, ring_width=5.0, max_range=10.0, bins=100)
    hist = np.bincount(cells.flat_index(2, 100), minlength=2 * 2 * 100).reshape(2, 2, 100)
    first = ring_class_thresholds(hist, 0.5)
    assert first[0, 0] == 85 and first[1, 1] == 55
    assert cells.select(first).tolist() == [0, 0, 255, 255, 1, 255, 255, 255]


def test_learning_map_round_trips_on_the_shared_semantickitti_scans(shared_data):
    from rewis.scans import LEARNING_LUT, SEMANTICKITTI, raw_ids, read_point_labels, read_points

    folder = shared_data / "semantickitti_rawids"
    points = read_points(folder / "000000.bin")
    train = read_point_labels(folder / "000000.label", len(points), "semantickitti", 19)
    raw = np.fromfile(folder / "000000.label", "<u4") & 0xFFFF
    assert set(np.unique(train).tolist()) <= set(range(19)) | {255}
    assert np.array_equal(LEARNING_LUT[raw_ids(train)], train)  # train -> raw -> train
    canonical = np.isin(raw, [10, 11, 30, 40, 44, 48, 50, 51, 70, 71, 72, 80, 81])
    assert canonical.any() and np.array_equal(raw_ids(train)[canonical], raw[canonical])  # raw -> train -> raw
    assert (train[raw == 252] == SEMANTICKITTI.names.index("car")).all()  # a moving car is a car
    scan = np.load(shared_data / "semantickitti_scans" / "labels" / "000700.npy").ravel()  # 0..19 training ids
    ids = np.where(scan == 0, 255, scan - 1).astype(np.uint8)
    assert np.array_equal(LEARNING_LUT[raw_ids(ids)], ids)


def test_predict_writes_labels_of_the_right_length_for_bin_ply_pcd(scribbled, tmp_path):
    import open3d as o3d

    from rewis.trainer import train

    run = tmp_path / "run"
    train(lidar_config(*scribbled, run, "mode=lidar_weak", "run.max_steps=2"))
    points = np.fromfile(scribbled[1] / "lidar" / "velodyne" / "000000.bin", "<f4").reshape(-1, 4)[:3000]
    clouds = tmp_path / "clouds"
    clouds.mkdir()
    points.tofile(clouds / "a.bin")
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points[:2000, :3].astype(np.float64)))
    o3d.io.write_point_cloud(str(clouds / "b.ply"), cloud)
    o3d.io.write_point_cloud(str(clouds / "c.pcd"), cloud.voxel_down_sample(0.5))
    expected = {"a": 3000, "b": 2000, "c": len(o3d.io.read_point_cloud(str(clouds / "c.pcd")).points)}
    (clouds / "broken.bin").write_bytes(b"\0" * 10)
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match="no remission"):
        assert main(["predict", "--model", str(run), "--input", str(clouds), "--output", str(out), "--quiet"]) == 0
    for stem, n in expected.items():
        labels = np.fromfile(out / f"{stem}.label", "<u4")
        assert len(labels) == n and labels.max() < 10 and (out / f"{stem}.ply").is_file()
    assert not (out / "broken.label").exists()
    assert main(["predict", "--model", str(run), "--input", str(clouds), "--output", str(out), "--quiet"]) == 2


def test_bad_scans_fail_with_one_line_naming_the_file(scribbled, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(scribbled[0], bad)
    scan = bad / "lidar" / "velodyne" / "000000.bin"
    scan.write_bytes(scan.read_bytes()[:-4])
    assert main(["train", str(TINY_LIDAR), f"data.train=[{bad}]", f"run.out={tmp_path / 'r1'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert str(scan) in err and "multiple of 16" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r1").exists()
    shutil.copy(scribbled[0] / "lidar" / "velodyne" / "000000.bin", scan)
    label = bad / "lidar" / "labels" / "000000.label"
    label.write_bytes(label.read_bytes()[:-8])
    assert main(["train", str(TINY_LIDAR), "mode=lidar_full", f"data.train=[{bad}]", f"run.out={tmp_path / 'r2'}"]) == 2
    assert str(label) in capsys.readouterr().err and not (tmp_path / "r2").exists()
    raw = tmp_path / "raw"
    (raw / "velodyne").mkdir(parents=True)
    (raw / "labels").mkdir()
    np.zeros((5, 4), "<f4").tofile(raw / "velodyne" / "000000.bin")
    np.array([10, 40, 12345, 40, 40], "<u4").tofile(raw / "labels" / "000000.label")  # no meta: SemanticKITTI ids
    assert main(["train", str(TINY_LIDAR), "mode=lidar_full", "data.batch_size=1", f"data.train=[{raw}]",
                 f"run.out={tmp_path / 'r3'}"]) == 2
    err = capsys.readouterr().err
    assert "12345" in err and "learning map" in err and not (tmp_path / "r3" / "checkpoints").exists()
    (tmp_path / "empty").mkdir()
    assert main(["train", str(TINY_LIDAR), f"data.train=[{tmp_path / 'empty'}]", f"run.out={tmp_path / 'r4'}"]) == 2
    assert "no LiDAR scans" in capsys.readouterr().err and not (tmp_path / "r4").exists()
