"""Training configuration: YAML presets parsed into typed dataclasses.

Rules (docs in configs/README-like comments at the top of each preset):
- A preset is a YAML mapping whose sections mirror the dataclasses below (`run`, `data`, `model2d`, `net3d`,
  `optim2d`, `optim3d`, `method`) plus the top-level `mode` and `seed`.
- `base: other.yaml` (relative to the preset) inherits another preset; only one level (a base may not have a
  base). Sections merge key by key; lists and scalars replace.
- Unknown or mistyped keys, and values of the wrong type, fail with the key and the file named.
- `key=value` overrides (dotted keys, e.g. `data.batch_size=4 run.max_steps=100`) are parsed with YAML
  syntax and converted to the field's type.
- `save_config` writes the fully resolved config (every field) as YAML; `load_config` reads it back.

Plain dataclasses + pyyaml: the schema is small, the error messages are ours, and nothing is executed.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from recon.errors import InputError


class ConfigLoader(yaml.SafeLoader):
    """YAML 1.1 reads yes/no/on/off as booleans, so `mixed_precision: no` would arrive as False; here only
    true/false are booleans (as in YAML 1.2)."""


ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, regex) for tag, regex in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
ConfigLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                   list("tTfF"))


@dataclass
class RunConfig:
    out: str = "runs/default"  # run folder: config.yaml, checkpoints/, export/, metrics.jsonl, logs/
    max_steps: int = 1000  # optimizer steps (all stages together)
    grad_accum: int = 1  # micro-batches per optimizer step
    mixed_precision: str = "no"  # no | fp16 | bf16
    cpu: bool = False  # force the CPU even when a GPU is present
    grad_clip: float = 0.0  # max gradient norm; 0 = off
    log_every: int = 10  # optimizer steps between metric lines / tracker logs
    eval_every: int = 0  # optimizer steps between validations; 0 = only at the end
    save_every: int = 0  # optimizer steps between checkpoints; 0 = only at the end
    keep_checkpoints: int = 0  # keep the newest N step checkpoints; 0 = keep all
    logger: str = "tensorboard"  # tensorboard | wandb | none
    wandb_project: str = "rewis"
    progress: bool = True
    cpu_threads: int = 0  # torch intra-op threads; 0 = torch's default (1 helps a lot on busy small machines)
    export: bool = True  # export the best 2D model (by val mIoU) as a SegFormer folder in RUN/export


@dataclass
class DataConfig:
    train: list[str] = field(default_factory=list)  # scene folders (scene.json) or sequence folders (images/)
    val: list[str] = field(default_factory=list)  # sequence or dataset folders with dense labels/
    weak_kind: str | None = None  # weak labels: None = what the scene recorded, else SEQ/weak/<kind>/
    height: int = 360  # images are scaled to this height (training base scale and evaluation)
    crop: tuple[int, int] = (360, 480)  # training crop (height, width); also the sliding-window size
    scale_range: tuple[float, float] = (0.75, 1.5)  # random rescale of the base scale before cropping
    flip: bool = True
    batch_size: int = 2
    num_workers: int = 0
    epoch_repeats: int = 1  # one epoch = every training frame this many times
    # 3D sample (modes with points)
    num_points: int = 20000  # M points per sample (reference: 120k)
    in_view_share: float = 0.7  # at most this share of M from the view's own points
    ball_factor: float = 1.5  # ball radius = factor x the view's radius
    crop_first: bool = True  # own points = the view's points inside the training crop (only they give links);
    #                          false = all of the view's points (the reference): fewer links per sample
    radius_percentile: float = 95.0  # view radius = this percentile of the view points' distance to their centre
    view_drop_fraction: float = 0.1  # least confident share of each view's points dropped (set 0 when the
    #                                  scene was built with `rewis recon --drop-fraction`, which already did it)
    up_axis: str = "auto"  # auto (from the cameras) | x | y | z | -x | -y | -z
    # 3D student augmentation
    rotate_up: bool = True
    scale3d: tuple[float, float] = (0.9, 1.1)
    flip3d: bool = True
    jitter_sigma: float = 0.005
    jitter_clip: float = 0.02
    # strong 2D view (student)
    strong_color: float = 0.4  # colour jitter strength; 0 = off
    strong_blur: float = 0.5  # probability of a gaussian blur
    strong_cutout: float = 0.5  # probability of one cutout rectangle


@dataclass
class Model2DConfig:
    size: str = "b0"  # SegFormer MiT size b0..b5
    pretrained: str | None = None  # local folder / hub id of a SegFormer to start from (encoder + new head)
    overrides: dict = field(default_factory=dict)  # SegformerConfig fields (tests use tiny hidden sizes)


@dataclass
class Net3DConfig:
    kind: str = "sparse_unet"  # sparse_unet (rewis/net3d.py) | mlp (point-wise stand-in)
    voxel_size: float = 0.05
    channels: int = 32
    options: dict = field(default_factory=dict)  # extra keyword arguments of the 3D network


@dataclass
class OptimConfig:
    lr: float = 3e-5
    weight_decay: float = 1e-8
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: str = "linear"  # linear (decay to 0) | onecycle | constant | cosine
    warmup_steps: int = 0  # linear warm-up (linear, cosine, constant)
    pct_start: float = 0.3  # onecycle: share of steps rising


@dataclass
class Config:
    mode: str = "rewis3d"  # a name of the mode table (rewis/modes/__init__.py)
    seed: int = 0
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model2d: Model2DConfig = field(default_factory=Model2DConfig)
    net3d: Net3DConfig = field(default_factory=Net3DConfig)
    optim2d: OptimConfig = field(default_factory=OptimConfig)
    optim3d: OptimConfig = field(default_factory=lambda: OptimConfig(lr=2e-3, weight_decay=5e-3, schedule="onecycle"))
    method: Any = None  # the mode's own schema (its `Method` dataclass), parsed once `mode` is known
    source: str = field(default="", metadata={"internal": True})  # the preset file (not read from YAML)


CHOICES = {"run.mixed_precision": ("no", "fp16", "bf16"), "run.logger": ("tensorboard", "wandb", "none"),
           "net3d.kind": ("sparse_unet", "mlp"), "optim2d.schedule": ("linear", "onecycle", "constant", "cosine"),
           "optim3d.schedule": ("linear", "onecycle", "constant", "cosine"),
           "data.up_axis": ("auto", "x", "y", "z", "-x", "-y", "-z")}

Methods = Mapping[str, type]  # mode name -> the dataclass of its `method:` section


# ---------------------------------------------------------------------------------------------- reading

def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = (), *, methods: Methods) -> Config:
    """Read a preset (with its optional base), apply `key=value` overrides, return a typed Config.

    Two steps: `mode` is read first (command line over preset over base), then the `method:` section is parsed
    with that mode's schema from `methods` (rewis.modes.METHODS). Method keys of other modes are accepted in
    files and dropped, so one preset can serve several modes (street_ema.yaml inherits street_rewis3d.yaml);
    on the command line they are dropped with a warning, since they change nothing."""
    path = Path(path)
    raw = _read_yaml(path)
    base = raw.pop("base", None)
    layers = [(raw, str(path))]
    if base is not None:
        base_path = (path.parent / str(base)).resolve()
        base_raw = _read_yaml(base_path)
        if "base" in base_raw:
            raise InputError(f"{base_path}: key 'base': a base preset may not have a base itself (one level only)")
        layers.insert(0, (base_raw, str(base_path)))
    parsed = [_parse_override(item) for item in overrides]
    mode = next((v for k, v in reversed(parsed) if k == "mode"), None)
    for layer, where in reversed(layers):
        mode = layer.get("mode") if mode is None else mode
    schema = _method_schema(Config.mode if mode is None else mode, methods, layers[-1][1])
    merged: dict = {}
    for layer, where in layers:
        _check_keys(layer, Config, where, schema=schema, methods=methods)
        merged = _merge(merged, layer)
    for key, value in parsed:
        _set_dotted(merged, key, value, "command line", schema, methods)
    where = str(path) if not overrides else f"{path} (+ command line overrides)"
    cfg = _build_config(merged, schema, where)
    cfg.source = str(path)
    validate(cfg)
    return cfg


def config_from_dict(data: dict, where: str = "config", *, methods: Methods) -> Config:
    schema = _method_schema(data.get("mode", Config.mode), methods, where)
    _check_keys(data, Config, where, schema=schema, methods=methods)
    cfg = _build_config(dict(data), schema, where)
    validate(cfg)
    return cfg


def _method_schema(mode, methods: Methods, where: str) -> type:
    if mode not in methods:
        raise InputError(f"{where}: key 'mode' is {mode!r}; choose one of {', '.join(methods)}")
    return methods[mode]


def _build_config(raw: dict, schema: type, where: str) -> Config:
    cfg = _build(Config, {k: v for k, v in raw.items() if k != "method"}, where, "")
    known = {f.name for f in dataclasses.fields(schema)}
    own = {k: v for k, v in (raw.get("method") or {}).items() if k in known}  # other modes' keys are dropped
    cfg.method = _build(schema, own, where, "method.")
    return cfg


def validate(cfg: Config) -> None:
    where = cfg.source or "config"
    for key, allowed in CHOICES.items():
        value = _get_dotted(cfg, key)
        if value not in allowed:
            raise InputError(f"{where}: key '{key}' is {value!r}; choose one of {', '.join(allowed)}")
    if cfg.run.max_steps < 1 or cfg.run.grad_accum < 1 or cfg.data.batch_size < 1:
        raise InputError(f"{where}: run.max_steps, run.grad_accum and data.batch_size must be >= 1")
    if not 0 < cfg.data.in_view_share <= 1 or cfg.data.num_points < 1:
        raise InputError(f"{where}: data.in_view_share must be in (0, 1], data.num_points >= 1")
    if cfg.data.val and cfg.data.crop[0] != cfg.data.height and cfg.model2d.pretrained is None:
        import warnings

        warnings.warn(f"{where}: validation runs at height data.height={cfg.data.height} but "
                      f"training crops are {cfg.data.crop[0]} high; a SegFormer trained from scratch can fail at a "
                      "size it never saw (measured: mIoU 36 -> 27 at 180 vs 176 rows): make them equal", stacklevel=2)
    check = getattr(cfg.method, "check", None)
    if check is not None:
        check(where)


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise InputError(f"{path}: config file not found")
    try:
        data = yaml.load(path.read_text(), Loader=ConfigLoader)
    except yaml.YAMLError as e:
        raise InputError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(f"{path}: a config must be a YAML mapping of sections")
    return data


def _merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "overrides" \
            and k != "options" else v
    return out


def _field_types(cls, schema: type | None = None) -> dict:
    """Field name -> type of a config dataclass; Config's `method` has the type of the chosen mode's schema."""
    hints = typing.get_type_hints(cls)
    types_ = {f.name: hints[f.name] for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    if cls is Config and schema is not None:
        types_["method"] = schema
    return types_


def _other_modes_keys(schema: type, methods: Methods) -> dict[str, list[str]]:
    """Method keys that other modes know and `schema` does not: key -> the modes that know it."""
    own = {f.name for f in dataclasses.fields(schema)}
    out: dict[str, list[str]] = {}
    for name, other in methods.items():
        for f in dataclasses.fields(other):
            if f.name not in own:
                out.setdefault(f.name, []).append(name)
    return out


def _unknown_key(where: str, full: str, key: str, names, prefix: str) -> InputError:
    close = difflib.get_close_matches(str(key), list(names), n=1)
    hint = f" (did you mean '{prefix}{close[0]}'?)" if close else f" (known: {', '.join(names)})"
    return InputError(f"{where}: unknown key '{full}'{hint}")


def _check_keys(raw: dict, cls, where: str, prefix: str = "", schema: type | None = None,
                methods: Methods | None = None) -> None:
    names = _field_types(cls, schema)
    tolerated = _other_modes_keys(cls, methods) if prefix == "method." and methods else {}
    for key, value in raw.items():
        full = f"{prefix}{key}"
        if key == "base" and not prefix or key in tolerated and key not in names:
            continue
        if key not in names:
            raise _unknown_key(where, full, key, list(names) + list(tolerated), prefix)
        ftype = names[key]
        if dataclasses.is_dataclass(ftype):
            if not isinstance(value, dict):
                raise InputError(f"{where}: key '{full}' must be a mapping (a section), got {value!r}")
            _check_keys(value, ftype, where, f"{full}.", methods=methods if key == "method" and not prefix else None)


def _build(cls, raw: dict, where: str, prefix: str):
    kwargs = {}
    for name, ftype in _field_types(cls).items():
        if name not in raw:
            continue
        value = raw[name]
        if dataclasses.is_dataclass(ftype):
            kwargs[name] = _build(ftype, value or {}, where, f"{prefix}{name}.")
        else:
            kwargs[name] = _convert(value, ftype, where, f"{prefix}{name}")
    return cls(**kwargs)


def _convert(value, tp, where: str, key: str):
    """`value` as type `tp` (int, float, bool, str, X | None, list[X], tuple[X, ...], dict)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    fail = InputError(f"{where}: key '{key}' expects {_type_name(tp)}, got {value!r}")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], where, key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise fail
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise fail
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            if isinstance(value, str):
                try:
                    return float(value)  # YAML reads 3e-5 as a string
                except ValueError:
                    raise fail from None
            raise fail
        return float(value)
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise fail
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            if origin is list and isinstance(value, str):
                value = [value]
            else:
                raise fail
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise InputError(f"{where}: key '{key}' expects {len(args)} values, got {value!r}")
            return tuple(_convert(v, a, where, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else object
        out = [_convert(v, item, where, f"{key}[{i}]") if item is not object else v for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise fail
        return dict(value)
    return value


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _parse_override(item: str) -> tuple[str, object]:
    if "=" not in item:
        raise InputError(f"command line: override {item!r} must look like key=value (e.g. data.batch_size=4)")
    key, text = item.split("=", 1)
    key = key.strip().lstrip("-")
    try:
        value = yaml.load(text, Loader=ConfigLoader) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    return key, value


def _set_dotted(raw: dict, key: str, value, where: str, schema: type, methods: Methods) -> None:
    parts = key.split(".")
    cls, node = Config, raw
    for i, part in enumerate(parts):
        names = _field_types(cls, schema)
        if part not in names:
            if cls is schema and part in (others := _other_modes_keys(schema, methods)):
                import warnings

                warnings.warn(f"{where}: key '{key}' belongs to mode {', '.join(others[part])}, not to mode "
                              f"'{raw.get('mode', Config.mode)}' of this run: ignored", stacklevel=3)
                return
            raise _unknown_key(where, key, part, list(names), ".".join(parts[:i] + [""]))
        ftype = names[part]
        if i == len(parts) - 1:
            if dataclasses.is_dataclass(ftype):
                raise InputError(f"{where}: key '{key}' is a section; set one of its fields (e.g. {key}.x=...)")
            node[part] = value
            return
        if not dataclasses.is_dataclass(ftype):
            if ftype is dict or typing.get_origin(ftype) is dict:  # free-form mapping: set a nested key
                sub = node.setdefault(part, {})
                for p in parts[i + 1:-1]:
                    sub = sub.setdefault(p, {})
                sub[parts[-1]] = value
                return
            raise InputError(f"{where}: key '{'.'.join(parts[:i + 1])}' is not a section")
        node = node.setdefault(part, {})
        cls = ftype


def _get_dotted(cfg, key: str):
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


# ---------------------------------------------------------------------------------------------- writing

def to_dict(cfg) -> dict:
    out = {}
    for f in dataclasses.fields(cfg):
        if f.metadata.get("internal"):
            continue
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            value = to_dict(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def flat_dict(tree: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}: a nested config dict keyed by dotted names."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flat_dict(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def dump_config(cfg: Config) -> str:
    head = f"# resolved rewis config (from {cfg.source or 'code'}); train again with: rewis train THIS.yaml\n"
    return head + yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None)


def save_config(cfg: Config, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dump_config(cfg))
    return path
