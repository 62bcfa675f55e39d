"""Point cloud tab: a LiDAR scan (uploaded, or the synthetic example) -> a 3D model (rewis.model3d folder) -> the
cloud coloured by class in the 3D viewer, a legend with per-class point counts, and the labels to download.

Inputs are what `rewis predict` reads: `.bin` (KITTI velodyne, float32 x, y, z, remission), `.npy` ((N, 3) or
(N, 4)), `.ply` and `.pcd`. Every point is labelled; the viewer shows at most `Limits.max_shown_points` of them
(an even random subsample), drawn as glTF points. Downloads: `<name>.label` (SemanticKITTI layout: one
little-endian uint32 per point in the input's order; raw SemanticKITTI ids when the model learnt through the
learning map, else class ids) and `<name>.ply` (the full cloud in the input's coordinates, coloured by class)."""

from __future__ import annotations

import html
import shutil
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import numpy as np

from apps.demo.models3d import HOW_TO_GET_ONE
from apps.demo.safety import CLOUD_SUFFIXES, read_point_cloud, readable_errors, release_memory, uploaded_paths
from recon.dataset import IGNORE_INDEX, ClassList
from recon.errors import InputError
from recon.export import NONE_GREY, write_glb

DISPLAY_SEED = 0  # the displayed subsample is the same on every run of the same cloud


@dataclass
class CloudResult:
    name: str
    points: int
    shown: int
    counts: np.ndarray  # points per class id
    labels: Path  # .label
    ply: Path  # coloured by class, every point
    view: Path  # .glb for the viewer, maybe subsampled


def segment_cloud(model, points: np.ndarray, name: str, out: Path, max_shown: int) -> CloudResult:
    """Label every point of `points` (N, 4) with `model` (rewis.model3d.Model3D); write the downloads and the
    viewer's GLB under `out`."""
    from rewis.model3d import write_coloured_ply

    labels = model.predict(points)
    label_file, ply = out / f"{name}.label", out / f"{name}.ply"
    encoded_labels(labels, model.label_map).astype("<u4").tofile(label_file)
    write_coloured_ply(ply, points[:, :3], labels, model.classes)
    shown = display_subset(len(points), max_shown)
    view = out / f"{name}_view.glb"
    write_glb(view, lidar_to_gltf(points[shown, :3]), class_colours(labels[shown], model.classes))
    known = labels[labels != IGNORE_INDEX]
    counts = np.bincount(known, minlength=model.classes.num_classes)[:model.classes.num_classes]
    return CloudResult(name, len(points), len(shown), counts, label_file, ply, view)


def encoded_labels(labels: np.ndarray, label_map: str) -> np.ndarray:
    """Class ids -> the uint32 values `rewis predict` writes into .label files."""
    from rewis.scans import raw_ids

    return raw_ids(labels) if label_map == "semantickitti" else labels.astype(np.uint32)


def display_subset(count: int, max_shown: int) -> np.ndarray:
    """Indices of the points the viewer draws: all, or an even random subsample in the input's order."""
    if count <= max_shown:
        return np.arange(count)
    return np.sort(np.random.default_rng(DISPLAY_SEED).choice(count, max_shown, replace=False))


def lidar_to_gltf(xyz: np.ndarray) -> np.ndarray:
    """LiDAR axes (x forward, y left, z up) -> glTF's (x right, y up, z towards the viewer), centred on the
    cloud's median so that the viewer's camera orbits the scene rather than a far-away origin."""
    xyz = np.asarray(xyz, np.float32)
    centred = xyz - np.median(xyz, axis=0) if len(xyz) else xyz
    return np.stack([-centred[:, 1], centred[:, 2], -centred[:, 0]], axis=1).astype(np.float32)


def class_colours(labels: np.ndarray, classes: ClassList) -> np.ndarray:
    palette = np.tile(NONE_GREY, (256, 1))
    palette[:classes.num_classes] = np.asarray(classes.palette, np.uint8)
    return palette[labels]


def legend_html(counts: np.ndarray, classes: ClassList) -> str:
    """Colour chips with point counts and shares, most frequent class first; absent classes are left out."""
    total = max(1, int(counts.sum()))
    chips = []
    for c in np.argsort(-counts, kind="stable"):
        if counts[c]:
            colour = "#{:02x}{:02x}{:02x}".format(*classes.palette[c])
            chips.append(f'<span class="rewis-chip"><i style="background:{colour}"></i>{html.escape(classes.names[c])}'
                         f' <b>{int(counts[c]):,}</b> ({100.0 * counts[c] / total:.1f} %)</span>')
    return f'<div class="rewis-legend" id="pc-legend-chips">{"".join(chips)}</div>'


