"""COLMAP source: an existing sparse model (cameras/images/points3D, .bin or .txt) plus its images.

The model folder is --model, else SEQ/sparse/0, SEQ/sparse or SEQ itself; images are looked up by their
COLMAP name under SEQ/images (or SEQ). Points, confidences and track links follow the images source.
Lens distortion is not carried over: the scene stores the pinhole part of each camera.
"""

from __future__ import annotations

from pathlib import Path

from recon import colmap_adapter as colmap
from recon.errors import InputError
from recon.scene import Scene
from recon.source_images import scene_from_model
from recon.sources import ReconOptions, Sequence, Stages

PINHOLE_MODELS = ("SIMPLE_PINHOLE", "PINHOLE")


def build(seq: Sequence, options: ReconOptions, stages: Stages) -> tuple[Scene, dict]:
    from recon.build import find_colmap_model

    folder = Path(options.model) if options.model else find_colmap_model(seq.root)
    if folder is None:
        raise InputError(f"{seq.root}: no COLMAP model found (looked in sparse/0, sparse and the folder itself); "
                         "pass --model PATH")
    with stages("read model"):
        model = colmap.to_arrays(colmap.read_model(folder))
    if model.num_frames == 0:
        raise InputError(f"{folder}: the COLMAP model has no registered images")
    missing = [n for n in model.names if not (seq.image_dir / n).is_file()]
    if missing:
        raise InputError(f"{seq.image_dir / missing[0]}: image of the COLMAP model not found ({len(missing)} of "
                         f"{model.num_frames} missing); put the images in {seq.root / 'images'}")
    with stages("scene"):
        scene = scene_from_model(seq, model, "colmap")
    info = {"frames_total": model.num_frames, "frames_registered": model.num_frames, "model": str(folder.resolve()),
            "camera_model": model.camera_model}
    if model.camera_model not in PINHOLE_MODELS:
        info["note"] = f"{model.camera_model} distortion parameters are not applied (pinhole part kept)"
    return scene, info
