"""Scribble tab: load the example sequence, draw scribbles with a class brush on 1-5 frames, press Train: a short
rewis3d run with live progress, then dense predictions on every frame and an export of the trained model."""

from __future__ import annotations

import shutil
import time
import zipfile
from pathlib import Path

import gradio as gr
import numpy as np
from PIL import Image

from apps.demo import scribbles, train_job
from apps.demo.examples import preset_classes
from apps.demo.safety import readable_errors, release_memory
from recon.dataset import ClassList, read_label, read_rgb, sequence_images
from recon.errors import InputError

EXAMPLE_PARTS = ("images", "labels", "depth", "cameras.json", "classes.json")
TRAINING_UNAVAILABLE = "Training is not available in this build (the trainer could not be imported)."


def training_available() -> bool:
    try:
        import rewis.config
        import rewis.trainer  # noqa: F401
    except ImportError:
        return False
    return True


def hex_colour(rgb) -> str:
    r, g, b = (int(v) for v in rgb)
    return f"#{r:02x}{g:02x}{b:02x}"


def legend_html(classes: ClassList) -> str:
    chips = "".join(f'<span class="rewis-chip"><i style="background:{hex_colour(c)}"></i>{n}</span>'
                    for n, c in zip(classes.names, classes.palette))
    return f'<div class="rewis-legend">{chips}</div>'


def class_brush(classes: ClassList, name: str | None = None) -> gr.Brush:
    colours = [hex_colour(c) for c in classes.palette]
    chosen = colours[classes.names.index(name)] if name in classes.names else colours[0]
    return gr.Brush(colors=colours, default_color=chosen, color_mode="fixed", default_size=3)


