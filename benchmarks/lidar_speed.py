"""Speed of the LiDAR modes on full-size scans: training scans/s and peak memory of `lidar_full` (data loading
included: the trainer's own loader, every point of 120k-point scans), and predict points/s of the exported model.

Scans: the shared real SemanticKITTI scan (../shared/data/semantickitti_rawids, 123,389 points with raw label ids)
written as a KITTI-layout folder of --scans copies, each turned about the vertical axis by another angle. Nets:
- `preset`: the 3D net of configs/street_lidar.yaml (1.8 M parameters, 0.2 m voxels),
- `minkunet`: a MinkUNet-size sparse U-Net (25 M parameters, 5 levels of 32-256 channels, 0.05 m voxels), the
  size the known sparse-convolution stacks are quoted at (GPU; minutes per step on a CPU).
Each (net, device) runs in its own child process, so peak memory is its own (CPU: peak RSS; CUDA:
torch.cuda.max_memory_allocated). Step times are the median over the steps after --warmup; a step is timed from
one optimizer step to the next through the real trainer (rewis.trainer), so loading and collating count.

    python benchmarks/lidar_speed.py [--nets preset] [--device cpu|cuda] [--steps 8] [--batch 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SCAN = ROOT.parent / "shared" / "data" / "semantickitti_rawids"
NETS = {
    "preset": [],  # configs/street_lidar.yaml as it is
    "minkunet": ["net3d.voxel_size=0.05", "net3d.channels=32", "net3d.options.channel_multipliers=[1,2,4,8,8]",
                 "net3d.options.blocks=[1,1,2,2,2]"],
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nets", nargs="+", default=["preset"], choices=list(NETS))
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--steps", type=int, default=8, help="timed training steps (after --warmup)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch", type=int, default=2, help="scans per step")
    p.add_argument("--scans", type=int, default=4, help="distinct scans in the training folder")
    p.add_argument("--workers", type=int, default=2, help="data loader workers (data.num_workers)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: the machine's cores)")
    p.add_argument("--predict-reps", type=int, default=3)
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "lidar_speed.json")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def write_scans(folder: Path, count: int) -> None:
    import numpy as np

    points = np.fromfile(SCAN / "000000.bin", "<f4").reshape(-1, 4)
    labels = np.fromfile(SCAN / "000000.label", "<u4")
    (folder / "velodyne").mkdir(parents=True)
    (folder / "labels").mkdir()
    for i in range(count):
        a = 2 * np.pi * i / count
        turn = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]], np.float32)
        scan = points.copy()
        scan[:, :2] = points[:, :2] @ turn.T
        scan.tofile(folder / "velodyne" / f"{i:06d}.bin")
        labels.tofile(folder / "labels" / f"{i:06d}.label")


def child(net: str, args) -> dict:
    work = Path(tempfile.mkdtemp(prefix="lidar_speed_"))
    try:
        return measure(net, args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure(net: str, args, work: Path) -> dict:
    import numpy as np
    import torch

    from rewis import trainer as trainer_module
    from rewis.model3d import load_model3d
    from rewis.modes import load_config

    threads = args.threads or os.cpu_count() or 1
    write_scans(work / "scans", args.scans)
    steps = args.warmup + args.steps
    cfg = load_config(ROOT / "configs" / "street_lidar.yaml", [
        "mode=lidar_full", f"run.out={work / 'run'}", f"data.train=[{work / 'scans'}]", f"run.max_steps={steps}",
        "method.max_points=0", f"data.batch_size={args.batch}", f"data.num_workers={args.workers}",
        f"run.cpu_threads={threads}", f"run.cpu={args.device == 'cpu'}", "run.progress=false", *NETS[net]])
    stamps = []
    original = trainer_module.Trainer._after_step

    def timed(self, losses, bar):
        original(self, losses, bar)
        if args.device == "cuda":
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())

    trainer_module.Trainer._after_step = timed
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    trainer_module.train(cfg)
    step_s = statistics.median(np.diff(stamps[max(args.warmup - 1, 0):]))  # stamps: after each step
    model = load_model3d(work / "run" / "export", args.device)
    params = sum(p.numel() for p in model.net.parameters())
    points = np.fromfile(work / "scans" / "velodyne" / "000000.bin", "<f4").reshape(-1, 4)
    model.predict(points, args.device)  # warm-up
    times = []
    for _ in range(args.predict_reps):
        t = time.perf_counter()
        model.predict(points, args.device)
        if args.device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    predict_s = statistics.median(times)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if args.device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"net": net, "device": args.device, "params_m": params / 1e6, "points_per_scan": len(points),
            "batch": args.batch, "threads": threads, "step_s": step_s, "train_scans_per_s": args.batch / step_s,
            "peak_mb": peak, "rss_before_mb": rss_before / 1024, "predict_s": predict_s,
            "predict_points_per_s": len(points) / predict_s, "predict_scans_per_s": 1 / predict_s}


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args)))
        return 0
    rows = []
    for net in args.nets:
        cmd = [sys.executable, __file__, "--child", net, *sys.argv[1:]]
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        if done.returncode:
            print(done.stderr[-3000:], file=sys.stderr)
            return 1
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print("| net | device | params | points/scan | batch | step s | train scans/s | peak MB | predict points/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['net']} | {r['device']} ({r['threads']} threads) | {r['params_m']:.1f} M | "
              f"{r['points_per_scan']} | {r['batch']} | {r['step_s']:.2f} | {r['train_scans_per_s']:.2f} | "
              f"{r['peak_mb']:.0f} | {r['predict_points_per_s'] / 1e3:.0f} k |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
