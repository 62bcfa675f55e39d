"""Base of the LiDAR modes (docs/METHODS.md section 4): their product is a 3D point network.

Training data are scans (rewis/scans.py) of `data.train`; `data.val` scans with dense labels are scored with
one point confusion matrix (rewis/model3d.py, the evaluator of `rewis eval` on a 3D model); the export is a
3D model folder. The network is the sparse voxel U-Net of `net3d` (voxel size, width, options); its inputs
are xyz plus the columns of `method.features` (remission: 1; rgb: 4, rewis/scan_colour.py). Weak modes train on
the weak labels named by `method.weak_labels` (scribbles | points | semi, written by `rewis labels --lidar`);
`lidar_full` on the dense labels. Classes without 3D geometry (sky) get no network output.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from recon.dataset import IGNORE_INDEX
from recon.errors import InputError
from rewis.losses import ClassMap, lovasz_softmax
from rewis.modes.base import Mode, Stage, adamw


@dataclass
class LidarMethod:
    label_map: str = "auto"  # auto | ids (the folders' classes.json) | semantickitti (raw ids, learning map)
    features: list[str] = field(default_factory=lambda: ["remission"])  # per-point inputs besides xyz: remission, rgb
    weak_labels: str = "scribbles"  # weak modes: which weak labels train them (scribbles | points | semi)
    max_points: int = 40000  # points drawn per training scan (0 = every point)
    lovasz: float = 1.0  # weight of the Lovasz-softmax term on the labelled points

    def check(self, where: str) -> None:
        from rewis.scans import FEATURES, LABEL_MAPS, WEAK_KINDS

        if self.label_map not in LABEL_MAPS:
            raise InputError(f"{where}: key 'method.label_map' is {self.label_map!r}; choose one of "
                             f"{', '.join(LABEL_MAPS)}")
        unknown = sorted(set(self.features) - set(FEATURES))
        if unknown:
            raise InputError(f"{where}: key 'method.features' holds {unknown}; known: {', '.join(FEATURES)}")
        if self.weak_labels not in WEAK_KINDS:
            raise InputError(f"{where}: key 'method.weak_labels' is {self.weak_labels!r}; choose one of "
                             f"{', '.join(WEAK_KINDS)}")
        if len(set(self.features)) != len(self.features):
            raise InputError(f"{where}: key 'method.features' lists a feature twice: {self.features}")
        if self.max_points < 0 or self.lovasz < 0:
            raise InputError(f"{where}: method.max_points and method.lovasz must be >= 0")


class Mode3D(Mode):
    Method = LidarMethod
    label_kind = "labels"  # which labels train the network: labels (dense) | scribbles (weak: method.weak_labels)

    def __init__(self, cfg, classes):
        super().__init__(cfg, classes)
        if cfg.net3d.kind != "sparse_unet":
            raise InputError(f"{cfg.source or 'config'}: mode {cfg.mode} exports a sparse U-Net; set "
                             "net3d.kind=sparse_unet")
        self.classmap = ClassMap(classes.num_classes, classes.no_3d_ids)
        self.scan_folders = self.train_folders(cfg)  # found once: every stage's data and the export use them
        self.students["3d"] = self.build_net()

    @classmethod
    def labels_used(cls, cfg) -> str:
        """The labels of the scans that train this mode: `labels` (dense) or the weak kind of method.weak_labels."""
        return "labels" if cls.label_kind == "labels" else cfg.method.weak_labels

    @property
    def weak_kind(self) -> str:
        return self.labels_used(self.cfg)

    @classmethod
    def read_classes(cls, cfg):
        folders = cls.train_folders(cfg)
        for folder in folders:
            folder.check(cls.labels_used(cfg), tuple(cfg.method.features))
        return folders[0].classes

    @staticmethod
    def train_folders(cfg):
        from rewis.scans import scan_folders

        return scan_folders(cfg.data.train, cfg.method.label_map, f"{cfg.source or 'config'}: data.train")

    def build_net(self):
        from rewis.net3d import SparseUNet3D
        from rewis.scans import feature_channels

        n = self.cfg.net3d
        in_channels = 3 + feature_channels(self.cfg.method.features)
        return SparseUNet3D(num_classes=self.classmap.num_3d, in_channels=in_channels,
                            voxel_size=n.voxel_size, base_channels=n.channels, **n.options)

    def dataset(self, pseudo: Path | None = None):
        from rewis.scans import ScanAugment, ScanDataset, collate_scans

        d, m = self.cfg.data, self.cfg.method
        aug = ScanAugment(d.rotate_up, tuple(d.scale3d), d.flip3d, d.jitter_sigma, d.jitter_clip)
        data = ScanDataset(self.scan_folders, self.weak_kind, tuple(m.features), m.max_points,
                           self.cfg.seed, aug, pseudo)
        return data, collate_scans

    def train_data(self, stage: Stage):
        return self.dataset()

    def optimizers(self, total_steps: int) -> dict:
        return {"3d": adamw(self.students["3d"], self.cfg.optim3d, total_steps)}

    def run_net(self, net, xyz: torch.Tensor, batch: dict) -> torch.Tensor:
        features = batch["features"] if self.cfg.method.features else None
        return net(xyz, features, batch["batch"])["logits"]

    def supervised(self, logits: torch.Tensor, target: torch.Tensor) -> dict:
        """CE (+ Lovasz) of 3D logits against class-id targets."""
        target = self.classmap.to_3d(target)
        out = {"3d/ce": torch.nn.functional.cross_entropy(logits.float(), target, ignore_index=IGNORE_INDEX)}
        out.update(self.lovasz_term(logits, target))
        return out

    def lovasz_term(self, logits: torch.Tensor, target_3d: torch.Tensor) -> dict:
        """{"3d/lovasz": weighted Lovasz-softmax} against 3D-head targets, or {} with method.lovasz 0."""
        weight = self.cfg.method.lovasz
        return {"3d/lovasz": weight * lovasz_softmax(logits, target_3d)} if weight else {}

    def losses(self, batch: dict, info) -> dict:
        return self.supervised(self.run_net(self.students["3d"], batch["xyz_aug"], batch), batch["label"])

    # ------------------------------------------------------------------------------------------ product
    def model3d(self, net=None):
        from rewis.model3d import Model3D

        head = self.classmap.from_3d(torch.arange(self.classmap.num_3d)).numpy().astype(np.uint8)
        return Model3D(net if net is not None else self.students["3d"], self.classes, head,
                       tuple(self.cfg.method.features), self.scan_folders[0].label_map)

    def evaluate(self, device: torch.device) -> dict | None:
        from rewis.model3d import score_scans
        from rewis.scans import scan_folders

        if not self.cfg.data.val:
            return None
        folders = scan_folders(self.cfg.data.val, self.cfg.method.label_map, "data.val")
        return score_scans(self.model3d(), folders, device)

    def export(self, folder: Path, card: dict) -> Path:
        from rewis.model3d import export_model3d

        return export_model3d(self.model3d(), folder, card)
