"""Run checkpoints that resume exactly and never unpickle.

A checkpoint is a folder RUN/checkpoints/step_N, built in a staging folder and renamed into place, so a run
killed while saving leaves either the previous checkpoints or a complete new one:
- `state.json`: counters (step, stage, best val mIoU and its step, finished offline steps); written last;
- `<student|teacher>.<name>.safetensors`: network weights;
- `optim.<name>.pt`, `sched.<name>.pt`, `scaler.pt`, `extra.<name>.pt`: state dicts of tensors and numbers;
- `rng.<rank>.pt`: each process's torch / CUDA / Python / NumPy RNG states as tensors and numbers.
Every `.pt` file is read with `torch.load(weights_only=True)`, which accepts only tensors, numbers, strings and
containers of them.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from recon.atomic import replace_folder
from recon.errors import InputError
from rewis.ema import unwrap

FORMAT = 1
STATE = "state.json"


def step_folders(checkpoints: Path) -> list[Path]:
    """Complete checkpoints (a state.json inside), oldest first."""
    found = [p for p in Path(checkpoints).glob("step_*") if p.is_dir() and p.name[5:].isdigit()
             and (p / STATE).is_file()]
    return sorted(found, key=lambda p: int(p.name[5:]))


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoints/step_N under a run folder (or `folder` itself if it is a checkpoint)."""
    folder = Path(folder)
    if folder.name.startswith("step_") and (folder / STATE).is_file():
        return folder
    found = step_folders(folder / "checkpoints")
    return found[-1] if found else None


def read_state(folder: Path) -> dict:
    try:
        state = json.loads((Path(folder) / STATE).read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"{folder / STATE}: unreadable checkpoint state ({e}); resume from another checkpoint")
    if state.get("format") != FORMAT:
        raise InputError(f"{folder}: a checkpoint of another rewis version (format {state.get('format')}); "
                         f"it cannot be resumed by this one")
    return state


def save_modules(folder: Path, modules: dict[str, torch.nn.Module]) -> None:
    for name, module in modules.items():
        tensors = {k: v.detach().cpu().clone().contiguous() for k, v in unwrap(module).state_dict().items()}
        save_file(tensors, str(folder / f"{name}.safetensors"))


def load_modules(folder: Path, modules: dict[str, torch.nn.Module]) -> None:
    for name, module in modules.items():
        path = folder / f"{name}.safetensors"
        if not path.is_file():
            raise InputError(f"{path}: missing from the checkpoint; resume from another checkpoint")
        target = unwrap(module)
        device = next(iter(target.state_dict().values())).device if target.state_dict() else "cpu"
        target.load_state_dict(load_file(str(path), device=str(device)))


def save_objects(folder: Path, objects: dict[str, object]) -> None:
    """Objects with `state_dict()` (optimizers, schedulers, the grad scaler, a mode's extras) as `.pt` files."""
    for name, obj in objects.items():
        torch.save(obj.state_dict(), folder / f"{name}.pt")


def load_objects(folder: Path, objects: dict[str, object]) -> None:
    for name, obj in objects.items():
        path = folder / f"{name}.pt"
        if not path.is_file():
            raise InputError(f"{path}: missing from the checkpoint; resume from another checkpoint")
        obj.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))


def rng_state() -> dict:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, inner, gauss_next = random.getstate()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "python": [version, torch.tensor(inner, dtype=torch.int64), gauss_next],
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss]}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    version, inner, gauss_next = state["python"]
    random.setstate((version, tuple(inner.tolist()), gauss_next))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))


def write_checkpoint(target: Path, modules: dict, objects: dict, state: dict, acc) -> Path:
    """Write a checkpoint folder with every process's RNG state (all processes call this): into
    `.step_N.partial` beside it, renamed into place once complete."""
    target = Path(target)
    staging = target.parent / f".{target.name}.partial"
    if acc.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    acc.wait_for_everyone()
    torch.save(rng_state(), staging / f"rng.{acc.process_index}.pt")
    acc.wait_for_everyone()
    if acc.is_main_process:
        save_modules(staging, modules)
        save_objects(staging, objects)
        (staging / STATE).write_text(json.dumps({"format": FORMAT, **state}, indent=1) + "\n")
        replace_folder(staging, target)
    acc.wait_for_everyone()
    return target


def remove_partial(checkpoints: Path) -> None:
    """Delete checkpoint folders a killed run left half-written."""
    for partial in Path(checkpoints).glob(".step_*.partial"):
        shutil.rmtree(partial, ignore_errors=True)


def load_rng(folder: Path, rank: int) -> None:
    path = folder / f"rng.{rank}.pt"
    if not path.is_file():
        raise InputError(f"{path}: missing from the checkpoint (was it written by fewer processes?)")
    set_rng_state(torch.load(path, map_location="cpu", weights_only=True))
