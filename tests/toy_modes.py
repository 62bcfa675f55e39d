"""Two modes written only for the tests of the mode contract: they live here, not in rewis/, and reach the
trainer through the MODES table alone (tests add them with monkeypatch.setitem), as a new mode would.

- `ToyLidarMode`: per-point classes on the scans of synthetic LiDAR sequences (SEQ/lidar/velodyne + labels),
  trained on a random tenth of each scan's labels, evaluated with one point confusion matrix over the val
  scans, exported as a 3D model folder (config.json + model.safetensors).
- `ToyStagedMode`: the same, in three stages: train -> offline pseudo-labelling of every training scan into
  RUN/stages/retrain/ -> retrain from fresh weights on the pseudo-labels.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch.utils.data import Dataset

from rewis.ema import unwrap
from rewis.lidar_scribbles import read_scan
from rewis.modes import Mode, OfflineContext, Stage, StepInfo, adamw
from rewis.modes.rewis3d import PointMLP
from segment.metrics import ConfusionMeter

POINTS_PER_SAMPLE = 512


def scans(folders: list[str]) -> list[tuple[Path, str]]:
    lidar = [Path(f) / "lidar" for f in folders]
    return [(folder, p.stem) for folder in lidar for p in sorted((folder / "velodyne").glob("*.bin"))]


class ScanSamples(Dataset):
    """Random point subsets of scans; labels: a random tenth of each scan's labels, or its pseudo-labels."""

    def __init__(self, items: list[tuple[Path, str]], seed: int, pseudo: Path | None = None):
        self.items, self.seed, self.pseudo = items, seed, pseudo

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: int) -> dict:
        epoch, k = divmod(int(key), len(self))
        folder, scan = self.items[k]
        points, labels = read_scan(folder, scan)
        if self.pseudo is not None:
            labels = np.load(self.pseudo / f"{k}.npy")
        else:
            labels = np.where(np.random.default_rng([self.seed, k]).random(len(labels)) < 0.1, labels, 255)
        pick = np.random.default_rng([self.seed, epoch, k]).choice(len(points), POINTS_PER_SAMPLE, replace=False)
        return {"points": torch.from_numpy(points[pick]), "label": torch.from_numpy(labels[pick].astype(np.int64))}


def collate_scans(samples: list[dict]) -> dict:
    return {"points": torch.cat([s["points"] for s in samples]), "label": torch.cat([s["label"] for s in samples]),
            "batch": torch.cat([torch.full((len(s["label"]),), b) for b, s in enumerate(samples)])}


@dataclass
class ToyLidarMethod:
    hidden: int = 16


class ToyLidarMode(Mode):
    Method = ToyLidarMethod

    def __init__(self, cfg, classes):
        super().__init__(cfg, classes)
        self.students["3d"] = PointMLP(4, classes.num_classes, cfg.method.hidden)

    def train_data(self, stage: Stage):
        return ScanSamples(scans(self.cfg.data.train), self.cfg.seed), collate_scans

    def optimizers(self, total_steps: int) -> dict:
        return {"3d": adamw(self.students["3d"], self.cfg.optim3d, total_steps)}

    def logits(self, net, points: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        return net(points[:, :3], points[:, 3:], batch)["logits"]

    def losses(self, batch: dict, info: StepInfo) -> dict:
        logits = self.logits(self.students["3d"], batch["points"], batch["batch"])
        return {"3d/ce": F.cross_entropy(logits, batch["label"], ignore_index=255)}

    @torch.no_grad()
    def predict_scan(self, folder: Path, scan: str, device) -> tuple[np.ndarray, np.ndarray]:
        points, labels = read_scan(folder, scan)
        x = torch.from_numpy(points).to(device)
        pred = self.logits(unwrap(self.students["3d"]), x, torch.zeros(len(x), dtype=torch.long, device=device))
        return pred.argmax(1).cpu().numpy(), labels

    def evaluate(self, device) -> dict | None:
        if not self.cfg.data.val:
            return None
        meter = ConfusionMeter(self.classes.num_classes)
        for folder, scan in scans(self.cfg.data.val):
            pred, labels = self.predict_scan(folder, scan, device)
            meter.update(torch.from_numpy(pred), torch.from_numpy(labels.astype(np.int64)))
        return meter.summary(list(self.classes.names))

    def export(self, folder: Path, card: dict) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        net = unwrap(self.students["3d"])
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(folder / "model.safetensors"))
        (folder / "config.json").write_text(json.dumps({"kind": "toy_point_mlp", "classes": list(self.classes.names),
                                                        "input": ["x", "y", "z", "remission"],
                                                        "hidden": self.cfg.method.hidden, "card": card}))
        return folder


@dataclass
class ToyStagedMethod(ToyLidarMethod):
    first_steps: int = 3  # steps of stage "train"; stage "retrain" gets the rest of run.max_steps


class ToyStagedMode(ToyLidarMode):
    Method = ToyStagedMethod
    offline_runs = 0  # pseudo-labelling passes made in this process (the tests read it)

    def stages(self) -> list[Stage]:
        first = self.cfg.method.first_steps
        return [Stage("train", first),
                Stage("retrain", self.cfg.run.max_steps - first, fresh_students=True, fresh_optimizers=True,
                      offline=self.pseudo_label)]

    def begin_stage(self, stage: Stage, products: dict[str, Path]) -> None:
        self.pseudo = products.get("retrain") if stage.name == "retrain" else None

    def train_data(self, stage: Stage):
        return ScanSamples(scans(self.cfg.data.train), self.cfg.seed, self.pseudo), collate_scans

    def pseudo_label(self, ctx: OfflineContext) -> None:
        type(self).offline_runs += 1
        for k, (folder, scan) in enumerate(scans(self.cfg.data.train)):
            pred, _ = self.predict_scan(folder, scan, ctx.device)
            np.save(ctx.out / f"{k}.npy", pred.astype(np.uint8))
