"""Loss functions of docs/METHODS.md sections 1-2, on flat (N, C) logits; 2D maps are flattened by the caller.

- `partial_consistency`: L_base = (1 - beta) CE(s, y; labeled) + beta w_T KL(p(t) || p(s); unlabeled), with
  w_T the share of all teacher outputs whose max prob >= threshold.
- `weighted_ce`: sum_i c_i CE(s_i, y_i) / sum_i c_i, the cross-modal consistency (CMC) loss.
- `ramp`: the lambda schedule of CMC.
- `class_balanced_weights`: per-class CE weights from label counts (rare classes weigh more).
- `ClassMap`: class ids <-> 3D head outputs when some classes (sky) have no 3D geometry.
- `lovasz_softmax`: the IoU surrogate of the LiDAR modes (ScribbleKITTI, 2DPASS).
- `scribblekitti_consistency`: (1/N)[sum_labeled CE + sum_unlabeled KL(p(t) || p(s))] (docs/METHODS.md section 4).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = 255


def flatten_2d(logits: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B*H*W, C)."""
    return logits.permute(0, 2, 3, 1).reshape(-1, logits.shape[1])


def zero_like_graph(x: torch.Tensor) -> torch.Tensor:
    """A zero that keeps `x` in the graph (so DDP sees every parameter used)."""
    return x.sum() * 0.0


def reliability(teacher_logits: torch.Tensor, threshold: float) -> torch.Tensor:
    """w_T: the share of teacher outputs (all elements) whose max softmax prob is >= threshold."""
    if teacher_logits.numel() == 0:
        return teacher_logits.new_zeros(())
    return (teacher_logits.float().softmax(1).amax(1) >= threshold).float().mean()


def kl_teacher_student(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                       over_classes: bool = False) -> torch.Tensor:
    """KL(p(t) || p(s)) averaged over the N elements (per-element mean), or over N*C when `over_classes`
    (the reference's 2D reduction). The teacher is treated as a constant."""
    n, c = student_logits.shape
    if n == 0:
        return zero_like_graph(student_logits)
    log_s = student_logits.float().log_softmax(1)
    log_t = teacher_logits.detach().float().log_softmax(1)
    kl = F.kl_div(log_s, log_t, reduction="sum", log_target=True)
    return kl / (n * c if over_classes else n)


def partial_consistency(student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor,
                        beta: float = 0.5, threshold: float = 0.95, kl_over_classes: bool = False,
                        ignore_index: int = IGNORE_INDEX, class_weight: torch.Tensor | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ce_term, consistency_term, w_T): ce_term = (1 - beta) CE over labeled elements (with `class_weight`: the
    mean weighted by the weight of each element's class), consistency_term = beta * w_T * KL over unlabeled
    elements. Their sum is L_base."""
    labeled = target != ignore_index
    if labeled.any():
        ce = F.cross_entropy(student_logits[labeled].float(), target[labeled], class_weight)
    else:
        ce = zero_like_graph(student_logits)
    w_t = reliability(teacher_logits.detach(), threshold)
    unl = ~labeled
    kl = kl_teacher_student(student_logits[unl], teacher_logits[unl], kl_over_classes)
    return (1.0 - beta) * ce, beta * w_t * kl, w_t


def weighted_ce(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor,
                ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """sum_i w_i CE(logits_i, target_i) / sum_i w_i over elements whose target is not ignored; 0 if none."""
    keep = (target != ignore_index) & (weight > 0)
    if not keep.any():
        return zero_like_graph(logits)
    w = weight[keep].float()
    ce = F.cross_entropy(logits[keep].float(), target[keep], reduction="none")
    return (w * ce).sum() / w.sum()


def class_balanced_weights(counts: torch.Tensor, power: float) -> torch.Tensor:
    """Per class, from how many labeled elements each has: share ** -power, scaled to average 1 over the labeled
    elements (the loss keeps its size); 0 for a class without any."""
    share = counts.float() / counts.sum().clamp(min=1)
    weights = torch.where(counts > 0, share.clamp(min=1e-12) ** -power, torch.zeros_like(share))
    return weights / (weights * share).sum().clamp(min=1e-12)


def soft_targets(teacher_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(argmax label, max prob) of teacher logits (N, C), without gradients."""
    with torch.no_grad():
        prob, label = teacher_logits.float().softmax(1).max(1)
    return label, prob


def ramp(step: int, start: int, length: int, lam_max: float) -> float:
    """0 before `start`, linear from 0 to lam_max over `length` steps, then lam_max."""
    if step < start:
        return 0.0
    if length <= 0:
        return float(lam_max)
    return float(lam_max) * min(1.0, (step - start) / length)


class ClassMap:
    """Class ids <-> 3D head outputs. Classes in `no_3d` (e.g. sky) have no 3D output; the 3D head has
    C - len(no_3d) outputs in class-id order."""

    def __init__(self, num_classes: int, no_3d_ids: list[int] | tuple[int, ...] = ()):
        self.num_classes = num_classes
        self.no_3d = sorted(set(int(i) for i in no_3d_ids))
        self.to_class = torch.tensor([c for c in range(num_classes) if c not in self.no_3d], dtype=torch.long)
        lut = torch.full((256,), IGNORE_INDEX, dtype=torch.long)
        lut[self.to_class] = torch.arange(len(self.to_class))
        self.to_3d_lut = lut  # class id (or 255) -> 3D output index (255 for no-3D classes and void)
        is_no3d = torch.zeros(256, dtype=torch.bool)
        is_no3d[self.no_3d] = True
        self.is_no_3d = is_no3d

    @property
    def num_3d(self) -> int:
        return len(self.to_class)

    def to_3d(self, labels: torch.Tensor) -> torch.Tensor:
        return self.to_3d_lut.to(labels.device)[labels.long()]

    def from_3d(self, index3d: torch.Tensor) -> torch.Tensor:
        return self.to_class.to(index3d.device)[index3d]

    def no_3d_mask(self, labels: torch.Tensor) -> torch.Tensor:
        return self.is_no_3d.to(labels.device)[labels.long()]


def lovasz_softmax(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Lovasz-softmax (Berman et al. 2018): a convex surrogate of 1 - IoU, averaged over the classes present in
    `target`; elements (N, C) logits, (N,) targets. Vectorised over classes with one sort per class column."""
    valid = target != ignore_index
    if not valid.any():
        return zero_like_graph(logits)
    probs = logits[valid].float().softmax(1)
    truth = F.one_hot(target[valid], probs.shape[1]).to(probs.dtype)
    errors, order = (truth - probs).abs().sort(0, descending=True)
    truth_sorted = truth.gather(0, order)
    positives = truth_sorted.sum(0)
    intersection = positives - truth_sorted.cumsum(0)
    union = positives + (1 - truth_sorted).cumsum(0)
    jaccard = 1 - intersection / union
    gradient = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])
    per_class = (errors * gradient).sum(0)
    return per_class[positives > 0].mean()


def scribblekitti_consistency(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                              target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(CE part, KL part) of ScribbleKITTI's mean-teacher loss: CE summed over labeled points and KL(teacher ||
    student) summed over the unlabeled ones, both divided by all N points."""
    n = max(1, len(target))
    labeled = target != IGNORE_INDEX
    ce = F.cross_entropy(student_logits.float(), target, ignore_index=IGNORE_INDEX, reduction="sum") / n
    log_s = student_logits[~labeled].float().log_softmax(1)
    log_t = teacher_logits[~labeled].float().log_softmax(1)
    kl = (log_t.exp() * (log_t - log_s)).sum() / n
    return ce, kl
