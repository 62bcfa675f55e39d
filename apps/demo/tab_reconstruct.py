"""Reconstruct tab: several images (or a zip, or the bundled example) -> `recon` with a progress bar -> the point
cloud in a 3D viewer (GLB), coloured by RGB, confidence, predicted labels or reference labels, and the report."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import gradio as gr
import numpy as np

from apps.demo.safety import (
    ALLOWED_UPLOAD_TYPES,
    check_images,
    extract_zip_images,
    readable_errors,
    release_memory,
    uploaded_paths,
)
from recon.build import detect_source, reconstruct
from recon.errors import InputError
from recon.export import NONE_GREY, gltf_axes, point_colors, write_glb
from recon.scale import scale_line
from recon.scene import Scene
from recon.sources import ReconOptions, Stages

METHODS = {"auto": None, "structure from motion": "images", "depth + poses (RGB-D)": "rgbd"}
COLOURINGS = {"RGB": "rgb", "confidence": "confidence", "predicted labels": "predicted",
              "reference labels (ground truth / scribbles)": "label"}
STAGE_PLAN = {"images": ["read images", "features", "mapping", "sfm scene", "dense read", "dense stereo",
                         "dense fusion", "write"],
              "rgbd": ["read cameras", "read depth", "fuse", "write"]}
MIN_FRAMES = 3


# ---------------------------------------------------------------------------------------------- input

def sequence_from_uploads(uploads, dest: Path, limits) -> Path:
    """A sequence folder (dest/images/...) from uploaded images and/or zips of images."""
    images = dest / "images"
    images.mkdir(parents=True)
    paths = []
    for path in uploaded_paths(uploads):
        if path.suffix.lower() == ".zip":
            paths += extract_zip_images(path, dest / "unzipped", limits)
        else:
            paths.append(path)
    check_images(paths, limits)
    if len(paths) < MIN_FRAMES:
        raise InputError(f"{len(paths)} image(s): reconstruction needs at least {MIN_FRAMES} overlapping views of "
                         "one scene (upload several frames, or a zip of them)")
    for i, path in enumerate(paths):  # numbered so that upload order is time order
        shutil.copy(path, images / f"{i:04d}_{path.name}")
    shutil.rmtree(dest / "unzipped", ignore_errors=True)
    return dest


def pick_source(seq: Path, method: str | None) -> str:
    if method is not None:
        if method == "rgbd" and not ((seq / "depth").is_dir() and (seq / "cameras.json").is_file()):
            raise InputError("depth + poses needs depth/ and cameras.json beside the images (the bundled example has "
                             "them); choose structure from motion for plain images")
        return method
    has_depth = (seq / "depth").is_dir() and (seq / "cameras.json").is_file()
    return "rgbd" if has_depth else detect_source(seq, None)


# ---------------------------------------------------------------------------------------------- recon

class ProgressStages(Stages):
    """recon's stage timer, reporting each stage to the page's progress bar instead of stderr."""

    def __init__(self, plan: list[str], report):
        super().__init__(progress=False)
        self.plan, self.report = plan, report

    @contextlib.contextmanager
    def __call__(self, name: str):
        done = self.plan.index(name) if name in self.plan else len(self.times)
        self.report(done / max(1, len(self.plan)), f"reconstruct: {name}")
        with super().__call__(name):
            yield


def run_recon(seq: Path, out: Path, source: str, dense: bool, report) -> dict:
    """`recon.build.reconstruct`, reporting each stage to the page's progress bar."""
    options = ReconOptions(source=source, dense=dense if source == "images" else None, progress=False)
    plan = [s for s in STAGE_PLAN.get(source, ["write"]) if dense or not s.startswith("dense")]
    return reconstruct(seq, out, options, stages=ProgressStages(plan, report))


def report_markdown(report: dict, title: str) -> str:
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in report.get("stages", {}).items())
    return (f"**{title}**\n\n"
            f"- method: **{report['source']}**\n"
            + frames_markdown(report) +
            f"- points: **{report['points']:,}** (pixel links {report['links']:,})\n"
            f"- time: **{report['seconds']:.1f} s** ({stages})\n"
            + (f"- {scale_line(report['scale'])}\n" if "scale" in report else ""))


