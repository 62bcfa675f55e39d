"""Quality of the weakly supervised modes on the synthetic benchmark (issue 5, criterion 3).

For each preset (street, room): synthetic training sequences and validation sequences of other seeds ->
weak labels (scribbles, points, coarse) -> scenes: `rewis recon` from the images (SfM with the known intrinsics
unless --self-calibrate, dense stereo, metric scale from the camera height: "reconstructed 3D") and `--source
rgbd` from the ground-truth depth ("real 3D") -> training at one budget
(configs/quickstart.yaml unless --config) -> val mIoU of the 2D student and SS/FS against mode `full`.

Runs (each a `python -m rewis.train` child process, `--workers` at a time, one torch thread each):
- full (dense labels), ema and rewis3d (reconstructed 3D) with scribbles, over every training seed (--seeds);
- rewis3d with real 3D, and ema / rewis3d with points and coarse labels, with the first seed.
Everything lands in --work and is reused when it exists, so an interrupted benchmark continues; a finished run
whose saved config differs from what its job would run with now (a changed default, another --set) stops the
benchmark with exit code 2 before anything runs (give another --tag). Prints a table and writes --json.

    python benchmarks/quality.py [--presets street room] [--seeds 0 1] [--workers 2] [--steps N]

The criterion's figures are measured at `--config configs/quality_gpu.yaml` (1,000 steps: 12 runs at once an
estimated 12-14 min on one H100, ~50 min a run on a 2-core CPU); the default, the quickstart's 160 steps, runs on
a CPU. On a
GPU machine without open3d/pycolmap: `--prepare-only` here, carry the data (benchmarks/device_env.sh), then run
the same command there through benchmarks/device_run.sh (RESULTS.md, "Device time, for the next GPU runs").
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
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

KINDS = ("scribbles", "points", "coarse")
# the quickstart preset is street-sized; rooms are ~5 m across, so finer voxels
PRESET_OVERRIDES = {"street": [], "room": ["net3d.voxel_size=0.1"]}


@dataclass
class Job:
    preset: str
    mode: str
    kind: str  # weak label kind ("dense" for full)
    space: str  # "-" (2D only), "recon" or "real"
    seed: int
    overrides: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.preset}/{self.mode}-{self.kind}-{self.space}-s{self.seed}"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["street", "room"], choices=["street", "room"])
    p.add_argument("--train-seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5],
                   help="synthetic scenes for training (6: with 2, dense labels never learnt street's sidewalk and ema "
                   "kept 96 %% of full, so the benchmark had no room to show anything)")
    p.add_argument("--val-seeds", type=int, nargs="+", default=[200, 201, 202, 203], help="synthetic scenes for validation "
                   "(other seeds than the quickstart's and the tuning runs')")
    p.add_argument("--frames", type=int, default=10, help="frames per training sequence")
    p.add_argument("--val-frames", type=int, default=10)
    p.add_argument("--size", default="240x180")
    p.add_argument("--stride", type=int, default=1, help="fusion stride of the scenes (rewis recon --stride; "
                   "the quickstart uses 1)")
    p.add_argument("--self-calibrate", action="store_true",
                   help="reconstruct without the sequences' intrinsics (cameras.json); default: known K, as with a "
                        "calibrated camera (at 240x180 and 10 frames self-calibration misses the focal by 13-16 %%)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training seeds of the main comparison")
    p.add_argument("--modes", nargs="+", default=["full", "ema", "rewis3d"], choices=["full", "ema", "rewis3d"],
                   help="run only these modes (e.g. a rewis3d variant against baselines already run)")
    p.add_argument("--no-real", dest="real", action="store_false", help="skip rewis3d with real 3D")
    p.add_argument("--only", nargs="+", default=None, metavar="PATTERN",
                   help="run only the runs whose name (PRESET/MODE-LABELS-3D-sSEED, e.g. room/rewis3d-scribbles-real-s0) "
                   "matches one of these shell patterns, e.g. '*-real-*' for the real-3D runs alone")
    p.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per run (default: the config's)")
    p.add_argument("--config", type=Path, default=ROOT / "configs" / "quickstart.yaml")
    p.add_argument("--workers", type=int, default=2, help="training runs at a time (one torch thread each)")
    p.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "work" / "quality")
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "quality.json")
    p.add_argument("--tag", default="", help="suffix of the runs folder (runs-CONFIG-strideN-{k|selfcal}-trainSEEDS-"
                   "valSEEDS[-stepsS][-TAG]), to keep variants apart")
    p.add_argument("--set", dest="extra", nargs="+", default=[], metavar="KEY=VALUE",
                   help="config overrides for every run (e.g. data.num_workers=2 run.eval_every=250)")
    p.add_argument("--prepare-only", action="store_true",
                   help="build sequences, weak labels and scenes, then stop (e.g. before running on a GPU machine)")
    p.add_argument("--report-only", action="store_true",
                   help="no new runs: summarise the runs already finished in --work (e.g. after an interruption)")
    return p.parse_args(argv)


# ------------------------------------------------------------------------------------------------ data
def prepare(preset: str, args) -> dict:
    """Sequences, weak labels and scenes of one preset; returns the paths the runs need."""
    # imported only when something must be built: a GPU machine without open3d/pycolmap runs on carried data
    work = args.work / preset
    train, val = [], []
    for seeds, frames, out in ((args.train_seeds, args.frames, train), (args.val_seeds, args.val_frames, val)):
        for s in seeds:
            seq = work / "data" / f"seed{s}"
            if not (seq / "synth.json").is_file():
                from recon.synth import generate, parse_size

                size = parse_size(args.size)
                generate(preset=preset, out=seq, frames=frames, seed=s, size=size, progress=False, overwrite=True)
            out.append(seq)
    scenes = {}
    for kind in args.kinds:
        for seq in train:
            if not (seq / "weak" / kind).is_dir():
                from rewis.weak_labels import label_folder

                label_folder(seq, kind, seed=0, overwrite=True, progress=False)
        for space, source in (("recon", "images"), ("real", "rgbd")):
            if space == "real" and (kind != "scribbles" or not args.real):
                continue  # real 3D is run with scribbles only, and not at all with --no-real
            paths = []
            for seq in train:
                scene = work / scenes_folder(args) / f"{space}-{kind}" / seq.name
                if not (scene / "scene.json").is_file():
                    from recon.build import reconstruct
                    from recon.sources import ReconOptions

                    t = time.perf_counter()
                    reconstruct(seq, scene, ReconOptions(source=source, weak_kind=kind, progress=False,
                                                         stride=args.stride, use_intrinsics=not args.self_calibrate,
                                                         # "recon" scenes: images and weak labels only
                                                         depth_scale=False, mask_moving="weak"),
                                overwrite=True)
                    print(f"[quality] {preset} {space} scene {seq.name} ({kind}) in {time.perf_counter() - t:.0f} s",
                          file=sys.stderr, flush=True)
                paths.append(scene)
            scenes[(space, kind)] = paths
    return {"scenes": scenes, "val": val}


def scenes_folder(args) -> str:
    return f"scenes-stride{args.stride}" + ("-selfcal" if args.self_calibrate else "-known-k")


def jobs_for(preset: str, args) -> list[Job]:
    jobs = []
    for seed in args.seeds:
        jobs += [Job(preset, "full", "dense", "-", seed), Job(preset, "ema", "scribbles", "-", seed),
                 Job(preset, "rewis3d", "scribbles", "recon", seed)]
    first = args.seeds[0]
    if "scribbles" in args.kinds and args.real:
        jobs.append(Job(preset, "rewis3d", "scribbles", "real", first))
    for kind in args.kinds:
        if kind != "scribbles":
            jobs += [Job(preset, "ema", kind, "-", first), Job(preset, "rewis3d", kind, "recon", first)]
    jobs = [j for j in jobs if (j.kind in args.kinds or j.kind == "dense") and j.mode in args.modes]
    return [j for j in jobs if args.only is None or any(fnmatch(j.name, p) for p in args.only)]


# ------------------------------------------------------------------------------------------------ runs
def run_dir_of(job: Job, args) -> Path:
    """Finished runs are reused from here, so the name holds everything that changes a run's result."""
    name = (f"runs-{args.config.stem}-stride{args.stride}" + ("-selfcal" if args.self_calibrate else "-k")
            + f"-train{seed_span(args.train_seeds)}-val{seed_span(args.val_seeds)}"
            + (f"-steps{args.steps}" if args.steps else "") + (f"-{args.tag}" if args.tag else ""))
    return args.work / name / job.name


