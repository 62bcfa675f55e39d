"""`reconstruct(...)`: source dispatch, per-stage timing, report.json, PLY/GLB export, atomic write.

Nothing is written to SCENE until the whole scene exists: everything goes into a hidden staging folder
beside it that is renamed into place at the end (and removed on any error).
"""

from __future__ import annotations

import importlib
import json
import time
from pathlib import Path

from recon.atomic import check_writable, staged_folder
from recon.errors import InputError
from recon.export import COLOR_MODES, export_cloud
from recon.scene import Scene
from recon.sources import SOURCE_KINDS, ReconOptions, Stages, open_sequence

REPORT_NAME = "report.json"


def reconstruct(seq_dir: Path, out: Path, options: ReconOptions | None = None, overwrite: bool = False,
                color: str = "rgb", stages: Stages | None = None) -> dict:
    """Reconstruct the sequence folder `seq_dir` into the scene folder `out`; returns the report. `stages`
    times each stage and shows progress (default: a progress line per stage on stderr; the demo passes
    one that drives its progress bar)."""
    options = options or ReconOptions()
    seq_dir, out = Path(seq_dir), Path(out)
    check_writable(out, overwrite)  # fail before minutes of SfM, not after
    if seq_dir.resolve().is_relative_to(out.resolve()):
        raise InputError(f"--out {out}: contains the input {seq_dir}, which replacing it would delete; "
                         "choose an output folder outside the input")
    if color not in COLOR_MODES:
        raise InputError(f"--color {color!r}: choose one of {', '.join(COLOR_MODES)}")
    start = time.perf_counter()
    source = detect_source(seq_dir, options.source)
    if source != "images" and (options.scale is not None or options.known_distance is not None):
        raise InputError(f"--scale / --known-distance: apply to --source images only, not {source} (rgbd and "
                         "lidar are metric, colmap keeps its model's units); drop the option")
    seq = open_sequence(seq_dir, options.weak_kind, need_images=source in ("images", "rgbd"))
    stages = stages or Stages(options.progress)
    module = importlib.import_module(f"recon.source_{source}")
    scene, info = module.build(seq, options, stages)
    report = {"source": source, "input": str(seq_dir.resolve()), **info,
              "points": len(scene.cloud), "links": int(len(scene.links.point))}
    with stages("write"):
        write_scene(scene, out, overwrite, report, stages, start, color)
    return report


def detect_source(seq_dir: Path, requested: str | None) -> str:
    if requested is not None:
        if requested not in SOURCE_KINDS:
            raise InputError(f"--source {requested!r}: choose one of {', '.join(SOURCE_KINDS)}")
        return requested
    if find_colmap_model(seq_dir) is not None and not (seq_dir / "images").is_dir():
        return "colmap"
    return "images"


def find_colmap_model(seq_dir: Path) -> Path | None:
    for candidate in (seq_dir / "sparse" / "0", seq_dir / "sparse", seq_dir):
        if any((candidate / f"cameras{ext}").is_file() for ext in (".bin", ".txt")):
            return candidate
    return None


def write_scene(scene: Scene, out: Path, overwrite: bool, report: dict, stages: Stages, start: float,
                color: str = "rgb") -> None:
    scene.validate(str(out))
    with staged_folder(out, overwrite) as staging:
        scene.write_files(staging)
        export_cloud(staging, scene.cloud, scene.classes, color)
        report["seconds"] = round(time.perf_counter() - start, 3)
        report["stages"] = {k: round(v, 3) for k, v in stages.times.items()}
        (staging / REPORT_NAME).write_text(json.dumps(report, indent=1) + "\n")
    scene.root = out


def export_only(scene_dir: Path, color: str = "rgb") -> list[Path]:
    """Re-colour an existing scene's cloud.ply / cloud.glb."""
    scene = Scene.load(Path(scene_dir))
    return export_cloud(Path(scene_dir), scene.cloud, scene.classes, color)