WEAK_SHARE = 0.8  # below this share of frames passing validation the page warns that the 3D helps little


def frames_markdown(report: dict) -> str:
    """Registered frames; for SfM, those that passed pose validation, the ones left out and why, and a warning
    when too few passed for the 3D to help much."""
    passed, total = report.get("frames_registered", "?"), report.get("frames_total", "?")
    if "frames_rejected" not in report:
        return f"- registered frames: **{passed} / {total}**\n"
    line = f"- registered frames that passed pose validation: **{passed} / {total}**"
    rejected = report["frames_rejected"]
    if rejected:
        shown = "; ".join(f"{r['image']}: {r['reasons'][0] if r['reasons'] else 'rejected'}" for r in rejected[:3])
        line += f" (left out of the 3D, their images still train the 2D model: {shown}" + \
            (f"; and {len(rejected) - 3} more)" if len(rejected) > 3 else ")")
    line += "\n"
    if isinstance(passed, int) and isinstance(total, int) and total and passed < WEAK_SHARE * total:
        line += (f"- **weak reconstruction**: only {100 * passed / total:.0f} % of the frames have trusted poses, so "
                 "the 3D teacher will help little; more overlap between frames (slower motion, more frames) "
                 "helps most\n")
    return line


# ---------------------------------------------------------------------------------------------- colours

def coloured_glb(scene_dir: Path, colouring: str, predict=None, variant: str = "") -> Path:
    """scene_dir/view_<colouring>[_<variant>].glb (written once): the cloud in the viewer's axes, coloured as
    asked; `variant` tells apart the predictions of different models."""
    target = scene_dir / f"view_{colouring}{'_' + variant if variant else ''}.glb"
    if target.is_file():
        return target
    scene = Scene.load(scene_dir)
    if colouring == "predicted":
        colours = predicted_colours(scene, predict)
    else:
        if colouring == "label" and not _has_labels(scene):
            raise InputError("this reconstruction carries no reference labels (no labels/ or weak/ beside the "
                             "images); choose predicted labels instead")
        colours = point_colors(scene.cloud, scene.classes, colouring)
    write_glb(target, viewer_axes(scene.cloud.xyz), colours)
    return target


def viewer_axes(xyz: np.ndarray) -> np.ndarray:
    """OpenCV world axes (y down, z forward) -> glTF's (y up, z towards the viewer), centred on the cloud."""
    return gltf_axes(xyz - np.median(xyz, axis=0) if len(xyz) else xyz)


def _has_labels(scene: Scene) -> bool:
    cloud = scene.cloud
    return cloud.label is not None or bool((cloud.weak_label != 255).any())


def predicted_colours(scene: Scene, predict) -> np.ndarray:
    """Each point takes the class most of its linked pixels were predicted as (grey when never seen).
    `predict(paths) -> (classes, [label maps])` runs the chosen 2D model on the scene's frames."""
    classes, labels = predict([scene.resolve(f.image) for f in scene.frames])
    if classes.names != scene.classes.names and scene.classes.names != ("object",):
        raise InputError(f"the model's classes {list(classes.names)} differ from the scene's "
                         f"{list(scene.classes.names)}; pick a model trained on these classes")
    votes = np.zeros((len(scene.cloud), classes.num_classes), np.int32)
    for f, label in enumerate(labels):
        point, v, u = scene.links.frame(f)
        cls = label[v, u]
        ok = cls < classes.num_classes
        np.add.at(votes, (point[ok], cls[ok].astype(np.int64)), 1)
    palette = np.asarray(classes.palette, np.uint8)
    colours = palette[votes.argmax(1)]
    colours[votes.sum(1) == 0] = NONE_GREY
    return colours


# ---------------------------------------------------------------------------------------------- UI

