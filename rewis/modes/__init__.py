"""Training modes. A mode owns its networks and all of its math; the trainer (rewis/trainer.py) only prepares,
steps, sums, logs, checkpoints and evaluates. `MODES` (bottom) is the plain name -> class table.

The contract (`Mode`):
- class attributes: `labels` ("weak" | "dense": which 2D labels the default dataset carries), `needs_points`
  (the default dataset adds the view-aware point sample and links), `eval_space` ("2d" | "3d": what
  `eval_pairs` scores, for the best-checkpoint metric).
- `students`: name -> nn.Module trained by the optimizers; the trainer replaces each entry by its
  accelerate-prepared (possibly DDP-wrapped) version, so call them through `self.students[name]`.
- `teachers`: name -> nn.Module never prepared (EMA teachers, frozen copies); saved in every checkpoint.
- `optimizers(total_steps)`: name -> (optimizer, scheduler or None); the trainer prepares the optimizers and
  steps every scheduler once per real optimizer step.
- `losses(batch, info) -> dict[str, Tensor]`: named scalar losses; the trainer sums them and logs each (plus
  anything the mode puts in `self.logs`, not summed; floats or 0-d tensors).
- `after_step(info)`: called once after every real optimizer step (accelerate `sync_gradients`): EMA updates.
- `stages()` / `begin_stage(name, trainer)`: list of (stage name, optimizer steps); a multi-stage mode (LiDAR
  pseudo-labelling) does its offline work in `begin_stage` with the trainer's accelerator and data at hand.
- `state_objects()`: extra objects with state_dict/load_state_dict for checkpoints (default: the teachers).
- `make_datasets()`: (train dataset, val dataset or None, collate fn); override for other data (LiDAR scans).
- `eval_pairs(batch) -> (pred, target)`: class-id predictions and targets of one val batch (2D default).
- `export(folder, card)`: write the deployable model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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
    epoch: int
    step_in_epoch: int  # optimizer steps completed in this epoch before this one
    steps_per_epoch: int
    stage: str
    max_steps: int


class Mode:
    labels = "weak"
    needs_points = False
    eval_space = "2d"

    def __init__(self, cfg: Config, classes: ClassList):
        self.cfg, self.classes = cfg, classes
        self.students: dict[str, nn.Module] = {}
        self.teachers: dict[str, nn.Module] = {}
        self.logs: dict[str, float | torch.Tensor] = {}  # tensors: converted only when logged (no GPU sync)

    # ------------------------------------------------------------------------------------------ data
    def make_datasets(self):
        from rewis.data import TrainDataset, ValDataset, collate

        train = TrainDataset(self.cfg.data, self.labels, self.needs_points, self.cfg.seed)
        val = ValDataset(self.cfg.data.val, self.classes, self.cfg.data.height) if self.cfg.data.val else None
        return train, val, collate

    # ------------------------------------------------------------------------------------------ training
    def stages(self) -> list[tuple[str, int]]:
        return [("train", self.cfg.run.max_steps)]

    def begin_stage(self, name: str, trainer) -> None:
        pass

    def optimizers(self, total_steps: int) -> dict:
        raise NotImplementedError

    def losses(self, batch: dict, info: StepInfo) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def after_step(self, info: StepInfo) -> None:
        pass

    def state_objects(self) -> dict:
        return dict(self.teachers)

    def train(self) -> None:
        for m in self.students.values():
            m.train()

    def eval(self) -> None:
        for m in self.students.values():
            m.eval()

    # ------------------------------------------------------------------------------------------ 2D helpers
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

    # ------------------------------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def eval_pairs(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        model = unwrap(self.students["2d"])
        image, label = batch["image"], batch["label"]
        logits = sliding_logits(model, image, self.cfg.data.crop[1])
        logits = F.interpolate(logits, size=label.shape[-2:], mode="bilinear", align_corners=False)
        return logits.argmax(1), label

    def export(self, folder: Path, card: dict) -> Path:
        from transformers.utils import logging as hf_logging

        from segment.models import build_processor, export_model

        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # no "Writing model shards" bar in the middle of training output
        try:
            return export_model(unwrap(self.students["2d"]), folder, build_processor(tuple(self.cfg.data.crop)), card)
        finally:
            if bars:
                hf_logging.enable_progress_bar()


def sliding_logits(model: nn.Module, images: torch.Tensor, window: int, overlap: float = 1 / 3) -> torch.Tensor:
    """Logits of images (B, 3, H, W) at input resolution; images wider than `window` are covered by horizontal
    windows whose logits are summed (METHODS.md: evaluation)."""
    h, w = images.shape[-2:]
    if w <= window:
        return Mode.logits_2d(model, images)
    stride = max(1, int(window * (1 - overlap)))
    xs = list(range(0, w - window + 1, stride))
    if xs[-1] != w - window:
        xs.append(w - window)
    out = None
    for x in xs:
        part = Mode.logits_2d(model, images[..., x:x + window])
        if out is None:
            out = part.new_zeros(part.shape[0], part.shape[1], h, w)
        out[..., x:x + window] += part
    return out


def adamw(model: nn.Module, ocfg: OptimConfig, total_steps: int):
    """AdamW (+ the reference's optional 'block' lr) and the configured schedule (None for constant lr
    without warm-up)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if ocfg.block_lr is not None:
        groups = [{"params": [p for n, p in named if "block" not in n], "lr": ocfg.lr},
                  {"params": [p for n, p in named if "block" in n], "lr": ocfg.block_lr}]
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
            import math
            return 0.5 * (1 + math.cos(math.pi * t))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


from rewis.modes.ema import EMAMode  # noqa: E402  (the modes import Mode from this module)
from rewis.modes.full import FullMode  # noqa: E402
from rewis.modes.rewis3d import Rewis3dMode  # noqa: E402

MODES: dict[str, type[Mode]] = {"full": FullMode, "ema": EMAMode, "rewis3d": Rewis3dMode}
