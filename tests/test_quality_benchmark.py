"""benchmarks/quality.py: which runs it plans and where it keeps them (its runs are reused from disk, so a run of
other data must never pass for this one)."""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quality():
    spec = importlib.util.spec_from_file_location("bench_quality", ROOT / "benchmarks" / "quality.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def plan(quality, *argv):
    args = quality.parse_args(["--work", "/tmp/quality-work", *argv])
    return args, [job.name for preset in args.presets for job in quality.jobs_for(preset, args)]


def test_default_plan_covers_the_criterion(quality):
    args, names = plan(quality, "--presets", "room", "--kinds", "scribbles")
    assert args.train_seeds == [0, 1, 2, 3, 4, 5] and args.val_seeds == [200, 201, 202, 203]
    assert names == ["room/full-dense---s0", "room/ema-scribbles---s0", "room/rewis3d-scribbles-recon-s0",
                     "room/full-dense---s1", "room/ema-scribbles---s1", "room/rewis3d-scribbles-recon-s1",
                     "room/rewis3d-scribbles-real-s0"]


def test_only_and_no_real_select_runs(quality):
    assert plan(quality, "--only", "*-real-*")[1] == ["street/rewis3d-scribbles-real-s0",
                                                      "room/rewis3d-scribbles-real-s0"]
    _, names = plan(quality, "--presets", "street", "--kinds", "scribbles", "--no-real", "--modes", "rewis3d")
    assert names == ["street/rewis3d-scribbles-recon-s0", "street/rewis3d-scribbles-recon-s1"]


def test_runs_of_other_data_or_budget_live_apart(quality):
    def folder(*argv):
        args = quality.parse_args(["--work", "/tmp/quality-work", *argv])
        return quality.run_dir_of(quality.jobs_for("room", args)[0], args)

    default = folder()
    assert default == Path("/tmp/quality-work/runs-quickstart-stride1-k-train0-5-val200-203/room/full-dense---s0")
    others = {folder("--train-seeds", "0", "1"), folder("--train-seeds", "1", "2", "3", "4", "5", "6"),
              folder("--train-seeds", "0", "2", "3", "4", "5", "6"), folder("--val-seeds", "200"),
              folder("--steps", "1000"), folder("--config", str(ROOT / "configs" / "quality_gpu.yaml")),
              folder("--self-calibrate"), folder("--tag", "x")}
    assert default not in others and len(others) == 8


def test_summary_with_and_without_a_full_run(quality):
    def job(mode, kind, space, seed):
        return quality.Job("room", mode, kind, space, seed), {"final": {"miou": {"full": 0.40, "ema": 0.34,
                                                                                 "rewis3d": 0.38}[mode] + seed / 100}}

    rewis3d_only = quality.summarise({"room": [job("rewis3d", "scribbles", "recon", s) for s in (0, 1)]})["room"]
    assert rewis3d_only["rows"][0]["miou"] == 38.5 and rewis3d_only["rows"][0]["ss_fs"] is None
    assert "criterion" not in rewis3d_only
    runs = [job("full", "dense", "-", 0), job("ema", "scribbles", "-", 0), job("rewis3d", "scribbles", "recon", 0)]
    table = quality.summarise({"room": runs})["room"]
    assert table["rewis3d_minus_ema"] == 4.0
    assert table["criterion"] == {"rewis3d >= ema + 3": True, "rewis3d SS/FS >= 90": True, "ema SS/FS < 90": True}


def test_a_finished_run_made_with_other_settings_is_not_reused(quality, tmp_path):
    """A changed default or another --set must not let an old run pass for the new one; the loader worker count,
    which changes no result, may differ."""
    import yaml

    from rewis.config import dump_config
    from rewis.modes import load_config

    args = quality.parse_args(["--work", str(tmp_path), "--config", str(ROOT / "configs" / "quality_gpu.yaml"),
                               "--set", "data.num_workers=1"])
    job = next(j for j in quality.jobs_for("street", args) if j.mode == "rewis3d")
    data = {"scenes": {("recon", "scribbles"): [tmp_path / "scene0"]}, "val": [tmp_path / "val0"]}
    run = quality.run_dir_of(job, args)
    assert quality.changed_settings(job, data, args) == []  # not finished: nothing to compare
    run.mkdir(parents=True)
    (run / "summary.json").write_text("{}")
    cfg = load_config(args.config, quality.job_overrides(job, data, args))
    (run / "config.yaml").write_text(dump_config(cfg))
    assert quality.changed_settings(job, data, args) == []
    saved = yaml.safe_load((run / "config.yaml").read_text())
    saved["data"]["num_workers"] = 4
    saved["method"]["lambda_2d"] = 0.2
    del saved["method"]["class_balance_3d"]  # a run from before the setting existed
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    assert quality.changed_settings(job, data, args) == ["method.class_balance_3d", "method.lambda_2d"]
