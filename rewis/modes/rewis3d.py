"""Mode `rewis3d` (docs/METHODS.md section 2): 2D and 3D students with EMA teachers, cross-modal consistency.

Per branch L_base = (1 - beta) CE(weak labels) + beta w_T KL(teacher || student) on unlabeled elements (2D:
pixels of the crop; 3D: the M sampled points with the scene's accumulated weak labels). Cross-modal
consistency over the view's links (point i <-> pixel p), teachers under no_grad:
- 2D->3D: y_i = argmax of the 2D teacher at p, c_i = maxprob * r_i; L_C3D = sum c_i CE(s3D_i, y_i) / sum c_i.
  Pixels whose teacher class has no 3D geometry (sky) give no 3D label.
- 3D->2D: y_p = class of the 3D teacher's argmax at i, c = maxprob * r_i; L_C2D the same weighted mean over
  linked pixels, except those the 2D teacher puts in a class without 3D geometry: sky pixels get no 3D label
  (a sky pixel with a point, e.g. at a roof's edge, would otherwise always be told "building"). Optional sky
  teacher (a frozen copy of the 2D teacher taken at cmc_start) labels pixels without a point whose sky-teacher
  class has no 3D geometry, weighted by its max prob.
- With method.class_balance_3d = p > 0, the 3D weak-label CE weighs each class by its share of the training
  scenes' labeled points ** -p.
- L_2D = L_base2D + lambda_2D L_C2D, L_3D = L_base3D + lambda_3D L_C3D with lambda ramped from cmc_start
  (lambda_3D from cmc_3d_start when set).
Inference and export: the 2D student alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from recon.errors import InputError
from rewis.ema import make_teacher
from rewis.losses import (IGNORE_INDEX, ClassMap, class_balanced_weights, partial_consistency, ramp, soft_targets,
                          weighted_ce)
from rewis.modes.base import Stage, StepInfo, adamw
from rewis.modes.ema import EMAMethod, EMAMode


@dataclass
class Rewis3dMethod(EMAMethod):
    ema_max_3d: float | None = None  # a_max of the 3D teacher; None = ema_max (short runs want a faster 3D teacher)
    cmc_start: int = 0  # optimizer step where cross-modal consistency starts
    cmc_ramp: int = 0  # steps of the linear ramp from 0 to lambda_max
    cmc_3d_start: int | None = None  # start of the 2D -> 3D term alone; None = cmc_start (later keeps the 2D
    #                                   teacher's blind spots out of the 3D network while it learns its own labels)
    lambda_2d: float = 0.075  # 3D -> 2D
    lambda_3d: float = 0.125  # 2D -> 3D
    use_pred_conf: bool = True  # CMC weights include the teacher's max prob
    use_recon_conf: bool = True  # CMC weights include the reconstruction confidence r_i
    sky_teacher: bool = False  # frozen 2D teacher copy from cmc_start fills no-3D pixels without a point
    class_balance_3d: float = 0.5  # p > 0: the 3D network's weak-label CE weighs each class by its share of the
    #                                 training scenes' labeled points ** -p (rare classes such as person are otherwise
    #                                 never learnt in 3D, and the 3D teacher then unteaches them to the 2D network;
    #                                 +0.8 / +1.8 mIoU on street / room, benchmarks/RESULTS.md); 0: plain CE (Rewis3d)

    def check(self, where: str) -> None:
        super().check(where)
        if not 0 <= self.class_balance_3d <= 1:
            raise InputError(f"{where}: method.class_balance_3d is {self.class_balance_3d}; use a power in [0, 1] "
                             "(0: plain CE, 0.5: the default, 1: every class weighs the same)")
        for key in ("cmc_start", "cmc_ramp", "cmc_3d_start"):
            value = getattr(self, key)
            if value is not None and value < 0:
                raise InputError(f"{where}: key 'method.{key}' is {value}; a step count must be >= 0")


class PointMLP(nn.Module):
    """A point-wise stand-in for the sparse 3D U-Net (same output dict): per-point MLP + per-sample max-pooled
    context. Input features: xyz and rgb."""

    def __init__(self, in_channels: int, num_classes: int, channels: int = 32):
        super().__init__()
        c = channels
        self.local = nn.Sequential(nn.Linear(in_channels, c), nn.LayerNorm(c), nn.ReLU(), nn.Linear(c, 2 * c), nn.ReLU())
        self.head = nn.Sequential(nn.Linear(4 * c, 2 * c), nn.LayerNorm(2 * c), nn.ReLU(), nn.Linear(2 * c, num_classes))

    def forward(self, xyz: torch.Tensor, features: torch.Tensor, batch: torch.Tensor) -> dict:
        h = self.local(torch.cat([xyz, features], 1))
        nb = int(batch.max()) + 1 if batch.numel() else 1
        pooled = h.new_full((nb, h.shape[1]), -1e4).scatter_reduce(0, batch[:, None].expand_as(h), h, "amax")
        feats = torch.cat([h, pooled[batch]], 1)
        return {"logits": self.head(feats), "features": feats, "multiscale": []}


def build_net3d(cfg, num_classes: int) -> nn.Module:
    """The configured 3D network mapping (xyz, rgb, batch) to per-point logits of the 3D classes: the sparse
    voxel U-Net of rewis/net3d.py, or the point-wise MLP stand-in (kind: mlp; tests and quick runs)."""
    if cfg.kind == "sparse_unet":
        from rewis.net3d import SparseUNet3D

        return SparseUNet3D(num_classes=num_classes, in_channels=6, voxel_size=cfg.voxel_size,
                            base_channels=cfg.channels, **cfg.options)
    return PointMLP(6, num_classes, cfg.channels)


def weak_counts_3d(scenes, classmap: ClassMap) -> torch.Tensor:
    """Labeled points per 3D class over scenes' accumulated weak labels."""
    counts = torch.zeros(classmap.num_3d, dtype=torch.long)
    for scene in scenes:
        weak = classmap.to_3d(torch.from_numpy(scene.cloud.weak_label.astype(np.int64)))
        counts += torch.bincount(weak[weak != IGNORE_INDEX], minlength=classmap.num_3d)
    return counts


