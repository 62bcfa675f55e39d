"""`rewis recon DIR --out SCENE`: reconstruct a sequence folder into a Scene (see recon/build.py)."""

from __future__ import annotations

import argparse
import sys

from recon.errors import InputError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", nargs="?", help="sequence folder (SEQ/images/...) or a folder of images")
    p.add_argument("--out", help="scene folder to write")
    p.add_argument("--source", choices=("images", "rgbd", "lidar", "colmap"), default=None,
                   help="input kind (default: images, or colmap when DIR holds only a COLMAP model)")
    p.add_argument("--dense", action=argparse.BooleanOptionalAction, default=None,
                   help="densify with plane-sweep stereo (default: on for images)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing non-empty SCENE")
    p.add_argument("--weak-kind", default=None, help="weak labels to accumulate (default: scribbles if present)")
    p.add_argument("--color", choices=("rgb", "label", "confidence"), default="rgb", help="colour of cloud.ply/.glb")
    p.add_argument("--export-only", metavar="SCENE", default=None,
                   help="only re-colour SCENE/cloud.ply and cloud.glb of an existing scene")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    g = p.add_argument_group("images (SfM)")
    g.add_argument("--matching", choices=("auto", "sequential", "exhaustive"), default="auto",
                   help="pairs to match; auto = exhaustive up to --exhaustive-max frames, else sequential")
    g.add_argument("--exhaustive-max", type=int, default=20)
    g.add_argument("--overlap", type=int, default=10, help="sequential matching: neighbours per frame")
    g.add_argument("--loop-detection", action="store_true", help="sequential matching: detect loops")
    g.add_argument("--camera", choices=("shared", "per-image"), default="shared")
    g.add_argument("--use-intrinsics", action="store_true", help="take K from SEQ/cameras.json (fixed)")
    g.add_argument("--focal-factor", type=float, default=1.2, help="focal prior = factor * max(W, H) without EXIF")
    g.add_argument("--camera-height", type=float, default=1.6, metavar="M",
                   help="metres between the ground and the camera (car, handheld: 1.4-1.8). SfM alone cannot know "
                        "the scale; the ground plane under the cameras turns it into metres, so voxel sizes in "
                        "training configs mean metres. 0 turns the ground plane off")
    g.add_argument("--scale", type=float, default=None, metavar="S",
                   help="multiply SfM units by S to get metres (wins over depth and the ground plane; 1 keeps "
                        "SfM's units)")
    g.add_argument("--known-distance", nargs=3, default=None, metavar=("FRAME_A", "FRAME_B", "METRES"),
                   help="the distance in metres between the cameras of two frames (image names or stems); "
                        "sets the scale, winning over depth and the ground plane")
    g.add_argument("--no-depth-scale", dest="depth_scale", action="store_false",
                   help="ignore SEQ/depth/ for the scale (default: measured depth beside the images sets it)")
    g.add_argument("--stereo-max-side", type=int, default=480, metavar="PX",
                   help="dense stereo works at most this many pixels on the long side (links still point at "
                        "the stored images' pixels); 0 = no cap, half the input size (slow and memory-hungry on large "
                        "photos)")
    g.add_argument("--points-per-frame", type=int, default=40000, metavar="N",
                   help="dense points kept per frame on average, by merging points that share a voxel (each "
                        "keeps all its pixel links); 0 keeps every point")
    g.add_argument("--max-features", type=int, default=8192)
    g.add_argument("--moving-classes", default=None, metavar="NAMES",
                   help="comma-separated classes that move in this capture (e.g. car,person): SfM detects no "
                        "keypoints where the frames' labels or weak labels mark them (default: classes.json's "
                        "'moving', else none; parked cars are good features, so name only what moves)")
    g.add_argument("--mask-moving", choices=("auto", "weak", "off"), default="auto",
                   help="which labels mark the moving classes: labels/ and weak labels (auto), weak labels only "
                        "(weak), or none (off)")
    g.add_argument("--mapper", choices=("auto", "incremental", "global"), default="auto",
                   help="first SfM attempt; auto: global with --use-intrinsics (more accurate poses on forward "
                        "drives), else incremental (the global mapper needs a usable focal length)")
    g.add_argument("--no-robust", dest="robust", action="store_false",
                   help="one mapping attempt only (no retries, relaxed initialisation or fallback)")
    g.add_argument("--min-registered", type=float, default=0.5, help="fail below this registered fraction")
    g.add_argument("--windows", choices=("auto", "always", "off"), default="auto",
                   help="ordered sequences (sorted names = time order) with more frames than one window holds: "
                        "overlapping windows of --window-frames frames (half overlap) reconstructed on their own, and "
                        "a frame is kept only where a second reconstruction (the neighbouring window or the "
                        "whole-sequence model) agrees on its pose. auto: the windows check the whole-sequence model, "
                        "which stays where they confirm it while it keeps 90 %% of the frames, else the windows "
                        "replace it as local sub-clouds (each frame in the window nearest whose middle it is kept; "
                        "training takes its points from that window only); always: windows without a whole-sequence "
                        "model; off: the whole-sequence model unchecked. Windows roughly double the SfM time")
    g.add_argument("--window-frames", type=int, default=24, metavar="N",
                   help="frames per window (--windows; at least 4)")
    g.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("fusion (rgbd, dense)")
    g.add_argument("--stride", type=int, default=2, help="use every n-th pixel of each depth map")
    g.add_argument("--drop-fraction", type=float, default=0.1, help="least confident share dropped per view")
    g.add_argument("--depth-conf", choices=("range", "constant"), default="range")
    g.add_argument("--depth-half-range", type=float, default=10.0, help="range: depth (m) of confidence 0.5")
    g.add_argument("--no-cross-view-labels", dest="cross_view_labels", action="store_false",
                   help="keep each point's weak label from its own pixel only (default: majority over every frame "
                        "that sees the point, by a depth test)")
    g = p.add_argument_group("colmap / lidar")
    g.add_argument("--model", default=None, help="COLMAP sparse model folder (default: DIR/sparse/0, DIR/sparse, DIR)")
    g.add_argument("--max-scans", type=int, default=None, help="lidar: use at most this many scans")
    g.add_argument("--scan", default=None, help="lidar, KITTI object layout: scan id such as 000001 (default: first)")
    g.add_argument("--visibility", choices=("zbuffer", "none"), default="zbuffer",
                   help="lidar links: z-buffer per pixel, or every point in the image and in front")


