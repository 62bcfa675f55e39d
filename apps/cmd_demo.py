"""`rewis demo [--host 127.0.0.1] [--port 7860] [--model MODEL] [--model3d FOLDER]`: the Gradio web demo
(apps/demo)."""

from __future__ import annotations

import argparse
import ipaddress
import sys
from pathlib import Path

from recon.errors import InputError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind; the default serves this machine only (use 0.0.0.0 with --public)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--model", default=None, help="model for the Segment tab (run folder, exported folder or hub id)")
    p.add_argument("--model3d", default=None, metavar="FOLDER",
                   help="3D model for the Point cloud tab (an exported folder with config.json of format "
                        "rewis.model3d/1, or a LiDAR run folder); without it the tab offers those under --models-dir, "
                        "quickstart-lidar/model and runs/*/export of the current folder")
    p.add_argument("--models-dir", default="~/.cache/rewis/models",
                   help="exported models directly under this folder are offered in the Segment tab (2D) and the "
                        "Point cloud tab (3D)")
    p.add_argument("--cache-dir", default="~/.cache/rewis/demo", help="where the bundled example is rendered once")
    p.add_argument("--public", action="store_true",
                   help="allow a non-loopback --host (anyone who can reach the port can use the demo)")
    p.add_argument("--max-file-mb", type=int, default=25, help="largest accepted upload, per file")
    p.add_argument("--train-steps", type=int, default=100, help="default length of a Scribble-tab training run")
    p.add_argument("--train-config", default=None, metavar="YAML",
                   help="YAML mapping merged into the Scribble tab's training settings (apps/demo/train_job.py)")
    p.add_argument("--example-size", default="240x180", help="size of the bundled synthetic example, WxH")
    p.add_argument("--example-frames", type=int, default=8, help="frames of the bundled synthetic example")
    p.add_argument("--example-scan", default=None, type=Path, metavar="FILE",
                   help="point cloud offered as the Point cloud tab's example (default: a synthetic street LiDAR scan "
                        "rendered once into --cache-dir)")


def run(args: argparse.Namespace) -> int:
    check_host(args.host, args.public)
    if not 1 <= args.port <= 65535:
        raise InputError(f"--port {args.port}: choose a port between 1 and 65535")
    from apps.demo.app import close, launch, make_context
    from apps.demo.examples import ExampleSpec
    from apps.demo.safety import Limits, limit_malloc_arenas
    from recon.synth import parse_size

    if not 1 <= args.example_frames <= 60:
        raise InputError(f"--example-frames {args.example_frames}: choose 1 to 60")
    example = ExampleSpec(frames=args.example_frames, size=parse_size(args.example_size, "--example-size"))
    check_example_scan(args.example_scan)
    ctx = make_context(model=args.model, models_dir=Path(args.models_dir).expanduser(),
                       cache_dir=Path(args.cache_dir).expanduser(), example=example,
                       limits=Limits(max_file_mb=args.max_file_mb), train_steps=args.train_steps,
                       train_overrides=read_train_config(args.train_config), model3d=args.model3d,
                       example_scan=args.example_scan)
    stop_on_sigterm()
    limit_malloc_arenas()
    print(f"rewis demo on http://{args.host}:{args.port} (Ctrl+C stops it)", file=sys.stderr)
    demo = None
    try:
        demo, _ = launch(ctx, args.host, args.port, block=True)
    finally:
        if demo is not None:
            close(demo, ctx)
        else:
            ctx.sessions.close()
    return 0


def stop_on_sigterm() -> None:
    """SIGTERM (service managers, test harnesses) stops the server like Ctrl+C, so temp folders are removed."""
    import signal

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def check_host(host: str, public: bool) -> None:
    """Loopback unless the user says otherwise: the demo has no login."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        raise InputError(f"--host {host}: not an IP address; use 127.0.0.1 (default) or an address of this machine") from None
    if not loopback and not public:
        raise InputError(f"--host {host} is not a loopback address; the demo has no login, so pass --public as well "
                         "if you really want to serve it to the network")


def check_example_scan(path: Path | None) -> None:
    from apps.demo.safety import CLOUD_SUFFIXES

    if path is None:
        return
    if not path.is_file():
        raise InputError(f"--example-scan {path}: file not found")
    if path.suffix.lower() not in CLOUD_SUFFIXES:
        raise InputError(f"--example-scan {path}: not a point cloud file ({', '.join(CLOUD_SUFFIXES)})")


def read_train_config(path: str | None) -> dict:
    if path is None:
        return {}
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise InputError(f"--train-config {path}: cannot read it as YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise InputError(f"--train-config {path}: must be a YAML mapping of config sections (run, data, model2d, ...)")
    return data
