"""EMA (mean) teachers: theta_T <- a theta_T + (1 - a) theta_S, a = min(1 - 1/(step + 1), a_max).

The teacher is a plain deep copy of the student, never prepared by accelerate (it has no gradients); the
trainer registers it for checkpointing so `save_state`/`load_state` restore it exactly.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def ema_decay(step: int, a_max: float) -> float:
    """The EMA weight a for the update after `step` completed optimizer steps (0 on the very first)."""
    return min(1.0 - 1.0 / (step + 1), a_max)


def unwrap(model: nn.Module) -> nn.Module:
    """The bare module behind DDP / torch.compile wrappers."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or getattr(model, "_orig_mod")
    return model


def make_teacher(student: nn.Module) -> nn.Module:
    teacher = copy.deepcopy(unwrap(student))
    for p in teacher.parameters():
        p.requires_grad_(False)
    teacher.eval()
    return teacher


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, a: float) -> None:
    """In place: every floating parameter moves towards the student's; buffers are copied."""
    student = unwrap(student)
    t_params = dict(teacher.named_parameters())
    for name, s in student.named_parameters():
        t = t_params[name]
        t.mul_(a).add_(s.detach().to(t.dtype), alpha=1.0 - a)
    t_bufs = dict(teacher.named_buffers())
    for name, b in student.named_buffers():
        t_bufs[name].copy_(b)


def teacher_mode(teacher: nn.Module, train_mode: bool) -> nn.Module:
    """Teachers run in eval mode (sane default) or train mode (reference quirk)."""
    return teacher.train(train_mode)