def run(args: argparse.Namespace) -> int:
    from recon.build import export_only, reconstruct
    from recon.scale import scale_line
    from recon.sources import ReconOptions

    if args.export_only:
        paths = export_only(args.export_only, args.color)
        print(f"re-coloured by {args.color}: {', '.join(map(str, paths))}")
        return 0
    if not args.dir or not args.out:
        raise InputError("need DIR and --out SCENE (or --export-only SCENE); see 'rewis recon --help'")
    _check_ranges(args)
    options = ReconOptions(
        source=args.source, dense=args.dense, weak_kind=args.weak_kind, progress=not args.quiet,
        stride=args.stride, drop_fraction=args.drop_fraction, depth_conf=args.depth_conf,
        depth_half_range=args.depth_half_range, cross_view_labels=args.cross_view_labels, matching=args.matching, exhaustive_max=args.exhaustive_max,
        overlap=args.overlap, loop_detection=args.loop_detection, shared_camera=args.camera == "shared",
        use_intrinsics=args.use_intrinsics, camera_height=args.camera_height, focal_factor=args.focal_factor, max_features=args.max_features,
        seed=args.seed, mapper=args.mapper, robust=args.robust, min_registered=args.min_registered,
        model=args.model, max_scans=args.max_scans, scan=args.scan,
        visibility=args.visibility, scale=args.scale, known_distance=known_distance(args.known_distance),
        depth_scale=args.depth_scale, stereo_max_side=args.stereo_max_side, points_per_frame=args.points_per_frame,
        mask_moving=args.mask_moving, moving_classes=moving_classes(args.moving_classes), windows=args.windows,
        window_frames=args.window_frames)
    report = reconstruct(args.dir, args.out, options, overwrite=args.overwrite, color=args.color)
    scale = f"; {scale_line(report['scale'])}" if "scale" in report else ""
    print(f"scene written to {args.out}: {frames_line(report, args.out)}, {report['points']} points, "
          f"{report['links']} links, {report['seconds']:.1f} s{scale}", file=sys.stdout)
    return 0


def moving_classes(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(n.strip() for n in text.split(",") if n.strip())


def known_distance(values: list[str] | None) -> tuple[str, str, float] | None:
    if values is None:
        return None
    first, second, metres = values
    try:
        distance = float(metres)
    except ValueError:
        distance = float("nan")
    if not distance > 0 or distance == float("inf"):
        raise InputError(f"--known-distance {first} {second} {metres}: the distance must be a positive number of "
                         "metres, e.g. --known-distance 000000 000010 2.5")
    return first, second, distance


def frames_line(report: dict, out: str) -> str:
    """E.g. '58/62 frames passed validation (4 rejected: see SCENE/report.json)', '54/60 frames passed
    validation in 4 windows'; sources without pose validation (rgbd, lidar, colmap) say '4/4 frames'."""
    counts = f"{report['frames_registered']}/{report['frames_total']} frames"
    if "frames_rejected" not in report:
        return counts
    rejected = len(report["frames_rejected"])
    windows = f" in {len(report['windows'])} windows" if report.get("windows") else ""
    if report.get("verification"):
        windows = f", confirmed by {report['verification']['windows']} windows"
    return f"{counts} passed validation{windows}" + (f" ({rejected} rejected: see {out}/report.json)"
                                                     if rejected else "")


def _check_ranges(args: argparse.Namespace) -> None:
    if args.window_frames < 4:
        raise InputError(f"--window-frames {args.window_frames}: must be >= 4 (a window needs 3 validated frames; "
                         "20-30 suits drives)")
    if args.stride < 1:
        raise InputError(f"--stride {args.stride}: must be >= 1")
    if args.max_scans is not None and args.max_scans < 1:
        raise InputError(f"--max-scans {args.max_scans}: must be >= 1 (or leave it out to use every scan)")
    if not 0 <= args.drop_fraction < 1:
        raise InputError(f"--drop-fraction {args.drop_fraction}: must lie in [0, 1)")
    if not 0 <= args.min_registered <= 1:
        raise InputError(f"--min-registered {args.min_registered}: must lie in [0, 1]")
    if args.camera_height < 0:
        raise InputError(f"--camera-height {args.camera_height}: must be >= 0 (0 turns the ground plane off)")
    if args.scale is not None and not 0 < args.scale < float("inf"):
        raise InputError(f"--scale {args.scale}: must be a positive factor from SfM units to metres")
    if args.scale is not None and args.known_distance is not None:
        raise InputError("--scale and --known-distance both set the scale; give only one")
    if args.stereo_max_side < 0 or 0 < args.stereo_max_side < 32:
        raise InputError(f"--stereo-max-side {args.stereo_max_side}: must be 0 (no cap) or at least 32 pixels")
    if args.points_per_frame < 0:
        raise InputError(f"--points-per-frame {args.points_per_frame}: must be >= 0 (0 keeps every point)")
    if args.depth_half_range <= 0 or args.focal_factor <= 0:
        raise InputError("--depth-half-range and --focal-factor must be positive")