def seed_span(seeds: list[int]) -> str:
    """[0, 1, 2] -> '0-2'; [3] -> '3'; [0, 2] -> '0_2'."""
    if len(seeds) > 1 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]}"
    return "_".join(map(str, seeds))


# settings that do not change a run's result: a finished run made with others is still reused
REUSE_IGNORES = {"data.num_workers", "run.progress", "run.logger", "run.cpu_threads", "run.export"}


def changed_settings(job: Job, data: dict, args) -> list[str]:
    """Dotted keys whose value in a finished run's config.yaml differs from what the job would run with now (a
    changed default, another --set): such a run must not pass for this one. [] when the run is not finished."""
    import yaml

    from rewis.config import flat_dict, to_dict
    from rewis.modes import load_config

    run_dir = run_dir_of(job, args)
    if not (run_dir / "summary.json").is_file():
        return []
    saved = flat_dict(yaml.safe_load((run_dir / "config.yaml").read_text()))
    wanted = flat_dict(to_dict(load_config(args.config, job_overrides(job, data, args))))
    return [k for k in sorted(saved.keys() | wanted.keys())
            if k not in REUSE_IGNORES and saved.get(k, "<absent>") != wanted.get(k, "<absent>")]


def job_overrides(job: Job, data: dict, args) -> list[str]:
    space = job.space if job.space != "-" else "recon"
    kind = job.kind if job.kind != "dense" else "scribbles"
    scenes = data["scenes"][(space, kind)]
    overrides = [f"mode={job.mode}", f"seed={job.seed}", f"run.out={run_dir_of(job, args)}", "run.progress=false",
                 "run.cpu_threads=1", "run.export=false", f"data.weak_kind={kind}",
                 f"data.train=[{','.join(map(str, scenes))}]", f"data.val=[{','.join(map(str, data['val']))}]"]
    overrides += PRESET_OVERRIDES[job.preset]
    if args.steps:
        overrides.append(f"run.max_steps={args.steps}")
    return overrides + args.extra


