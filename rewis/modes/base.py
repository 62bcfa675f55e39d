"""The mode contract. A mode owns everything that differs between training methods; the trainer
(rewis/trainer.py) only runs stages, steps, sums losses, logs, checkpoints, evaluates and exports.

A mode class provides:
- `Method`: the dataclass of its `method:` config section (parsed once `mode` is known; may define
  `check(where)` to reject bad values with an InputError).
- `read_classes(cfg)` (classmethod): its class list, from its own data.
- `students` (name -> nn.Module, trained; the trainer replaces each by its accelerate-prepared version, so call
  them through `self.students[name]`) and `teachers` (name -> nn.Module, never prepared; checkpointed).
- `stages()`: the run as a list of `Stage`s whose steps add up to `run.max_steps`.
- `begin_stage(stage, products)`: called when a stage starts and again when a run resumes inside it, after
  the stage's offline step; `products` maps each finished offline step (stage name) to its folder.
- `train_data(stage)`: (dataset, collate) of a stage; the trainer builds a fresh loader from them.
- `optimizers(total_steps)`: name -> (optimizer, scheduler or None), built for a stage's schedule span.
- `losses(batch, info)`: named scalar losses; the trainer sums them and logs each, plus `self.logs`.
- `after_step(info)`: after every real optimizer step (EMA updates).
- `state_objects()`: extra checkpointed objects with state_dict / load_state_dict (default: none; teachers
  are always saved).
- `evaluate(device)`: the split's metrics from one confusion matrix in the mode's own space and classes
  (the 2D modes score pixels with segment.evaluate, the evaluator of `rewis eval`), or None without val data.
- `export(folder, card)`: the deployable model (a SegFormer folder for 2D modes, a 3D model folder for 3D ones).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from recon.dataset import ClassList
from rewis.augment import normalize
from rewis.config import Config, OptimConfig
from rewis.ema import unwrap


@dataclass
class StepInfo:
    step: int  # optimizer steps completed before this one (0-based index of the step being made)
    epoch: int  # epoch within the stage
    step_in_epoch: int  # optimizer steps completed in this epoch before this one
    steps_per_epoch: int
    stage: str
    max_steps: int
    stage_step: int = 0  # optimizer steps completed in this stage before this one


@dataclass
class OfflineContext:
    """What an offline step (e.g. pseudo-labelling) gets: it writes its products under `out`, which the trainer
    renames into RUN/stages/<stage>/ once the step returns (so a half-written folder is never taken)."""
    out: Path
    device: torch.device
    products: dict[str, Path]  # folders of earlier stages' offline steps
    progress: bool = True


@dataclass(frozen=True)
class Stage:
    """One part of a run. `fresh_*` take effect when the stage starts: students back to their initial weights,
    teachers back to theirs (a teacher of a student: to the student's), new optimizers and schedules (a
    schedule spans the steps until the next stage with fresh optimizers). `offline` runs once, before the
    stage, on the main process."""
    name: str
    steps: int
    fresh_students: bool = False
    fresh_teachers: bool = False
    fresh_optimizers: bool = False
    offline: Callable[[OfflineContext], None] | None = None


@dataclass
class NoMethod:
    """A mode without `method:` settings."""


class Mode:
    Method: type = NoMethod

    def __init__(self, cfg: Config, classes: ClassList):
        self.cfg, self.classes = cfg, classes
        self.students: dict[str, nn.Module] = {}
        self.teachers: dict[str, nn.Module] = {}
        self.logs: dict[str, float | torch.Tensor] = {}  # tensors: converted only when logged (no GPU sync)

    # ------------------------------------------------------------------------------------------ data
    @classmethod
    def read_classes(cls, cfg: Config) -> ClassList:
        """The class list of the first training folder (a scene or a sequence)."""
        from recon.dataset import read_classes
        from recon.errors import InputError
        from recon.scene import Scene

        if not cfg.data.train:
            raise InputError(f"{cfg.source or 'config'}: data.train is empty; list scene or sequence folders")
        first = Path(cfg.data.train[0])
        if (first / "scene.json").is_file():
            return Scene.load(first).classes
        if (first / "classes.json").is_file():
            return read_classes(first)
        raise InputError(f"data.train: {first} is neither a scene folder (scene.json) nor a sequence (classes.json)")

    def train_data(self, stage: Stage):
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------ training
    def stages(self) -> list[Stage]:
        return [Stage("train", self.cfg.run.max_steps)]

    def begin_stage(self, stage: Stage, products: dict[str, Path]) -> None:
        pass

    def optimizers(self, total_steps: int) -> dict:
        raise NotImplementedError

    def losses(self, batch: dict, info: StepInfo) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def after_step(self, info: StepInfo) -> None:
        pass

    def state_objects(self) -> dict:
        return {}

    def train(self) -> None:
        for m in self.students.values():
            m.train()

    def eval(self) -> None:
        for m in self.students.values():
            m.eval()

    # ------------------------------------------------------------------------------------------ evaluation
    def evaluate(self, device: torch.device) -> dict | None:
        raise NotImplementedError

    def export(self, folder: Path, card: dict) -> Path:
        raise NotImplementedError


class Mode2D(Mode):
    """Base of the modes whose product is a 2D SegFormer (`students["2d"]`): weak or dense 2D labels from
    scenes or sequence folders (with the view-aware point sample when `needs_points`), evaluation by
    segment.evaluate on `data.val`, export as a SegFormer folder."""

    labels = "weak"  # which 2D labels the training data carries: weak | dense
    needs_points = False

    def __init__(self, cfg: Config, classes: ClassList):
        super().__init__(cfg, classes)
        self.val_samples = None

    def train_data(self, stage: Stage):
        from rewis.data import TrainDataset, collate

        return TrainDataset(self.cfg.data, self.labels, self.needs_points, self.cfg.seed), collate

    def build_2d(self) -> nn.Module:
        from segment.models import build_model, label_fields

        m = self.cfg.model2d
        if m.pretrained:
            from transformers import SegformerForSemanticSegmentation

            return SegformerForSemanticSegmentation.from_pretrained(
                m.pretrained, ignore_mismatched_sizes=True, local_files_only=True, use_safetensors=True,
                **label_fields(self.classes), **m.overrides)
        return build_model(m.size, self.classes, **m.overrides)

    @staticmethod
    def logits_2d(model: nn.Module, images: torch.Tensor, size=None) -> torch.Tensor:
        """Logits (B, C, H, W) of a SegFormer on float images in [0, 255], upsampled to `size` (default: input)."""
        logits = model(pixel_values=normalize(images)).logits
        size = tuple(images.shape[-2:]) if size is None else tuple(size)
        return F.interpolate(logits.float(), size=size, mode="bilinear", align_corners=False)

    def loaded_2d(self):
        """The 2D student as segment.predict runs it: with the image processor its export carries."""
        from segment.models import LoadedModel, build_processor

        return LoadedModel(model=unwrap(self.students["2d"]), processor=build_processor(tuple(self.cfg.data.crop)),
                           classes=self.classes, source="training")

    def evaluate(self, device: torch.device) -> dict | None:
        """Pixel metrics of the 2D student on `data.val`, exactly as `rewis eval` scores its export."""
        from segment.evaluate import collect_val_samples, score_samples
        from segment.predict import InferenceOptions

        if not self.cfg.data.val:
            return None
        if self.val_samples is None:
            self.val_samples = collect_val_samples([Path(p) for p in self.cfg.data.val], self.classes)
        device_name = str(device) if device.type != "cuda" or device.index is None else f"cuda:{device.index}"
        return score_samples(self.loaded_2d(), self.val_samples, InferenceOptions(device=device_name), progress=False)

    def export(self, folder: Path, card: dict) -> Path:
        from transformers.utils import logging as hf_logging

        from segment.models import export_model

        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # no "Writing model shards" bar in the middle of training output
        try:
            loaded = self.loaded_2d()
            return export_model(loaded.model, folder, loaded.processor, card)
        finally:
            if bars:
                hf_logging.enable_progress_bar()


def adamw(model: nn.Module, ocfg: OptimConfig, total_steps: int, block_lr: float | None = None):
    """AdamW (+ the reference's optional 'block' lr for parameters whose name holds "block") and the configured
    schedule (None for constant lr without warm-up)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if block_lr is not None:
        groups = [{"params": [p for n, p in named if "block" not in n], "lr": ocfg.lr},
                  {"params": [p for n, p in named if "block" in n], "lr": block_lr}]
        groups = [g for g in groups if g["params"]]
    else:
        groups = [{"params": [p for _, p in named], "lr": ocfg.lr}]
    opt = torch.optim.AdamW(groups, lr=ocfg.lr, weight_decay=ocfg.weight_decay, betas=tuple(ocfg.betas))
    return opt, make_scheduler(opt, ocfg, total_steps)


def make_scheduler(opt, ocfg: OptimConfig, total_steps: int):
    total = max(1, total_steps)
    if ocfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[g["lr"] for g in opt.param_groups],
                                                   total_steps=total + 1, pct_start=ocfg.pct_start)
    warm = max(0, ocfg.warmup_steps)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = min(1.0, (step - warm) / max(1, total - warm))
        if ocfg.schedule == "linear":
            return 1.0 - t
        if ocfg.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * t))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)
