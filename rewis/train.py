"""Entry point: `python -m rewis.train CONFIG.yaml [key=value ...] [--resume [PATH]]`, also launched as
`accelerate launch [--mixed_precision bf16] [--num_processes N] -m rewis.train CONFIG.yaml ...`."""

from __future__ import annotations

import argparse
import sys

from recon.errors import InputError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML preset (configs/*.yaml)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="override config fields, e.g. run.max_steps=200 data.batch_size=4 run.out=runs/x")
    p.add_argument("--resume", nargs="?", const="latest", default=None, metavar="PATH",
                   help="continue a killed run: without PATH the newest checkpoint of run.out; PATH may be a run "
                        "folder or one of its checkpoints/step_N")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh in a run folder that holds an earlier run (it is deleted first)")


def run(args: argparse.Namespace) -> int:
    from rewis.modes import load_config
    from rewis.trainer import train

    cfg = load_config(args.config, args.overrides)
    if args.resume is not None and args.overwrite:
        raise InputError("--resume and --overwrite exclude each other: continue the run, or replace it")
    summary = train(cfg, resume=args.resume, overwrite=args.overwrite)
    from accelerate import PartialState

    if not PartialState().is_main_process:
        return 0
    best = summary.get("best_miou")
    shown = f", best val mIoU {100 * best:.2f} at step {summary['best_step']}" if best is not None else ""
    print(f"trained {summary['mode']} for {summary['steps']} steps in {summary['seconds']:.0f} s{shown}; "
          f"run folder {summary['run']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rewis.train", description=__doc__)
    add_arguments(p)
    args = p.parse_args(argv)
    try:
        return run(args)
    except InputError as e:
        print(f"rewis train: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
