"""`rewis frames VIDEO --out SEQ`: sample a video into a sequence folder for `rewis recon` (see recon/video.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from recon.errors import InputError

DEFAULT_FPS = 2.0
DEFAULT_MAX_SIDE = 1280


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("video", type=Path, help="video file (mp4, mov, mkv, ...: anything FFmpeg decodes)")
    p.add_argument("--out", type=Path, required=True, help="sequence folder to create (frames go to SEQ/images/)")
    p.add_argument("--fps", type=float, default=DEFAULT_FPS,
                   help="frames per second to keep (> 0): the sharpest frame of each 1/FPS s of video")
    p.add_argument("--max-frames", type=int, default=None, metavar="N", help="stop after N frames")
    p.add_argument("--size", default=None, metavar="WxH",
                   help="output size, same aspect ratio as the video (instead of --max-side)")
    p.add_argument("--max-side", type=int, default=None, metavar="PX",
                   help=f"downscale so the long side is at most PX, aspect kept (default {DEFAULT_MAX_SIDE}; "
                        "0 = keep the video's size)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists and is not empty")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    try:
        from recon.video import FrameOptions, parse_size, video_to_sequence
    except ModuleNotFoundError as e:
        if e.name != "av":
            raise
        raise InputError("PyAV (package 'av') is not installed; run scripts/setup.sh, or .venv/bin/pip install "
                         "'av>=12'") from None
    if args.size is not None and args.max_side is not None:
        raise InputError("--size and --max-side both set the output size; give only one")
    options = FrameOptions(fps=args.fps, max_side=DEFAULT_MAX_SIDE if args.max_side is None else args.max_side,
                           size=None if args.size is None else parse_size(args.size),
                           max_frames=args.max_frames, progress=not args.quiet)
    written = video_to_sequence(args.video, args.out, options, overwrite=args.overwrite)
    width, height = written.size
    print(f"rewis frames: wrote {written.frames} frames ({args.fps:g} fps, {width}x{height}) to {written.images}")
    return 0