def build(ctx) -> gr.Dropdown:
    """Add the tab; returns its model dropdown (the app refreshes its choices on every page load)."""
    with gr.Tab("Reconstruct", id="reconstruct"):
        gr.Markdown("Reconstruct a scene from several overlapping frames (images or a zip), or from the bundled "
                    "example, and look at the point cloud. Drag to rotate, scroll to zoom.")
        with gr.Row():
            with gr.Column(scale=1, min_width=280):
                files = gr.File(label="Frames (images or a zip)", file_count="multiple",
                                file_types=ALLOWED_UPLOAD_TYPES, elem_id="recon-files", height=140)
                example = gr.Button("Use the synthetic example", elem_id="recon-example", size="sm")
                method = gr.Radio(list(METHODS), value=next(iter(METHODS)), label="Method", elem_id="recon-method",
                                  info="auto: depth + poses when the frames come with them (the example), "
                                       "else structure from motion")
                dense = gr.Checkbox(False, label="Dense stereo for images (much slower on a CPU)", elem_id="recon-dense")
                run = gr.Button("Reconstruct", variant="primary", elem_id="recon-run")
                report = gr.Markdown(elem_id="recon-report")
            with gr.Column(scale=2):
                viewer = gr.Model3D(label="Point cloud", elem_id="recon-viewer", height=460,
                                    clear_color=(0.12, 0.12, 0.14, 1.0), display_mode="point_cloud")
                with gr.Row():
                    colouring = gr.Radio(list(COLOURINGS), value="RGB", label="Colour points by",
                                         elem_id="recon-colour", scale=3)
                    model = gr.Dropdown(ctx.models.choices(), value=ctx.models.default(), scale=2,
                                        label="Model (for predicted labels)", elem_id="recon-model")
                cloud_file = gr.File(label="Download the cloud (PLY)", elem_id="recon-download", interactive=False)
        scene_state = gr.State(None)
        input_state = gr.State("upload")  # "upload" or "example"

        @readable_errors
        def use_example():
            ctx.examples.sequence()  # rendered now (once), so Reconstruct starts at once
            return "example", gr.update(value=None), f"Example loaded: *{ctx.examples.spec.title}*, with depth and poses."

        @readable_errors
        def reconstruct(uploads, which, method_label, want_dense, request: gr.Request, progress=gr.Progress()):  # noqa: B008 (Gradio injects it)
            progress(0, desc="preparing the frames")
            folder = ctx.sessions.fresh(request, "recon")
            if which == "example" and not uploaded_paths(uploads):
                seq, title = ctx.examples.sequence(), ctx.examples.spec.title
            else:
                seq, title = sequence_from_uploads(uploads, folder / "seq", ctx.limits), "your frames"
            source = pick_source(seq, METHODS[method_label])
            summary = run_recon(seq, folder / "scene", source, bool(want_dense), lambda f, d: progress(f, desc=d))
            glb = coloured_glb(folder / "scene", "rgb")
            release_memory()
            return str(glb), report_markdown(summary, f"Reconstruction of {title}"), str(folder / "scene"), \
                str(folder / "scene" / "cloud.ply"), gr.update(value="RGB")

        @readable_errors
        def recolour(label, model_label, scene_dir, progress=gr.Progress()):  # noqa: B008 (Gradio injects it)
            if not scene_dir:
                raise InputError("reconstruct something first, then switch the colouring")
            kind = COLOURINGS[label]
            if kind == "predicted":
                progress(0, desc="segmenting the frames")
                return str(coloured_glb(Path(scene_dir), "predicted",
                                        lambda paths: _predict_labels(ctx, model_label, paths), _slug(model_label)))
            return str(coloured_glb(Path(scene_dir), kind))

        example.click(use_example, None, [input_state, files, report], api_name="recon_example")
        files.upload(lambda: "upload", None, input_state, api_name=False)
        run.click(reconstruct, [files, input_state, method, dense], [viewer, report, scene_state, cloud_file, colouring],
                  api_name="reconstruct", concurrency_limit=1, concurrency_id="heavy", show_progress_on=[viewer])
        colouring.input(recolour, [colouring, model, scene_state], viewer, api_name="recolour",
                        concurrency_limit=1, concurrency_id="heavy")
    return model


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text)[:40]


def _predict_labels(ctx, model_label: str, paths: list[Path]):
    from segment.predict import InferenceOptions, Segmenter

    loaded = ctx.models.get(model_label)
    options = InferenceOptions(batch_size=2, device="cpu", workers=1)
    labels = {p.path: p.label for p in Segmenter(loaded, options).run(paths)}
    missing = [p for p in paths if labels.get(p) is None]
    if missing:
        raise InputError(f"cannot read frame {missing[0].name} of the reconstruction any more")
    return loaded.classes, [labels[p] for p in paths]
