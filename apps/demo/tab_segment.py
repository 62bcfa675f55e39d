"""Segment tab: images (uploaded or the bundled example) -> a model -> class overlay with legend, per-class pixel
shares, and a zip of the masks (class-id palette PNGs, the `rewis predict` layout)."""

from __future__ import annotations

import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import numpy as np

from apps.demo.models import UNTRAINED
from apps.demo.safety import (
    ALLOWED_IMAGE_TYPES,
    check_images,
    readable_errors,
    release_memory,
    uploaded_paths,
)
from recon.dataset import ClassList, write_label
from segment.draw import overlay
from segment.predict import InferenceOptions, Segmenter

EXAMPLE_FRAMES = 3  # the example button loads this many frames of the example sequence


@dataclass
class SegmentResult:
    name: str
    image: Path  # the input image
    mask: Path  # class ids, palette PNG
    overlay: Path


def predict_images(loaded, paths: list[Path], out: Path, progress=None) -> list[SegmentResult]:
    """Run the model over `paths`; write masks and overlays (with legend) under `out`."""
    options = InferenceOptions(batch_size=2, device="cpu", workers=1, keep_rgb=True)
    names = unique_stems(paths)
    by_path = dict(zip(paths, names))
    results = []
    for i, pred in enumerate(Segmenter(loaded, options).run(paths)):
        if pred.error:  # checked before, so only a file that changed under us gets here
            raise gr.Error(f"'{pred.path.name}': {pred.error}", print_exception=False)
        name = by_path[pred.path]
        mask, shown = out / "masks" / f"{name}.png", out / "overlays" / f"{name}.jpg"
        write_label(mask, pred.label, loaded.classes)
        shown.parent.mkdir(parents=True, exist_ok=True)
        overlay(pred.rgb, pred.label, loaded.classes).save(shown, quality=90)
        results.append(SegmentResult(name=name, image=pred.path, mask=mask, overlay=shown))
        if progress is not None:
            progress((i + 1) / len(paths), desc=f"segmented {i + 1}/{len(paths)}")
    return results


def unique_stems(paths: list[Path]) -> list[str]:
    """File stems, numbered where two uploads share a name, so no output overwrites another."""
    seen: dict[str, int] = {}
    out = []
    for p in paths:
        stem = p.stem
        seen[stem] = seen.get(stem, 0) + 1
        out.append(stem if seen[stem] == 1 else f"{stem}_{seen[stem]}")
    return out


def class_shares(masks: list[np.ndarray], classes: ClassList) -> list[list]:
    """Rows [class, pixels, share %] over all masks, most frequent first; void pixels are not counted."""
    counts = np.zeros(256, np.int64)
    for m in masks:
        counts += np.bincount(m.ravel(), minlength=256)
    counts = counts[:classes.num_classes]
    total = max(1, int(counts.sum()))
    order = np.argsort(-counts, kind="stable")
    return [[classes.names[c], int(counts[c]), round(100.0 * counts[c] / total, 2)] for c in order if counts[c] > 0]


def annotated_value(result: SegmentResult, classes: ClassList):
    """(image, [(mask, class name), ...]) for gr.AnnotatedImage: one soft mask per class present."""
    from PIL import Image

    from recon.dataset import read_label, read_rgb

    rgb, label = read_rgb(result.image), read_label(result.mask)
    masks = [((label == c).astype(np.float32), classes.names[c]) for c in np.unique(label) if c < classes.num_classes]
    return Image.fromarray(rgb), masks


def color_map(classes: ClassList) -> dict[str, str]:
    return {n: "#{:02x}{:02x}{:02x}".format(*c) for n, c in zip(classes.names, classes.palette)}


def masks_zip(results: list[SegmentResult], classes: ClassList, out: Path) -> Path:
    from recon.dataset import write_classes

    write_classes(out, classes)
    archive = out / "rewis_masks.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(out / "classes.json", "classes.json")
        for r in results:
            zf.write(r.mask, f"masks/{r.mask.name}")
            zf.write(r.overlay, f"overlays/{r.overlay.name}")
    return archive


