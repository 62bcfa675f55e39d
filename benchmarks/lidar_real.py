"""Sanity check of the LiDAR modes on real data: train on one shared SemanticKITTI scan, score another.

shared/data/semantickitti_scans (SemanticKITTI, Behley et al., CC BY-NC-SA 4.0; via Open3D-ML): scan 000700
trains, 000750 is scored (per-class point IoU). The scans are copied into --work (shared/ stays read-only);
scribbles of the training scan come from rewis.lidar_scribbles.make_lidar_scribbles (`rewis labels --kind
scribbles`). Modes lidar_full (dense labels), lidar_weak (CE on scribbles) and scribblekitti (mean teacher,
pseudo-labels, retraining) at one small CPU budget with a moderate sparse U-Net. One training scan: a sanity
figure (does each mode learn real geometry, does the weak/full order hold), not a benchmark.

    .venv/bin/python benchmarks/lidar_real.py [--steps 100] [--threads 2] [--json benchmarks/results/lidar_real.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SCANS = ROOT.parent / "shared" / "data" / "semantickitti_scans"
MODES = ("lidar_full", "lidar_weak", "scribblekitti")
NET = ["net3d.voxel_size=0.2", "net3d.channels=16", "net3d.options.channel_multipliers=[1,2,4,8]",
       "net3d.options.blocks=[1,1,1,1]"]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=100, help="optimizer steps per mode (batch of one scan)")
    p.add_argument("--max-points", type=int, default=30000, help="points drawn per training step")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--machine", default="2-core CPU, shared", help="written to the JSON")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "work" / "lidar_real")
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "lidar_real.json")
    return p.parse_args(argv)


def copy_scan(scan: str, out: Path) -> Path:
    """A points/ + labels/ .npy folder holding one shared scan."""
    for kind in ("points", "labels"):
        (out / kind).mkdir(parents=True, exist_ok=True)
        shutil.copy(SCANS / kind / f"{scan}.npy", out / kind)
    return out


def prepare(work: Path) -> tuple[Path, Path, str]:
    from rewis.lidar_scribbles import scribble_lidar

    if work.exists():
        shutil.rmtree(work)
    train, val = copy_scan("000700", work / "train"), copy_scan("000750", work / "val")
    coverage = scribble_lidar(train, progress=False)
    return train, val, coverage.summary()


def train_mode(mode: str, train: Path, val: Path, run: Path, args) -> dict:
    from rewis.model3d import load_model3d, score_scans
    from rewis.modes import load_config
    from rewis.scans import find_scan_folders
    from rewis.trainer import train as train_run

    overrides = [f"mode={mode}", f"data.train=[{train}]", f"run.out={run}",
                 f"run.max_steps={args.steps}", f"run.cpu_threads={args.threads}", "run.log_every=50",
                 "data.batch_size=1", f"method.max_points={args.max_points}", "optim3d.lr=0.01", *NET]
    start = time.perf_counter()
    train_run(load_config(ROOT / "configs" / "tiny_lidar.yaml", overrides))
    seconds = time.perf_counter() - start
    model = load_model3d(run)
    report = score_scans(model, find_scan_folders(val))
    stats = run / "stages" / "retrain" / "stats.json"  # scribblekitti's pseudo-labels
    return {"mode": mode, "seconds": round(seconds, 1), "miou": report["miou"], "iou": report["iou"],
            "gt_points": report["gt_points"], "parameters": sum(p.numel() for p in model.net.parameters()),
            "pseudo_labels": json.loads(stats.read_text()) if stats.is_file() else None}


def format_table(results: list[dict]) -> str:
    import math

    names = [n for n, count in results[0]["gt_points"].items() if count]
    lines = [f"| class (val points) | {' | '.join(r['mode'] for r in results)} |",
             f"|---|{'---:|' * len(results)}"]
    for name in names:
        cells = [r["iou"].get(name) for r in results]
        text = ["-" if c is None or math.isnan(c) else f"{100 * c:.1f}" for c in cells]
        lines.append(f"| {name} ({results[0]['gt_points'][name]}) | {' | '.join(text)} |")
    mious = [f"**{100 * r['miou']:.2f}**" for r in results]
    lines.append(f"| **mIoU** | {' | '.join(mious)} |")
    lines.append(f"| train seconds | {' | '.join(str(r['seconds']) for r in results)} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    import torch

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    train, val, coverage = prepare(args.work)
    print(coverage)
    results = [train_mode(mode, train, val, args.work / "runs" / mode, args) for mode in args.modes]
    table = format_table(results)
    print(table)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    record = {"date": time.strftime("%Y-%m-%d"), "machine": f"{args.machine} ({platform.machine()})",
              "command": " ".join(["python", *sys.argv]), "steps": args.steps, "max_points": args.max_points,
              "threads": args.threads, "net": NET, "scribbles": coverage, "results": results, "table": table}
    args.json.write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
