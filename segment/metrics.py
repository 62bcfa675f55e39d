"""Segmentation metrics: one confusion matrix over a whole split, IoU per class, mIoU over the classes that
occur (in ground truth or prediction) in that split, and the SS/FS ratio used by weak-supervision papers."""

from __future__ import annotations

import numpy as np
import torch

IGNORE_INDEX = 255


def _as_tensor(x) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))


def confusion_matrix(pred, target, num_classes: int, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """(C, C) int64 counts, rows = ground truth, columns = prediction; pixels/points with target ==
    ignore_index are left out. Works on any shape and device; numpy input is accepted."""
    pred, target = _as_tensor(pred).reshape(-1).long(), _as_tensor(target).reshape(-1).long()
    if pred.shape != target.shape:
        raise ValueError(f"prediction has {pred.numel()} elements but target has {target.numel()}")
    keep = target != ignore_index
    pred, target = pred[keep], target[keep]
    if pred.numel() and (int(pred.min()) < 0 or int(pred.max()) >= num_classes):
        raise ValueError(f"predictions must be class ids in [0, {num_classes}), got {int(pred.min())}..{int(pred.max())}")
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= num_classes):
        raise ValueError(f"targets must be class ids in [0, {num_classes}) or {ignore_index}, "
                         f"got {int(target.min())}..{int(target.max())}")
    counts = torch.bincount(target * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def iou_per_class(cm) -> np.ndarray:
    """IoU of each class; NaN for a class that occurs neither in ground truth nor in prediction."""
    cm = _as_tensor(cm).double().cpu()
    tp = cm.diag()
    union = cm.sum(0) + cm.sum(1) - tp
    iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))
    return iou.numpy()


def mean_iou(cm) -> float:
    """Mean IoU over the classes that occur in ground truth or prediction (absent classes do not count as 0)."""
    iou = iou_per_class(cm)
    present = ~np.isnan(iou)
    return float(iou[present].mean()) if present.any() else float("nan")


def pixel_accuracy(cm) -> float:
    cm = _as_tensor(cm).double()
    total = cm.sum()
    return float(cm.diag().sum() / total) if total > 0 else float("nan")


def ss_fs(weak_miou: float, full_miou: float) -> float:
    """Weakly supervised mIoU as a percentage of the fully supervised one (SS/FS x 100)."""
    if not full_miou > 0:
        raise ValueError(f"fully supervised mIoU must be > 0, got {full_miou}")
    return 100.0 * weak_miou / full_miou


class ConfusionMeter:
    """Accumulates one confusion matrix over a split (on the device of the first update)."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX):
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.matrix: torch.Tensor | None = None

    def update(self, pred, target) -> None:
        cm = confusion_matrix(pred, target, self.num_classes, self.ignore_index)
        self.matrix = cm if self.matrix is None else self.matrix + cm.to(self.matrix.device)

    def counts(self) -> torch.Tensor:
        if self.matrix is None:
            return torch.zeros(self.num_classes, self.num_classes, dtype=torch.long)
        return self.matrix

    def summary(self, class_names: list[str] | None = None) -> dict:
        cm = self.counts().cpu()
        iou = iou_per_class(cm)
        names = class_names or [str(i) for i in range(self.num_classes)]
        return {"miou": mean_iou(cm), "pixel_accuracy": pixel_accuracy(cm),
                "iou": {n: (None if np.isnan(v) else float(v)) for n, v in zip(names, iou)},
                "confusion": cm.tolist()}
