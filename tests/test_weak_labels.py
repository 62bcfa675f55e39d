"""`rewis labels`: weak labels derived from dense labels (2D kinds and LiDAR scribbles)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from scipy.spatial import cKDTree

from apps.cli import main
from recon.dataset import ClassList, read_label, write_classes, write_label
from rewis.lidar_scribbles import make_lidar_scribbles, read_scan
from rewis.weak_labels import (MASK_MAKERS, class_boundaries, frame_rng, make_boxes, make_coarse, make_points,
                               make_scribbles, make_tags, present_classes)

CLASSES = ClassList(names=("road", "sidewalk", "building", "pole", "car", "person", "vegetation", "sign", "sky"),
                    palette=tuple((20 * i, 10 * i, 255 - 20 * i) for i in range(9)), no_3d=("sky",))
ROAD, SIDEWALK, BUILDING, POLE, CAR, PERSON, VEGETATION, SIGN, SKY = range(9)


# ---------------------------------------------------------------------------------------------- hand-made data

def hand_label_map(shift: int = 0) -> np.ndarray:
    gt = np.full((120, 160), ROAD, np.uint8)
    gt[:50] = SKY
    gt[30:80, 10 + shift:60 + shift] = BUILDING
    gt[40:100, 100:104] = POLE                 # thin: vanishes under a plain 4 px erosion
    gt[85:95, 120 + shift:140 + shift] = CAR
    gt[60:62, 70:72] = PERSON                  # 4 px: below every minimum area
    gt[95:120, :30] = SIDEWALK
    gt[0:3, :] = 255                           # void strip
    gt[100:110, 40:60] = 255
    return gt


def hand_instance_map(shift: int = 0) -> np.ndarray:
    instances = np.zeros((120, 160), np.uint16)
    instances[85:95, 120 + shift:140 + shift] = 3
    instances[40:100, 100:104] = 7
    instances[60:62, 70:72] = 300
    instances[93:96, 118:122] = 9               # straddles car (4 px) and road (8 px)
    return instances


def write_hand_sequence(seq: Path, frames: int = 3) -> Path:
    for i in range(frames):
        stem = f"{i:06d}"
        gt = hand_label_map(shift=3 * i)
        write_label(seq / "labels" / f"{stem}.png", gt, CLASSES)
        (seq / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.stack([gt] * 3, axis=-1)).save(seq / "images" / f"{stem}.png")
        (seq / "instances").mkdir(parents=True, exist_ok=True)
        Image.fromarray(hand_instance_map(shift=3 * i)).save(seq / "instances" / f"{stem}.png")
    write_classes(seq, CLASSES)
    return seq


@pytest.fixture
def hand_sequence(tmp_path) -> Path:
    return write_hand_sequence(tmp_path / "seq")


def raycast_scan(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A small spinning-LiDAR scan of a street: ground, two walls, a pole, a car (32 beams)."""
    elevation = np.deg2rad(np.linspace(-24, 2, 32))[:, None]
    azimuth = np.deg2rad(np.arange(0, 360, 0.4))[None, :] + np.random.default_rng(seed).uniform(0, 0.007)
    d = np.stack(np.broadcast_arrays(np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth),
                                     np.sin(elevation)), axis=-1).reshape(-1, 3)
    with np.errstate(divide="ignore", invalid="ignore"):
        hits = {ROAD: np.where(d[:, 2] < 0, -1.7 / d[:, 2], np.inf),
                BUILDING: np.where(np.abs(d[:, 1]) > 1e-6, 9.0 / np.abs(d[:, 1]), np.inf),
                POLE: ray_circle(d, centre=(10.0, 3.0), radius=0.2),
                CAR: ray_box(d, lower=(5.0, -3.0, -1.7), upper=(9.0, -1.3, -0.2))}
    t = np.stack(list(hits.values()), axis=1)
    t[:, 1] = np.where(t[:, 1] * d[:, 2] < 4.0, t[:, 1], np.inf)      # walls are 5.7 m high
    t[:, 2] = np.where(t[:, 2] * d[:, 2] < 3.0, t[:, 2], np.inf)      # the pole 4.7 m
    nearest = np.argmin(t, axis=1)
    distance = t[np.arange(len(t)), nearest]
    keep = distance < 40
    xyz = d[keep] * distance[keep, None]
    labels = np.array(list(hits))[nearest[keep]].astype(np.uint8)
    labels[(labels == ROAD) & (np.abs(xyz[:, 1]) > 6)] = SIDEWALK
    return xyz.astype(np.float32), labels


