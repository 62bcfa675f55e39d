"""Dense stereo quality and speed on the synthetic presets (true poses and intrinsics from cameras.json).

Per preset: AbsRel where confidence >= 0.5, the share of non-sky pixels (GT depth > 0) those cover, the mean
AbsRel per confidence quartile over pixels with an estimate, seconds per frame and pixels per second (wall
and CPU time: on a shared machine the CPU figure is the one that does not depend on the load).
Usage: python benchmarks/stereo.py [--frames 30] [--size 480x360] [--presets street room] [--data DIR]
Writes benchmarks/results/stereo.json (not run in CI)."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recon.depth_truth import load_posed_sequence, ranges_like_sfm
from recon.stereo import StereoOptions, estimate_depths

RESULTS = Path(__file__).resolve().parent / "results" / "stereo.json"


def quality(depth: torch.Tensor, conf: torch.Tensor, gt: torch.Tensor) -> dict:
    rel = (depth - gt).abs() / gt.clamp_min(1e-6)
    per_frame = []
    for f in range(len(gt)):
        non_sky = gt[f] > 0
        sure = non_sky & (depth[f] > 0) & (conf[f] >= 0.5)
        per_frame.append({"absrel": float(rel[f][sure].mean()) if sure.any() else None,
                          "coverage": float(sure.sum() / non_sky.sum().clamp_min(1))})
    valid = (gt > 0) & (depth > 0)
    order = torch.argsort(conf[valid], stable=True)
    quartiles = [float(part.mean()) for part in torch.tensor_split(rel[valid][order], 4)]
    sure = (gt > 0) & (depth > 0) & (conf >= 0.5)
    absrels = [p["absrel"] for p in per_frame if p["absrel"] is not None]
    coverages = [p["coverage"] for p in per_frame]
    return {"absrel_conf50": float(rel[sure].mean()), "absrel_conf50_worst_frame": max(absrels),
            "coverage_mean": float(np.mean(coverages)), "coverage_worst_frame": float(min(coverages)),
            "absrel_by_conf_quartile": quartiles, "absrel_all_estimates": float(rel[valid].mean()),
            "estimated_share": float(valid.sum() / (gt > 0).sum()), "per_frame": per_frame}


def run_preset(preset: str, frames: int, size: tuple[int, int], data: Path | None, device: str) -> dict:
    if data is not None and (data / preset / "cameras.json").exists():
        seq = data / preset
    else:
        from recon.synth import generate

        seq = Path(tempfile.mkdtemp(prefix=f"stereo_{preset}_")) / "seq"
        generate(preset=preset, out=seq, frames=frames, seed=0, size=size, progress=False)
    images, K, poses, gt = load_posed_sequence(seq)
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    depth, conf = estimate_depths(images, K, poses, ranges_like_sfm(gt), progress=True, device=device)
    if device == "cuda":
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter() - wall_start, time.process_time() - cpu_start
    pixels = images.shape[0] * images.shape[2] * images.shape[3]
    return {"preset": preset, "frames": len(images), "size": [images.shape[3], images.shape[2]], "device": device,
            "threads": torch.get_num_threads(), "seconds": wall, "cpu_seconds": cpu,
            "seconds_per_frame": wall / len(images), "pixels_per_second": pixels / wall,
            "pixels_per_cpu_second": pixels / cpu,
            **quality(depth.cpu(), conf.cpu(), gt)}


def print_table(rows: list[dict]) -> None:
    print(f"{'preset':8s} {'device':6s} {'AbsRel@c>=.5':>12s} {'worst':>7s} {'cover':>6s} {'min cov':>7s} "
          f"{'quartile AbsRel (low->high conf)':>34s} {'s/frame':>8s} {'cpu s/fr':>8s} {'px/s':>9s}")
    for r in rows:
        quartiles = " ".join(f"{q:.3f}" for q in r["absrel_by_conf_quartile"])
        print(f"{r['preset']:8s} {r['device']:6s} {r['absrel_conf50']:12.4f} {r['absrel_conf50_worst_frame']:7.4f} "
              f"{r['coverage_mean']:6.3f} {r['coverage_worst_frame']:7.3f} {quartiles:>34s} "
              f"{r['seconds_per_frame']:8.2f} {r['cpu_seconds'] / r['frames']:8.2f} {r['pixels_per_second']:9.0f} "
              f"{r['pixels_per_cpu_second']:9.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--size", default="480x360")
    parser.add_argument("--presets", nargs="+", default=["street", "room"])
    parser.add_argument("--data", type=Path, help="folder holding <preset>/ sequences to reuse instead of rendering")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.lower().split("x"))
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = [run_preset(p, args.frames, size, args.data, d) for p in args.presets for d in devices]
    print_table(rows)
    if "cuda" not in devices:
        print("CUDA: not available here, not measured")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"options": vars(StereoOptions()), "results": rows,
                                    "cuda": "measured" if "cuda" in devices else "not available, not measured"},
                                   indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
