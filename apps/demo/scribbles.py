"""Scribbles drawn in gr.ImageEditor <-> class-id weak-label maps (docs/FORMATS.md: SEQ/weak/scribbles/*.png,
uint8, 255 = unlabeled).

The brush paints in the class colours of the palette; a stroke pixel becomes the class whose colour is nearest,
if it is near enough (anti-aliased stroke edges are half transparent and are left unlabeled). Later layers
paint over earlier ones, as they do on screen."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from recon.dataset import IGNORE_INDEX, ClassList, write_label

MIN_ALPHA = 128  # stroke pixels at least this opaque count; fainter ones are anti-aliased edges
MAX_COLOUR_DISTANCE = 60.0  # RGB distance to the nearest class colour; farther pixels are not a class brush


def as_rgba(layer) -> np.ndarray | None:
    """A layer as (H, W, 4) uint8: numpy arrays, PIL images and file paths are accepted; None stays None."""
    if layer is None:
        return None
    if isinstance(layer, (str, Path)):
        with Image.open(layer) as im:
            return np.array(im.convert("RGBA"))
    if isinstance(layer, Image.Image):
        return np.array(layer.convert("RGBA"))
    arr = np.asarray(layer)
    if arr.ndim == 2:
        return np.array(Image.fromarray(arr.astype(np.uint8)).convert("RGBA"))
    if arr.shape[2] == 3:  # no alpha: black is "nothing drawn"
        alpha = np.where(arr.any(axis=2), 255, 0).astype(np.uint8)
        return np.dstack([arr.astype(np.uint8), alpha])
    return arr.astype(np.uint8)


def layer_classes(rgba: np.ndarray, classes: ClassList) -> np.ndarray:
    """(H, W) class ids of one layer's opaque pixels, 255 elsewhere."""
    out = np.full(rgba.shape[:2], IGNORE_INDEX, np.uint8)
    opaque = rgba[..., 3] >= MIN_ALPHA
    if not opaque.any():
        return out
    colours = rgba[..., :3][opaque].astype(np.float32)
    palette = np.asarray(classes.palette, np.float32)
    dist = np.linalg.norm(colours[:, None, :] - palette[None, :, :], axis=2)
    nearest = dist.argmin(axis=1)
    near_enough = dist[np.arange(len(nearest)), nearest] <= MAX_COLOUR_DISTANCE
    values = np.where(near_enough, nearest, IGNORE_INDEX).astype(np.uint8)
    out[opaque] = values
    return out


def editor_to_label(value, classes: ClassList, size: tuple[int, int]) -> np.ndarray:
    """An ImageEditor value ({"background", "layers", "composite"}) -> (H, W) class ids at `size` = (W, H)."""
    width, height = size
    label = np.full((height, width), IGNORE_INDEX, np.uint8)
    layers = (value or {}).get("layers") or [] if isinstance(value, dict) else []
    for layer in layers:
        rgba = as_rgba(layer)
        if rgba is None:
            continue
        ids = layer_classes(rgba, classes)
        if ids.shape != (height, width):  # the canvas may be scaled; class ids must not be blended
            ids = np.array(Image.fromarray(ids).resize((width, height), Image.NEAREST))
        drawn = ids != IGNORE_INDEX
        label[drawn] = ids[drawn]
    return label


def label_to_layer(label: np.ndarray, classes: ClassList) -> np.ndarray:
    """(H, W) class ids -> an RGBA layer showing them in class colours (transparent where unlabeled)."""
    lut = np.zeros((256, 4), np.uint8)
    lut[:classes.num_classes, :3] = np.asarray(classes.palette, np.uint8)
    lut[:classes.num_classes, 3] = 255
    return lut[label]


def save_scribbles(seq: Path, stem: str, label: np.ndarray, classes: ClassList) -> Path | None:
    """Write SEQ/weak/scribbles/<stem>.png; a frame without any stroke has its file removed (= not annotated)."""
    path = Path(seq) / "weak" / "scribbles" / f"{stem}.png"
    if (label == IGNORE_INDEX).all():
        path.unlink(missing_ok=True)
        return None
    write_label(path, label, classes)
    return path


def annotated_stems(seq: Path) -> list[str]:
    folder = Path(seq) / "weak" / "scribbles"
    return sorted(p.stem for p in folder.glob("*.png")) if folder.is_dir() else []


def scribble_pixels(seq: Path) -> dict[str, int]:
    """Labelled pixels per annotated frame."""
    from recon.dataset import read_label

    return {stem: int((read_label(Path(seq) / "weak" / "scribbles" / f"{stem}.png") != IGNORE_INDEX).sum())
            for stem in annotated_stems(seq)}
