"""Mode `ema`: the mean-teacher baseline (docs/METHODS.md section 3) = the 2D branch of Rewis3d without 3D.

The EMA teacher sees the weak view (shared rescale/crop/flip), the student the strong view (+ colour jitter,
blur, cutout); loss L_base2D = (1 - beta) CE(weak labels) + beta w_T KL(teacher || student) on unlabeled
pixels. The teacher follows the student after every real optimizer step."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from recon.errors import InputError
from rewis.augment import StrongAug
from rewis.ema import ema_decay, ema_update, make_teacher, teacher_mode
from rewis.losses import flatten_2d, partial_consistency
from rewis.modes.base import Mode2D, StepInfo, adamw


@dataclass
class ReferenceQuirks:
    """Behaviours of the released Rewis3d code that docs/METHODS.md replaces by sane defaults; set one to reproduce
    the reference."""
    ema_reset_each_epoch: bool = False  # the EMA step counter restarts every epoch (resets the teacher)
    teacher_train_mode: bool = False  # teachers run in train mode
    kl_mean_over_classes: bool = False  # the 2D KL is a mean over N*C elements instead of over N
    block_lr_2d: float | None = None  # lr of every 2D parameter whose name holds "block" (reference: 2e-4)


@dataclass
class EMAMethod:
    beta: float = 0.5  # weight of the consistency term in L_base
    reliability_threshold: float = 0.95  # w_T = share of teacher outputs with max prob >= this
    ema_max: float = 0.99  # a_max
    strong_aug: bool = True  # student sees the strong 2D view
    reference: ReferenceQuirks = field(default_factory=ReferenceQuirks)

    def check(self, where: str) -> None:
        for key in ("ema_max", "ema_max_3d"):
            value = getattr(self, key, None)
            if value is not None and not 0 <= value < 1:
                raise InputError(f"{where}: key 'method.{key}' is {value}; an EMA weight must lie in [0, 1)")


class EMAMode(Mode2D):
    Method = EMAMethod

    def __init__(self, cfg, classes):
        super().__init__(cfg, classes)
        self.students["2d"] = self.build_2d()
        self.teachers["2d"] = make_teacher(self.students["2d"])
        d = cfg.data
        self.strong = StrongAug(d.strong_color, d.strong_blur, d.strong_cutout) if cfg.method.strong_aug else None

    def optimizers(self, total_steps: int) -> dict:
        return {"2d": adamw(self.students["2d"], self.cfg.optim2d, total_steps, self.cfg.method.reference.block_lr_2d)}

    # ------------------------------------------------------------------------------------------ 2D branch
    def student_view(self, images: torch.Tensor) -> torch.Tensor:
        return self.strong(images) if self.strong is not None else images

    def teacher(self, name: str) -> torch.nn.Module:
        return teacher_mode(self.teachers[name], self.cfg.method.reference.teacher_train_mode)

    @torch.no_grad()
    def teacher_logits_2d(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits_2d(self.teacher("2d"), images)

    def base_2d(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, label: torch.Tensor) -> dict:
        m = self.cfg.method
        ce, cons, w_t = partial_consistency(flatten_2d(student_logits), flatten_2d(teacher_logits), label.reshape(-1),
                                            m.beta, m.reliability_threshold,
                                            kl_over_classes=m.reference.kl_mean_over_classes)
        self.logs["2d/w_T"] = w_t.detach()
        return {"2d/ce": ce, "2d/consistency": cons}

    def losses(self, batch: dict, info: StepInfo) -> dict:
        images = batch["image"]
        s = self.logits_2d(self.students["2d"], self.student_view(images))
        t = self.teacher_logits_2d(images)
        return self.base_2d(s, t, batch["label"])

    # ------------------------------------------------------------------------------------------ EMA
    def ema_step(self, info: StepInfo) -> int:
        """The step counter of the EMA weight (restarts every epoch with the reference quirk)."""
        return info.step_in_epoch if self.cfg.method.reference.ema_reset_each_epoch else info.step

    def ema_max(self, name: str) -> float:
        return self.cfg.method.ema_max

    def after_step(self, info: StepInfo) -> None:
        step = self.ema_step(info)
        for name, teacher in self.teachers.items():
            if name in self.students:
                a = ema_decay(step, self.ema_max(name))
                ema_update(teacher, self.students[name], a)
                self.logs[f"{name}/ema_a"] = a
