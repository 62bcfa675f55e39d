"""Drawing with PIL and numpy only: class-colour overlays with a legend, and confusion-matrix heat maps."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from recon.dataset import ClassList

LEGEND_SWATCH = 14
LEGEND_PAD = 6
HEAT_CELL = 28


def colorize(label: np.ndarray, classes: ClassList) -> np.ndarray:
    """(H, W) class ids -> (H, W, 3) uint8 colours; ids outside the palette (void) are black."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[:classes.num_classes] = np.asarray(classes.palette, dtype=np.uint8)
    return lut[label]


def overlay(rgb: np.ndarray, label: np.ndarray, classes: ClassList, alpha: float = 0.5) -> Image.Image:
    """The image blended with the class colours, plus a legend strip (on the right) naming the classes that
    occur in `label`."""
    blended = (rgb.astype(np.float32) * (1 - alpha) + colorize(label, classes).astype(np.float32) * alpha)
    image = Image.fromarray(blended.round().astype(np.uint8))
    present = [int(c) for c in np.unique(label) if c < classes.num_classes]
    return _with_legend(image, [(classes.names[c], classes.palette[c]) for c in present])


def _with_legend(image: Image.Image, entries: list[tuple[str, tuple]]) -> Image.Image:
    font = ImageFont.load_default()
    measure = ImageDraw.Draw(image)
    text_w = max((measure.textlength(name, font=font) for name, _ in entries), default=0)
    row_h = LEGEND_SWATCH + 4
    width = int(LEGEND_PAD * 3 + LEGEND_SWATCH + text_w)
    height = max(image.height, LEGEND_PAD * 2 + row_h * len(entries))
    canvas = Image.new("RGB", (image.width + width, height), (255, 255, 255))
    canvas.paste(image, (0, 0))
    draw = ImageDraw.Draw(canvas)
    x = image.width + LEGEND_PAD
    for row, (name, colour) in enumerate(entries):
        y = LEGEND_PAD + row * row_h
        draw.rectangle([x, y, x + LEGEND_SWATCH, y + LEGEND_SWATCH], fill=tuple(colour), outline=(0, 0, 0))
        draw.text((x + LEGEND_SWATCH + LEGEND_PAD, y + 1), name, fill=(0, 0, 0), font=font)
    return canvas


def row_normalised(confusion) -> np.ndarray:
    """Each ground-truth row divided by its total (rows without pixels stay 0)."""
    cm = np.asarray(confusion, dtype=np.float64)
    totals = cm.sum(axis=1, keepdims=True)
    return np.divide(cm, totals, out=np.zeros_like(cm), where=totals > 0)


def confusion_image(confusion, names: list[str]) -> Image.Image:
    """A row-normalised confusion heat map: rows = ground truth, columns = prediction, white (0) to dark blue
    (1), percentages in the cells, class names along both axes."""
    share = row_normalised(confusion)
    n = len(names)
    font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    margin = int(max((probe.textlength(s, font=font) for s in names), default=0)) + 2 * LEGEND_PAD
    size = margin + n * HEAT_CELL + LEGEND_PAD
    canvas = Image.new("RGB", (size, size), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for i in range(n):
        for j in range(n):
            _draw_cell(draw, font, margin + j * HEAT_CELL, margin + i * HEAT_CELL, share[i, j])
        draw.text((LEGEND_PAD, margin + i * HEAT_CELL + HEAT_CELL // 3), names[i], fill=(0, 0, 0), font=font)
    canvas.paste(_column_labels(names, margin, font), (margin, 0))
    draw.text((LEGEND_PAD, LEGEND_PAD), "truth \\ pred", fill=(90, 90, 90), font=font)
    return canvas


def _draw_cell(draw: ImageDraw.ImageDraw, font, x: int, y: int, value: float) -> None:
    white, blue = np.array([255, 255, 255]), np.array([8, 48, 107])
    colour = tuple(int(c) for c in (white + (blue - white) * value).round())
    draw.rectangle([x, y, x + HEAT_CELL - 1, y + HEAT_CELL - 1], fill=colour, outline=(220, 220, 220))
    if value > 0:
        text = f"{100 * value:.0f}"
        draw.text((x + 4, y + HEAT_CELL // 3), text, fill=(255, 255, 255) if value > 0.5 else (0, 0, 0), font=font)


def _column_labels(names: list[str], height: int, font) -> Image.Image:
    # Text is drawn horizontally on a strip and the strip rotated, so names read bottom-up above the columns.
    strip = Image.new("RGB", (height, len(names) * HEAT_CELL), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    for j, name in enumerate(names):
        draw.text((LEGEND_PAD, j * HEAT_CELL + HEAT_CELL // 3), name, fill=(0, 0, 0), font=font)
    return strip.rotate(90, expand=True)
