"""`rewis predict`: segment a folder of images with a trained model."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = """\
MODEL is an exported folder (holds config.json), a training run folder (its export/ or best/ subfolder is
used) or a Hugging Face model id (taken from the local cache; --allow-download to fetch it).

Outputs under OUT keep the input's relative paths: masks/REL.png (palette PNG whose pixel values are class
ids, same size as the input), with --overlay overlays/REL.jpg (image blended with class colours and a
legend), with --save-probs probs/REL.npy (float16 softmax C x H x W, or the top-1 probability H x W).

Sizing (--mode): 'resize' scales each image to the model input size (the image processor's, or S x S with
--size S), exactly like pipeline("image-segmentation"); 'slide' scales the image to height S and slides
S-wide windows across it (overlap >= 1/3), sums the window logits per pixel (averaged where windows
overlap) and upsamples to the image size, like the Rewis3d evaluation of wide road images; 'auto' (default)
slides on images at least 1.5x wider than tall and resizes the others.

A 3D model (exported by a LiDAR mode) takes a folder of point clouds (.bin KITTI velodyne scans, .npy (N, 3|4),
.ply, .pcd; no labels or calibration needed) and writes REL.label (uint32; raw SemanticKITTI ids when the model
was trained through the learning map, else class ids) and REL.ply coloured by class.

Unreadable files are skipped and listed (exit 0 if at least one image was segmented, 2 if none).
Existing outputs are never replaced without --overwrite."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = HELP
    parser.add_argument("--model", required=True, help="exported model folder, run folder or hub id")
    parser.add_argument("--input", required=True, type=Path, help="folder of images (searched recursively)")
    parser.add_argument("--output", required=True, type=Path, help="output folder")
    parser.add_argument("--overlay", action="store_true", help="also write overlays with a class legend")
    parser.add_argument("--save-probs", nargs="?", const="softmax", choices=("softmax", "top1"), default=None,
                        help="also write float16 probability maps (.npy): softmax (default) or top1")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    add_inference_arguments(parser)


def add_inference_arguments(parser: argparse.ArgumentParser) -> None:
    """How the model runs: shared by `rewis predict` and `rewis eval`."""
    parser.add_argument("--batch-size", type=int, default=4, help="images per forward pass (default 4)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "fp16", "bf16"),
                        help="autocast dtype; auto = fp16 on CUDA, fp32 on CPU")
    parser.add_argument("--size", type=int, default=None,
                        help="model input size S (S x S); default: the model's image processor size")
    parser.add_argument("--mode", default="auto", choices=("auto", "resize", "slide"),
                        help="resize to the input size, or slide windows over wide images "
                             "(see 'rewis predict --help')")
    parser.add_argument("--workers", type=int, default=2, help="image decoding threads (default 2)")
    parser.add_argument("--allow-download", action="store_true", help="let a hub id be downloaded")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from rewis.model3d import model3d_folder

    if model3d_folder(args.model) is not None:
        return run_3d(args)
    from segment.models import load_model
    from segment.predict import InferenceOptions, check_input_folder, predict_folder, validate_options

    options = InferenceOptions(batch_size=args.batch_size, device=args.device, precision=args.precision,
                               size=args.size, mode=args.mode, workers=args.workers, probs=args.save_probs)
    validate_options(options)  # bad input fails before the (slow) model load
    check_input_folder(args.input, args.output)
    loaded = load_model(args.model, allow_download=args.allow_download)
    summary = predict_folder(loaded, args.input, args.output, options, overlay=args.overlay,
                             overwrite=args.overwrite, progress=not args.quiet)
    for rel, reason in summary.skipped:
        print(f"skipped {rel}: {reason}", file=sys.stderr)
    print(f"rewis predict: {summary.line()}")
    return 0


def run_3d(args: argparse.Namespace) -> int:
    from recon.errors import InputError
    from rewis.model3d import find_clouds, load_model3d, predict_folder3d
    from segment.predict import pick_device

    find_clouds(args.input)  # bad input fails before the model load
    device = pick_device(args.device)
    model = load_model3d(args.model, device)
    summary = predict_folder3d(model, args.input, args.output, device, overwrite=args.overwrite,
                               progress=not args.quiet)
    for rel, reason in summary.skipped:
        print(f"skipped {rel}: {reason}", file=sys.stderr)
    if not summary.written:
        raise InputError(f"--input {args.input}: no point cloud could be read ({len(summary.skipped)} skipped)")
    print(f"rewis predict: {summary.line()} -> {args.output}")
    return 0