def ray_circle(d, centre, radius):
    a = d[:, 0] ** 2 + d[:, 1] ** 2
    b = -2 * (d[:, 0] * centre[0] + d[:, 1] * centre[1])
    c = centre[0] ** 2 + centre[1] ** 2 - radius ** 2
    disc = b * b - 4 * a * c
    return np.where(disc >= 0, (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a), np.inf)


def ray_box(d, lower, upper):
    t1, t2 = np.array(lower) / d, np.array(upper) / d
    near, far = np.minimum(t1, t2).max(axis=1), np.maximum(t1, t2).min(axis=1)
    return np.where((near <= far) & (near > 0), near, np.inf)


def write_kitti_folder(folder: Path, scans: int = 2) -> Path:
    for sub in ("velodyne", "labels"):
        (folder / sub).mkdir(parents=True)
    for i in range(scans):
        xyz, labels = raycast_scan(seed=i)
        intensity = np.full((len(xyz), 1), 0.5, np.float32)
        np.hstack([xyz, intensity]).astype(np.float32).tofile(folder / "velodyne" / f"{i:06d}.bin")
        (labels.astype(np.uint32) | (5 << 16)).tofile(folder / "labels" / f"{i:06d}.label")
    return folder


# ---------------------------------------------------------------------------------------------- checks

def labeled_fraction(weak, gt):
    return (weak != 255).sum() / (gt != 255).sum()


def touched_fraction(weak, gt):
    return np.isin(present_classes(gt), weak[weak != 255]).mean()


def wrong_pixels(weak, gt):
    return int(((weak != 255) & (weak != gt)).sum())


def near_boundary(gt, margin=3):
    return ndimage.binary_dilation(class_boundaries(gt), np.ones((2 * margin + 1,) * 2, bool))


def check_scribbles(weak, gt):
    assert wrong_pixels(weak, gt) == 0
    assert 0.02 <= labeled_fraction(weak, gt) <= 0.10
    assert touched_fraction(weak, gt) >= 0.9


def check_coarse(weak, gt):
    assert wrong_pixels(weak, gt) == 0
    assert labeled_fraction(weak, gt) >= 0.5
    assert not ((weak != 255) & near_boundary(gt)).any()


def point_pieces(xyz, voxel=0.75):
    """Connected pieces of a point set: points in touching voxels (26-neighbours) are connected."""
    cells = np.floor((xyz - xyz.min(axis=0)) / voxel).astype(int) + 1
    grid = np.zeros(cells.max(axis=0) + 2, bool)
    grid[tuple(cells.T)] = True
    return ndimage.label(grid, np.ones((3, 3, 3)))[1]


def check_lidar_scribbles(xyz, labels, scribbles):
    labeled = scribbles != 255
    assert int((labeled & (scribbles != labels)).sum()) == 0
    assert 0.05 <= labeled.sum() / (labels != 255).sum() <= 0.12
    for c in present_classes(labels):
        on_class = scribbles == c
        assert on_class.any(), f"class {c} has no scribble"
        # Curves, not scattered points: a scribble falls into no more pieces than its class (plus slack for
        # scan-ring gaps it crosses), and most of its points have a scribbled neighbour.
        assert point_pieces(xyz[on_class]) <= 2 * point_pieces(xyz[labels == c]) + 2
        if (labels == c).sum() >= 50:
            # "Near" scales with how densely the scanner samples that class there: distant tree crowns get
            # LiDAR points metres apart, so a fixed 0.5 m would call any scribble on them scattered.
            neighbours = cKDTree(xyz[on_class]).query(xyz[on_class], k=2)[0][:, 1]
            spacing = cKDTree(xyz[labels == c]).query(xyz[on_class], k=2)[0][:, 1]
            near = np.maximum(0.5, 3.0 * spacing)
            assert np.mean(neighbours < near) > 0.8, f"class {c}: scattered scribble points"


# ---------------------------------------------------------------------------------------------- 2D, hand-made

@pytest.mark.parametrize("kind", sorted(MASK_MAKERS))
def test_every_mask_kind_agrees_with_the_truth(kind):
    for shift in (0, 5):
        gt = hand_label_map(shift)
        weak = MASK_MAKERS[kind](gt, frame_rng(0, "x", kind))
        assert weak.dtype == np.uint8 and weak.shape == gt.shape
        assert wrong_pixels(weak, gt) == 0
        assert not (weak[gt == 255] != 255).any()


