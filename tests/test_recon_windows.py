"""Windowed reconstruction (recon/windows.py): overlapping windows of an ordered sequence reconstructed on their
own, each frame in one window, links and training samples inside that window only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from recon import source_images
from recon.build import reconstruct
from recon.dataset import read_cameras
from recon.errors import InputError
from recon.scale import camera_centres
from recon.scene import Scene
from recon.sfm import align_sim3, run_sfm
from recon.sources import ReconOptions
from recon.windows import window_plan

STREET = dict(preset="street", frames=16, seed=1, size=(240, 180))
FAST = dict(progress=False, dense=False, use_intrinsics=True)


@pytest.fixture(scope="module")
def windowed(synth_sequence, tmp_path_factory):
    seq = synth_sequence(**STREET)
    out = tmp_path_factory.mktemp("windows") / "scene"
    report = reconstruct(seq, out, ReconOptions(**FAST, windows="always", window_frames=8))
    return seq, out, report


def test_window_plan_overlaps_by_half_and_ends_at_the_last_frame():
    assert window_plan(5, 8) == [list(range(5))]
    assert [w[0] for w in window_plan(16, 8)] == [0, 4, 8]
    assert [(w[0], w[-1]) for w in window_plan(18, 8)] == [(0, 7), (4, 11), (8, 15), (10, 17)]


def test_every_frame_is_owned_by_one_window_and_links_only_into_it(windowed):
    _, out, report = windowed
    scene = Scene.load(out)
    assert scene.windowed and scene.num_windows == len(report["windows"]) >= 2
    assert len(scene.frames) == 16 and all(f.window is not None for f in scene.frames)
    owned = [name for w in report["windows"] for name in w["owned"]]
    assert sorted(owned) == [Path(f.image).name for f in scene.frames]  # each frame in exactly one window
    for f, frame in enumerate(scene.frames):
        point, _, _ = scene.links.frame(f)
        assert len(point) > 0 and (scene.cloud.window[point] == frame.window).all()
        assert Path(frame.image).name in report["windows"][frame.window]["owned"]
    assert (scene.cloud.source_frame[scene.cloud.source_frame >= 0] < 16).all()


def test_each_window_matches_the_truth_after_sim3(windowed):
    seq, out, _ = windowed
    scene = Scene.load(out)
    truth = {c.image: c.cam_from_world for c in read_cameras(seq)}
    for w in range(scene.num_windows):
        frames = [f for f in scene.frames if f.window == w]
        est = camera_centres(np.stack([f.cam_from_world for f in frames]))
        gt = camera_centres(np.stack([truth[Path(f.image).name] for f in frames]))
        scale, R, t = align_sim3(est, gt)
        length = np.linalg.norm(np.diff(gt, axis=0), axis=1).sum()
        error = np.linalg.norm(scale * est @ R.T + t - gt, axis=1).mean() / length
        assert error < 0.01, (w, error)  # measured 0.08-0.32 %, as the whole-sequence model on those frames


def test_report_lists_the_windows_and_the_final_line_counts_them(windowed):
    from apps.cmd_recon import frames_line

    _, out, report = windowed
    saved = json.loads((out / "report.json").read_text())
    assert saved["whole_sequence"] is None and saved["frames_registered"] == 16 and saved["frames_rejected"] == []
    first = saved["windows"][0]
    assert first["frames"][0] == "000000.png" and len(first["frames"]) == 8 and first["validated"] == 8
    assert {"registered", "owned", "points", "scale"} <= set(first) and first["scale"]["method"] != "none"
    assert frames_line(report, "S") == f"16/16 frames passed validation in {len(saved['windows'])} windows"


def test_a_sample_takes_points_of_its_own_window_only(windowed, monkeypatch):
    import rewis.data as data
    from rewis.config import DataConfig

    _, out, _ = windowed
    drawn = []

    def spy(*args, **kwargs):
        drawn.append(sampler(*args, **kwargs))
        return drawn[-1]

    sampler = data.sample_window_points
    monkeypatch.setattr(data, "sample_window_points", spy)
    dataset = data.TrainDataset(DataConfig(train=[str(out)], height=96, crop=(96, 128), num_points=64), "dense",
                                points=True)
    scene = dataset.scenes[0]
    assert dataset.window_ups[0].shape == (scene.num_windows, 3)
    for f in (0, 8, 15):
        sample = dataset[f]
        window = scene.frames[f].window
        assert (scene.cloud.window[drawn[-1]] == window).all()
        pool = int((scene.cloud.window == window).sum())
        assert len(sample["points"]["xyz"]) == min(64, pool) and len(sample["links"]["point"]) > 0


def test_a_scene_saved_without_windows_loads_unchanged(tmp_path):
    from test_scene import make_scene

    scene = make_scene()
    scene.save(tmp_path / "s")
    assert "window" not in json.loads((tmp_path / "s" / "scene.json").read_text())["frames"][0]
    assert "window" not in np.load(tmp_path / "s" / "cloud.npz").files
    loaded = Scene.load(tmp_path / "s")
    assert not loaded.windowed and loaded.cloud.window is None and loaded.frames[0].window is None
    assert [len(p) for p in loaded.window_points()] == [len(scene.cloud)]


def test_a_link_into_another_window_is_refused(tmp_path):
    from test_scene import make_scene

    scene = make_scene()
    scene.cloud.window = np.zeros(len(scene.cloud), np.int32)
    for frame in scene.frames:
        frame.window = 0
    scene.save(tmp_path / "s")
    assert Scene.load(tmp_path / "s").frames[2].window == 0
    scene.cloud.window[scene.links.frame(2)[0][0]] = 1
    with pytest.raises(InputError, match=r"frames\[2\] \(window 0\) links points of another window"):
        scene.save(tmp_path / "t")
    scene.cloud.window = None
    with pytest.raises(InputError, match="save both or neither"):
        scene.save(tmp_path / "u")


def flipping_whole_sfm(frames: list[int], total: int):
    """run_sfm whose whole-sequence model comes back with `frames` flipped; windows map untouched."""
    from test_recon_validate import perturb

    def run(image_dir, names, *args, **kwargs):
        result = run_sfm(image_dir, names, *args, **kwargs)
        if len(names) == total:
            for frame in frames:
                result.model = perturb(result.model, frame, "flip")
        return result
    return run


def test_auto_falls_back_to_windows_only_when_the_whole_model_fails(synth_sequence, tmp_path, monkeypatch):
    seq = synth_sequence(**STREET)
    whole = reconstruct(seq, tmp_path / "whole", ReconOptions(**FAST, window_frames=8))
    assert "windows" not in whole and not Scene.load(tmp_path / "whole").windowed
    monkeypatch.setattr(source_images, "run_sfm", flipping_whole_sfm([3, 11], 16))
    report = reconstruct(seq, tmp_path / "windows", ReconOptions(**FAST, window_frames=8))
    assert report["whole_sequence"] == {"registered": 16, "validated": 14}
    # frame 11 lies in two windows, which agree on it; frame 3 only in window 0, and the whole model, which
    # would be its second opinion, broke it: not kept
    assert len(report["windows"]) == 3 and report["frames_registered"] == 15
    assert [r["image"] for r in report["frames_rejected"]] == ["000003.png"]
    assert "nor the whole-sequence model confirms" in report["frames_rejected"][0]["reasons"][0]
    assert Scene.load(tmp_path / "windows").windowed


def straight_drive(positions, bend_from=None, degrees=0.0, scale=1.0, turn=0.0):
    """cam_from_world of cameras 4 m apart along x, looking along +x; from position `bend_from` on, the path
    and the cameras turn by `degrees` about the vertical; the whole window in its own similarity frame
    (`scale`, `turn` deg about the vertical)."""
    def yaw(deg):
        c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])  # about the camera y axis, which points down

    look = np.array([[0, -1, 0], [0, 0, -1], [1, 0, 0]], float).T  # world_from_cam: z forward = world x
    poses = []
    for p in positions:
        centre, rotation = np.array([4.0 * p, 0, 0]), look
        if bend_from is not None and p > bend_from:
            bend = yaw(degrees)
            world_bend = look @ bend @ look.T
            centre = np.array([4.0 * bend_from, 0, 0]) + world_bend @ (centre - [4.0 * bend_from, 0, 0])
            rotation = world_bend @ look
        frame_world = look @ yaw(turn) @ look.T
        centre, rotation = scale * frame_world @ centre, frame_world @ rotation
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = rotation.T, -rotation.T @ centre
        poses.append(T)
    return poses


def window_part(index, frames, poses):
    from types import SimpleNamespace

    from recon.windows import WindowPart

    scene = SimpleNamespace(frames=[SimpleNamespace(cam_from_world=T) for T in poses])
    return WindowPart(index, list(frames), registered=len(frames), scene=scene,
                      positions=np.array(list(frames), np.int64))


def test_corroboration_keeps_what_two_windows_agree_on_and_rejects_a_bent_window():
    from recon.windows import corroborate, owners

    w0 = window_part(0, range(0, 8), straight_drive(range(0, 8)))
    w1 = window_part(1, range(4, 12), straight_drive(range(4, 12), bend_from=9, degrees=20, scale=2.0, turn=30))
    w2 = window_part(2, range(8, 16), straight_drive(range(8, 16), scale=0.5, turn=-40))
    corroborate([w0, w1, w2])
    # 4-7 agree between windows 0 and 1 (other scale and heading, same shape); 8-11 differ (window 1 bends
    # after 9): rejected in both; 0-3 only window 0 holds, and window 0 is confirmed: kept; 12-15 only window 2
    # holds, and nothing confirms window 2. (A bend between the two halves of a window, 7 | 8 here, is out of
    # sight of both comparisons: every frame of the window agrees with one neighbour.)
    assert w0.confirmed == w1.confirmed == {4, 5, 6, 7} and w2.confirmed == set()
    assert w0.trusted.tolist() == list(range(8)) and w1.trusted.tolist() == [4, 5, 6, 7]
    assert w2.trusted.tolist() == []
    assert "window 1 and window 2 place it" in w1.rejected[9][1][0] and "nothing confirms" in w2.rejected[13][1][0]
    assert owners([w0, w1, w2], 16).tolist() == [0] * 6 + [1] * 2 + [-1] * 8


def test_the_whole_sequence_model_outvotes_a_bent_window_and_is_kept_where_a_window_confirms_it():
    from recon.windows import WHOLE, corroborate

    whole = window_part(WHOLE, range(16), straight_drive(range(16), scale=3.0, turn=10))
    w0 = window_part(0, range(0, 8), straight_drive(range(0, 8)))
    w1 = window_part(1, range(4, 12), straight_drive(range(4, 12), bend_from=9, degrees=20, scale=2.0))
    w2 = window_part(2, range(8, 16), straight_drive(range(8, 16), scale=0.5, turn=-40))
    corroborate([w0, w1, w2], whole)
    # 10-11: the whole model and window 2 agree, window 1 disagrees with both: outvoted there. 8-9: window 1
    # (straight up to 9) agrees with the whole model, windows 1 and 2 disagree (one similarity for 8-11): the
    # whole model, agreeing with both, is kept; each window has a disagreement left, and is not
    assert whole.trusted.tolist() == list(range(16)) and w2.trusted.tolist() == list(range(10, 16))
    assert w1.trusted.tolist() == [4, 5, 6, 7] and "the whole-sequence model and window 1" in w1.rejected[10][1][0]
