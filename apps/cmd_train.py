"""`rewis train CONFIG.yaml [key=value ...] [--resume [PATH]]`: train in this process (CPU or one GPU).

For several GPUs or nodes run the same thing through accelerate: `accelerate launch -m rewis.train CONFIG.yaml`.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from rewis.train import add_arguments as add

    add(parser)


def run(args: argparse.Namespace) -> int:
    from rewis.train import run as run_training

    return run_training(args)
