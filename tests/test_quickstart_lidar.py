"""`rewis quickstart --lidar` end to end at a tiny budget: scans -> LiDAR scribbles -> the three LiDAR modes ->
results files and an exported scribblekitti model that `rewis predict` runs on; a re-run reuses every step."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from apps.cli import main

REPO = Path(__file__).resolve().parents[1]


def test_lidar_quickstart_trains_three_modes_and_exports_a_model_predict_runs(tmp_path, capsys):
    out = tmp_path / "qs"
    args = ["quickstart", "--lidar", "--out", str(out), "--train-seeds", "0", "--val-seeds", "9", "--frames", "2",
            "--val-frames", "1", "--size", "64x48", "--steps", "4", "--threads", "1",
            "--config", str(REPO / "configs" / "tiny_lidar.yaml")]
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"lidar_full", "lidar_weak", "scribblekitti"}
    assert all(0 <= r["miou"] <= 1 for r in results.values())
    assert abs(results["lidar_weak"]["ss_fs"] - 100 * results["lidar_weak"]["miou"] / results["lidar_full"]["miou"]) < 1e-6
    md = (out / "results.md").read_text()
    assert "| lidar_full |" in md and "SS/FS: " in md and "| sky | n/a | n/a | n/a |" in md
    assert (out / "data" / "train" / "seed0" / "lidar" / "scribbles" / "000001.label").is_file()
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["format"] == "rewis.model3d/1"
    scans = out / "data" / "val" / "seed9" / "lidar" / "velodyne"
    assert main(["predict", "--model", str(out / "model"), "--input", str(scans), "--output", str(tmp_path / "pred"),
                 "--quiet"]) == 0
    n = len(np.fromfile(scans / "000000.bin", "<f4")) // 4
    assert len(np.fromfile(tmp_path / "pred" / "000000.label", "<u4")) == n
    stamps = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("summary.json")}
    capsys.readouterr()
    assert main(args) == 0  # everything reused
    assert "reusing" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("summary.json")} == stamps
