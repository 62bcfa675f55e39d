"""`rewis labels`: derive weak labels (points, scribbles, coarse, boxes, tags) from dense labels."""

from __future__ import annotations

import argparse
from pathlib import Path

from recon.errors import InputError

EPILOG = """\
DIR is a sequence folder (images/, labels/, classes.json; instances/ for boxes), or a dataset folder holding
sequence folders (also inside train/ and val/). Output goes to SEQ/weak/<kind>/: palette PNGs (255 = unlabeled)
for points, scribbles and coarse; JSON for boxes and tags (plus SEQ/weak/tags.json for the whole sequence).

LiDAR: --kind scribbles --lidar writes ScribbleKITTI-style scribbles (about 8 % of the points, as connected
curves) for SEQ/lidar/ into SEQ/lidar/scribbles/<id>.label instead of scribbling the images. A DIR in the
KITTI odometry layout (velodyne/ and labels/ inside) is recognised as LiDAR without --lidar.

Weak labels never disagree with the dense labels; the same --seed gives the same files. Existing outputs are
replaced only with --overwrite, and only once the new ones are complete.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from rewis.weak_labels import KINDS

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("dir", metavar="DIR", type=Path, help="sequence, dataset or KITTI-layout LiDAR folder")
    parser.add_argument("--kind", required=True, choices=KINDS, help="which weak labels to write")
    parser.add_argument("--seed", type=int, default=0, help="random seed: the same seed gives the same files")
    parser.add_argument("--lidar", action="store_true",
                        help="with --kind scribbles: scribble the LiDAR points of SEQ/lidar/ instead of the images")
    parser.add_argument("--overwrite", action="store_true", help="replace existing weak labels of this kind")
    parser.add_argument("--quiet", "--no-progress", dest="progress", action="store_false",
                        help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    from rewis.lidar_scribbles import is_lidar_folder, scribble_lidar
    from rewis.weak_labels import label_folder

    lidar = args.lidar or (args.dir.is_dir() and is_lidar_folder(args.dir))
    if lidar and args.kind != "scribbles":
        raise InputError(f"{args.dir}: LiDAR weak labels exist only as scribbles; use --kind scribbles "
                         f"(or drop --lidar to label the images)")
    if lidar:
        coverage = scribble_lidar(args.dir, overwrite=args.overwrite, progress=args.progress)
    else:
        coverage = label_folder(args.dir, args.kind, seed=args.seed, overwrite=args.overwrite,
                                         progress=args.progress)
    print(coverage.summary())
    return 0
