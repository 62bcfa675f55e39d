"""Pose validation (recon/validate.py): broken poses of a real SfM model are flagged, only they, and the
image pipeline keeps their frames without links and lists them in report.json."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from recon import source_images
from recon.build import reconstruct
from recon.colmap_adapter import two_view_matches
from recon.errors import InputError
from recon.scale import camera_centres
from recon.scene import Scene
from recon.sfm import SfmOptions, run_sfm
from recon.sources import ReconOptions, Stages, open_sequence
from recon.validate import (PoseChecks, grouped_median, isolation_failures, jump_failures, local_reference,
                            turn_failures, validate_poses)

STREET = dict(preset="street", frames=10, seed=4, size=(240, 180))  # the sequence test_recon_robust maps too


def rotation_about(axis, degrees: float) -> np.ndarray:
    axis = np.asarray(axis, np.float64) / np.linalg.norm(axis)
    cross = np.cross(np.eye(3), axis)
    angle = np.radians(degrees)
    return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross


def with_centre(pose: np.ndarray, centre: np.ndarray, rotation: np.ndarray | None = None) -> np.ndarray:
    """`pose` moved to camera centre `centre` (and turned to `rotation`, cam_from_world, when given)."""
    moved = pose.copy()
    moved[:3, :3] = pose[:3, :3] if rotation is None else rotation
    moved[:3, 3] = -moved[:3, :3] @ centre
    return moved


def perturb(model, frame: int, kind: str):
    """A copy of `model` with one broken pose: a jump (8 median steps sideways), a flipped camera (turned
    180 deg about its own vertical axis, centre kept) or a far outlier (500 median steps away)."""
    broken = copy.deepcopy(model)
    centres = camera_centres(model.cam_from_world)
    step = np.median(np.linalg.norm(np.diff(centres, axis=0), axis=1))
    pose = model.cam_from_world[frame]
    right, up = pose[0, :3], -pose[1, :3]
    if kind == "jump":
        broken.cam_from_world[frame] = with_centre(pose, centres[frame] + 8 * step * right)
    elif kind == "flip":
        broken.cam_from_world[frame] = with_centre(pose, centres[frame], rotation_about([0, 1, 0], 180) @ pose[:3, :3])
    else:
        broken.cam_from_world[frame] = with_centre(pose, centres[frame] + 500 * step * (right + up))
    return broken


@pytest.fixture(scope="module")
def street_model(synth_sequence, tmp_path_factory):
    """A correct SfM model of a synthetic drive (known intrinsics, global mapper) and its pairs' matches."""
    seq = open_sequence(synth_sequence(**STREET))
    options = SfmOptions(camera_params=source_images.known_intrinsics(seq))
    result = run_sfm(seq.image_dir, [p.name for p in seq.images], tmp_path_factory.mktemp("sfm"), options,
                     Stages(progress=False))
    assert result.model.num_frames == len(seq.images)
    return result.model, two_view_matches(result.database, result.model, PoseChecks().two_view_reach)


def test_a_correct_model_passes(street_model):
    model, matches = street_model
    assert len(matches) >= 2 * model.num_frames
    assert validate_poses(model, two_view=matches) == {}


@pytest.mark.parametrize("frame, kind", [(4, "jump"), (0, "jump"), (9, "flip"), (5, "flip"), (3, "outlier"),
                                         (9, "outlier")])
def test_one_broken_pose_is_flagged_and_none_of_its_neighbours(street_model, frame, kind):
    model, matches = street_model
    reasons = validate_poses(perturb(model, frame, kind), two_view=matches)
    assert list(reasons) == [frame], reasons
    expected = {"jump": "jumps", "flip": "in front", "outlier": "nearest other camera"}[kind]
    assert any(expected in r for r in reasons[frame]), reasons


def test_several_broken_poses_are_flagged_exactly(street_model):
    model, matches = street_model
    broken = perturb(perturb(perturb(model, 2, "jump"), 5, "flip"), 8, "outlier")
    reasons = validate_poses(broken, two_view=matches)
    assert list(reasons) == [2, 5, 8], reasons
    assert any("epipolar" in r for r in reasons[5]) and any("turns" in r for r in reasons[5])


# ----------------------------------------------------------------------------------------- continuity alone
def drive(steps: np.ndarray) -> np.ndarray:
    """Camera centres along a gently curving road with the given step lengths."""
    along = np.concatenate([[0.0], np.cumsum(steps)])
    return np.stack([along, 0.02 * along ** 1.5, np.zeros_like(along)], 1)


def jumps(centres: np.ndarray, positions: np.ndarray | None = None) -> list[int]:
    positions = np.arange(len(centres)) if positions is None else positions
    return sorted(jump_failures(centres, positions, local_reference(centres, positions, PoseChecks()), PoseChecks()))


def test_a_single_jumped_frame_is_blamed_not_its_neighbours():
    centres = drive(np.full(29, 1.5))
    centres[11] += [0.0, 47.0, 0.0]
    assert jumps(centres) == [11]


