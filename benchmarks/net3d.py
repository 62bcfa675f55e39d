"""Forward+backward time and peak memory of the 3D network (rewis.net3d.SparseUNet3D) on street-like clouds, for
each sparse-conv algorithm, against a point-wise MLP of similar width (no neighbourhoods: the floor).

Every (model, size) runs in its own subprocess so that the peak resident-memory increase is its own (CPU);
on CUDA the peak comes from torch.cuda.max_memory_allocated. Times are medians over --reps after one warm-up: wall seconds and process CPU seconds (the latter is
the steadier figure on a shared machine).

    .venv/bin/python benchmarks/net3d.py [--sizes 20000 60000 120000] [--voxel 0.1] [--reps 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rewis.net3d import PointMLP, SparseUNet3D  # noqa: E402

NUM_CLASSES = 8
VARIANTS = ("unet-auto", "unet-im2col", "unet-gather", "point-mlp")


def street_cloud(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Points on surfaces of a 60 x 20 x 8 m street: road, two facades, cars (boxes), poles, tree crowns."""
    g = torch.Generator().manual_seed(seed)

    def uniform(count, low, high):
        low, high = torch.tensor(low), torch.tensor(high)
        return low + (high - low) * torch.rand(count, 3, generator=g)

    share = {"ground": 0.45, "facades": 0.3, "cars": 0.12, "poles": 0.05, "trees": 0.08}
    counts = {k: int(v * n) for k, v in share.items()}
    counts["ground"] += n - sum(counts.values())
    ground = uniform(counts["ground"], [-30, -10, 0], [30, 10, 0.05])
    facades = uniform(counts["facades"], [-30, 9.8, 0], [30, 10, 8])
    facades[: len(facades) // 2, 1] *= -1
    car_at = uniform(12, [-28, -6, 0], [28, 6, 0])
    cars = car_at[torch.randint(0, 12, (counts["cars"],), generator=g)] + uniform(counts["cars"], [0, 0, 0],
                                                                                    [4.5, 1.8, 1.5])
    pole_at = uniform(10, [-30, 7, 0], [30, 8, 0])
    angle = 2 * torch.pi * torch.rand(counts["poles"], generator=g)
    poles = pole_at[torch.randint(0, 10, (counts["poles"],), generator=g)] + torch.stack(
        [0.1 * angle.cos(), 0.1 * angle.sin(), 6 * torch.rand(counts["poles"], generator=g)], dim=1)
    tree_at = uniform(8, [-30, -8, 4], [30, -7, 5])
    direction = torch.nn.functional.normalize(torch.randn(counts["trees"], 3, generator=g), dim=1)
    trees = tree_at[torch.randint(0, 8, (counts["trees"],), generator=g)] + 2 * direction
    xyz = torch.cat([ground, facades, cars, poles, trees]) + 0.01 * torch.randn(n, 3, generator=g)
    return xyz, torch.rand(n, 3, generator=g)


def build(variant: str, voxel: float):
    if variant == "point-mlp":
        return PointMLP(NUM_CLASSES)
    return SparseUNet3D(NUM_CLASSES, voxel_size=voxel, conv_algorithm=variant.split("-")[1])


def measure(variant: str, points: int, voxel: float, reps: int, device: str) -> dict:
    """One (variant, size) in this process: median forward+backward seconds and peak memory."""
    torch.manual_seed(0)
    xyz, rgb = (t.to(device) for t in street_cloud(points))
    labels = torch.randint(0, NUM_CLASSES, (points,), device=device)
    model = build(variant, voxel).to(device).train()

    def step():
        model.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(xyz, rgb)["logits"], labels).backward()
        if device == "cuda":
            torch.cuda.synchronize()

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    step()  # warm-up
    seconds, cpu_seconds = [], []
    for _ in range(reps):
        start, cpu_start = time.perf_counter(), time.process_time()
        step()
        seconds.append(time.perf_counter() - start)
        cpu_seconds.append(time.process_time() - cpu_start)
    if device == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024  # KiB on Linux
    voxels = None
    if variant != "point-mlp":
        from rewis.sparse_conv import build_hierarchy, voxelize

        levels, _ = build_hierarchy(voxelize(xyz, torch.zeros_like(labels), voxel).level,
                                    len(model.config.channels))
        voxels = [level.num_voxels for level in levels]
    return {"variant": variant, "points": points, "voxel_size": voxel, "device": device,
            "seconds_median": statistics.median(seconds), "seconds": seconds,
            "cpu_seconds_median": statistics.median(cpu_seconds), "peak_mb": round(peak_mb, 1),
            "parameters": sum(p.numel() for p in model.parameters()), "voxels_per_level": voxels}


def run_child(args, variant: str, points: int, device: str) -> dict:
    command = [sys.executable, __file__, "--child", variant, str(points), "--voxel", str(args.voxel),
               "--reps", str(args.reps), "--threads", str(args.threads), "--device", device]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        return {"variant": variant, "points": points, "device": device, "error": done.stderr.strip()[-400:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def print_table(rows: list[dict]) -> None:
    print(f"{'device':6} {'variant':12} {'points':>7} {'voxels L0..':>30} {'fwd+bwd s':>10} {'cpu s':>7} {'peak MB':>8}")
    for r in rows:
        if "error" in r:
            print(f"{r['device']:6} {r['variant']:12} {r['points']:>7}  failed: {r['error'][-120:]}")
            continue
        voxels = "-" if r["voxels_per_level"] is None else ",".join(map(str, r["voxels_per_level"]))
        print(f"{r['device']:6} {r['variant']:12} {r['points']:>7} {voxels:>30} {r['seconds_median']:>10.3f} {r['cpu_seconds_median']:>7.2f} "
              f"{r['peak_mb']:>8.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20000, 60000, 120000])
    parser.add_argument("--voxel", type=float, default=0.1)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: both when CUDA is available)")
    parser.add_argument("--child", nargs=2, metavar=("VARIANT", "POINTS"), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "net3d.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(measure(args.child[0], int(args.child[1]), args.voxel, args.reps, args.device)))
        return

    devices = [args.device] if args.device else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = [run_child(args, variant, points, device)
            for device in devices for points in args.sizes for variant in args.variants]
    print_table(rows)
    result = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": f"{platform.machine()}, "
              f"{torch.get_num_threads()} torch threads", "torch": torch.__version__, "voxel_size": args.voxel,
              "reps": args.reps, "cuda": "measured" if "cuda" in devices else "not measured (no GPU)",
              "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
