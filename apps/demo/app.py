"""The demo's gr.Blocks: a header, the Segment, Reconstruct, Point cloud and Scribble tabs, and the safe launch settings
(loopback bind, upload size limit, queue with concurrency limits, no stack traces in the page, per-session temp
folders removed when a session ends and at shutdown)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

# Gradio phones home for analytics and version checks unless told not to; the demo must work offline.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr

from apps.demo import tab_pointcloud, tab_reconstruct, tab_scribble, tab_segment
from apps.demo.examples import DEFAULT_CACHE, Examples, ExampleScan, ExampleSpec
from apps.demo.models import DEFAULT_MODELS_DIR, ModelCatalog
from apps.demo.models3d import Model3DCatalog
from apps.demo.safety import Limits, SessionFolders, SingleJob

CSS = """
.rewis-header h1 {margin-bottom: 0.1em;}
.rewis-header p {margin-top: 0; color: var(--body-text-color-subdued);}
.rewis-legend {display: flex; flex-wrap: wrap; gap: 6px 12px; font-size: 0.9em;}
.rewis-chip {display: inline-flex; align-items: center; gap: 5px;}
.rewis-chip i {display: inline-block; width: 14px; height: 14px; border-radius: 3px; border: 1px solid #0003;}
footer {visibility: hidden;}
"""
HEADER = """<div class="rewis-header">
<h1>rewis: dense segmentation from scribbles</h1>
<p>Segment images with a SegFormer, reconstruct a scene in 3D, segment LiDAR point clouds with a 3D model, and
train from a few strokes: the 3D geometry spreads sparse labels to every pixel (cross-modal Mean Teacher,
Rewis3d).</p></div>"""


@dataclass
class DemoContext:
    """Everything the tabs share."""
    models: ModelCatalog
    examples: Examples
    sessions: SessionFolders
    models3d: Model3DCatalog = field(default_factory=lambda: Model3DCatalog(models_dir=None))
    example_scan: ExampleScan = field(default_factory=ExampleScan)
    limits: Limits = field(default_factory=Limits)
    training: SingleJob = field(default_factory=lambda: SingleJob("training job"))
    train_steps: int = 100
    train_overrides: dict = field(default_factory=dict)  # extra training settings (tests: tiny models)


def make_context(model: str | None = None, models_dir: Path | None = DEFAULT_MODELS_DIR,
                 cache_dir: Path = DEFAULT_CACHE, example: ExampleSpec | None = None, limits: Limits | None = None,
                 train_steps: int = 100, train_overrides: dict | None = None, model3d: str | None = None,
                 example_scan: Path | None = None) -> DemoContext:
    example, limits = example or ExampleSpec(), limits or Limits()
    return DemoContext(models=ModelCatalog(model, models_dir), examples=Examples(cache_dir, example),
                       sessions=SessionFolders(max_age_s=60 * limits.session_max_age_min),
                       models3d=Model3DCatalog(model3d, models_dir), example_scan=ExampleScan(cache_dir, example_scan),
                       limits=limits, train_steps=train_steps, train_overrides=train_overrides or {})


def build_demo(ctx: DemoContext) -> gr.Blocks:
    # Gradio's own upload cache is swept too: files older than an hour go, checked every 10 minutes.
    with gr.Blocks(title="rewis demo", delete_cache=(600, 3600), analytics_enabled=False) as demo:
        gr.HTML(HEADER)
        with gr.Tabs():
            model_pickers = [tab_segment.build(ctx), tab_reconstruct.build(ctx)]
            pointcloud_pickers = tab_pointcloud.build(ctx)
            tab_scribble.build(ctx)
        # models trained in the Scribble tab (or exported into the models folder) appear on the next page load
        demo.load(lambda: [gr.update(choices=ctx.models.choices(), value=ctx.models.default())] * len(model_pickers),
                  None, model_pickers, api_name=False, queue=False)
        demo.load(lambda: tab_pointcloud.refresh(ctx), None, pointcloud_pickers, api_name=False, queue=False)
        demo.unload(ctx.sessions.end_session)
    demo.queue(max_size=ctx.limits.queue_size, default_concurrency_limit=ctx.limits.concurrency)
    return demo


def launch(ctx: DemoContext, host: str = "127.0.0.1", port: int = 7860, block: bool = True):
    """Start the server; with block=False return (demo, url) and leave it running in background threads."""
    demo = build_demo(ctx)
    _, url, _ = demo.launch(server_name=host, server_port=port, share=False, show_error=False, quiet=not block,
                            max_file_size=f"{ctx.limits.max_file_mb}mb", prevent_thread_lock=not block,
                            footer_links=[], theme=gr.themes.Soft(primary_hue="indigo"), css=CSS,
                            ssr_mode=False, mcp_server=False, enable_monitoring=False)
    return demo, url


def close(demo: gr.Blocks, ctx: DemoContext) -> None:
    try:
        demo.close()
    finally:
        ctx.sessions.close()
