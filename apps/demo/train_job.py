"""The Scribble tab's training job: scribbled sequence -> scene (weak labels accumulated on the points) -> a short
rewis3d run with small models in a background thread -> dense predictions on every frame.

The example's rendered depth and poses stand in for structure from motion (the RGB-D source), which makes a
dense cloud in well under a second; the run itself uses a slim SegFormer-b0 and the point-wise 3D network so a
few dozen steps finish within a few minutes on a laptop CPU."""

from __future__ import annotations

import copy
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from recon.dataset import IGNORE_INDEX, ClassList, sequence_images, write_label
from recon.errors import InputError

# A slim SegFormer-b0 (about 0.4 M parameters) at the example's scale; `steps` and test overrides merge in.
DEMO_TRAINING = {
    "mode": "rewis3d", "seed": 0,
    "run": {"max_steps": 100, "log_every": 1, "logger": "none", "progress": False, "cpu_threads": 0},
    "data": {"height": 120, "crop": [120, 160], "scale_range": [0.9, 1.2], "batch_size": 2, "num_points": 4096},
    "model2d": {"size": "b0", "overrides": {"hidden_sizes": [16, 32, 64, 128], "depths": [1, 1, 1, 1],
                                            "num_attention_heads": [1, 2, 2, 4], "decoder_hidden_size": 64}},
    "net3d": {"kind": "mlp", "channels": 32},
    "optim2d": {"lr": 2.0e-3, "schedule": "linear"},
    "optim3d": {"lr": 2.0e-3, "schedule": "onecycle"},
    "method": {"cmc_start": 10, "cmc_ramp": 10},
}
MAX_ANNOTATED = 5


@dataclass
class Progress:
    """What the page shows while training runs (filled by polling the run's metrics.jsonl)."""
    step: int = 0
    max_steps: int = 1
    loss: float | None = None
    started: float = field(default_factory=time.perf_counter)
    summary: dict | None = None
    error: BaseException | None = None

    @property
    def fraction(self) -> float:
        return min(1.0, self.step / max(1, self.max_steps))

    def line(self) -> str:
        loss = f", loss {self.loss:.3f}" if self.loss is not None else ""
        return f"training step {self.step}/{self.max_steps}{loss} ({time.perf_counter() - self.started:.0f} s)"


def merged(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in (extra or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def check_annotations(seq: Path, annotated: list[str]) -> None:
    if not annotated:
        raise InputError("no scribbles yet: draw strokes with the class brush on 1 to 5 frames (press 'Save "
                         "scribbles' or switch frames to keep them), or use 'Auto-scribble'")
    if len(annotated) > MAX_ANNOTATED:
        raise InputError(f"{len(annotated)} frames carry scribbles; the demo trains from 1 to {MAX_ANNOTATED} "
                         "(clear some with \"Clear this frame's scribbles\")")


def fill_unannotated(seq: Path, classes: ClassList) -> None:
    """Frames without scribbles get an all-unlabeled weak map: they still teach through the consistency and
    cross-modal terms, and the trainer needs a weak-label file for every frame."""
    import numpy as np
    from PIL import Image

    for image in sequence_images(seq):
        path = seq / "weak" / "scribbles" / f"{image.stem}.png"
        if not path.is_file():
            with Image.open(image) as im:
                size = im.size
            write_label(path, np.full((size[1], size[0]), IGNORE_INDEX, np.uint8), classes)


def build_scene(seq: Path, out: Path) -> Path:
    from recon.build import reconstruct
    from recon.sources import ReconOptions

    reconstruct(seq, out, ReconOptions(source="rgbd", weak_kind="scribbles", progress=False), overwrite=True)
    return out


def training_config(scene: Path, val: Path | None, run_dir: Path, steps: int, extra: dict):
    from rewis.modes import config_from_dict

    data = merged(DEMO_TRAINING, {"run": {"max_steps": int(steps), "out": str(run_dir)},
                                  "data": {"train": [str(scene)], "val": [str(val)] if val else []}})
    return config_from_dict(merged(data, extra), "demo training settings")


def start_training(cfg, on_done) -> tuple[threading.Thread, Progress]:
    """Train in a daemon thread; `on_done()` runs when it ends, however it ends."""
    from rewis.trainer import train

    state = Progress(max_steps=cfg.run.max_steps)

    def work():
        try:
            state.summary = train(cfg)
        except BaseException as e:  # noqa: BLE001  (shown to the user by the polling side)
            state.error = e
        finally:
            on_done()

    thread = threading.Thread(target=work, name="rewis-demo-train", daemon=True)
    thread.start()
    return thread, state


def poll(run_dir: Path, state: Progress) -> None:
    """Update `state` from the newest train record of run_dir/metrics.jsonl."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return
    for line in reversed(path.read_text().splitlines()):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line being written right now
            continue
        if record.get("type") == "train":
            state.step, state.loss = int(record["step"]), float(record.get("loss", float("nan")))
            return


def predict_frames(export: Path, frames: list[Path], out: Path) -> list[tuple[str, str]]:
    """(overlay path, caption) for every frame, predicted with the exported model."""
    from segment.draw import overlay
    from segment.models import load_model
    from segment.predict import InferenceOptions, Segmenter

    loaded = load_model(str(export))
    out.mkdir(parents=True, exist_ok=True)
    shown = []
    for pred in Segmenter(loaded, InferenceOptions(batch_size=2, device="cpu", workers=1, keep_rgb=True)).run(frames):
        if pred.error:
            raise InputError(f"frame {pred.path.name}: {pred.error}")
        write_label(out / "masks" / f"{pred.path.stem}.png", pred.label, loaded.classes)
        target = out / f"{pred.path.stem}.jpg"
        overlay(pred.rgb, pred.label, loaded.classes).save(target, quality=90)
        shown.append((str(target), pred.path.stem))
    return shown