def copy_example(example_seq: Path, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for part in EXAMPLE_PARTS:
        src = example_seq / part
        if src.is_dir():
            shutil.copytree(src, dest / part)
        elif src.is_file():
            shutil.copy(src, dest / part)
    return dest


def editor_value(seq: Path, stem: str, classes: ClassList) -> dict:
    """The editor showing frame `stem` with its saved scribbles (if any) as a layer."""
    image = next(p for p in sequence_images(seq) if p.stem == stem)
    rgb = read_rgb(image)
    saved = seq / "weak" / "scribbles" / f"{stem}.png"
    layer = scribbles.label_to_layer(read_label(saved), classes) if saved.is_file() else \
        np.zeros((*rgb.shape[:2], 4), np.uint8)
    shown = np.where(layer[..., 3:] > 0, layer[..., :3], rgb).astype(np.uint8)
    return {"background": rgb, "layers": [layer], "composite": shown}


def save_frame(seq: Path, stem: str, value, classes: ClassList) -> None:
    """Merge the editor's strokes into the frame's saved scribbles. The editor hands back only the strokes drawn
    since the frame was shown (restored strokes are displayed but not returned once the user draws), so new
    strokes paint over the saved ones and nothing saved is lost; 'Clear' starts a frame over."""
    if not seq or not stem or value is None:
        return
    image = next(p for p in sequence_images(seq) if p.stem == stem)
    with Image.open(image) as im:
        size = im.size
    new = scribbles.editor_to_label(value, classes, size)
    saved = seq / "weak" / "scribbles" / f"{stem}.png"
    label = read_label(saved) if saved.is_file() else np.full_like(new, 255)
    drawn = new != 255
    label[drawn] = new[drawn]
    scribbles.save_scribbles(seq, stem, label, classes)


def status_markdown(seq: Path | None) -> str:
    if not seq:
        return "Load the example sequence to start."
    pixels = scribbles.scribble_pixels(seq)
    total = len(sequence_images(seq))
    if not pixels:
        return f"0 of {total} frames scribbled. Draw on 1 to {train_job.MAX_ANNOTATED} frames."
    listed = ", ".join(f"{stem} ({n} px)" for stem, n in pixels.items())
    return f"**{len(pixels)} of {total} frames scribbled:** {listed}"


def auto_scribble(seq: Path, stem: str) -> np.ndarray:
    """Scribbles derived from the example's ground truth (rewis labels' generator), for a quick try."""
    from rewis.weak_labels import frame_rng, make_scribbles

    gt_path = seq / "labels" / f"{stem}.png"
    if not gt_path.is_file():
        raise InputError("auto-scribble needs ground truth, which only the bundled example has")
    return make_scribbles(read_label(gt_path), frame_rng(0, stem, "scribbles"))


def zip_folder(folder: Path, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, f"{archive.stem}/{path.relative_to(folder)}")
    return archive


# ---------------------------------------------------------------------------------------------- UI

def build(ctx) -> None:
    classes = preset_classes(ctx.examples.spec.preset)
    can_train = training_available()
    with gr.Tab("Scribble & train", id="scribble"):
        gr.Markdown("1. Load the example sequence. 2. Pick a class, draw a few strokes on 1 to 5 frames (switching "
                    "frames keeps your strokes). 3. Train: rewis3d spreads the scribbles through the 3D scene "
                    "and predicts every pixel of every frame. 4. Export the model for `rewis predict`.")
        with gr.Row():
            with gr.Column(scale=3):
                with gr.Row():
                    load = gr.Button("Load the example sequence", elem_id="scribble-load", variant="secondary")
                    frame = gr.Dropdown([], label="Frame", elem_id="scribble-frame", interactive=True)
                    brush_class = gr.Dropdown(list(classes.names), value=classes.names[0], label="Class brush",
                                              elem_id="scribble-class", interactive=True)
                gr.HTML(legend_html(classes))
                editor = gr.ImageEditor(type="numpy", image_mode="RGBA", brush=class_brush(classes),
                                        eraser=gr.Eraser(default_size=8), sources=(), transforms=(), format="png",
                                        layers=gr.LayerOptions(allow_additional_layers=False),
                                        label="Scribble on the frame", elem_id="scribble-editor", height=420)
                with gr.Row():
                    save = gr.Button("Save scribbles", elem_id="scribble-save", size="sm")
                    auto = gr.Button("Auto-scribble from ground truth", elem_id="scribble-auto", size="sm")
                    clear = gr.Button("Clear this frame's scribbles", elem_id="scribble-clear", size="sm")
                status = gr.Markdown(status_markdown(None), elem_id="scribble-status")
            with gr.Column(scale=2):
                steps = gr.Slider(4, 300, value=ctx.train_steps, step=1, label="Training steps",
                                  elem_id="scribble-steps")
                train = gr.Button("Train" if can_train else "Train (not available)", variant="primary",
                                  interactive=can_train, elem_id="scribble-train")
                train_status = gr.Markdown("" if can_train else TRAINING_UNAVAILABLE, elem_id="scribble-train-status")
                predictions = gr.Gallery(label="Predictions on every frame", columns=2, height=360, object_fit="contain",
                                         elem_id="scribble-predictions")
                export = gr.Button("Export the model", interactive=False, elem_id="scribble-export")
                exported = gr.File(label="Exported model (zip: a SegFormer folder)", interactive=False,
                                   elem_id="scribble-exported")
        seq_state, frame_state, run_state = gr.State(None), gr.State(None), gr.State(None)

        @readable_errors
        def load_example(request: gr.Request):
            folder = ctx.sessions.fresh(request, "scribble")
            seq = copy_example(ctx.examples.sequence(), folder / "seq")
            stems = [p.stem for p in sequence_images(seq)]
            return (str(seq), gr.update(choices=stems, value=stems[0]), editor_value(seq, stems[0], classes),
                    stems[0], status_markdown(seq))

        @readable_errors
        def go_to_frame(stem, value, seq, current):
            _need(seq)
            if current and current != stem:
                save_frame(Path(seq), current, value, classes)
            return editor_value(Path(seq), stem, classes), stem, status_markdown(Path(seq))

        @readable_errors
        def save_current(value, seq, current):
            _need(seq)
            save_frame(Path(seq), current, value, classes)
            return status_markdown(Path(seq))

        @readable_errors
        def auto_current(seq, current):
            _need(seq)
            label = auto_scribble(Path(seq), current)
            scribbles.save_scribbles(Path(seq), current, label, classes)
            return editor_value(Path(seq), current, classes), status_markdown(Path(seq))

        @readable_errors
        def clear_current(seq, current):
            _need(seq)
            (Path(seq) / "weak" / "scribbles" / f"{current}.png").unlink(missing_ok=True)
            return editor_value(Path(seq), current, classes), status_markdown(Path(seq))

        def pick_class(name):
            return gr.update(brush=class_brush(classes, name))

        @readable_errors
        def run_training(value, seq, current, n_steps, request: gr.Request, progress=gr.Progress()):  # noqa: B008 (Gradio injects it)
            if not can_train:
                raise InputError(TRAINING_UNAVAILABLE)
            _need(seq)
            seq = Path(seq)
            save_frame(seq, current, value, classes)
            train_job.check_annotations(seq, scribbles.annotated_stems(seq))
            ctx.training.acquire()
            try:
                progress(0, desc="building the 3D scene from the scribbled frames")
                work = ctx.sessions.fresh(request, "train")
                train_seq = copy_example(seq, work / "seq")
                shutil.copytree(seq / "weak", train_seq / "weak")
                train_job.fill_unannotated(train_seq, classes)
                scene = train_job.build_scene(train_seq, work / "scene")
                cfg = train_job.training_config(scene, train_seq if (train_seq / "labels").is_dir() else None,
                                                work / "run", int(n_steps), ctx.train_overrides)
                thread, state = train_job.start_training(cfg, ctx.training.release)
            except BaseException:
                ctx.training.release()
                raise
            while thread.is_alive():  # bounded: the run ends after max_steps
                thread.join(1.0)
                train_job.poll(work / "run", state)
                progress(state.fraction, desc=state.line())
                yield state.line(), gr.update(), gr.update(interactive=False), None
            if state.error is not None:
                raise state.error
            progress(1.0, desc="predicting every frame")
            shown = train_job.predict_frames(work / "run" / "export", sequence_images(train_seq), work / "predictions")
            label = f"trained in the demo ({time.strftime('%H:%M:%S')}, {state.summary['steps']} steps)"
            ctx.models.add_trained(label, work / "run" / "export")
            release_memory()
            yield summary_markdown(state), shown, gr.update(interactive=True), str(work / "run")

        @readable_errors
        def export_model(run_dir, request: gr.Request):
            if not run_dir or not (Path(run_dir) / "export" / "config.json").is_file():
                raise InputError("train a model first")
            out = ctx.sessions.fresh(request, "export")
            return str(zip_folder(Path(run_dir) / "export", out / "rewis_scribble_model.zip"))

        load.click(load_example, None, [seq_state, frame, editor, frame_state, status], api_name="scribble_example")
        frame.input(go_to_frame, [frame, editor, seq_state, frame_state], [editor, frame_state, status],
                    api_name="scribble_frame")
        save.click(save_current, [editor, seq_state, frame_state], status, api_name="scribble_save")
        auto.click(auto_current, [seq_state, frame_state], [editor, status], api_name="scribble_auto")
        clear.click(clear_current, [seq_state, frame_state], [editor, status], api_name="scribble_clear")
        brush_class.input(pick_class, brush_class, editor, api_name=False)
        train.click(run_training, [editor, seq_state, frame_state, steps],
                    [train_status, predictions, export, run_state], api_name="train",
                    concurrency_limit=1, concurrency_id="train", show_progress_on=[predictions])
        export.click(export_model, run_state, exported, api_name="scribble_export")


def summary_markdown(state: train_job.Progress) -> str:
    s = state.summary or {}
    final = s.get("final") or {}
    miou = f"; mIoU on the example's ground truth **{100 * final['miou']:.1f} %**" if final.get("miou") is not None else ""
    return (f"Trained **{s.get('mode', 'rewis3d')}** for {s.get('steps')} steps in {s.get('seconds', 0):.0f} s"
            f"{miou}. Predictions for every frame below; export the model to use it with `rewis predict` "
            "(it is also offered in the Segment tab now).")


def _need(seq) -> None:
    if not seq:
        raise InputError("load the example sequence first")