def test_scribbles_cover_a_few_percent_and_touch_every_class_even_thin_and_tiny_ones():
    gt = hand_label_map()
    weak = make_scribbles(gt, frame_rng(0, "x", "scribbles"))
    check_scribbles(weak, gt)
    assert touched_fraction(weak, gt) == 1.0
    assert (weak[gt == POLE] == POLE).sum() >= 30   # a line along the pole, not a dot


def test_parts_too_thin_for_a_core_get_a_dot_and_specks_are_skipped():
    gt = np.full((60, 80), SKY, np.uint8)
    gt[10:50, 10:16] = POLE          # 6 px wide: keeps a stroke
    gt[10:50, 40:42] = POLE          # 2 px wide: no core left, gets a dot
    gt[5:7, 70:72] = POLE            # 4 px speck: skipped, its class is touched elsewhere
    weak = make_scribbles(gt, frame_rng(0, "x", "scribbles"))
    assert wrong_pixels(weak, gt) == 0
    assert (weak[10:50, 10:16] == POLE).sum() >= 20
    assert 1 <= (weak[10:50, 40:42] == POLE).sum() <= 5
    assert (weak[5:7, 70:72] == 255).all()


def test_scribbles_are_thin_curves_inside_each_component():
    gt = hand_label_map()
    weak = make_scribbles(gt, frame_rng(0, "x", "scribbles"))
    building = weak == BUILDING
    assert ndimage.label(building, np.ones((3, 3)))[1] == 1
    assert ndimage.binary_erosion(building, np.ones((4, 4))).sum() == 0   # at most 3 px wide
    assert not (building & near_boundary(gt, margin=2)).any()              # drawn inside the eroded region


def test_coarse_covers_half_and_keeps_three_pixels_off_every_boundary():
    gt = hand_label_map()
    check_coarse(make_coarse(gt, frame_rng(0, "x", "coarse")), gt)


def test_points_are_few_per_component_interior_and_grow_slowly_with_area():
    gt = hand_label_map()
    weak = make_points(gt, frame_rng(0, "x", "points"))
    counts = np.bincount(weak[weak != 255], minlength=9)
    assert 1 <= counts[CAR] <= counts[BUILDING] <= counts[SKY] <= 6
    assert counts[PERSON] == 0                              # 4 px: below the minimum area
    assert not ((weak != 255) & class_boundaries(gt)).any()  # interior pixels preferred


def test_same_seed_gives_the_same_labels_and_another_seed_other_points():
    gt = hand_label_map()
    for kind, make in MASK_MAKERS.items():
        assert np.array_equal(make(gt, frame_rng(3, "a", kind)), make(gt, frame_rng(3, "a", kind)))
    other_seed = make_points(gt, frame_rng(4, "a", "points"))
    assert not np.array_equal(make_points(gt, frame_rng(3, "a", "points")), other_seed)


def test_boxes_equal_hand_computed_boxes_and_tags_equal_present_classes():
    gt, instances = hand_label_map(), hand_instance_map()
    # instance 9 covers car [93:95, 120:122] (4 px) and road elsewhere (8 px): majority road
    assert make_boxes(gt, instances) == [
        {"class": CAR, "instance": 3, "box": [120, 85, 140, 95]},
        {"class": POLE, "instance": 7, "box": [100, 40, 104, 100]},
        {"class": ROAD, "instance": 9, "box": [118, 93, 122, 96]},
        {"class": PERSON, "instance": 300, "box": [70, 60, 72, 62]},
    ]
    assert make_tags(gt) == [ROAD, SIDEWALK, BUILDING, POLE, CAR, PERSON, SKY]


# ---------------------------------------------------------------------------------------------- CLI

