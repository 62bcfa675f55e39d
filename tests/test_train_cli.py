"""`rewis train` end to end on the tiny scene: exit codes, run folder, TensorBoard logs, exported model."""

from __future__ import annotations

import numpy as np

from apps.cli import main
from test_train_data import TINY, tiny_scene  # noqa: F401  (fixture)


def test_rewis_train_writes_a_complete_run_folder(tiny_scene, tmp_path):  # noqa: F811
    scene, seq = tiny_scene
    run = tmp_path / "run"
    rc = main(["train", str(TINY), f"data.train=[{scene}]", f"data.val=[{seq}]", f"run.out={run}", "mode=ema",
               "run.max_steps=2", "run.logger=tensorboard"])
    assert rc == 0
    assert (run / "config.yaml").is_file() and (run / "metrics.jsonl").is_file()
    assert (run / "checkpoints" / "step_2").is_dir() and (run / "summary.json").is_file()
    assert any((run / "logs").rglob("events.out.tfevents*"))
    from segment.models import load_model

    loaded = load_model(str(run))  # a run folder resolves to its export/
    assert loaded.classes.names == ("ground", "box", "sky") and loaded.classes.no_3d == ("sky",)
    import torch

    out = loaded.model(pixel_values=torch.zeros(1, 3, 48, 64)).logits
    assert out.shape[1] == 3 and np.isfinite(out.detach().numpy()).all()


def test_rewis_train_mistyped_key_exits_2_naming_it(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"base: {TINY}\nrun:\n  max_stpes: 3\n")
    assert main(["train", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "run.max_stpes" in err and str(bad) in err and "max_steps" in err
    assert main(["train", str(TINY), "optim2d.lr=fast"]) == 2
    assert "optim2d.lr" in capsys.readouterr().err


def test_resume_without_checkpoint_is_a_clear_error(tmp_path, capsys):
    assert main(["train", str(TINY), f"run.out={tmp_path / 'none'}", "--resume"]) == 2
    assert "no complete checkpoints" in capsys.readouterr().err


def test_second_train_into_a_run_folder_exits_2_and_changes_nothing(tiny_scene, tmp_path, capsys):  # noqa: F811
    scene, seq = tiny_scene
    run = tmp_path / "run"
    args = ["train", str(TINY), f"data.train=[{scene}]", f"data.val=[{seq}]", f"run.out={run}", "mode=ema",
            "run.max_steps=2"]
    assert main(args) == 0
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert main(args) == 2
    err = capsys.readouterr().err
    assert str(run) in err and "--resume" in err and "--overwrite" in err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    (run / "mine.txt").write_text("an earlier run's file")
    assert main(args + ["--overwrite"]) == 0
    assert not (run / "mine.txt").exists() and (run / "checkpoints" / "step_2" / "state.json").is_file()
    assert main(args + ["--overwrite", "--resume"]) == 2


def test_quickstart_results_files(tmp_path):
    import json

    from apps.cmd_quickstart import write_results

    def summary(miou):
        return {"final": {"miou": miou, "iou": {"road": miou, "sky": None}}, "seconds": 1.0, "run": "r"}

    write_results(tmp_path, {"full": summary(0.5), "ema": summary(0.4), "rewis3d": summary(0.45)}, 60.0)
    data = json.loads((tmp_path / "results.json").read_text())
    assert {m: data[m]["miou"] for m in data} == {"full": 0.5, "ema": 0.4, "rewis3d": 0.45}
    assert abs(data["rewis3d"]["ss_fs"] - 90.0) < 1e-9
    md = (tmp_path / "results.md").read_text()
    assert "| rewis3d | 45.00 | 90.0 % |" in md and "| sky | n/a | n/a | n/a |" in md
