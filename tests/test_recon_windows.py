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
    assert len(report["windows"]) == 3 and report["frames_registered"] == 16
    assert Scene.load(tmp_path / "windows").windowed
