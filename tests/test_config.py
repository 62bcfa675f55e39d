"""Config presets: typed parsing in two steps (mode, then that mode's `method:` schema), one level of
inheritance, overrides, errors naming key and file."""

from __future__ import annotations

from pathlib import Path

import pytest

from recon.errors import InputError
from rewis.config import Config, save_config
from rewis.modes import MODES, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_preset_parses(path):
    cfg = load_config(path)
    assert isinstance(cfg, Config) and cfg.mode in MODES


def test_inheritance_merges_sections():
    cfg = load_config(CONFIGS / "street_ema.yaml")
    assert cfg.mode == "ema" and cfg.run.out == "runs/street_ema"
    assert cfg.run.max_steps == 7000 and cfg.method.ema_max == 0.99  # from the base
    assert cfg.data.crop == (360, 480) and isinstance(cfg.optim2d.lr, float)
    # the base's rewis3d-only method keys are dropped for mode ema; ema's own schema has no such field
    assert not hasattr(cfg.method, "lambda_3d")
    assert load_config(CONFIGS / "street_rewis3d.yaml").method.lambda_3d == 0.125


def test_method_section_is_parsed_with_the_chosen_modes_schema(tmp_path):
    p = tmp_path / "m.yaml"
    p.write_text("mode: ema\nmethod:\n  reference:\n    teacher_train_mode: true\n")
    cfg = load_config(p)
    assert type(cfg.method).__name__ == "EMAMethod" and cfg.method.reference.teacher_train_mode is True
    p.write_text("mode: ema\nmethod:\n  betta: 0.4\n")
    with pytest.raises(InputError, match=r"unknown key 'method.betta'.*method.beta"):
        load_config(p)
    p.write_text("mode: full\nmethod:\n  reference:\n    teacher_trian_mode: true\n")
    assert type(load_config(p).method).__name__ == "NoMethod"  # ema's section in a full preset is dropped
    p.write_text("mode: ema\nmethod:\n  reference:\n    teacher_trian_mode: true\n")
    with pytest.raises(InputError, match=r"method.reference.teacher_trian_mode.*teacher_train_mode"):
        load_config(p)
    # on the command line a key of another mode changes nothing: a warning naming its mode
    p.write_text("mode: ema\n")
    with pytest.warns(UserWarning, match=r"'method.cmc_start' belongs to mode rewis3d"):
        cfg = load_config(p, ["method.reference.teacher_train_mode=true", "method.cmc_start=3"])
    assert cfg.method.reference.teacher_train_mode is True
    assert load_config(CONFIGS / "tiny.yaml", ["mode=ema"]).mode == "ema"  # tiny's rewis3d keys are dropped


def test_flags_of_discarded_experiments_are_gone():
    for key in ("no3d_pixels_from_3d", "cmc_more_confident", "cmc_unlabeled_only"):
        with pytest.raises(InputError, match=f"unknown key 'method.{key}'"):
            load_config(CONFIGS / "tiny.yaml", [f"method.{key}=true"])


def test_config_module_imports_neither_torch_nor_a_mode():
    import subprocess
    import sys

    code = ("import sys, rewis.config; bad = [m for m in sys.modules if m == 'torch' or m.startswith('rewis.modes')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=CONFIGS.parent)


def test_mistyped_key_names_key_and_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("mode: ema\ndata:\n  batch_sise: 4\n")
    with pytest.raises(InputError) as e:
        load_config(bad)
    assert "data.batch_sise" in str(e.value) and str(bad) in str(e.value) and "batch_size" in str(e.value)
    top = tmp_path / "top.yaml"
    top.write_text("mdoe: ema\n")
    with pytest.raises(InputError, match=r"unknown key 'mdoe'.*mode"):
        load_config(top)


def test_mistyped_key_in_base_names_the_base(tmp_path):
    (tmp_path / "base.yaml").write_text("run:\n  max_step: 3\n")
    (tmp_path / "top.yaml").write_text("base: base.yaml\nmode: ema\n")
    with pytest.raises(InputError) as e:
        load_config(tmp_path / "top.yaml")
    assert "base.yaml" in str(e.value) and "run.max_step" in str(e.value)


def test_wrong_type_and_choice(tmp_path):
    p = tmp_path / "t.yaml"
    p.write_text("run:\n  max_steps: lots\n")
    with pytest.raises(InputError, match=r"run.max_steps.*int"):
        load_config(p)
    p.write_text("mode: magic\n")
    with pytest.raises(InputError, match=r"'mode'.*full"):
        load_config(p)
    p.write_text("method:\n  class_balance_3d: -1\n")
    with pytest.raises(InputError, match=r"method.class_balance_3d is -1.*\[0, 1\]"):
        load_config(p)


def test_two_levels_of_inheritance_refused(tmp_path):
    (tmp_path / "a.yaml").write_text("mode: ema\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    (tmp_path / "c.yaml").write_text("base: b.yaml\n")
    with pytest.raises(InputError, match="one level"):
        load_config(tmp_path / "c.yaml")


def test_overrides_convert_types():
    cfg = load_config(CONFIGS / "tiny.yaml", ["run.max_steps=7", "optim2d.lr=1e-4", "data.crop=[32,40]",
                                              "method.sky_teacher=true", "model2d.overrides.depths=[1,1,1,1]",
                                              "model2d.pretrained=null", "data.train=/a/b"])
    assert cfg.run.max_steps == 7 and cfg.optim2d.lr == 1e-4 and cfg.data.crop == (32, 40)
    assert cfg.method.sky_teacher is True and cfg.model2d.overrides["depths"] == [1, 1, 1, 1]
    assert cfg.data.train == ["/a/b"] and cfg.model2d.overrides["hidden_sizes"] == [8, 16, 24, 32]
    # YAML 1.1 would read `no` as False: mixed_precision's documented value must arrive as the string "no"
    assert load_config(CONFIGS / "tiny.yaml", ["run.mixed_precision=no"]).run.mixed_precision == "no"
    assert load_config(CONFIGS / "tiny.yaml", ["method.sky_teacher=false"]).method.sky_teacher is False
    with pytest.raises(InputError, match=r"command line: unknown key 'run.max_stesp'.*run.max_steps"):
        load_config(CONFIGS / "tiny.yaml", ["run.max_stesp=3"])
    with pytest.raises(InputError, match="key=value"):
        load_config(CONFIGS / "tiny.yaml", ["run.max_steps"])
    with pytest.raises(InputError, match="run.max_steps"):
        load_config(CONFIGS / "tiny.yaml", ["run.max_steps=abc"])


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(CONFIGS / "street_rewis3d.yaml", ["data.batch_size=3"])
    path = save_config(cfg, tmp_path / "config.yaml")
    again = load_config(path)
    cfg.source = again.source = ""
    assert again == cfg


def test_ema_weights_outside_unit_interval_fail_with_their_key():
    for key in ("method.ema_max", "method.ema_max_3d"):
        with pytest.raises(InputError, match=rf"'{key}' is 1.5.*\[0, 1\)"):
            load_config(CONFIGS / "tiny.yaml", [f"{key}=1.5"])
    assert load_config(CONFIGS / "tiny.yaml", ["method.ema_max_3d=0.9"]).method.ema_max_3d == 0.9
