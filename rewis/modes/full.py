"""Mode `full`: the fully supervised 2D reference (docs/METHODS.md section 3): cross-entropy on dense labels,
same 2D geometry augmentation as the weak modes, no teacher. Gives the FS of SS/FS."""

from __future__ import annotations

import torch.nn.functional as F

from rewis.losses import IGNORE_INDEX
from rewis.modes.base import Mode2D, StepInfo, adamw


class FullMode(Mode2D):
    labels = "dense"

    def __init__(self, cfg, classes):
        super().__init__(cfg, classes)
        self.students["2d"] = self.build_2d()

    def optimizers(self, total_steps: int) -> dict:
        return {"2d": adamw(self.students["2d"], self.cfg.optim2d, total_steps)}

    def losses(self, batch: dict, info: StepInfo) -> dict:
        logits = self.logits_2d(self.students["2d"], batch["image"])
        return {"2d/ce": F.cross_entropy(logits, batch["label"], ignore_index=IGNORE_INDEX)}
