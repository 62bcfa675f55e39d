"""`rewis eval`: per-class IoU and mIoU of a model on a labelled dataset folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from apps.cmd_predict import add_inference_arguments

HELP = """\
DATA is a sequence folder (images/ + labels/ + classes.json), a folder of sequences, or a dataset with
train/ and val/ subfolders or a split.json (--split auto takes val when there is one). One confusion matrix is
accumulated over the whole split; mIoU averages the classes that occur in ground truth or prediction.
Model and dataset classes must have the same names (their order may differ).

The table is printed; --json PATH also writes the metrics (per-class IoU, mIoU, pixel accuracy, confusion
counts) and a row-normalised confusion heat map beside it (PATH with suffix .confusion.png; --confusion to
put it elsewhere). Images are sized as in `rewis predict` (see --mode there).

A 3D model (exported by a LiDAR mode) is scored on the scans of DATA: a KITTI-layout folder (velodyne/ +
labels/), a folder of .npy scans (points/ + labels/, or points_*.npy + labels_*.npy), a nuScenes dataroot
(v1.0-*/ tables with lidarseg), a sequence with lidar/, or a folder of such sequences; one point confusion
matrix over all scans (docs/FORMATS.md, LiDAR)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = HELP
    parser.add_argument("--model", required=True, help="exported model folder, run folder or hub id")
    parser.add_argument("--data", required=True, type=Path, help="sequence or dataset folder")
    parser.add_argument("--split", default="auto", choices=("auto", "val", "train", "all"),
                        help="which split of a dataset folder (default auto: val if present)")
    parser.add_argument("--json", type=Path, default=None, help="write the metrics as JSON here")
    parser.add_argument("--confusion", type=Path, default=None,
                        help="confusion heat map PNG (default: beside --json)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing JSON / PNG")
    add_inference_arguments(parser)


def output_files(args: argparse.Namespace) -> tuple[Path | None, Path | None]:
    from recon.errors import InputError

    confusion = args.confusion or (args.json.with_suffix(".confusion.png") if args.json else None)
    for path in (args.json, confusion):
        if path is not None and path.exists() and not args.overwrite:
            raise InputError(f"{path}: already exists; pass --overwrite to replace it or choose another path")
    return args.json, confusion


def run(args: argparse.Namespace) -> int:
    from rewis.model3d import model3d_folder

    if model3d_folder(args.model) is not None:
        return run_3d(args)
    from segment.evaluate import evaluate, find_sequences, format_table
    from segment.models import load_model
    from segment.predict import InferenceOptions, validate_options

    options = InferenceOptions(batch_size=args.batch_size, device=args.device, precision=args.precision,
                               size=args.size, mode=args.mode, workers=args.workers)
    validate_options(options)
    find_sequences(args.data, args.split)  # bad data fails before the model load
    json_path, confusion_path = output_files(args)
    loaded = load_model(args.model, allow_download=args.allow_download)
    report = evaluate(loaded, args.data, options, split=args.split, progress=not args.quiet)
    print(format_table(report))
    print(f"rewis eval: {report['images']} images, split {report['split']}, mIoU {100 * report['miou']:.2f}")
    write_outputs(report, json_path, confusion_path)
    return 0


def write_outputs(report: dict, json_path: Path | None, confusion_path: Path | None) -> None:
    from segment.draw import confusion_image

    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=1) + "\n")
    if confusion_path:
        confusion_path.parent.mkdir(parents=True, exist_ok=True)
        confusion_image(report["confusion"], list(report["iou"])).save(confusion_path)


def run_3d(args: argparse.Namespace) -> int:
    """A 3D model on the scans of DATA (KITTI-layout folders or sequences with lidar/, dense labels/)."""
    from rewis.model3d import load_model3d, score_scans
    from rewis.scans import scan_folders
    from segment.evaluate import format_table
    from segment.predict import pick_device

    json_path, confusion_path = output_files(args)
    device = pick_device(args.device)
    model = load_model3d(args.model, device)
    folders = scan_folders([str(args.data)], model.label_map, "--data")
    report = score_scans(model, folders, device, progress=not args.quiet)
    report.update(model=model.source, data=str(args.data))
    print(format_table(report, counts="gt_points"))
    print(f"rewis eval: {report['scans']} scans, mIoU {100 * report['miou']:.2f}")
    write_outputs(report, json_path, confusion_path)
    return 0
