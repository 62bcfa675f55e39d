"""Reconstruction benchmark: time, registered fraction and camera-centre error of SfM on synthetic
sequences (10/20/40 frames, sequential vs exhaustive matching), dense stereo pixels/s, and the robustness
measures of recon/sfm.py on fast forward motion (`--robustness`). Prints tables and writes JSON.

    .venv/bin/python benchmarks/recon.py --frames 10 20 40 --json recon_bench.json
    .venv/bin/python benchmarks/recon.py --robustness --steps 2 3 4 --seeds 0 1 --frames 20 --size 320x240

--robustness runs the default pipeline `--repeats` times per sequence (repeatability), then maps the first
run's database once per ablation: each row adds one measure to the row before it.
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
from recon.colmap_adapter import quiet_native_logs  # noqa: E402
from recon.dataset import read_cameras  # noqa: E402
from recon.scene import Scene  # noqa: E402
from recon.sfm import SfmOptions, camera_centres, centre_error, map_database, run_sfm  # noqa: E402
from recon.sources import ReconOptions, Stages  # noqa: E402

# name -> SfmOptions overrides; each row adds one measure to the one before, so what a measure contributes
# is the difference to the row above. {} is the default pipeline (all measures but the focal prior).
ABLATIONS = {
    "baseline: one incremental run": dict(robust=False),
    "+ relaxed initialisation": dict(retries=False, global_fallback=False, merge=False),
    "+ retry with another seed": dict(global_fallback=False, merge=False),
    "+ merge of split models": dict(global_fallback=False),
    "+ global mapper fallback (default)": dict(),
    "default + focal prior": dict(focal_prior=True),
    "global mapper alone": dict(robust=False, mapper="global"),
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
    for step in args.steps:
        for seed in args.seeds:
            seq = synth_sequence(work, args.preset, args.frames[0], args.size, seed, step)
            repeats = [sfm_once(seq, work) for _ in range(args.repeats)]
            for name, overrides in ABLATIONS.items():
                if args.configs and not any(name.startswith(c) for c in args.configs):
                    continue
                row = {"step": step, "seed": seed, "config": name,
                       **ablation(seq, work, repeats, overrides), "repeatability": repeatability(repeats)}
                rows.append(row)
                print(f"step {step} seed {seed} {name:<36} reg {row['registered_fraction']:.0%} "
                      f"err {row['centre_error_percent']:.2f}% best {row['best_attempt']} merged {row['merged']} "
                      f"{row['seconds']:.1f}s", flush=True)
            print(f"step {step} seed {seed} repeatability: {rows[-1]['repeatability']}", flush=True)
    return rows


def sfm_once(seq: Path, work: Path, **overrides) -> dict:
    """The whole SfM (features, matching, mapping) on the sequence, scored against cameras.json."""
    names = sorted(p.name for p in (seq / "images").iterdir())
    folder = Path(tempfile.mkdtemp(dir=work))
    start = time.perf_counter()
    result = run_sfm(seq / "images", names, folder, SfmOptions(**overrides), Stages(progress=False))
    return score(seq, result, len(names), time.perf_counter() - start) | {"database": folder / "database.db"}


def ablation(seq: Path, work: Path, repeats: list[dict], overrides: dict) -> dict:
    """Default: the first repeat. Focal prior: a whole run (it changes matching). Others: the first repeat's
    database mapped again with the measure switched off (features and matches are the same)."""
    if not overrides:
        out = repeats[0]
    elif "focal_prior" in overrides:
        out = sfm_once(seq, work, **overrides)
    else:
        total = len(list((seq / "images").iterdir()))
        options = SfmOptions(**overrides)
        folder = Path(tempfile.mkdtemp(dir=work))
        start = time.perf_counter()
        with quiet_native_logs(folder / "colmap.log"):
            result = map_database(repeats[0]["database"], seq / "images", folder, options, total,
                                  repeats[0]["matching"])
        out = score(seq, result, total, time.perf_counter() - start)
    return {k: v for k, v in out.items() if k not in ("database", "poses", "names")}


def score(seq: Path, result, total: int, seconds: float) -> dict:
    model = result.model
    registered = 0 if model is None else model.num_frames
    error = float("nan")
    if registered >= 3:
        truth = {c.image: c.cam_from_world for c in read_cameras(seq)}
        gt = camera_centres(np.stack([truth[n] for n in model.names]))
        error = centre_error(camera_centres(model.cam_from_world), gt)["mean_percent"]
    return {"registered": registered, "total": total, "registered_fraction": registered / total,
            "centre_error_percent": round(error, 3), "best_attempt": result.best, "merged": result.merged,
            "attempts": [{k: a[k] for k in ("name", "model_sizes", "seconds")} for a in result.attempts],
            "matching": result.matching, "seconds": round(seconds, 2),
            "names": [] if model is None else model.names, "poses": None if model is None else model.cam_from_world}


def repeatability(repeats: list[dict]) -> dict:
    """Registered sets equal and poses within 1e-6 on every repeat of the default pipeline."""
    first = repeats[0]
    same_sets = all(r["names"] == first["names"] for r in repeats)
    pose_diff = max((float(np.abs(r["poses"] - first["poses"]).max()) for r in repeats[1:]
                     if same_sets and r["poses"] is not None), default=0.0)
    return {"runs": len(repeats), "registered": [r["registered"] for r in repeats],
            "centre_error_percent": [r["centre_error_percent"] for r in repeats], "same_frames": same_sets,
            "max_pose_difference": pose_diff, "identical": same_sets and pose_diff < 1e-6}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="street")
    p.add_argument("--frames", type=int, nargs="+", default=[10, 20, 40])
    p.add_argument("--size", type=lambda s: tuple(int(v) for v in s.split("x")), default=(480, 360))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="robustness: scene seeds")
    p.add_argument("--step", type=float, default=None, help="metres between frames (synth --step)")
    p.add_argument("--steps", type=float, nargs="+", default=[3.0], help="robustness: metres between frames")
    p.add_argument("--dense", action="store_true", help="also run dense stereo (pixels/s)")
    p.add_argument("--robustness", action="store_true", help="compare the robustness measures instead")
    p.add_argument("--repeats", type=int, default=3, help="robustness: runs of the default pipeline")
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
