"""Every mode trains and its losses are finite; a run killed after step k and resumed reproduces the
uninterrupted run's losses for steps k+1..n exactly, teachers and optimizers included."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from test_train_data import tiny_config, tiny_scene  # noqa: F401  (fixture)


def train_records(run: Path) -> dict[int, dict]:
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return {r["step"]: r for r in lines if r["type"] == "train"}


class Killed(Exception):
    pass


@pytest.mark.parametrize("mode", ["full", "ema", "rewis3d"])
def test_mode_trains_with_finite_losses(mode, tiny_scene, tmp_path):  # noqa: F811
    from rewis.trainer import train

    cfg = tiny_config(*tiny_scene, tmp_path / "run", f"mode={mode}", "run.max_steps=3", "method.cmc_start=0",
                      "method.sky_teacher=true")
    summary = train(cfg)
    records = train_records(tmp_path / "run")
    assert sorted(records) == [1, 2, 3]
    names = {"full": {"2d/ce"}, "ema": {"2d/ce", "2d/consistency"},
             "rewis3d": {"2d/ce", "2d/consistency", "2d/cmc", "3d/ce", "3d/consistency", "3d/cmc"}}[mode]
    for r in records.values():
        assert names <= set(r) and all(math.isfinite(r[k]) for k in names | {"loss"})
        assert abs(r["loss"] - sum(r[k] for k in names)) < 1e-5
    if mode == "rewis3d":
        assert records[3]["3d/cmc"] > 0 and records[3]["2d/cmc"] > 0
    assert summary["final"]["miou"] >= 0 and (tmp_path / "run" / "export" / "config.json").is_file()
    assert (tmp_path / "run" / "config.yaml").is_file()


@pytest.mark.parametrize("mode,extra", [("ema", ["run.grad_accum=2"]),
                                        ("rewis3d", ["method.sky_teacher=true", "net3d.kind=sparse_unet",
                                                     "net3d.voxel_size=0.2", "net3d.channels=8",
                                                     "method.class_balance_3d=0.5"])])
def test_killed_run_resumes_exactly(mode, extra, tiny_scene, tmp_path, monkeypatch):  # noqa: F811
    from rewis import trainer as trainer_module
    from rewis.trainer import Trainer, train

    args = [f"mode={mode}", "run.max_steps=5", "run.save_every=2", "method.cmc_start=2", "method.cmc_ramp=1",
            "data.epoch_repeats=1", "run.eval_every=0", *extra]
    full = tmp_path / "full"
    train(tiny_config(*tiny_scene, full, *args))

    killed = tmp_path / "killed"
    original = Trainer._after_step

    def dying(self, losses, bar):
        original(self, losses, bar)
        if self.state.step == 3:  # after step 3 was logged, before its checkpoint (only step_2 exists)
            raise Killed

    monkeypatch.setattr(trainer_module.Trainer, "_after_step", dying)
    with pytest.raises(Killed):
        train(tiny_config(*tiny_scene, killed, *args))
    monkeypatch.setattr(trainer_module.Trainer, "_after_step", original)
    assert sorted(p.name for p in (killed / "checkpoints").iterdir()) == ["step_2"]
    train(tiny_config(*tiny_scene, killed, *args), resume="latest")

    a, b = train_records(full), train_records(killed)
    assert sorted(b) == [1, 2, 3, 4, 5]
    for step in (3, 4, 5):
        for key, value in a[step].items():
            assert b[step][key] == value, (step, key)
    # students, teachers and optimizers end identical
    fa, fb = full / "checkpoints" / "step_5", killed / "checkpoints" / "step_5"
    for f in sorted(p.name for p in fa.iterdir()):
        if f.endswith(".safetensors"):
            ta, tb = load_file(fa / f), load_file(fb / f)
            assert all(torch.equal(ta[k], tb[k]) for k in ta), f
        elif f.endswith(".pt"):
            sa, sb = (torch.load(p / f, weights_only=True) for p in (fa, fb))
            _assert_same(sa, sb, f)
    assert {"student.2d.safetensors", "teacher.2d.safetensors", "optim.2d.pt", "rng.0.pt"} <= set(
        p.name for p in fa.iterdir())


def _assert_same(a, b, where):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}/{k}")
    elif torch.is_tensor(a):
        assert torch.equal(a, b), where
    elif isinstance(a, (list, tuple)):
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def test_each_epoch_draws_new_samples(tiny_scene, tmp_path, monkeypatch):  # noqa: F811
    """The sampler encodes the epoch in each key (epoch * n + k): later epochs must ask for new keys, not replay
    epoch 0's crops, flips and point samples (accelerate's loader once reset the sampler to epoch 0)."""
    from rewis.data import TrainDataset
    from rewis.trainer import train

    requested = []  # (key, dataset length)
    original = TrainDataset.__getitem__
    monkeypatch.setattr(TrainDataset, "__getitem__",
                        lambda self, key: requested.append((key, len(self))) or original(self, key))
    train(tiny_config(*tiny_scene, tmp_path / "run", "mode=ema", "run.eval_every=0", "data.epoch_repeats=1",
                      "data.batch_size=1", "run.max_steps=6"))
    n = requested[0][1]
    assert n < 6, "six steps of one sample must cross an epoch boundary"
    epochs = [key // n for key, _ in requested]
    assert epochs == sorted(epochs) and len(set(epochs)) >= 2