def test_cli_writes_every_kind_beside_the_sequence(hand_sequence, capsys):
    for kind in ("points", "scribbles", "coarse", "boxes", "tags"):
        assert main(["labels", str(hand_sequence), "--kind", kind, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "scribbles" in out and "touched" in out and "building" in out
    weak = hand_sequence / "weak"
    for kind in ("points", "scribbles", "coarse"):
        files = sorted(p.name for p in (weak / kind).iterdir())
        assert files == ["000000.png", "000001.png", "000002.png"]
        assert Image.open(weak / kind / "000001.png").mode == "P"
        gt = read_label(hand_sequence / "labels" / "000001.png")
        assert wrong_pixels(read_label(weak / kind / "000001.png"), gt) == 0
    boxes = json.loads((weak / "boxes" / "000002.json").read_text())["boxes"]
    assert boxes[0] == {"class": CAR, "instance": 3, "box": [126, 85, 146, 95]}
    assert json.loads((weak / "tags" / "000000.json").read_text()) == {"classes": [0, 1, 2, 3, 4, 5, 8]}
    assert json.loads((weak / "tags.json").read_text()) == {"classes": [0, 1, 2, 3, 4, 5, 8]}
    assert sorted(p.name for p in weak.iterdir()) == ["boxes", "coarse", "points", "scribbles", "tags", "tags.json"]


def test_cli_is_deterministic_per_seed(tmp_path):
    runs = []
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        seq = write_hand_sequence(tmp_path / name, frames=1)
        assert main(["labels", str(seq), "--kind", "points", "--seed", str(seed), "--no-progress"]) == 0
        runs.append((seq / "weak" / "points" / "000000.png").read_bytes())
    assert runs[0] == runs[1] != runs[2]


def test_cli_labels_every_sequence_of_a_dataset_folder(tmp_path):
    for split, name in (("train", "s1"), ("train", "s2"), ("val", "s3")):
        write_hand_sequence(tmp_path / "data" / split / name, frames=1)
    assert main(["labels", str(tmp_path / "data"), "--kind", "scribbles", "--no-progress"]) == 0
    for split, name in (("train", "s1"), ("train", "s2"), ("val", "s3")):
        assert (tmp_path / "data" / split / name / "weak" / "scribbles" / "000000.png").is_file()


def test_overwrite_replaces_and_leaves_no_temporary_folders(hand_sequence):
    target = hand_sequence / "weak" / "coarse"
    assert main(["labels", str(hand_sequence), "--kind", "coarse", "--no-progress"]) == 0
    (target / "stale.png").write_bytes(b"old")
    assert main(["labels", str(hand_sequence), "--kind", "coarse", "--overwrite", "--no-progress"]) == 0
    assert not (target / "stale.png").exists() and len(list(target.iterdir())) == 3
    assert sorted(p.name for p in (hand_sequence / "weak").iterdir()) == ["coarse"]


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_bad_inputs_exit_2_with_one_line_and_destroy_nothing(hand_sequence, tmp_path, capsys):
    assert main(["labels", str(tmp_path / "missing"), "--kind", "points"]) == 2
    assert "folder not found" in one_error_line(capsys)

    (tmp_path / "empty" / "images").mkdir(parents=True)
    assert main(["labels", str(tmp_path / "empty"), "--kind", "points"]) == 2
    assert "no images" in one_error_line(capsys)

    with pytest.raises(SystemExit) as exit_info:    # argparse exits by itself, with code 2
        main(["labels", str(hand_sequence), "--kind", "clicks"])
    assert exit_info.value.code == 2 and "invalid choice" in one_error_line(capsys)

    assert main(["labels", str(hand_sequence), "--kind", "points", "--no-progress"]) == 0
    before = {p.name: p.read_bytes() for p in (hand_sequence / "weak" / "points").iterdir()}
    assert main(["labels", str(hand_sequence), "--kind", "points", "--seed", "9"]) == 2
    assert "--overwrite" in one_error_line(capsys)
    assert {p.name: p.read_bytes() for p in (hand_sequence / "weak" / "points").iterdir()} == before

    (hand_sequence / "labels" / "000001.png").unlink()
    assert main(["labels", str(hand_sequence), "--kind", "points", "--overwrite"]) == 2
    err = one_error_line(capsys)
    assert "000001.png" in err and "labels" in err and "derived from dense labels" in err
    assert {p.name: p.read_bytes() for p in (hand_sequence / "weak" / "points").iterdir()} == before

    (hand_sequence / "classes.json").unlink()
    assert main(["labels", str(hand_sequence), "--kind", "tags"]) == 2
    assert "classes.json" in one_error_line(capsys)
    assert not (hand_sequence / "weak" / "tags").exists()


def test_boxes_need_instances(hand_sequence, capsys):
    shutil.rmtree(hand_sequence / "instances")
    assert main(["labels", str(hand_sequence), "--kind", "boxes"]) == 2
    assert "instance" in one_error_line(capsys)


# ---------------------------------------------------------------------------------------------- LiDAR

def test_lidar_scribbles_on_a_hand_made_scan_are_connected_curves_with_no_wrong_label():
    xyz, labels = raycast_scan()
    assert set(np.unique(labels)) == {ROAD, SIDEWALK, BUILDING, POLE, CAR}
    check_lidar_scribbles(xyz, labels, make_lidar_scribbles(xyz, labels))


def test_cli_scribbles_a_kitti_folder_and_refuses_to_overwrite(tmp_path, capsys):
    folder = write_kitti_folder(tmp_path / "kitti")
    assert main(["labels", str(folder), "--kind", "scribbles", "--no-progress"]) == 0
    assert "points" in capsys.readouterr().out
    for scan in ("000000", "000001"):
        xyz_i, labels = read_scan(folder, scan)
        raw = np.fromfile(folder / "scribbles" / f"{scan}.label", dtype=np.uint32)
        assert raw.shape == labels.shape and (raw >> 16).max() == 0
        check_lidar_scribbles(xyz_i[:, :3], labels, raw.astype(np.uint8))
    before = (folder / "scribbles" / "000000.label").read_bytes()
    assert main(["labels", str(folder), "--kind", "scribbles"]) == 2
    assert "--overwrite" in one_error_line(capsys)
    assert main(["labels", str(folder), "--kind", "coarse"]) == 2
    assert "LiDAR weak labels are scribbles, points, semi" in one_error_line(capsys)
    assert (folder / "scribbles" / "000000.label").read_bytes() == before
    assert sorted(p.name for p in folder.iterdir()) == ["labels", "scribbles", "velodyne"]


def test_cli_lidar_flag_uses_the_lidar_folder_of_a_sequence(hand_sequence, capsys):
    assert main(["labels", str(hand_sequence), "--kind", "scribbles", "--lidar"]) == 2
    assert "no LiDAR data" in one_error_line(capsys)
    write_kitti_folder(hand_sequence / "lidar", scans=1)
    assert main(["labels", str(hand_sequence), "--kind", "scribbles", "--lidar", "--no-progress"]) == 0
    assert (hand_sequence / "lidar" / "scribbles" / "000000.label").is_file()
    assert not (hand_sequence / "weak").exists()


# ---------------------------------------------------------------------------------------------- synthetic data

def read_frames(seq: Path, kind: str):
    for label_path in sorted((seq / "labels").glob("*.png")):
        yield read_label(label_path), read_label(seq / "weak" / kind / label_path.name)


@pytest.mark.parametrize("preset", ["street", "room"])
def test_weak_labels_on_synthetic_sequences(synth_sequence, tmp_path, preset):
    # street with lidar=True: the same rendering serves the LiDAR test below (the fixture caches it)
    seq = shutil.copytree(synth_sequence(preset, frames=4, seed=1, lidar=preset == "street"), tmp_path / "seq")
    for kind in ("points", "scribbles", "coarse", "boxes", "tags"):
        assert main(["labels", str(seq), "--kind", kind, "--no-progress"]) == 0
    for gt, weak in read_frames(seq, "scribbles"):
        check_scribbles(weak, gt)
    for gt, weak in read_frames(seq, "coarse"):
        check_coarse(weak, gt)
    for gt, weak in read_frames(seq, "points"):
        assert wrong_pixels(weak, gt) == 0 and (weak != 255).any()
    for label_path in sorted((seq / "labels").glob("*.png")):
        tags = json.loads((seq / "weak" / "tags" / f"{label_path.stem}.json").read_text())["classes"]
        assert tags == present_classes(read_label(label_path)).tolist()


def test_lidar_scribbles_on_the_synthetic_street(synth_sequence, tmp_path):
    seq = shutil.copytree(synth_sequence("street", frames=4, seed=1, lidar=True), tmp_path / "seq")
    assert main(["labels", str(seq), "--kind", "scribbles", "--lidar", "--no-progress"]) == 0
    for label_file in sorted((seq / "lidar" / "labels").glob("*.label")):
        points, labels = read_scan(seq / "lidar", label_file.stem)
        scribbles = np.fromfile(seq / "lidar" / "scribbles" / label_file.name, dtype=np.uint32).astype(np.uint8)
        check_lidar_scribbles(points[:, :3], labels, scribbles)
