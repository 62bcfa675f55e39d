"""`rewis labels`: derive weak labels (points, scribbles, coarse, boxes, tags) from dense labels."""

from __future__ import annotations

import argparse
from pathlib import Path

from recon.errors import InputError

EPILOG = """\
DIR is a sequence folder (images/, labels/, classes.json; instances/ for boxes), or a dataset folder holding
sequence folders (also inside train/ and val/). Output goes to SEQ/weak/<kind>/: palette PNGs (255 = unlabeled)
for points, scribbles and coarse; JSON for boxes and tags (plus SEQ/weak/tags.json for the whole sequence).

LiDAR (--lidar): weak labels of the scans of SEQ/lidar/ instead of the images, as uint32 .label files in the
scans' own label encoding, one folder per kind beside the dense labels:
  --kind scribbles  ScribbleKITTI-style scribbles (about 8 % of the points, connected curves) -> scribbles/
  --kind points     --per-class random points of every class in each scan (default 20) -> clicks/
  --kind semi       a --fraction of the scans (default 0.1, at least one, drawn by --seed) keep their dense
                    labels, the others are all unlabeled -> semi/
Train on them with method.weak_labels=scribbles|points|semi (modes lidar_weak, scribblekitti). A scan folder
(KITTI velodyne/ + labels/, .npy points/ + labels/ or points_*.npy + labels_*.npy, a nuScenes dataroot with
v1.0-*/ tables and lidarseg: weak/<version>/<kind folder>/) is recognised as LiDAR without --lidar.

Weak labels never disagree with the dense labels; the same --seed gives the same files. Existing outputs are
replaced only with --overwrite, and only once the new ones are complete.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from rewis.lidar_weak_labels import POINTS_PER_CLASS, SEMI_FRACTION
    from rewis.weak_labels import KINDS

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("dir", metavar="DIR", type=Path, help="sequence, dataset or KITTI-layout LiDAR folder")
    parser.add_argument("--kind", required=True, choices=KINDS + ("semi",),
                        help="which weak labels to write (semi: LiDAR only)")
    parser.add_argument("--seed", type=int, default=0, help="random seed: the same seed gives the same files")
    parser.add_argument("--lidar", action="store_true",
                        help="label the LiDAR scans of SEQ/lidar/ instead of the images (scribbles, points, semi)")
    parser.add_argument("--per-class", type=int, default=POINTS_PER_CLASS,
                        help=f"LiDAR --kind points: points per class and scan (default {POINTS_PER_CLASS})")
    parser.add_argument("--fraction", type=float, default=SEMI_FRACTION,
                        help=f"LiDAR --kind semi: share of fully labelled scans (default {SEMI_FRACTION})")
    parser.add_argument("--overwrite", action="store_true", help="replace existing weak labels of this kind")
    parser.add_argument("--quiet", "--no-progress", dest="progress", action="store_false",
                        help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    from rewis.lidar_weak_labels import LidarWeakSpec, label_scans
    from rewis.scans import WEAK_KINDS
    from rewis.scans_formats import scan_layout
    from rewis.weak_labels import label_folder

    lidar = args.lidar or scan_layout(args.dir) is not None
    if lidar and args.kind not in WEAK_KINDS:
        raise InputError(f"{args.dir}: LiDAR weak labels are {', '.join(WEAK_KINDS)}; use one of them "
                         f"(or drop --lidar to label the images)")
    if not lidar and args.kind == "semi":
        raise InputError(f"{args.dir}: --kind semi exists for LiDAR scans only; add --lidar")
    if lidar:
        if not args.dir.is_dir():
            raise InputError(f"{args.dir}: folder not found; pass a scan folder or a sequence folder with lidar/")
        spec = LidarWeakSpec(args.kind, seed=args.seed, per_class=args.per_class, fraction=args.fraction)
        coverage = label_scans(args.dir, spec, overwrite=args.overwrite, progress=args.progress)
    else:
        coverage = label_folder(args.dir, args.kind, seed=args.seed, overwrite=args.overwrite,
                                         progress=args.progress)
    print(coverage.summary())
    return 0
