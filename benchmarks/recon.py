"""Reconstruction benchmark: time, registered fraction and camera-centre error of SfM on synthetic
sequences (10/20/40 frames, sequential vs exhaustive matching), dense stereo pixels/s, and the robustness
measures of recon/sfm.py on fast forward motion (`--robustness`). Prints tables and writes JSON.

    .venv/bin/python benchmarks/recon.py --frames 10 20 40 --json recon_bench.json
    .venv/bin/python benchmarks/recon.py --robustness --step 3 --frames 20 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recon.build import reconstruct  # noqa: E402
from recon.dataset import read_cameras  # noqa: E402
from recon.scene import Scene  # noqa: E402
from recon.sfm import camera_centres, centre_error  # noqa: E402
from recon.sources import ReconOptions  # noqa: E402

# name -> ReconOptions overrides: what each robustness measure contributes is the difference to "baseline"
ROBUSTNESS_CONFIGS = {
    "baseline (one incremental run)": dict(robust=False),
    "robust (retries, relaxed init, global fallback)": dict(robust=True),
    "robust, multi-threaded mapping": dict(robust=True, deterministic=False),
    "global mapper first": dict(robust=False, mapper="global"),
    "baseline, focal prior 0.8": dict(robust=False, focal_factor=0.8),
    "baseline, known intrinsics": dict(robust=False, use_intrinsics=True),
}


def synth_sequence(work: Path, preset: str, frames: int, size: tuple[int, int], seed: int, step: float | None) -> Path:
    from recon.synth import generate

    out = work / f"{preset}_{frames}_{size[0]}x{size[1]}_s{seed}_step{step}"
    if not (out / "images").is_dir():
        generate(preset=preset, out=out, frames=frames, seed=seed, size=size, progress=False, step=step)
    return out


def evaluate(seq: Path, scene_dir: Path, report: dict) -> dict:
    scene = Scene.load(scene_dir)
    truth = {c.image: c.cam_from_world for c in read_cameras(seq)}
    names = [Path(f.image).name for f in scene.frames]
    est = camera_centres(np.stack([f.cam_from_world for f in scene.frames]))
    gt = camera_centres(np.stack([truth[n] for n in names]))
    err = centre_error(est, gt) if len(names) >= 3 else {"mean_percent": float("nan")}
    return {"registered": report["frames_registered"], "total": report["frames_total"],
            "registered_fraction": report["frames_registered"] / report["frames_total"],
            "centre_error_percent": round(err["mean_percent"], 3), "seconds": report["seconds"],
            "stages": report["stages"], "attempts": report.get("attempts"), "best_attempt": report.get("best_attempt"),
            "points": report["points"], "focal": report.get("camera_params", [None])[0]}


def run_once(seq: Path, work: Path, **overrides) -> dict:
    out = Path(tempfile.mkdtemp(dir=work)) / "scene"
    try:
        report = reconstruct(seq, out, ReconOptions(progress=False, **overrides))
    except Exception as e:  # a failed configuration is a result, not a crash of the benchmark
        return {"error": str(e).splitlines()[0], "registered_fraction": 0.0}
    return evaluate(seq, out, report)


def matching_table(args, work: Path) -> list[dict]:
    rows = []
    for frames in args.frames:
        seq = synth_sequence(work, args.preset, frames, args.size, args.seed, args.step)
        for matching in ("sequential", "exhaustive"):
            row = {"frames": frames, "matching": matching,
                   **run_once(seq, work, matching=matching, dense=args.dense)}
            rows.append(row)
            print(f"{frames:>4} {matching:<11} reg {row['registered_fraction']:.0%} "
                  f"err {row.get('centre_error_percent', float('nan')):.2f}% time {row.get('seconds', 0):.1f}s "
                  f"{row.get('error', '')}", flush=True)
            dense = row.get("stages", {}).get("dense stereo")
            if dense:
                row["dense_pixels_per_s"] = frames * args.size[0] * args.size[1] / dense
    return rows


def robustness_table(args, work: Path) -> list[dict]:
    rows = []
    for seed in args.seeds:
        seq = synth_sequence(work, args.preset, args.frames[0], args.size, seed, args.step)
        for name, overrides in ROBUSTNESS_CONFIGS.items():
            if args.configs and not any(name.startswith(c) for c in args.configs):
                continue
            runs = [run_once(seq, work, dense=False, **overrides) for _ in range(args.repeats)]
            fractions = [r["registered_fraction"] for r in runs]
            row = {"seed": seed, "config": name, "registered_fraction": fractions,
                   "centre_error_percent": [r.get("centre_error_percent") for r in runs],
                   "same_on_all_runs": len(set(fractions)) == 1 and len({r.get("points") for r in runs}) == 1,
                   "best_attempt": [r.get("best_attempt") for r in runs], "runs": runs}
            rows.append(row)
            print(f"seed {seed} {name:<48} reg {fractions} err {row['centre_error_percent']} "
                  f"repeatable {row['same_on_all_runs']} best {row['best_attempt']}", flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="street")
    p.add_argument("--frames", type=int, nargs="+", default=[10, 20, 40])
    p.add_argument("--size", type=lambda s: tuple(int(v) for v in s.split("x")), default=(480, 360))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--step", type=float, default=None, help="metres between frames (synth --step)")
    p.add_argument("--dense", action="store_true", help="also run dense stereo (pixels/s)")
    p.add_argument("--robustness", action="store_true", help="compare the robustness measures instead")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--configs", nargs="+", default=None, help="robustness: names (prefixes) of configs to run")
    p.add_argument("--work", type=Path, default=None, help="folder for sequences and scenes (default: temp)")
    p.add_argument("--json", type=Path, default=Path("recon_benchmark.json"))
    args = p.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="rewis-recon-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    rows = robustness_table(args, work) if args.robustness else matching_table(args, work)
    result = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "rows": rows,
              "seconds": round(time.perf_counter() - start, 1)}
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