def run_net3d(net: nn.Module, xyz: torch.Tensor, rgb: torch.Tensor, batch: torch.Tensor) -> dict:
    return net(xyz, rgb, batch)


class Rewis3dMode(EMAMode):
    Method = Rewis3dMethod
    needs_points = True

    def __init__(self, cfg, classes):
        super().__init__(cfg, classes)
        self.classmap = ClassMap(classes.num_classes, classes.no_3d_ids)
        self.students["3d"] = build_net3d(cfg.net3d, self.classmap.num_3d)
        self.teachers["3d"] = make_teacher(self.students["3d"])
        self.sky = None
        self.class_weight_3d = None  # set by train_data when method.class_balance_3d > 0 (the default)
        if cfg.method.sky_teacher and self.classmap.no_3d:
            self.teachers["sky"] = make_teacher(self.students["2d"])
            self.sky = SkyState()

    def train_data(self, stage: Stage):
        train, collate = super().train_data(stage)
        power = self.cfg.method.class_balance_3d
        if power:
            self.class_weight_3d = class_balanced_weights(weak_counts_3d(train.scenes, self.classmap), power)
        return train, collate

    def optimizers(self, total_steps: int) -> dict:
        out = super().optimizers(total_steps)
        out["3d"] = adamw(self.students["3d"], self.cfg.optim3d, total_steps)
        return out

    def ema_max(self, name: str) -> float:
        m = self.cfg.method
        return m.ema_max_3d if name == "3d" and m.ema_max_3d is not None else m.ema_max

    def state_objects(self) -> dict:
        return {"sky_state": self.sky} if self.sky is not None else {}

    def losses(self, batch: dict, info: StepInfo) -> dict:
        m = self.cfg.method
        images, pts, links = batch["image"], batch["points"], batch["links"]
        # 2D branch (as mode ema)
        s2 = self.logits_2d(self.students["2d"], self.student_view(images))
        t2 = self.teacher_logits_2d(images)
        out = self.base_2d(s2, t2, batch["label"])
        # 3D branch: student on augmented points, teacher on the originals
        s3 = run_net3d(self.students["3d"], pts["xyz_aug"], pts["rgb"], pts["batch"])["logits"]
        with torch.no_grad():
            t3 = run_net3d(self.teacher("3d"), pts["xyz"], pts["rgb"], pts["batch"])["logits"]
        weight = None if self.class_weight_3d is None else self.class_weight_3d.to(s3.device)
        ce3, cons3, w3 = partial_consistency(s3, t3, self.classmap.to_3d(pts["weak"]), m.beta,
                                             m.reliability_threshold, kl_over_classes=False, class_weight=weight)
        out["3d/ce"], out["3d/consistency"] = ce3, cons3
        self.logs["3d/w_T"] = w3.detach()
        # cross-modal consistency
        lam2, lam3 = self.cmc_weights(info.step)
        self.logs["lambda_2d"], self.logs["lambda_3d"] = lam2, lam3
        if self.sky is not None and info.step >= m.cmc_start and not self.sky.taken:
            self.teachers["sky"].load_state_dict(self.teachers["2d"].state_dict())
            self.sky.taken = True
        c2d, c3d = self.cmc(s2, t2, s3, t3, pts, links, images)
        out["2d/cmc"], out["3d/cmc"] = lam2 * c2d, lam3 * c3d
        return out

    def cmc_weights(self, step: int) -> tuple[float, float]:
        """(lambda_2D, lambda_3D) at an optimizer step: each ramps linearly over cmc_ramp steps from its start."""
        m = self.cfg.method
        start_3d = m.cmc_start if m.cmc_3d_start is None else m.cmc_3d_start
        return ramp(step, m.cmc_start, m.cmc_ramp, m.lambda_2d), ramp(step, start_3d, m.cmc_ramp, m.lambda_3d)

    def cmc(self, s2, t2, s3, t3, pts, links, images) -> tuple[torch.Tensor, torch.Tensor]:
        """(L_C2D, L_C3D) before the lambda weights; logs the link diagnostics on the way."""
        m = self.cfg.method
        b, v, u, p = links["batch"], links["v"], links["u"], links["point"]
        s2_px = s2.permute(0, 2, 3, 1)[b, v, u]  # (L, C) student 2D logits at the linked pixels
        t2_px = t2.permute(0, 2, 3, 1)[b, v, u]
        r = pts["conf"][p] if m.use_recon_conf else torch.ones_like(pts["conf"][p])
        y2, p2 = soft_targets(t2_px)
        y3, p3 = soft_targets(t3[p])
        y3 = self.classmap.from_3d(y3)
        c3 = (p2 if m.use_pred_conf else torch.ones_like(p2)) * r  # 2D -> 3D
        c2 = (p3 if m.use_pred_conf else torch.ones_like(p3)) * r  # 3D -> 2D
        c2 = c2 * ~self.classmap.no_3d_mask(y2)
        l_c3d = weighted_ce(s3[p], self.classmap.to_3d(y2), c3)
        self.log_diagnostics(y2, y3, pts, p, s2.shape)
        logits, target, weight = [s2_px], [y3], [c2]
        if self.sky is not None and self.sky.taken:
            extra = self.sky_pixels(s2, b, v, u, images)
            logits.append(extra[0]), target.append(extra[1]), weight.append(extra[2])
        l_c2d = weighted_ce(torch.cat(logits), torch.cat(target), torch.cat(weight))
        return l_c2d, l_c3d

    @torch.no_grad()
    def log_diagnostics(self, label_2d, label_3d, pts, point, shape) -> None:
        """Share of crop pixels with a link; with ground truth in the scene, each teacher's accuracy at the
        links (label_2d / label_3d: the teachers' classes at the linked pixels / points)."""
        self.logs["links/pixel_share"] = len(point) / max(1, shape[0] * shape[2] * shape[3])
        if "truth" not in pts or not len(point):
            return
        truth = pts["truth"][point]
        known = truth != 255
        if known.any():
            self.logs["links/acc_3d_teacher"] = (label_3d == truth)[known].float().mean()
            self.logs["links/acc_2d_teacher"] = (label_2d == truth)[known].float().mean()

    @torch.no_grad()
    def _sky_labels(self, images):
        return soft_targets(self.logits_2d(self.teacher("sky"), images).permute(0, 2, 3, 1).reshape(-1, self.classes.num_classes))

    def sky_pixels(self, s2, b, v, u, images):
        """Pixels without a point whose sky-teacher class has no 3D geometry: (logits, labels, weights)."""
        bsz, c, h, w = s2.shape
        linked = torch.zeros(bsz * h * w, dtype=torch.bool, device=s2.device)
        linked[(b * h + v) * w + u] = True
        sky_label, prob = self._sky_labels(images)
        keep = ~linked & self.classmap.no_3d_mask(sky_label)
        flat = s2.permute(0, 2, 3, 1).reshape(-1, c)
        return flat[keep], sky_label[keep], prob[keep]


class SkyState:
    """Whether the sky teacher has been taken (checkpointed with the run)."""

    def __init__(self):
        self.taken = False

    def state_dict(self) -> dict:
        return {"taken": torch.tensor(self.taken)}

    def load_state_dict(self, state: dict) -> None:
        self.taken = bool(state["taken"])
