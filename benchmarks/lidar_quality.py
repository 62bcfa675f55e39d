"""Quality of the LiDAR modes on the synthetic street with LiDAR (issue "LiDAR segmentation", criterion 2).

Training sequences (`rewis synth --lidar`, 64-beam scans) -> LiDAR scribbles (`rewis labels --kind scribbles
--lidar`, about 8 % of the points) -> at one budget (configs/street_lidar.yaml unless --config):
- lidar_full: dense labels (the FS of SS/FS),
- lidar_weak: CE on the scribbled points only (the lower bound),
- mean_teacher: scribblekitti without its pseudo-label stage (method.pseudo_labels=false),
- scribblekitti: mean teacher, class-range-balanced pseudo-labels, retraining on scribbles + pseudo-labels,
each over every training seed (--seeds), evaluated on val sequences of other synthetic seeds (point mIoU of the
exported 3D network). Runs are `python -m rewis.train` child processes, `--workers` at a time; everything lands
in --work and a finished run is reused when its command is the same, so an interrupted benchmark continues.
Prints a table and writes --json.

    python benchmarks/lidar_quality.py [--seeds 0 1] [--steps N] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODES = {"lidar_full": ["mode=lidar_full"], "lidar_weak": ["mode=lidar_weak"],
         "mean_teacher": ["mode=scribblekitti", "method.pseudo_labels=false"], "scribblekitti": ["mode=scribblekitti"]}


@dataclass(frozen=True)
class Job:
    mode: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.mode}-s{self.seed}"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5],
                   help="synthetic street sequences for training")
    p.add_argument("--val-seeds", type=int, nargs="+", default=[300, 301], help="sequences for validation")
    p.add_argument("--frames", type=int, default=8, help="scans per training sequence")
    p.add_argument("--val-frames", type=int, default=6, help="scans per validation sequence")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training seeds")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per run (default: the config's)")
    p.add_argument("--config", type=Path, default=ROOT / "configs" / "street_lidar.yaml")
    p.add_argument("--workers", type=int, default=2, help="training runs at a time")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "work" / "lidar_quality")
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "lidar_quality.json")
    p.add_argument("--set", dest="extra", nargs="+", default=[], metavar="KEY=VALUE",
                   help="config overrides for every run")
    p.add_argument("--tag", default="", help="suffix of the runs folder, to keep variants apart")
    p.add_argument("--report-only", action="store_true", help="summarise finished runs; start none")
    return p.parse_args(argv)


# ------------------------------------------------------------------------------------------------ data
def prepare(args) -> tuple[list[Path], list[Path]]:
    from recon.synth import generate
    from rewis.lidar_scribbles import scribble_lidar

    def sequence(seed: int, frames: int) -> Path:
        seq = args.work / "data" / f"street{seed}-{frames}f"
        if not (seq / "synth.json").is_file():
            generate(preset="street", out=seq, frames=frames, seed=seed, size=(160, 120), lidar=True,
                     progress=False, overwrite=True)
        return seq

    train = [sequence(s, args.frames) for s in args.train_seeds]
    val = [sequence(s, args.val_frames) for s in args.val_seeds]
    for seq in train:
        if not (seq / "lidar" / "scribbles").is_dir():
            scribble_lidar(seq, progress=False)
    return train, val


# ------------------------------------------------------------------------------------------------ runs
def runs_folder(args) -> Path:
    name = (f"runs-{args.config.stem}-train{len(args.train_seeds)}x{args.frames}-val{len(args.val_seeds)}"
            + (f"-steps{args.steps}" if args.steps else "") + (f"-{args.tag}" if args.tag else ""))
    return args.work / name


def command(job: Job, train: list[Path], val: list[Path], args) -> list[str]:
    run_dir = runs_folder(args) / job.name
    overrides = [*MODES[job.mode], f"seed={job.seed}", f"run.out={run_dir}", "run.progress=false",
                 f"run.cpu_threads={args.threads}", f"data.train=[{','.join(map(str, train))}]",
                 f"data.val=[{','.join(map(str, val))}]", *args.extra]
    if args.steps:
        overrides.append(f"run.max_steps={args.steps}")
    return [sys.executable, "-m", "rewis.train", str(args.config), *overrides]


def run_job(job: Job, cmd: list[str], args) -> dict | None:
    run_dir = runs_folder(args) / job.name
    stamp = run_dir.parent / f"{job.name}.command.json"
    if (run_dir / "summary.json").is_file() and stamp.is_file() and json.loads(stamp.read_text()) == cmd[1:]:
        return json.loads((run_dir / "summary.json").read_text())
    if args.report_only:
        return None
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    log = run_dir.parent / f"{job.name}.log"
    t = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(ROOT)}
    with open(log, "w") as f:
        done = subprocess.run([*cmd, "--overwrite"], stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    if done.returncode:
        print(f"[lidar_quality] {job.name} failed (exit {done.returncode}); see {log}", file=sys.stderr)
        return None
    stamp.write_text(json.dumps(cmd[1:]) + "\n")
    print(f"[lidar_quality] {job.name} done in {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
    return json.loads((run_dir / "summary.json").read_text())


# ------------------------------------------------------------------------------------------------ report
def pseudo_stats(job: Job, args) -> dict | None:
    path = runs_folder(args) / job.name / "stages" / "retrain" / "stats.json"
    return json.loads(path.read_text()) if path.is_file() else None


def summarise(results: dict[Job, dict], args) -> dict:
    modes = {}
    for mode in args.modes:
        runs = {j.seed: r for j, r in results.items() if j.mode == mode and r}
        if not runs:
            continue
        mious = [100 * r["final"]["miou"] for r in runs.values()]
        names = [n for n, v in next(iter(runs.values()))["final"]["iou"].items() if v is not None]  # sky: no 3D
        per_class = {n: statistics.mean(100 * (r["final"]["iou"][n] or 0.0) for r in runs.values()) for n in names}
        modes[mode] = {"miou": statistics.mean(mious), "per_seed": dict(zip(runs, mious)),
                       "spread": max(mious) - min(mious), "iou": per_class,
                       "seconds": statistics.mean(r["seconds"] for r in runs.values())}
        stats = [pseudo_stats(j, args) for j in results if j.mode == mode]
        stats = [s for s in stats if s]
        if stats:
            modes[mode]["pseudo_label_accuracy"] = statistics.mean(100 * s["accuracy_vs_dense_labels"] for s in stats)
    full = modes.get("lidar_full", {}).get("miou")
    for m in modes.values():
        m["ss_fs"] = 100 * m["miou"] / full if full else None
    return modes


def targets(modes: dict) -> list[tuple[str, bool | None, str]]:
    def get(mode):
        return modes.get(mode, {}).get("miou")

    full, weak, mt, sk = get("lidar_full"), get("lidar_weak"), get("mean_teacher"), get("scribblekitti")
    out = []
    if sk is not None and full:
        out.append(("scribblekitti >= 90 % of lidar_full", sk >= 0.9 * full, f"{100 * sk / full:.1f} %"))
    if sk is not None and weak is not None:
        out.append(("scribblekitti >= lidar_weak + 3", sk >= weak + 3, f"{sk - weak:+.2f} mIoU"))
    if sk is not None and mt is not None:
        out.append(("pseudo-label stage >= +1 over mean_teacher", sk >= mt + 1, f"{sk - mt:+.2f} mIoU"))
    if weak is not None and full:
        out.append(("benchmark not too easy: lidar_weak < 95 % of lidar_full", weak < 0.95 * full,
                    f"{100 * weak / full:.1f} %"))
    return out


def print_table(modes: dict, checks, args) -> None:
    seeds = args.seeds
    print("| mode | " + " | ".join(f"seed {s}" for s in seeds) + " | mean mIoU | SS/FS | pseudo acc | train s |")
    print("|---|" + "---|" * (len(seeds) + 4))
    for mode, m in modes.items():
        cells = [f"{m['per_seed'][s]:.2f}" if s in m["per_seed"] else "-" for s in seeds]
        acc = f"{m['pseudo_label_accuracy']:.1f} %" if "pseudo_label_accuracy" in m else ""
        print(f"| {mode} | " + " | ".join(cells) + f" | {m['miou']:.2f} | {'-' if m['ss_fs'] is None else format(m['ss_fs'], '.1f') + ' %'} | {acc} | "
              f"{m['seconds']:.0f} |")
    if modes:
        names = list(next(iter(modes.values()))["iou"])
        print("\n| class | " + " | ".join(modes) + " |\n|---|" + "---|" * len(modes))
        for n in names:
            print(f"| {n} | " + " | ".join(f"{m['iou'][n]:.1f}" for m in modes.values()) + " |")
    print()
    for name, ok, value in checks:
        print(f"{'PASS' if ok else 'MISS'}  {name}: {value}")


def main(argv=None) -> int:
    args = parse_args(argv)
    args.work = args.work.resolve()
    train, val = prepare(args)
    jobs = [Job(m, s) for s in args.seeds for m in args.modes]
    with ThreadPoolExecutor(args.workers) as pool:
        results = dict(zip(jobs, pool.map(lambda j: run_job(j, command(j, train, val, args), args), jobs)))
    modes = summarise(results, args)
    checks = targets(modes)
    print_table(modes, checks, args)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "config": str(args.config.relative_to(ROOT)), "steps": args.steps, "extra": args.extra,
        "train_seeds": args.train_seeds, "val_seeds": args.val_seeds, "frames": args.frames,
        "val_frames": args.val_frames, "seeds": args.seeds, "modes": modes,
        "targets": [{"target": n, "met": ok, "value": v} for n, ok, v in checks]}, indent=1) + "\n")
    return 0 if all(r for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
