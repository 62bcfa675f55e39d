"""The `drive` preset: stops, 90-degree turns, fast stretches, moving cars, dusk, identical facades, and the
events synth.json reports for them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from apps.cli import main
from recon.dataset import read_cameras, read_label
from recon.synth import PRESETS, generate

SMALL = (160, 120)
CAR = PRESETS["drive"].classes.names.index("car")
PLANNED_FRAMES = 60


def _build(seed: int, frames: int = PLANNED_FRAMES):
    return PRESETS["drive"].build(seed, frames, PRESETS["drive"].default_step, (64, 48))


def _events(scene, kind: str) -> list[dict]:
    """Events of that kind that the frames hold completely."""
    return [e for e in scene.info["events"] if e["kind"] == kind and e.get("complete", True)]


def _centres(poses) -> np.ndarray:
    return np.array([-pose[:3, :3].T @ pose[:3, 3] for pose in poses])


def _headings(poses) -> np.ndarray:
    forward = np.array([pose[2, :3] for pose in poses])  # camera z axis in the world
    return np.unwrap(np.arctan2(forward[:, 1], forward[:, 0]))


def _first_seed(wanted, frames: int = PLANNED_FRAMES) -> int:
    return next(seed for seed in range(50) if wanted(_build(seed, frames)))


@pytest.fixture(scope="module")
def planned():
    return {seed: _build(seed) for seed in range(6)}


def test_every_drive_stops_turns_and_speeds_up(planned):
    for seed, scene in planned.items():
        centres, headings = _centres(scene.poses), _headings(scene.poses)
        stops, turns, fast = _events(scene, "stop"), _events(scene, "turn"), _events(scene, "fast")
        assert stops and turns and fast, (seed, scene.info["events"])
        for stop in stops:
            a, b = stop["frames"]
            assert b - a >= 1 and np.all(centres[a:b + 1] == centres[a]), (seed, stop)
            assert np.linalg.norm(centres[b + 1] - centres[b]) > 0.5  # and it drives on
        for turn in turns:
            a, b = turn["frames"]
            assert abs(np.rad2deg(abs(headings[b] - headings[a])) - 90.0) < 2.0, (seed, turn)
        for stretch in fast:
            a, b = stretch["frames"]
            steps = np.linalg.norm(np.diff(centres[a:b + 1], axis=0), axis=1)
            assert len(steps) >= 4 and np.all((steps > 9.99) & (steps < 15.01)), (seed, steps)


def test_the_road_turns_by_ninety_degrees_over_the_drive(planned):
    for seed, scene in planned.items():
        headings = _headings(scene.poses)
        turned = np.rad2deg(np.abs(headings - headings[0])).max()
        assert turned > 85.0, (seed, turned)


def test_seeds_differ_in_their_mix(planned):
    mixes = {tuple((e["kind"], tuple(e["frames"])) for e in scene.info["events"]) for scene in planned.values()}
    assert len(mixes) == len(planned)
    kinds = [{e["kind"] for e in scene.info["events"]} for scene in planned.values()]
    assert any("dusk" in k for k in kinds) and not all("dusk" in k for k in kinds)
    assert any("repetitive" in k for k in kinds) and not all("repetitive" in k for k in kinds)


def test_identical_buildings_repeat_one_texture_instance():
    scene = _build(_first_seed(lambda s: bool(_events(s, "repetitive"))))
    mesh = scene.mesh
    building = mesh["cls"] == PRESETS["drive"].classes.names.index("building")
    extents = []
    for obj in np.unique(mesh["obj"][building]):
        corners = mesh["vertices"][mesh["triangles"][building & (mesh["obj"] == obj)].ravel(), :2]
        extents.append(np.ptp(corners, axis=0).max())
    assert max(extents) > 40.0  # one object (tint and texture offset) spread over several buildings


@pytest.fixture(scope="module")
def lead_car_drive(synth_sequence):
    """Three frames with a car driving ahead of the camera, rendered small with LiDAR."""
    def lead_from_start(scene):
        return any(e.get("motion") == "lead" and e["frames"] == [0, 2] for e in _events(scene, "moving_car"))

    seed = _first_seed(lead_from_start, frames=3)
    return seed, synth_sequence("drive", frames=3, seed=seed, size=SMALL, lidar=True)


def _moving_car(seq: Path) -> int:
    info = json.loads((seq / "synth.json").read_text())
    return next(e["instance"] for e in info["events"] if e["kind"] == "moving_car" and e["motion"] == "lead")


def _world_centroid(seq: Path, frame: int, instance: int) -> np.ndarray:
    cam = read_cameras(seq)[frame]
    depth = np.load(seq / f"depth/{frame:06d}.npy")
    v, u = np.nonzero(np.array(Image.open(seq / f"instances/{frame:06d}.png")) == instance)
    z = depth[v, u].astype(np.float64)
    K = cam.K
    points = np.stack([(u + 0.5 - K[0, 2]) / K[0, 0] * z, (v + 0.5 - K[1, 2]) / K[1, 1] * z, z, np.ones_like(z)])
    return (np.linalg.inv(cam.cam_from_world) @ points)[:3].mean(axis=1)


def test_moving_car_moves_and_is_labelled_car_in_images_and_lidar(lead_car_drive):
    _, seq = lead_car_drive
    car = _moving_car(seq)
    for frame in range(3):
        instances = np.array(Image.open(seq / f"instances/{frame:06d}.png"))
        mine = instances == car
        assert mine.sum() > 30, frame
        assert np.all(read_label(seq / f"labels/{frame:06d}.png")[mine] == CAR)
        boxes = json.loads((seq / f"boxes/{frame:06d}.json").read_text())["boxes"]
        assert any(b["instance"] == car and b["class"] == CAR for b in boxes)
        labels = np.fromfile(seq / f"lidar/labels/{frame:06d}.label", dtype="<u4")
        hits = labels >> 16 == car
        assert hits.sum() > 20 and np.all(labels[hits] & 0xFFFF == CAR), frame
    moved = np.linalg.norm(_world_centroid(seq, 2, car) - _world_centroid(seq, 0, car))
    assert moved > 2.0, moved


def test_same_seed_same_bytes_and_events_in_synth_json(lead_car_drive, tmp_path):
    seed, seq = lead_car_drive
    again = generate("drive", tmp_path / "again", frames=3, seed=seed, size=SMALL, lidar=True, progress=False)
    files = sorted(p.relative_to(seq) for p in seq.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert all((seq / f).read_bytes() == (again / f).read_bytes() for f in files)
    info = json.loads((seq / "synth.json").read_text())
    assert info["preset"] == "drive" and info["frames"] == 3
    assert {e["kind"] for e in info["events"]} >= {"moving_car"}
    assert all(0 <= e["frames"][0] < e["frames"][1] <= 2 for e in info["events"])


def test_dusk_is_darker_and_flatter_than_day(tmp_path):
    def frame_of(seed):
        seq = generate("drive", tmp_path / str(seed), frames=1, seed=seed, size=(96, 72), progress=False)
        return np.asarray(Image.open(seq / "images/000000.png").convert("L"), dtype=np.float64)

    dusky = _first_seed(lambda s: bool(_events(s, "dusk")), frames=1)
    sunny = _first_seed(lambda s: not _events(s, "dusk"), frames=1)
    dusk, day = frame_of(dusky), frame_of(sunny)
    assert dusk.mean() < 0.7 * day.mean() and dusk.std() < 0.7 * day.std()


def test_cli_renders_a_drive(tmp_path):
    out = tmp_path / "drive"
    assert main(["synth", "--preset", "drive", "--frames", "2", "--size", "64x48", "--quiet", "--out", str(out)]) == 0
    assert sorted(p.name for p in (out / "images").iterdir()) == ["000000.png", "000001.png"]
