"""The mode contract as a new mode sees it: a 3D mode and a three-stage mode from tests/toy_modes.py train
through the unchanged trainer; checkpoints are complete or ignored, never unpickled; training's validation
is `rewis eval`'s; the 2D modes reproduce the losses recorded from the trainer before the contract."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from regression_losses import CASES, STEPS, losses_of
from test_train_data import tiny_config, tiny_scene  # noqa: F401  (fixture)
from test_train_resume import Killed, train_records
from toy_modes import ToyLidarMode, ToyStagedMode

RECORDED = Path(__file__).parent / "data" / "train_losses_before_contract.json"


@pytest.fixture(scope="module")
def lidar_sequences(synth_sequence):
    return (synth_sequence("street", frames=3, seed=0, size=(96, 72), lidar=True),
            synth_sequence("street", frames=2, seed=1, size=(96, 72), lidar=True))


def toy_config(tmp_path: Path, mode: str, train: Path, val: Path, out: Path, *overrides: str):
    from rewis.modes import load_config

    preset = tmp_path / f"{mode}.yaml"
    preset.write_text(f"mode: {mode}\nrun:\n  max_steps: 6\n  log_every: 1\n  logger: none\n  progress: false\n"
                      f"data:\n  batch_size: 2\noptim3d:\n  lr: 1.0e-2\n  schedule: linear\n")
    return load_config(preset, [f"data.train=[{train}]", f"data.val=[{val}]", f"run.out={out}", *overrides])


def test_a_3d_mode_trains_evaluates_in_3d_and_exports_a_3d_folder(lidar_sequences, tmp_path, monkeypatch):
    from rewis.modes import MODES
    from rewis.trainer import train

    monkeypatch.setitem(MODES, "toy_lidar", ToyLidarMode)
    train_seq, val_seq = lidar_sequences
    cfg = toy_config(tmp_path, "toy_lidar", train_seq, val_seq, tmp_path / "run", "run.eval_every=3")
    summary = train(cfg)
    records = train_records(tmp_path / "run")
    assert sorted(records) == list(range(1, 7)) and all(math.isfinite(r["3d/ce"]) for r in records.values())
    evals = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
             if json.loads(x)["type"] == "eval"]
    assert [e["step"] for e in evals] == [3, 6]
    points = sum(len(np.fromfile(p, np.uint32)) for p in (val_seq / "lidar" / "labels").glob("*.label"))
    assert all(np.asarray(e["confusion"]).sum() == points for e in evals)  # every val point scored once
    assert summary["best_miou"] == max(e["miou"] for e in evals) > 0
    export = json.loads((tmp_path / "run" / "export" / "config.json").read_text())
    assert export["kind"] == "toy_point_mlp" and (tmp_path / "run" / "export" / "model.safetensors").is_file()
    assert not (tmp_path / "run" / "export" / "preprocessor_config.json").exists()  # not a SegFormer


@pytest.mark.parametrize("save_every,kill_after,resumed_from", [(0, 5, "step_3"), (2, 5, "step_4")])
def test_killed_in_its_last_stage_a_staged_run_resumes_exactly(save_every, kill_after, resumed_from,
                                                               lidar_sequences, tmp_path, monkeypatch):
    """step_3 is the stage boundary (the checkpoint before fresh weights); step_4 lies inside the retrain."""
    from rewis import trainer as trainer_module
    from rewis.modes import MODES
    from rewis.trainer import train

    monkeypatch.setitem(MODES, "toy_staged", ToyStagedMode)
    train_seq, val_seq = lidar_sequences
    args = ("run.max_steps=7", f"run.save_every={save_every}", "method.first_steps=3")
    ToyStagedMode.offline_runs = 0
    train(toy_config(tmp_path, "toy_staged", train_seq, val_seq, tmp_path / "full", *args))
    assert ToyStagedMode.offline_runs == 1 and len(list((tmp_path / "full" / "stages" / "retrain").glob("*.npy"))) == 3

    original = trainer_module.Trainer._after_step

    def dying(self, losses, bar):
        original(self, losses, bar)
        if self.state.step == kill_after:
            raise Killed

    ToyStagedMode.offline_runs = 0
    monkeypatch.setattr(trainer_module.Trainer, "_after_step", dying)
    with pytest.raises(Killed):
        train(toy_config(tmp_path, "toy_staged", train_seq, val_seq, tmp_path / "killed", *args))
    monkeypatch.setattr(trainer_module.Trainer, "_after_step", original)
    from rewis.checkpoint import latest_checkpoint

    assert latest_checkpoint(tmp_path / "killed").name == resumed_from
    train(toy_config(tmp_path, "toy_staged", train_seq, val_seq, tmp_path / "killed", *args), resume="latest")
    assert ToyStagedMode.offline_runs == 1  # the pseudo-labels of the killed run were reused
    a, b = train_records(tmp_path / "full"), train_records(tmp_path / "killed")
    assert sorted(b) == list(range(1, 8))
    for step in range(1, 8):
        assert b[step]["3d/ce"] == a[step]["3d/ce"], step
    # the retrain starts from fresh weights: its first loss is near the untrained one, not the trained one
    assert abs(a[4]["3d/ce"] - a[1]["3d/ce"]) < abs(a[4]["3d/ce"] - a[3]["3d/ce"])


def test_stages_must_add_up_to_the_run(lidar_sequences, tmp_path, monkeypatch):
    from recon.errors import InputError
    from rewis.modes import MODES
    from rewis.trainer import Trainer

    monkeypatch.setitem(MODES, "toy_staged", ToyStagedMode)
    train_seq, val_seq = lidar_sequences
    cfg = toy_config(tmp_path, "toy_staged", train_seq, val_seq, tmp_path / "run", "method.first_steps=6")
    with pytest.raises(InputError, match=r"stage 'retrain'.*0 steps"):
        Trainer(cfg)


def test_resume_never_takes_a_checkpoint_cut_off_mid_write(tiny_scene, tmp_path):  # noqa: F811
    from rewis.checkpoint import latest_checkpoint
    from rewis.trainer import train

    run = tmp_path / "run"
    args = ("mode=ema", "run.max_steps=4", "run.save_every=2")
    train(tiny_config(*tiny_scene, run, *args, "run.max_steps=2"))
    complete = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert complete == ["step_2"]
    cut = run / "checkpoints" / "step_3"  # a writer killed before its state.json: weights, no counters
    cut.mkdir()
    weights = (run / "checkpoints" / "step_2" / "student.2d.safetensors").read_bytes()
    (cut / "student.2d.safetensors").write_bytes(weights[:100])
    (run / "checkpoints" / ".step_4.partial").mkdir()
    assert latest_checkpoint(run).name == "step_2"
    summary = train(tiny_config(*tiny_scene, run, *args), resume="latest")
    assert summary["steps"] == 4 and not (run / "checkpoints" / ".step_4.partial").exists()
    assert sorted(train_records(run)) == [1, 2, 3, 4]


def test_resume_works_with_unpickling_disabled(tiny_scene, tmp_path, monkeypatch):  # noqa: F811
    from rewis.trainer import train

    run = tmp_path / "run"
    args = ("run.max_steps=3", "run.save_every=2", "method.sky_teacher=true")
    train(tiny_config(*tiny_scene, run, *args, "run.max_steps=2"))

    def refuse(*a, **k):
        raise AssertionError("a checkpoint was unpickled")

    real_load = torch.load
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(torch, "load", lambda *a, **k: real_load(*a, **k) if k.get("weights_only") else refuse())
    summary = train(tiny_config(*tiny_scene, run, *args), resume="latest")
    assert summary["steps"] == 3


def test_rewis_eval_of_the_export_equals_the_runs_validation(tiny_scene, tmp_path):  # noqa: F811
    from apps.cli import main
    from rewis.trainer import train

    scene, seq = tiny_scene
    run = tmp_path / "run"
    summary = train(tiny_config(scene, seq, run, "mode=rewis3d", "run.max_steps=4", "run.eval_every=2"))
    out = tmp_path / "eval.json"
    assert main(["eval", "--model", str(run), "--data", str(seq), "--json", str(out), "--quiet"]) == 0
    report = json.loads(out.read_text())
    assert abs(report["miou"] - summary["best_miou"]) <= 1e-6
    best = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()
            if json.loads(x)["type"] == "eval" and json.loads(x)["step"] == summary["best_step"]][0]
    assert report["confusion"] == best["confusion"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_2d_modes_reproduce_the_losses_of_the_trainer_before_the_contract(case, tiny_scene, tmp_path):  # noqa: F811
    from regression_losses import record

    recorded = json.loads(RECORDED.read_text())[case]
    got = record(case, *tiny_scene, tmp_path / case)
    assert sorted(got, key=int) == [str(s) for s in range(1, STEPS + 1)]
    for step, losses in recorded.items():
        # the reference was recorded on an AMD EPYC; on an Intel Xeon, with the same packages, rewis3d_sparse_sky
        # differs by 2e-6 (relative) at step 4 and, training on from there, by 0.5 % at step 5: the CPU's
        # floating-point paths differ. The first steps must match to float precision, later ones to a percent
        rel = 1e-6 if int(step) <= 3 else 1e-2
        for name, value in losses.items():
            assert got[step][name] == pytest.approx(value, rel=rel, abs=1e-7), (step, name)
    assert losses_of(tmp_path / case) == got