# ---------------------------------------------------------------------------------------------- UI

def build(ctx) -> gr.Dropdown:
    """Add the Segment tab; `ctx` is the app context (models, examples, sessions, limits). Returns the model
    dropdown (the app refreshes its choices on every page load)."""
    with gr.Tab("Segment", id="segment"):
        gr.Markdown("Upload images, or try the bundled synthetic street frames, and pick a model. "
                    "Masks download as class-id PNGs (the layout of `rewis predict`).")
        with gr.Row():
            with gr.Column(scale=1, min_width=280):
                files = gr.File(label="Images", file_count="multiple", file_types=ALLOWED_IMAGE_TYPES,
                                elem_id="segment-files", height=160)
                example = gr.Button("Use the synthetic example", elem_id="segment-example", size="sm")
                model = gr.Dropdown(ctx.models.choices(), value=ctx.models.default(), label="Model",
                                    elem_id="segment-model", allow_custom_value=False)
                run = gr.Button("Segment", variant="primary", elem_id="segment-run")
                status = gr.Markdown(elem_id="segment-status")
                pick = gr.Dropdown(label="Image shown", choices=[], elem_id="segment-pick", interactive=True)
            with gr.Column(scale=2):
                shown = gr.AnnotatedImage(label="Prediction (hover a class in the legend)", elem_id="segment-overlay",
                                          height=360, format="png")
                with gr.Row():
                    shares = gr.Dataframe(headers=["class", "pixels", "share %"], label="Pixel share per class",
                                          elem_id="segment-shares", interactive=False, max_height=300)
                    download = gr.File(label="Download masks (zip)", elem_id="segment-download", interactive=False)
                gallery = gr.Gallery(label="Overlays with legend", columns=3, height=240, elem_id="segment-gallery")
        results = gr.State({})

        @readable_errors
        def use_example(request: gr.Request):
            folder = ctx.sessions.fresh(request, "segment_example")
            copies = []
            for frame in ctx.examples.frames()[:EXAMPLE_FRAMES]:
                copies.append(str(shutil.copy(frame, folder / frame.name)))
            return copies

        @readable_errors
        def segment(uploads, model_label, request: gr.Request, progress=gr.Progress()):  # noqa: B008 (Gradio injects it)
            paths = check_images(uploaded_paths(uploads), ctx.limits)
            progress(0, desc="loading the model")
            loaded = ctx.models.get(model_label)
            out = ctx.sessions.fresh(request, "segment")
            found = predict_images(loaded, paths, out, progress)
            masks = [np.asarray(_read_mask(r.mask)) for r in found]
            archive = masks_zip(found, loaded.classes, out)
            state = {"model": model_label, "items": [(r.name, str(r.image), str(r.mask)) for r in found]}
            first = annotated_value(found[0], loaded.classes)
            note = "" if loaded.source != UNTRAINED else \
                " **Untrained model: the classes are noise** (export a trained model or pass `--model`)."
            message = f"Segmented {len(found)} image(s) with *{model_label}*.{note}"
            release_memory()
            return (gr.update(value=first, color_map=color_map(loaded.classes)),
                    gr.update(choices=[r.name for r in found], value=found[0].name),
                    class_shares(masks, loaded.classes), str(archive),
                    [(str(r.overlay), r.name) for r in found], message, state)

        @readable_errors
        def show(name, state):
            if not state or not name:
                return gr.update()
            loaded = ctx.models.get(state["model"])
            for entry_name, image, mask in state["items"]:
                if entry_name == name:
                    result = SegmentResult(entry_name, Path(image), Path(mask), Path(mask))
                    return annotated_value(result, loaded.classes)
            return gr.update()

        example.click(use_example, None, files, api_name="segment_example")
        run.click(segment, [files, model], [shown, pick, shares, download, gallery, status, results],
                  api_name="segment", concurrency_limit=ctx.limits.concurrency, concurrency_id="segment",
                  show_progress_on=[shown])
        pick.input(show, [pick, results], shown, api_name=False)
    return model


def _read_mask(path: Path) -> np.ndarray:
    from recon.dataset import read_label

    return read_label(path)
