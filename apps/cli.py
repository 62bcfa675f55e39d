"""The `rewis` command line: one module per subcommand, each with `add_arguments(parser)` and `run(args)`."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# Idle OpenMP threads sleep instead of spinning: on a busy machine spinning threads steal the cores the work
# needs (dense stereo measured 2x slower with 2 spinning threads at load 3-5). Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from recon.errors import InputError

# subcommand -> (module under apps/, one-line help). Modules are imported only when their command runs,
# so `rewis --help` stays fast and one broken optional dependency does not take the whole CLI down.
COMMANDS = {
    "synth": ("apps.cmd_synth", "render a synthetic sequence with ground truth (street or room)"),
    "labels": ("apps.cmd_labels", "derive weak labels (points, scribbles, coarse, boxes, tags) from dense labels"),
    "frames": ("apps.cmd_frames", "sample a video into a sequence folder (the sharpest frame per 1/FPS s)"),
    "recon": ("apps.cmd_recon", "reconstruct a sequence into a Scene (cloud + cameras + pixel links)"),
    "train": ("apps.cmd_train", "train a model from a YAML config (same as accelerate launch -m rewis.train)"),
    "predict": ("apps.cmd_predict", "segment a folder of images with a trained model"),
    "eval": ("apps.cmd_eval", "per-class IoU and mIoU of a model on a labelled dataset folder"),
    "demo": ("apps.cmd_demo", "start the Gradio web demo on loopback"),
    "quickstart": ("apps.cmd_quickstart", "synthetic data -> reconstruction -> scribbles -> train -> evaluate"),
}

EXIT_BAD_INPUT = 2


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default unless its help already names one or there is none worth naming."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text.lower() or any(action.default is v for v in (None, False, argparse.SUPPRESS)):
            return text
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own errors: one line, exit 2 (argparse already uses 2)
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _load(module_name: str):
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name == module_name:
            return None
        raise


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = _Parser(prog="rewis", description="rewis: dense segmentation from scribbles and clicks, supervised through 3D reconstruction.",
                     formatter_class=argparse.RawDescriptionHelpFormatter,
                     epilog="Run 'rewis COMMAND --help' for the options of one command.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    # Only the chosen command's module is imported; the others get a bare entry for the help listing.
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text,
                           formatter_class=_HelpFormatter)
        if name == chosen:
            module = _load(module_name)
            if module is not None:
                module.add_arguments(p)
            p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_BAD_INPUT
    if args._module is None:
        print(f"rewis {args.command}: not built yet in this version", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        return args._module.run(args) or 0
    except InputError as e:
        print(f"rewis {args.command}: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"rewis {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
