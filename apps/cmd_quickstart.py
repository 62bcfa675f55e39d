"""`rewis quickstart [--out DIR]`: the whole pipeline on the built-in synthetic street benchmark.

synthetic street sequences (train seeds + a val seed) -> `rewis labels --kind scribbles` -> `rewis recon`
(images only: SfM + dense stereo) -> train `full`, `ema` and `rewis3d` at the same budget (configs/quickstart.yaml)
-> evaluate each 2D student on the val seed -> table on stdout, DIR/results.json, DIR/results.md (mIoU, SS/FS);
the rewis3d model is exported to DIR/model (a standard SegFormer folder for `rewis predict`).
Steps whose output already exists are reused, so an interrupted quickstart continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path


CONFIG = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"
MODES = ("full", "ema", "rewis3d")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("quickstart"), help="working folder")
    p.add_argument("--train-seeds", type=int, nargs="+", default=[0, 1], help="synthetic seeds for training")
    p.add_argument("--val-seeds", type=int, nargs="+", default=[100], help="synthetic seeds for validation")
    p.add_argument("--frames", type=int, default=10, help="frames per training sequence")
    p.add_argument("--val-frames", type=int, default=6, help="frames per validation sequence")
    p.add_argument("--size", default="240x180", help="image size WIDTHxHEIGHT")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per mode (default: the preset's)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1 default: steady on a shared 2-core machine; 0 = torch default)")
    p.add_argument("--config", type=Path, default=CONFIG, help="training preset shared by the three modes")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="extra config overrides for all modes")


def log(msg: str) -> None:
    print(f"[quickstart] {msg}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from recon.synth import parse_size

    out = Path(args.out)
    size = parse_size(args.size)
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    train_seqs = [make_sequence(out / "data" / "train" / f"seed{s}", s, args.frames, size) for s in args.train_seeds]
    val_seqs = [make_sequence(out / "data" / "val" / f"seed{s}", s, args.val_frames, size) for s in args.val_seeds]
    for seq in train_seqs:
        make_scribbles(seq)
    scenes = [make_scene(seq, out / "scenes" / seq.name) for seq in train_seqs]
    log(f"data ready in {time.perf_counter() - start:.0f} s")
    results = {}
    for mode in MODES:
        results[mode] = train_mode(mode, args, scenes, val_seqs, out)
    export = out / "runs" / "rewis3d" / "export"
    if export.is_dir():
        shutil.rmtree(out / "model", ignore_errors=True)
        shutil.copytree(export, out / "model")
    write_results(out, results, time.perf_counter() - start)
    return 0


def make_sequence(seq: Path, seed: int, frames: int, size) -> Path:
    from recon.synth import generate

    if (seq / "synth.json").is_file():
        return seq
    log(f"synth street seed {seed}: {frames} frames -> {seq}")
    return generate(preset="street", out=seq, frames=frames, seed=seed, size=size, progress=False, overwrite=True)


def make_scribbles(seq: Path) -> None:
    from rewis.weak_labels import label_folder

    if (seq / "weak" / "scribbles").is_dir():
        return
    log(f"scribbles for {seq.name}")
    label_folder(seq, "scribbles", seed=0, overwrite=True, progress=False)


def make_scene(seq: Path, scene: Path) -> Path:
    from recon.build import reconstruct
    from recon.sources import ReconOptions

    if (scene / "scene.json").is_file():
        return scene
    log(f"reconstruct {seq.name} from its images (SfM with the camera's calibration + dense stereo) -> {scene}")
    t = time.perf_counter()
    # known intrinsics, as from a calibrated camera: at 240x180 and a few frames self-calibration misses the focal
    # length by 13-16 %, which bends the reconstruction. The scale comes from the images too (the ground plane),
    # not from the depth the generator writes beside them.
    report = reconstruct(seq, scene, ReconOptions(source="images", weak_kind="scribbles", progress=False, stride=1,
                                                  use_intrinsics=True, depth_scale=False), overwrite=True)
    log(f"  {report['points']} points, {report['links']} links in {time.perf_counter() - t:.0f} s")
    return scene


def train_mode(mode: str, args, scenes: list[Path], val: list[Path], out: Path) -> dict:
    from rewis.modes import load_config
    from rewis.trainer import train

    run_dir = out / "runs" / mode
    summary_path = run_dir / "summary.json"
    overrides = [f"mode={mode}", f"run.out={run_dir}", f"data.train=[{','.join(map(str, scenes))}]",
                 f"data.val=[{','.join(map(str, val))}]", f"run.cpu_threads={args.threads}", *args.overrides]
    if args.steps:
        overrides.append(f"run.max_steps={args.steps}")
    cfg = load_config(args.config, overrides)
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        if summary.get("steps") == cfg.run.max_steps:
            log(f"{mode}: reusing {run_dir}")
            return summary
    if run_dir.exists():
        shutil.rmtree(run_dir)
    log(f"train {mode} for {cfg.run.max_steps} steps -> {run_dir}")
    return train(cfg)


def write_results(out: Path, results: dict, seconds: float) -> None:
    from segment.metrics import ss_fs

    full = results["full"]["final"]["miou"]
    table = {m: {"miou": r["final"]["miou"], "iou": r["final"]["iou"], "train_seconds": r["seconds"],
                 "run": r["run"]} for m, r in results.items()}
    for m in ("ema", "rewis3d"):
        table[m]["ss_fs"] = ss_fs(table[m]["miou"], full) if full > 0 else None
    (out / "results.json").write_text(json.dumps(table, indent=1) + "\n")
    lines = ["# rewis quickstart (synthetic street, scribbles)", "",
             "| mode | val mIoU | SS/FS | train s |", "|---|---|---|---|"]
    for m in MODES:
        r = table[m]
        ssfs = "100.0 %" if m == "full" else (f"{r['ss_fs']:.1f} %" if r.get("ss_fs") is not None else "n/a")
        lines.append(f"| {m} | {100 * r['miou']:.2f} | {ssfs} | {r['train_seconds']:.0f} |")
    names = list(table["full"]["iou"])
    lines += ["", "Per-class IoU:", "", "| class | " + " | ".join(MODES) + " |", "|---|" + "---|" * len(MODES)]
    for n in names:
        cells = [("n/a" if table[m]["iou"][n] is None else f"{100 * table[m]['iou'][n]:.1f}") for m in MODES]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    lines += ["", f"Total time {seconds / 60:.1f} min. rewis3d model: {out / 'model'}"]
    text = "\n".join(lines) + "\n"
    (out / "results.md").write_text(text)
    print(text)
