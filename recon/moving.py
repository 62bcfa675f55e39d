"""Masks that keep SfM's keypoints off objects that move (cars, people, ...): a moving car's features agree with
each other and not with the street, and drag poses along with it.

Which classes move is declared, never guessed from names: `moving` in classes.json, or `rewis recon
--moving-classes`. Parked cars are good static features, and at low resolution every keypoint counts: masking the
parked cars of the synthetic street (240x180, 5 % of the pixels, 8-14 % of the keypoints) made its SfM reject two
frames and put its metric scale 37 % off. Where they are: a frame's dense label (SEQ/labels/) and its weak label
(SEQ/weak/KIND/), whichever exist, grown by a few pixels since SIFT's support region reaches past an object's
outline. The masks are COLMAP's: `<image name>.png` in one folder, 0 where no keypoint may be detected.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from recon.dataset import ClassList, read_label
from recon.errors import InputError

def moving_class_ids(classes: ClassList, names: tuple[str, ...] | None = None) -> list[int]:
    """Ids of `names` (the command line's), else of classes.json's `moving`; none when neither names any."""
    names = names if names is not None else (classes.moving or ())
    unknown = sorted(set(names) - set(classes.names))
    if unknown:
        raise InputError(f"--moving-classes: {unknown} are not classes of this sequence ({', '.join(classes.names)})")
    return [classes.names.index(n) for n in names]


def moving_pixels(labels: list[np.ndarray], ids: list[int], grow_px: int) -> np.ndarray:
    """(H, W) bool: pixels that any of the frame's label maps marks with a moving class, grown by grow_px."""
    marked = np.zeros(labels[0].shape, bool)
    for label in labels:
        marked |= np.isin(label, ids)
    if grow_px and marked.any():
        marked = ndimage.binary_dilation(marked, np.ones((3, 3), bool), iterations=grow_px)
    return marked


def write_moving_masks(frames: list[tuple[Path, tuple[int, int], list[Path]]], classes: ClassList, out: Path,
                       names: tuple[str, ...] | None = None, grow_px: int = 3) -> dict | None:
    """One mask per frame (image path, (width, height), its label files) into `out`; None when no class moves or
    no frame has labels (then SfM runs without masks). Returns what the report says about them."""
    ids = moving_class_ids(classes, names)
    labelled = [(image, size, labels) for image, size, labels in frames if labels]
    if not ids or not labelled:
        return None
    out.mkdir(parents=True, exist_ok=True)
    shares = []
    for image, (width, height), paths in labelled:
        labels = [read_label(p) for p in paths]
        for path, label in zip(paths, labels):
            if label.shape != (height, width):
                raise InputError(f"{path}: label is {label.shape[1]}x{label.shape[0]} but its image {image.name} "
                                 f"is {width}x{height}; labels must match their frames pixel for pixel")
        marked = moving_pixels(labels, ids, grow_px)
        Image.fromarray(np.where(marked, 0, 255).astype(np.uint8), "L").save(out / f"{image.name}.png")
        shares.append(float(marked.mean()))
    return {"classes": [classes.names[i] for i in ids], "frames": len(labelled), "grow_px": grow_px,
            "masked_share": round(float(np.mean(shares)), 4)}