def summary_markdown(result: CloudResult, model_label: str, missing_remission: bool) -> str:
    if result.shown == result.points:
        shown = f"all {result.points:,} shown"
    else:
        shown = f"{result.shown:,} of them shown (every point is labelled)"
    note = "\n\n*This file carries no remission; the model, trained with it, got zeros there.*" \
        if missing_remission else ""
    return f"Segmented **{result.points:,} points** of *{result.name}* with *{model_label}*; {shown}.{note}"


def safe_stem(path: Path) -> str:
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(path).stem)
    return stem.strip(".")[:80] or "cloud"


def refresh(ctx) -> list:
    """Updates for [model dropdown, hint]: the 3D models found now (run on every page load)."""
    choices = ctx.models3d.choices()
    return [gr.update(choices=choices, value=ctx.models3d.default()), "" if choices else HOW_TO_GET_ONE]


# ---------------------------------------------------------------------------------------------- UI

def build(ctx) -> list:
    """Add the Point cloud tab; returns [model dropdown, hint] for the app's page-load refresh (`refresh`)."""
    with gr.Tab("Point cloud", id="pointcloud"):
        gr.Markdown("Segment a LiDAR scan with a 3D model: upload a point cloud (KITTI `.bin`, `.npy`, `.ply`, "
                    "`.pcd`) or try the synthetic street scan. Drag to rotate, scroll to zoom. The labels download "
                    "as a SemanticKITTI `.label` file (one uint32 per point, in the file's order) and a `.ply` "
                    "coloured by class.")
        with gr.Row():
            with gr.Column(scale=1, min_width=280):
                upload = gr.File(label="Point cloud", file_count="single", file_types=list(CLOUD_SUFFIXES),
                                 elem_id="pc-file", height=120)
                example = gr.Button("Use the synthetic example scan", elem_id="pc-example", size="sm")
                choices = ctx.models3d.choices()
                model = gr.Dropdown(choices, value=ctx.models3d.default(), label="3D model", elem_id="pc-model",
                                    allow_custom_value=False)
                hint = gr.Markdown("" if choices else HOW_TO_GET_ONE, elem_id="pc-hint")
                run = gr.Button("Segment", variant="primary", elem_id="pc-run")
                status = gr.Markdown(elem_id="pc-status")
            with gr.Column(scale=2):
                viewer = gr.Model3D(label="Points coloured by class", elem_id="pc-viewer", height=460,
                                    clear_color=(0.12, 0.12, 0.14, 1.0), display_mode="point_cloud")
                legend = gr.HTML(elem_id="pc-legend")
                download = gr.File(label="Download labels (.label) and the coloured cloud (.ply)",
                                   file_count="multiple", elem_id="pc-download", interactive=False)

        @readable_errors
        def use_example(request: gr.Request):
            scan = ctx.example_scan.scan()
            folder = ctx.sessions.fresh(request, "pointcloud_example")
            name = scan.name if ctx.example_scan.path else "synthetic_street.bin"
            return str(shutil.copy(scan, folder / name)), f"Example loaded: {ctx.example_scan.title}."

        @readable_errors
        def segment(uploaded, model_label, request: gr.Request, progress=gr.Progress()):  # noqa: B008 (Gradio injects it)
            paths = uploaded_paths(uploaded)
            if not paths:
                raise InputError(f"no point cloud: upload one ({', '.join(CLOUD_SUFFIXES)}) or pick the example scan")
            points, has_remission = read_point_cloud(paths[0], ctx.limits)
            progress(0.1, desc="loading the 3D model")
            model_3d = ctx.models3d.get(model_label)
            progress(0.3, desc=f"segmenting {len(points):,} points")
            out = ctx.sessions.fresh(request, "pointcloud")
            result = segment_cloud(model_3d, points, safe_stem(paths[0]), out, ctx.limits.max_shown_points)
            release_memory()
            missing = "remission" in model_3d.features and not has_remission
            return (str(result.view), legend_html(result.counts, model_3d.classes),
                    [str(result.labels), str(result.ply)], summary_markdown(result, model_label, missing))

        example.click(use_example, None, [upload, status], api_name="pointcloud_example")
        run.click(segment, [upload, model], [viewer, legend, download, status], api_name="pointcloud",
                  concurrency_limit=1, concurrency_id="pointcloud", show_progress_on=[viewer])
    return [model, hint]
