"""What the 3D network alone can learn from a benchmark's scenes: it trains on the accumulated weak labels only
(no 2D, no CMC) and is scored per class against the scenes' ground truth at the links, the points whose labels
cross-modal consistency would hand to the 2D network. A cheap probe (minutes, not the hour of a rewis3d run) for
3D settings such as the voxel size or class-balanced CE (`--class-balance P`: rewis3d's method.class_balance_3d):
a class the 3D network cannot learn here is a class its teacher will push the 2D network away from.

    .venv/bin/python benchmarks/net3d_labels.py RUN/config.yaml --voxel-sizes 0.25 0.1 --seeds 0 1 --steps 300
    .venv/bin/python benchmarks/net3d_labels.py RUN/config.yaml --voxel-sizes 0.25 --class-balance 0 0.5

RUN/config.yaml: the resolved config of a rewis3d run of benchmarks/quality.py (it names the scenes and the 3D
network); the 3D optimiser is AdamW with OneCycle at optim3d.lr, batch data.batch_size, one torch thread.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recon.errors import InputError  # noqa: E402
from rewis.modes import load_config  # noqa: E402
from rewis.data import TrainDataset, collate  # noqa: E402
from rewis.losses import ClassMap, class_balanced_weights  # noqa: E402
from rewis.modes.rewis3d import build_net3d, weak_counts_3d  # noqa: E402
from segment.metrics import confusion_matrix, iou_per_class, mean_iou  # noqa: E402

EVAL_BATCHES = 15


def probe(cfg, dataset: TrainDataset, voxel: float, seed: int, steps: int, balance: float = 0.0) -> dict:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    cfg.net3d.voxel_size = voxel
    classes = dataset.classes
    classmap = ClassMap(classes.num_classes, classes.no_3d_ids)
    net = build_net3d(cfg.net3d, classmap.num_3d)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.optim3d.lr, weight_decay=cfg.optim3d.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.optim3d.lr, total_steps=steps, pct_start=0.15)
    batch_size = cfg.data.batch_size
    weights = class_balanced_weights(weak_counts_3d(dataset.scenes, classmap), balance) if balance else None
    start = time.perf_counter()
    for _ in range(steps):
        points = collate([dataset[int(i)] for i in rng.integers(0, len(dataset), batch_size)])["points"]
        logits = net(points["xyz_aug"], points["rgb"], points["batch"])["logits"]
        loss = torch.nn.functional.cross_entropy(logits, classmap.to_3d(points["weak"]), weights,
                                                 ignore_index=255)
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
    net.eval()
    n = classes.num_classes
    confusion = torch.zeros(n, n, dtype=torch.long)
    with torch.no_grad():
        for _ in range(EVAL_BATCHES):  # other epochs' samples: other crops, point draws and augmentations
            batch = collate([dataset[len(dataset) * 7 + int(i)] for i in rng.integers(0, len(dataset), batch_size)])
            points, linked = batch["points"], batch["links"]["point"]
            pred = classmap.from_3d(net(points["xyz"], points["rgb"], points["batch"])["logits"].argmax(1))[linked]
            confusion += confusion_matrix(pred, points["truth"][linked], n)
    iou = iou_per_class(confusion) * 100
    return {"voxel": voxel, "seed": seed, "steps": steps, "class_balance": balance,
            "minutes": round((time.perf_counter() - start) / 60, 1),
            "miou": round(100 * mean_iou(confusion), 2),
            "iou": {name: round(float(v), 1) for name, v in zip(classes.names, iou)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path, help="resolved config.yaml of a rewis3d run (quality.py)")
    parser.add_argument("--voxel-sizes", type=float, nargs="+", default=[0.25, 0.1])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--class-balance", type=float, nargs="+", default=[0.0],
                        help="powers p of class-balanced CE weights (label share ** -p); 0: plain CE")
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    try:
        cfg = load_config(args.config)
        dataset = TrainDataset(cfg.data, points=True, seed=0)
    except InputError as error:
        parser.exit(2, f"{error}\n")
    if not dataset.scenes or dataset.scenes[0].cloud.label is None:
        parser.exit(2, f"{args.config}: its scenes carry no ground-truth point labels (synthetic scenes do)\n")
    rows = [probe(cfg, dataset, voxel, seed, args.steps, balance) for voxel in args.voxel_sizes
            for balance in args.class_balance for seed in args.seeds]
    names = list(dataset.classes.names)
    print("| voxel (m) | class balance | seed | mIoU at the links | " + " | ".join(names) + " |")
    print("|---" * (4 + len(names)) + "|")
    for r in rows:
        cells = " | ".join(f"{r['iou'][k]:.1f}" for k in names)
        print(f"| {r['voxel']} | {r['class_balance']} | {r['seed']} | {r['miou']:.2f} | {cells} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"config": str(args.config), "machine": f"{platform.machine()} "
                                         f"{torch.get_num_threads()} thread", "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
