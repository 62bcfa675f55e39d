"""`rewis synth`: layout on disk, determinism, geometric exactness, SIFT-richness, bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from apps.cli import main
from recon.dataset import read_cameras, read_classes, read_depth, read_label

PRESETS = ("street", "room")
FULL_SIZE = (480, 360)


def _all_bytes(seq: Path) -> dict[str, bytes]:
    return {str(p.relative_to(seq)): p.read_bytes() for p in sorted(seq.rglob("*")) if p.is_file()}


def _reprojection_agreement(seq: Path, i: int, j: int, rel_tol: float = 0.01) -> tuple[float, int]:
    """Share of co-visible pixels of frame i whose label equals the label where they land in frame j."""
    cams = read_cameras(seq)
    depth_i, depth_j = read_depth(seq / f"depth/{i:06d}.npy"), read_depth(seq / f"depth/{j:06d}.npy")
    label_i, label_j = read_label(seq / f"labels/{i:06d}.png"), read_label(seq / f"labels/{j:06d}.png")
    K = cams[i].K
    v, u = np.nonzero(depth_i > 0)
    z = depth_i[v, u].astype(np.float64)
    cam_i = np.stack([(u + 0.5 - K[0, 2]) / K[0, 0] * z, (v + 0.5 - K[1, 2]) / K[1, 1] * z, z, np.ones_like(z)])
    cam_j = cams[j].cam_from_world @ np.linalg.inv(cams[i].cam_from_world) @ cam_i
    zj = cam_j[2]
    safe = np.where(zj > 0, zj, 1.0)
    x, y = K[0, 0] * cam_j[0] / safe + K[0, 2], K[1, 1] * cam_j[1] / safe + K[1, 2]
    height, width = depth_j.shape
    inside = (zj > 0) & (x >= 0) & (x < width) & (y >= 0) & (y < height)
    uj, vj = np.floor(x[inside]).astype(int), np.floor(y[inside]).astype(int)
    covisible = np.abs(depth_j[vj, uj] - zj[inside]) <= rel_tol * zj[inside]
    same = label_i[v[inside], u[inside]][covisible] == label_j[vj, uj][covisible]
    return float(same.mean()), int(covisible.sum())


def _read_calib(path: Path) -> dict[str, np.ndarray]:
    rows = (line.split(":", 1) for line in path.read_text().splitlines() if line.strip())
    return {key: np.array(values.split(), dtype=np.float64).reshape(3, 4) for key, values in rows}


def _lidar_agreement(seq: Path, i: int) -> tuple[float, int]:
    calib = _read_calib(seq / "lidar" / "calib.txt")
    points = np.fromfile(seq / f"lidar/velodyne/{i:06d}.bin", dtype="<f4").reshape(-1, 4)
    labels = np.fromfile(seq / f"lidar/labels/{i:06d}.label", dtype="<u4") & 0xFFFF
    Tr = np.vstack([calib["Tr"], [0.0, 0.0, 0.0, 1.0]])
    h = calib["P2"] @ Tr @ np.vstack([points[:, :3].T.astype(np.float64), np.ones(len(points))])
    image = read_label(seq / f"labels/{i:06d}.png")
    height, width = image.shape
    z = h[2]
    safe = np.where(z > 0, z, 1.0)
    x, y = h[0] / safe, h[1] / safe
    inside = (z > 0) & (x >= 0) & (x < width) & (y >= 0) & (y < height)
    hit = image[np.floor(y[inside]).astype(int), np.floor(x[inside]).astype(int)]
    return float((hit == labels[inside]).mean()), int(inside.sum())


@pytest.fixture(scope="module")
def full_size(synth_sequence):
    """480x360 sequences with LiDAR (few frames): the criteria that depend on the real resolution."""
    return {p: synth_sequence(p, frames=3, seed=0, size=FULL_SIZE, lidar=True) for p in PRESETS}


@pytest.mark.parametrize("preset", PRESETS)
def test_layout_and_formats(synth_sequence, preset):
    seq = synth_sequence(preset, frames=4, seed=0, lidar=True)
    stems = [f"{i:06d}" for i in range(4)]
    for sub, suffix in [("images", ".png"), ("labels", ".png"), ("instances", ".png"), ("depth", ".npy"),
                        ("boxes", ".json"), ("lidar/velodyne", ".bin"), ("lidar/labels", ".label"),
                        ("lidar/image_2", ".png")]:
        assert sorted(p.name for p in (seq / sub).iterdir()) == [s + suffix for s in stems], sub
    classes = read_classes(seq)
    with Image.open(seq / "images/000000.png") as im:
        assert im.mode == "RGB" and im.size == (240, 180)
    with Image.open(seq / "labels/000000.png") as im:
        assert im.mode == "P"
    with Image.open(seq / "instances/000000.png") as im:
        assert np.array(im).dtype == np.uint16 or im.mode.startswith("I")
    label = read_label(seq / "labels/000000.png")
    assert set(np.unique(label)) <= set(range(classes.num_classes))
    depth = np.load(seq / "depth/000000.npy")
    assert depth.dtype == np.float32 and depth.shape == (180, 240)
    if preset == "street":
        assert classes.no_3d == ("sky",)
        sky = classes.names.index("sky")
        assert np.all(depth[label == sky] == 0) and np.all(depth[label != sky] > 0)
    cams = read_cameras(seq)
    assert len(cams) == 4 and cams[0].K[0, 2] == 120.0 and cams[0].K[1, 2] == 90.0
    info = json.loads((seq / "synth.json").read_text())
    assert {k: info[k] for k in ("preset", "seed", "size", "frames")} == \
        {"preset": preset, "seed": 0, "size": [240, 180], "frames": 4}
    boxes = json.loads((seq / "boxes/000000.json").read_text())["boxes"]
    instances = np.array(Image.open(seq / "instances/000000.png"))
    assert {b["instance"] for b in boxes} == set(np.unique(instances)) - {0}
    for b in boxes:
        ys, xs = np.nonzero(instances == b["instance"])
        assert b["box"] == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    poses = np.loadtxt(seq / "lidar/poses.txt").reshape(-1, 3, 4)
    assert poses.shape[0] == 4 and np.allclose(poses[0], np.eye(4)[:3])
    meta = json.loads((seq / "lidar/meta.json").read_text())
    assert meta["format"] == "rewis.lidar/1" and meta["frames"] == 4
    assert (seq / "lidar/image_2/000001.png").read_bytes() == (seq / "images/000001.png").read_bytes()


def test_same_seed_is_byte_identical_and_seeds_differ(synth_sequence, tmp_path):
    from recon.synth import generate

    for preset in PRESETS:
        first = synth_sequence(preset, frames=2, seed=3, lidar=True)
        again = generate(preset, tmp_path / preset, frames=2, seed=3, size=(240, 180), lidar=True, progress=False)
        assert _all_bytes(first) == _all_bytes(again), preset
    for preset in PRESETS:
        a, b = synth_sequence(preset, frames=2, seed=0), synth_sequence(preset, frames=2, seed=1)
        label_a, label_b = read_label(a / "labels/000000.png"), read_label(b / "labels/000000.png")
        assert (label_a != label_b).mean() > 0.2, preset
        assert not np.allclose(read_cameras(a)[1].cam_from_world, read_cameras(b)[1].cam_from_world)


@pytest.mark.parametrize("preset", PRESETS)
def test_depth_reprojection_keeps_labels(synth_sequence, preset):
    seq = synth_sequence(preset, frames=4, seed=0, lidar=True)
    for i, j in [(0, 1), (0, 2), (1, 3), (2, 3)]:
        agreement, covisible = _reprojection_agreement(seq, i, j)
        assert covisible > 5000, (i, j, covisible)
        assert agreement >= 0.99, (i, j, agreement)


@pytest.mark.parametrize("preset", PRESETS)
def test_lidar_points_land_on_their_label(full_size, preset):
    for i in range(3):
        agreement, count = _lidar_agreement(full_size[preset], i)
        assert count > 5000 and agreement >= 0.97, (i, agreement, count)


@pytest.mark.parametrize("preset", PRESETS)
def test_sift_finds_enough_keypoints(full_size, preset):
    os.environ.setdefault("GLOG_minloglevel", "2")
    import pycolmap

    sift = pycolmap.FeatureExtractor.create(pycolmap.FeatureExtractionOptions(), pycolmap.Device.cpu)
    for i in range(3):
        with Image.open(full_size[preset] / f"images/{i:06d}.png") as im:
            grey = np.ascontiguousarray(np.asarray(im.convert("L")))
        keypoints, _ = sift.extract_from_uint8_array(grey)
        assert len(keypoints) >= 500, (preset, i, len(keypoints))


@pytest.mark.parametrize("args, message", [
    (["--preset", "forest"], "invalid choice"),
    (["--size", "480"], "WIDTHxHEIGHT"),
    (["--size", "0x360"], "between"),
    (["--size", "axb"], "WIDTHxHEIGHT"),
    (["--frames", "0"], "at least 1 frame"),
    (["--seed", "-1"], "non-negative"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, args, message):
    out = tmp_path / "seq"
    code = _cli_exit(["synth", "--out", str(out), "--quiet"] + args)
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1, err
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary folder left behind


def test_existing_output_is_kept_without_overwrite(tmp_path, capsys):
    out = tmp_path / "seq"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    code = _cli_exit(["synth", "--out", str(out), "--frames", "1", "--size", "64x48", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--overwrite" in err and len(err.splitlines()) == 1
    assert (out / "precious.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seq"]
    code = _cli_exit(["synth", "--out", str(out), "--frames", "1", "--size", "64x48", "--quiet", "--overwrite",
                      "--preset", "room"])
    assert code == 0 and not (out / "precious.txt").exists() and (out / "images/000000.png").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seq"]


def test_step_changes_the_spacing(synth_sequence):
    slow = read_cameras(synth_sequence("street", frames=2, seed=0, size=(64, 48)))
    fast = read_cameras(synth_sequence("street", frames=2, seed=0, size=(64, 48), step=3.0))

    def travel(cams):
        centres = [-c.cam_from_world[:3, :3].T @ c.cam_from_world[:3, 3] for c in cams]
        return np.linalg.norm(centres[1] - centres[0])

    assert travel(slow) == pytest.approx(1.0, abs=0.05)
    assert travel(fast) == pytest.approx(3.0, abs=0.1)


def _cli_exit(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as e:  # argparse errors exit through SystemExit
        return int(e.code)
