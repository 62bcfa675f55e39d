"""`rewis quickstart [--lidar] [--out DIR]`: the whole pipeline on the built-in synthetic street benchmark.

Images (default): synthetic street sequences (train seeds + a val seed) -> `rewis labels --kind scribbles` ->
`rewis recon` (images only: SfM + dense stereo) -> train `full`, `ema` and `rewis3d` at the same budget
(configs/quickstart.yaml) -> evaluate each 2D student on the val seed -> table on stdout, DIR/results.json,
DIR/results.md (mIoU, SS/FS); the rewis3d model is exported to DIR/model (a SegFormer folder for `rewis predict`).

LiDAR (--lidar, default DIR quickstart-lidar): synthetic street sequences with 64-beam scans -> LiDAR scribbles
(`rewis labels --kind scribbles --lidar`, about 8 % of the points) -> train `lidar_full`, `lidar_weak` and
`scribblekitti` at the same budget (configs/street_lidar.yaml) -> point mIoU on the val scans -> the same result
files; the scribblekitti 3D model is exported to DIR/model (`rewis predict --model DIR/model --input SCANS`).

Steps whose output already exists are reused, so an interrupted quickstart continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path


CONFIGS = Path(__file__).resolve().parents[1] / "configs"
LIDAR_STEPS = 240


@dataclass(frozen=True)
class Flavour:
    """What one quickstart trains: its modes (the first is the fully supervised reference, the last is exported)."""
    title: str
    modes: tuple[str, ...]
    config: Path
    out: Path
    steps: int | None  # None: the preset's


IMAGES = Flavour("synthetic street, scribbles", ("full", "ema", "rewis3d"), CONFIGS / "quickstart.yaml",
                 Path("quickstart"), None)
LIDAR = Flavour("synthetic street LiDAR, scribbles", ("lidar_full", "lidar_weak", "scribblekitti"),
                CONFIGS / "street_lidar.yaml", Path("quickstart-lidar"), LIDAR_STEPS)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lidar", action="store_true",
                   help="the LiDAR pipeline: scans -> LiDAR scribbles -> lidar_full / lidar_weak / scribblekitti")
    p.add_argument("--out", type=Path, default=None,
                   help="working folder (default: quickstart, or quickstart-lidar with --lidar)")
    p.add_argument("--train-seeds", type=int, nargs="+", default=[0, 1], help="synthetic seeds for training")
    p.add_argument("--val-seeds", type=int, nargs="+", default=[100], help="synthetic seeds for validation")
    p.add_argument("--frames", type=int, default=10, help="frames per training sequence")
    p.add_argument("--val-frames", type=int, default=6, help="frames per validation sequence")
    p.add_argument("--size", default="240x180", help="image size WIDTHxHEIGHT")
    p.add_argument("--steps", type=int, default=None,
                   help=f"optimizer steps per mode (default: the preset's; {LIDAR_STEPS} with --lidar)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default 1 for images: steady on a shared 2-core machine; with --lidar the "
                        "machine's cores; 0 = torch default)")
    p.add_argument("--config", type=Path, default=None,
                   help="training preset shared by the three modes (default: configs/quickstart.yaml, or "
                        "configs/street_lidar.yaml with --lidar)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="extra config overrides for all modes")


def log(msg: str) -> None:
    print(f"[quickstart] {msg}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from recon.synth import parse_size

    flavour = LIDAR if args.lidar else IMAGES
    out = Path(args.out or flavour.out)
    size = parse_size(args.size)
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    train_seqs = [make_sequence(out / "data" / "train" / f"seed{s}", s, args.frames, size, args.lidar)
                  for s in args.train_seeds]
    val_seqs = [make_sequence(out / "data" / "val" / f"seed{s}", s, args.val_frames, size, args.lidar)
                for s in args.val_seeds]
    for seq in train_seqs:
        make_scribbles(seq, args.lidar)
    train_data = train_seqs if args.lidar else [make_scene(seq, out / "scenes" / seq.name) for seq in train_seqs]
    log(f"data ready in {time.perf_counter() - start:.0f} s")
    results = {mode: train_mode(mode, flavour, args, train_data, val_seqs, out) for mode in flavour.modes}
    export = out / "runs" / flavour.modes[-1] / "export"
    if export.is_dir():
        shutil.rmtree(out / "model", ignore_errors=True)
        shutil.copytree(export, out / "model")
    write_results(out, results, time.perf_counter() - start, flavour)
    return 0


def make_sequence(seq: Path, seed: int, frames: int, size, lidar: bool = False) -> Path:
    from recon.synth import generate

    if (seq / "synth.json").is_file() and (seq / "lidar").is_dir() == lidar:
        return seq
    log(f"synth street seed {seed}: {frames} frames{' with LiDAR' if lidar else ''} -> {seq}")
    return generate(preset="street", out=seq, frames=frames, seed=seed, size=size, lidar=lidar, progress=False,
                    overwrite=True)


def make_scribbles(seq: Path, lidar: bool = False) -> None:
    from rewis.lidar_scribbles import scribble_lidar
    from rewis.weak_labels import label_folder

    if (seq / "lidar" / "scribbles" if lidar else seq / "weak" / "scribbles").is_dir():
        return
    log(f"{'LiDAR ' if lidar else ''}scribbles for {seq.name}")
    if lidar:
        scribble_lidar(seq, progress=False)
    else:
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
    # not from the depth the generator writes beside them, and moving classes are masked where the scribbles
    # mark them (not from the dense labels, which a scribbling user does not have).
    report = reconstruct(seq, scene, ReconOptions(source="images", weak_kind="scribbles", progress=False, stride=1,
                                                  use_intrinsics=True, depth_scale=False, mask_moving="weak"),
                         overwrite=True)
    log(f"  {report['points']} points, {report['links']} links in {time.perf_counter() - t:.0f} s")
    return scene


def train_mode(mode: str, flavour: Flavour, args, train_data: list[Path], val: list[Path], out: Path) -> dict:
    from rewis.modes import load_config
    from rewis.trainer import train

    run_dir = out / "runs" / mode
    summary_path = run_dir / "summary.json"
    threads = args.threads if args.threads is not None else ((os.cpu_count() or 1) if args.lidar else 1)
    overrides = [f"mode={mode}", f"run.out={run_dir}", f"data.train=[{','.join(map(str, train_data))}]",
                 f"data.val=[{','.join(map(str, val))}]", f"run.cpu_threads={threads}", *args.overrides]
    steps = args.steps or flavour.steps
    if steps:
        overrides.append(f"run.max_steps={steps}")
    cfg = load_config(args.config or flavour.config, overrides)
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        if summary.get("steps") == cfg.run.max_steps:
            log(f"{mode}: reusing {run_dir}")
            return summary
    if run_dir.exists():
        shutil.rmtree(run_dir)
    log(f"train {mode} for {cfg.run.max_steps} steps -> {run_dir}")
    return train(cfg)


def write_results(out: Path, results: dict, seconds: float, flavour: Flavour = IMAGES) -> None:
    from segment.metrics import ss_fs

    modes, reference = flavour.modes, flavour.modes[0]
    full = results[reference]["final"]["miou"]
    table = {m: {"miou": r["final"]["miou"], "iou": r["final"]["iou"], "train_seconds": r["seconds"],
                 "run": r["run"]} for m, r in results.items()}
    for m in modes[1:]:
        table[m]["ss_fs"] = ss_fs(table[m]["miou"], full) if full > 0 else None
    (out / "results.json").write_text(json.dumps(table, indent=1) + "\n")
    lines = [f"# rewis quickstart ({flavour.title})", "",
             f"SS/FS: a weakly supervised mode's mIoU as a share of {reference}'s (dense labels, same budget).", "",
             "| mode | val mIoU | SS/FS | train s |", "|---|---|---|---|"]
    for m in modes:
        r = table[m]
        ssfs = "100.0 %" if m == reference else (f"{r['ss_fs']:.1f} %" if r.get("ss_fs") is not None else "n/a")
        lines.append(f"| {m} | {100 * r['miou']:.2f} | {ssfs} | {r['train_seconds']:.0f} |")
    names = list(table[reference]["iou"])
    lines += ["", "Per-class IoU:", "", "| class | " + " | ".join(modes) + " |", "|---|" + "---|" * len(modes)]
    for n in names:
        cells = [("n/a" if table[m]["iou"][n] is None else f"{100 * table[m]['iou'][n]:.1f}") for m in modes]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    lines += ["", f"Total time {seconds / 60:.1f} min. {modes[-1]} model: {out / 'model'}"]
    text = "\n".join(lines) + "\n"
    (out / "results.md").write_text(text)
    print(text)