def run_job(job: Job, data: dict, args) -> dict:
    run_dir = run_dir_of(job, args)
    summary = run_dir / "summary.json"
    if summary.is_file():
        return json.loads(summary.read_text())
    overrides = job_overrides(job, data, args)
    if run_dir.is_dir():  # an interrupted run: continue it from its last checkpoint, or start it again
        from rewis.checkpoint import latest_checkpoint

        overrides.append("--resume" if latest_checkpoint(run_dir) else "--overwrite")
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    t = time.perf_counter()
    log = run_dir.parent / f"{run_dir.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        code = subprocess.call([sys.executable, "-m", "rewis.train", str(args.config), *overrides], cwd=ROOT,
                               env=env, stdout=f, stderr=subprocess.STDOUT)
    if code != 0 or not summary.is_file():
        raise RuntimeError(f"{job.name} failed (exit {code}); see {log}")
    print(f"[quality] {job.name}: mIoU {100 * json.loads(summary.read_text())['final']['miou']:.2f} "
          f"in {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
    return json.loads(summary.read_text())


# ------------------------------------------------------------------------------------------------ report
def summarise(results: dict[str, list[tuple[Job, dict]]]) -> dict:
    table = {}
    for preset, runs in results.items():
        groups: dict[tuple, list[float]] = {}
        for job, summary in runs:
            groups.setdefault((job.mode, job.kind, job.space), []).append(100 * summary["final"]["miou"])
        # without a full run (e.g. --modes rewis3d) the rows are kept, without SS/FS and the criterion
        full = statistics.mean(groups[("full", "dense", "-")]) if ("full", "dense", "-") in groups else None
        rows = []
        for (mode, kind, space), values in groups.items():
            mean = statistics.mean(values)
            rows.append({"mode": mode, "labels": kind, "3d": space, "miou": round(mean, 2),
                         "std": round(statistics.stdev(values), 2) if len(values) > 1 else None,
                         "runs": [round(v, 2) for v in values], "ss_fs": round(100 * mean / full, 1) if full else None})
        table[preset] = {"rows": rows}
        ema = next((r for r in rows if (r["mode"], r["labels"]) == ("ema", "scribbles")), None)
        r3d = next((r for r in rows if (r["mode"], r["labels"], r["3d"]) == ("rewis3d", "scribbles", "recon")), None)
        if ema and r3d and full:
            table[preset].update({"rewis3d_minus_ema": round(r3d["miou"] - ema["miou"], 2),
                                  "criterion": {"rewis3d >= ema + 3": r3d["miou"] >= ema["miou"] + 3,
                                                "rewis3d SS/FS >= 90": r3d["ss_fs"] >= 90,
                                                "ema SS/FS < 90": ema["ss_fs"] < 90}})
    return table


def print_table(table: dict) -> None:
    print("| preset | labels | mode | 3D | val mIoU (mean +- std, runs) | SS/FS |")
    print("|---|---|---|---|---|---|")
    for preset, t in table.items():
        for r in t["rows"]:
            spread = f" +- {r['std']:.2f} ({len(r['runs'])})" if r["std"] is not None else ""
            print(f"| {preset} | {r['labels']} | {r['mode']} | {r['3d']} | {r['miou']:.2f}{spread} | "
                  + (f"{r['ss_fs']:.1f} % |" if r["ss_fs"] is not None else "- |"))
    for preset, t in table.items():
        if "criterion" not in t:
            continue
        print(f"{preset}: rewis3d - ema = {t['rewis3d_minus_ema']:+.2f} mIoU; " +
              ", ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in t["criterion"].items()))


def main(argv=None) -> int:
    args = parse_args(argv)
    args.work = args.work.resolve()
    start = time.perf_counter()
    jobs = [j for p in args.presets for j in jobs_for(p, args)]
    if args.report_only:
        done = [(j, run_dir_of(j, args) / "summary.json") for j in jobs]
        finished = [(j, json.loads(path.read_text())) for j, path in done if path.is_file()]
        print(f"[quality] {len(finished)} of {len(jobs)} runs finished", file=sys.stderr)
    else:
        data = {p: prepare(p, args) for p in args.presets}
        if args.prepare_only:
            print(f"[quality] data ready in {time.perf_counter() - start:.0f} s under {args.work}", file=sys.stderr)
            return 0
        stale = [(j, keys) for j in jobs if (keys := changed_settings(j, data[j.preset], args))]
        for job, keys in stale:
            print(f"error: {run_dir_of(job, args)} is a finished run made with other settings ({', '.join(keys[:4])}"
                  f"{' ...' if len(keys) > 4 else ''}); give another --tag, or remove that folder to run it again",
                  file=sys.stderr)
        if stale:
            return 2
        print(f"[quality] data ready in {time.perf_counter() - start:.0f} s; {len(jobs)} runs, {args.workers} at a "
              "time", file=sys.stderr, flush=True)
        with ThreadPoolExecutor(args.workers) as pool:
            finished = list(zip(jobs, pool.map(lambda j: run_job(j, data[j.preset], args), jobs)))
    results: dict = {}
    for job, summary in finished:
        results.setdefault(job.preset, []).append((job, summary))
    table = summarise(results)
    print_table(table)
    meta = {"config": str(args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT) else args.config),
            "train_seeds": args.train_seeds, "val_seeds": args.val_seeds, "frames": args.frames, "size": args.size,
            "stride": args.stride, "intrinsics": "self-calibrated" if args.self_calibrate else "known",
            "camera_height_prior_m": 1.6, "seeds": args.seeds,
            "steps": args.steps, "overrides": args.extra, "tag": args.tag, "seconds": round(time.perf_counter() - start), "machine": machine()}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(args.json.read_text()) if args.json.is_file() else {}
    stored = {p: dict(t, meta=meta) for p, t in table.items()}
    # presets run separately (--presets street, then --presets room) accumulate in one file
    merged = {**previous.get("presets", {}), **stored}
    args.json.write_text(json.dumps({"presets": merged}, indent=1) + "\n")
    print(f"written {args.json} in {meta['seconds'] / 60:.1f} min")
    return 0


def machine() -> str:
    import platform

    return f"{platform.machine()} {os.cpu_count()} cores, {platform.processor() or 'cpu'}, load {os.getloadavg()[0]:.1f}"


if __name__ == "__main__":
    sys.exit(main())
