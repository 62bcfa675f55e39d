"""Mode `ema`: the mean-teacher baseline (METHODS.md section 3) = the 2D branch of Rewis3d without 3D.

The EMA teacher sees the weak view (shared rescale/crop/flip), the student the strong view (+ colour jitter,
blur, cutout); loss L_base2D = (1 - beta) CE(weak labels) + beta w_T KL(teacher || student) on unlabeled
pixels. The teacher follows the student after every real optimizer step."""

from __future__ import annotations

import torch

from rewis.augment import StrongAug
from rewis.ema import ema_decay, ema_update, make_teacher, teacher_mode
from rewis.losses import flatten_2d, partial_consistency
from rewis.modes import Mode, StepInfo, adamw


class EMAMode(Mode):
    def __init__(self, cfg, classes):
        super().__init__(cfg, classes)
        self.students["2d"] = self.build_2d()
        self.teachers["2d"] = make_teacher(self.students["2d"])
        d = cfg.data
        self.strong = StrongAug(d.strong_color, d.strong_blur, d.strong_cutout) if cfg.method.strong_aug else None

    def optimizers(self, total_steps: int) -> dict:
        return {"2d": adamw(self.students["2d"], self.cfg.optim2d, total_steps)}

    # ------------------------------------------------------------------------------------------ 2D branch
    def student_view(self, images: torch.Tensor) -> torch.Tensor:
        return self.strong(images) if self.strong is not None else images

    @torch.no_grad()
    def teacher_logits_2d(self, images: torch.Tensor) -> torch.Tensor:
        teacher = teacher_mode(self.teachers["2d"], self.cfg.method.teacher_train_mode)
        return self.logits_2d(teacher, images)

    def base_2d(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, label: torch.Tensor) -> dict:
        m = self.cfg.method
        ce, cons, w_t = partial_consistency(flatten_2d(student_logits), flatten_2d(teacher_logits), label.reshape(-1),
                                            m.beta, m.reliability_threshold, kl_over_classes=m.kl_reduction == "reference")
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
        return info.step_in_epoch if self.cfg.method.ema_reset_each_epoch else info.step

    def after_step(self, info: StepInfo) -> None:
        m, step = self.cfg.method, self.ema_step(info)
        for name, teacher in self.teachers.items():
            if name in self.students:
                a_max = m.ema_max_3d if name == "3d" and m.ema_max_3d is not None else m.ema_max
                a = ema_decay(step, a_max)
                ema_update(teacher, self.students[name], a)
                self.logs[f"{name}/ema_a"] = a
