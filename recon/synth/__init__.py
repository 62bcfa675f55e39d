"""Built-in synthetic benchmark: `generate()` renders a street, room or drive sequence with full ground truth.

The sequence is written into a temporary folder beside `out` and renamed into place at the end, so an
interrupted run never leaves a half-written sequence and an existing folder is only replaced on success.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
from tqdm import tqdm

from recon.errors import InputError

GENERATOR_VERSION = "1.1"  # bump whenever the rendered bytes for a given seed change
SYNTH_FORMAT = "rewis.synth/1"
MIN_SIDE, MAX_SIDE = 16, 8192


def _presets() -> dict:
    from recon.synth.scene_drive import DrivePreset
    from recon.synth.scene_room import RoomPreset
    from recon.synth.scene_street import StreetPreset

    return {"street": StreetPreset(), "room": RoomPreset(), "drive": DrivePreset()}


PRESETS: dict = _presets()


def parse_size(text: str, where: str = "--size") -> tuple[int, int]:
    """'480x360' -> (480, 360); one-line InputError otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", str(text))
    if not match:
        raise InputError(f"{where} {text!r}: expected WIDTHxHEIGHT such as 480x360")
    size = (int(match.group(1)), int(match.group(2)))
    _check_size(size, where)
    return size


def _check_size(size, where: str = "size") -> tuple[int, int]:
    try:
        width, height = (int(v) for v in size)
    except (TypeError, ValueError):
        raise InputError(f"{where} {size!r}: expected (width, height) integers such as (480, 360)") from None
    if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE):
        raise InputError(f"{where} {width}x{height}: width and height must be between {MIN_SIDE} and {MAX_SIDE} "
                         "pixels, e.g. 480x360")
    return width, height


def _check_inputs(preset, out: Path, frames, seed, size, step, overwrite: bool):
    if preset not in PRESETS:
        raise InputError(f"preset {preset!r} is unknown; choose one of {', '.join(sorted(PRESETS))}")
    if not isinstance(frames, (int, np.integer)) or frames < 1:
        raise InputError(f"frames {frames!r}: need at least 1 frame (e.g. --frames 30)")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed {seed!r}: must be a non-negative integer (e.g. --seed 0)")
    if step is not None and not (0.0 < float(step) <= 50.0):
        raise InputError(f"step {step!r}: metres between frames must be in (0, 50], e.g. --step 2")
    size = _check_size(size)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is a file; choose a folder path")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InputError(f"--out {out}: folder exists and is not empty; pass --overwrite to replace it "
                         "or choose another folder")
    return size


def generate(preset: str, out: Path, frames: int = 30, seed: int = 0, size: tuple[int, int] = (480, 360),
             lidar: bool = False, overwrite: bool = False, progress: bool = True,
             step: float | None = None) -> Path:
    """Render one sequence folder (docs/FORMATS.md layout) at `out` and return its path."""
    out = Path(out)
    size = _check_inputs(preset, out, frames, seed, size, step, overwrite)
    chosen = PRESETS[preset]
    step = float(chosen.default_step if step is None else step)
    target = out.resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _render_into(tmp, chosen, int(frames), int(seed), size, bool(lidar), step, progress)
        _move_into_place(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _render_into(seq: Path, preset, frames: int, seed: int, size, lidar: bool, step: float, progress: bool):
    from recon.synth import writer
    from recon.synth.lidar import SpinningLidar
    from recon.synth.render import Renderer

    scene = preset.build(seed, frames, step, size)
    renderer = Renderer(scene)
    sensor = SpinningLidar(mount_height=preset.lidar_mount_height)
    writer.make_folders(seq, lidar)
    lidar_rng = np.random.default_rng([seed, 3])
    bar = tqdm(range(frames), desc=f"synth {preset.name}", unit="frame", disable=not progress, leave=False)
    for i in bar:
        renderer.show_frame(i)
        frame = renderer.render_frame(scene.K, scene.poses[i], *size)
        writer.write_frame(seq, i, frame, scene.classes)
        if lidar:
            points, labels = sensor.sweep(renderer, scene.poses[i], lidar_rng)
            writer.write_lidar_scan(seq, i, points, labels)
    bar.close()
    info = {"format": SYNTH_FORMAT, "preset": preset.name, "seed": seed, "size": list(size), "frames": frames,
            "step": step, "lidar": lidar, "version": GENERATOR_VERSION, **scene.info}
    writer.write_sequence_meta(seq, scene.classes, scene.K, scene.poses, size, info)
    if lidar:
        writer.write_lidar_meta(seq, scene.classes, scene.K, sensor.cam_from_velo(), scene.poses)


def _move_into_place(tmp: Path, out: Path) -> None:
    """Swap the finished folder in; an old folder is removed only after the new one is in place."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


__all__ = ["generate", "PRESETS", "parse_size", "GENERATOR_VERSION"]
