"""`rewis synth`: render a synthetic sequence (street, room or drive) with full ground truth."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

PRESET_NAMES = ("street", "room", "drive")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=PRESET_NAMES, default="street", help="scene family")
    parser.add_argument("--frames", type=int, default=30, help="number of frames (>= 1)")
    parser.add_argument("--seed", type=int, default=0, help="layout and trajectory seed (train/val split by seed)")
    parser.add_argument("--size", default="480x360", help="image size WIDTHxHEIGHT")
    parser.add_argument("--lidar", action="store_true", help="also write spinning-LiDAR sweeps (KITTI layout)")
    parser.add_argument("--step", type=float, default=None,
                        help="metres between frames (default: 1.0 for street, 0.25 for room; for drive the mean "
                             "step of its ordinary stretches, 4.5)")
    parser.add_argument("--out", type=Path, required=True, help="sequence folder to create")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists and is not empty")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from recon.synth import generate, parse_size

    size = parse_size(args.size)
    started = time.perf_counter()
    out = generate(preset=args.preset, out=args.out, frames=args.frames, seed=args.seed, size=size,
                   lidar=args.lidar, overwrite=args.overwrite, progress=not args.quiet, step=args.step)
    print(f"rewis synth: wrote {args.frames} {args.preset} frames to {out} in {time.perf_counter() - started:.1f} s")
    return 0