@pytest.mark.parametrize("shifted", [slice(18, 30), slice(0, 9)])
def test_a_shifted_stretch_flags_the_smaller_piece(shifted):
    centres = drive(np.full(29, 1.5))
    centres[shifted] += [47.0, 10.0, 0.0]
    assert jumps(centres) == list(range(30))[shifted]


def test_stops_speed_changes_and_unregistered_gaps_are_no_jumps():
    steps = np.concatenate([np.full(8, 1.5), np.full(10, 0.005), np.linspace(0.5, 4.0, 12)])  # wait, drive off
    centres = drive(steps)
    positions = np.arange(len(centres))
    positions[20:] += 3  # three frames SfM did not register: a step over four frames
    centres[20:] += centres[20] - centres[19]
    assert jumps(centres, positions) == []


def test_a_flipped_frame_is_an_isolated_turn_but_a_real_turn_is_not():
    yaw = np.concatenate([np.zeros(5), [50.0, 100.0], np.full(5, 100.0)])  # a corner taken over two frames
    rotations = np.stack([rotation_about([0, 1, 0], a) for a in yaw])
    assert turn_failures(rotations, PoseChecks()) == {}
    for frame in (0, 3, 11):
        flipped = rotations.copy()
        flipped[frame] = rotation_about([0, 0, 1], 170) @ flipped[frame]
        assert list(turn_failures(flipped, PoseChecks())) == [frame]


def test_a_camera_far_from_all_others_is_isolated():
    centres = drive(np.full(19, 1.5))
    centres[7] += [755.0, 0.0, 0.0]
    reference = local_reference(centres, np.arange(20), PoseChecks())
    assert list(isolation_failures(centres, reference, PoseChecks())) == [7]


def test_grouped_median():
    values, group = np.array([5.0, 1.0, 3.0, 2.0, 9.0]), np.array([0, 0, 0, 2, 2])
    assert grouped_median(values, group, 3).tolist() == [3.0, np.inf, 9.0]


# ----------------------------------------------------------------------------------------- the image pipeline
@pytest.mark.parametrize("preset, seed, intrinsics", [("street", 1, True), ("room", 0, False)])
def test_clean_synthetic_sequences_lose_no_frame(synth_sequence, tmp_path, preset, seed, intrinsics):
    seq = synth_sequence(preset, frames=10, seed=seed, size=(240, 180))
    report = reconstruct(seq, tmp_path / "scene", ReconOptions(progress=False, dense=False,
                                                               use_intrinsics=intrinsics))
    assert report["frames_rejected"] == [] and report["frames_registered"] == report["frames_total"] == 10


def flipping_sfm(frame: int):
    """run_sfm whose model comes back with `frame` flipped, as SfM sometimes registers a frame."""
    def run(*args, **kwargs):
        result = run_sfm(*args, **kwargs)
        result.model = perturb(result.model, frame, "flip")
        return result
    return run


def test_a_rejected_frame_stays_without_links_and_is_reported(synth_sequence, tmp_path, monkeypatch):
    from apps.cmd_recon import frames_line

    monkeypatch.setattr(source_images, "run_sfm", flipping_sfm(6))
    report = reconstruct(synth_sequence(**STREET), tmp_path / "scene",
                         ReconOptions(progress=False, dense=False, use_intrinsics=True))
    scene = Scene.load(tmp_path / "scene")
    assert len(scene.frames) == 10 and scene.frames[6].image.endswith("000006.png")
    assert len(scene.links.frame(6)[0]) == 0 and all(len(scene.links.frame(f)[0]) > 0 for f in range(10) if f != 6)
    assert not (scene.cloud.source_frame == 6).any()
    saved = json.loads((tmp_path / "scene" / "report.json").read_text())
    assert [r["image"] for r in saved["frames_rejected"]] == ["000006.png"] and saved["frames_rejected"][0]["reasons"]
    assert saved["frames_registered"] == 9 and saved["frames_sfm_registered"] == 10
    assert frames_line(report, "S") == "9/10 frames passed validation (1 rejected: see S/report.json)"
    check_training_takes_a_frame_without_links(tmp_path / "scene", 6)


def check_training_takes_a_frame_without_links(scene_dir, frame: int) -> None:
    from rewis.config import DataConfig
    from rewis.data import TrainDataset

    data = TrainDataset(DataConfig(train=[str(scene_dir)], height=96, crop=(96, 128), num_points=64), "dense",
                        points=True)
    sample = data[frame]
    assert len(sample["links"]["point"]) == 0 and len(sample["points"]["xyz"]) == 64


def test_too_few_frames_passing_validation_fail_with_advice(synth_sequence, tmp_path, monkeypatch):
    monkeypatch.setattr(source_images, "run_sfm", flipping_sfm(3))
    with pytest.raises(InputError, match="only 9 of 10 frames passed pose validation .*000003.png.*try "):
        reconstruct(synth_sequence(**STREET), tmp_path / "scene",
                    ReconOptions(progress=False, dense=False, use_intrinsics=True, min_registered=1.0))
