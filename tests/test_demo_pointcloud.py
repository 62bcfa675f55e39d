"""The demo's Point cloud tab: the 3D model catalog, the example scan, cloud checks, segmenting a scan with a
tiny random 3D model (labels for every point, a subsampled view), and the tab in headless Chromium (the 3D
canvas must show coloured points, not just exist)."""

from __future__ import annotations

import io
import json
import os
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from browser import browser_available, chromium, click_tab, css, demo_server, screenshot, wait_until

from apps.demo.models3d import HOW_TO_GET_ONE, Model3DCatalog
from apps.demo.safety import Limits, read_point_cloud
from apps.demo.tab_pointcloud import display_subset, legend_html, lidar_to_gltf, segment_cloud
from recon.errors import InputError

PAGE_TIMEOUT = 60
RUN_TIMEOUT = 120


def export_tiny_model3d(folder: Path, label_map: str = "ids") -> Path:
    """A random SparseUNet3D of a few hundred parameters on xyz + remission, with the street classes but sky."""
    from recon.dataset import ClassList
    from recon.synth.scene_street import CLASSES
    from rewis.model3d import Model3D, export_model3d
    from rewis.net3d import SparseUNet3D

    classes = ClassList(names=CLASSES.names[:9], palette=CLASSES.palette[:9])
    torch.manual_seed(0)
    net = SparseUNet3D(9, in_channels=4, base_channels=4, channel_multipliers=(1, 2), blocks=(1, 1), voxel_size=0.5)
    model = Model3D(net.eval(), classes, np.arange(9, dtype=np.uint8), ("remission",), label_map)
    return export_model3d(model, folder, {"mode": "test"})


@pytest.fixture(scope="module")
def tiny_model3d(tmp_path_factory) -> Path:
    return export_tiny_model3d(tmp_path_factory.mktemp("model3d") / "tiny3d")


@pytest.fixture(scope="module")
def example_scan(tmp_path_factory) -> Path:
    from apps.demo.examples import ExampleScan

    return ExampleScan(tmp_path_factory.mktemp("scan_cache")).scan()


def touch(folder: Path, age_s: float) -> None:
    t = time.time() - age_s
    for f in folder.iterdir():
        os.utime(f, (t, t))


# ---------------------------------------------------------------------------------------------- catalog

def test_catalog_finds_models_dir_runs_and_quickstart_newest_first(tiny_model3d, tmp_path):
    import shutil

    work, models = tmp_path / "work", tmp_path / "models"
    shutil.copytree(tiny_model3d, models / "old3d")
    shutil.copytree(tiny_model3d, work / "runs" / "lidar_run" / "export")
    shutil.copytree(tiny_model3d, work / "quickstart-lidar" / "model")
    (models / "segformer").mkdir()
    (models / "segformer" / "config.json").write_text(json.dumps({"model_type": "segformer"}))  # 2D: left out
    (work / "runs" / "empty").mkdir()
    touch(models / "old3d", 300)
    touch(work / "runs" / "lidar_run" / "export", 100)
    catalog = Model3DCatalog(None, models, work)
    assert catalog.choices() == ["quickstart-lidar/model", "runs/lidar_run", "old3d"]
    explicit = Model3DCatalog(str(models / "old3d"), models, work)
    assert explicit.choices() == ["old3d (--model3d)", "quickstart-lidar/model", "runs/lidar_run"]
    loaded = explicit.get("old3d (--model3d)")
    assert loaded is explicit.get("old3d (--model3d)") and loaded.classes.num_classes == 9


def test_catalog_without_models_says_how_to_get_one(tmp_path):
    catalog = Model3DCatalog(None, tmp_path / "none", tmp_path)
    assert catalog.choices() == [] and catalog.default() is None
    with pytest.raises(InputError, match="rewis quickstart --lidar"):
        catalog.get(None)
    with pytest.raises(InputError, match="not available"):
        Model3DCatalog(None, tmp_path / "none", tmp_path).get("gone")
    with pytest.raises(InputError, match="--model3d .*not a rewis 3D model folder"):
        Model3DCatalog(str(tmp_path), None, tmp_path)
    assert "rewis quickstart --lidar" in HOW_TO_GET_ONE


def test_2d_catalog_leaves_out_3d_models(tiny_model3d, tmp_path):
    import shutil

    from apps.demo.models import UNTRAINED, ModelCatalog

    shutil.copytree(tiny_model3d, tmp_path / "tiny3d")
    assert ModelCatalog(None, tmp_path).choices() == [UNTRAINED]


def test_page_builds_without_3d_models_and_says_how_to_get_one(tmp_path):
    from apps.demo.app import build_demo, make_context
    from apps.demo.tab_pointcloud import refresh

    ctx = make_context(models_dir=tmp_path / "none", cache_dir=tmp_path / "cache")
    ctx.models3d = Model3DCatalog(None, tmp_path / "none", tmp_path)  # not the repository's runs/
    try:
        build_demo(ctx)
        dropdown, hint = refresh(ctx)
        assert dropdown["choices"] == [] and dropdown["value"] is None and hint == HOW_TO_GET_ONE
    finally:
        ctx.sessions.close()


# ---------------------------------------------------------------------------------------------- clouds

def test_cloud_checks_name_the_file(tmp_path):
    limits = Limits(max_points=100)
    cut = tmp_path / "cut.bin"
    cut.write_bytes(b"\0" * 20)
    with pytest.raises(InputError, match="'cut.bin': 20 bytes is not a multiple of 16"):
        read_point_cloud(cut, limits)
    big = tmp_path / "big.npy"
    np.save(big, np.zeros((101, 3), np.float32))
    with pytest.raises(InputError, match="'big.npy' holds 101 points; at most 100"):
        read_point_cloud(big, limits)
    nan = tmp_path / "nan.npy"
    np.save(nan, np.array([[0, 0, 0], [np.nan, 1, 1]], np.float32))
    with pytest.raises(InputError, match="1 points have NaN"):
        read_point_cloud(nan, limits)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(InputError, match="not a point cloud file"):
        read_point_cloud(text, limits)
    flat = tmp_path / "flat.npy"
    np.save(flat, np.zeros(5, np.float32))
    with pytest.raises(InputError, match="'flat.npy': array of shape"):
        read_point_cloud(flat, limits)
    fake = tmp_path / "fake.ply"
    fake.write_text("not a ply\n")
    with pytest.raises(InputError, match="'fake.ply'"):
        read_point_cloud(fake, limits)
    good = tmp_path / "good.npy"
    np.save(good, np.ones((4, 4), np.float32))
    points, has_remission = read_point_cloud(good, limits)
    assert points.shape == (4, 4) and has_remission


def test_display_subset_and_axes():
    assert (display_subset(5, 10) == np.arange(5)).all()
    shown = display_subset(1000, 150)
    assert len(shown) == 150 and len(np.unique(shown)) == 150 and (np.diff(shown) > 0).all()
    gl = lidar_to_gltf(np.array([[10.0, 0, 0], [0, 0, 0], [0, 0, 0]]))  # x forward -> away from the viewer
    assert gl[0, 2] < 0 and gl[0, 1] == 0
    up = lidar_to_gltf(np.array([[0, 0, 5.0], [0, 0, 0], [0, 0, 0]]))
    assert up[0, 1] > 0


# ---------------------------------------------------------------------------------------------- segmenting

def test_example_scan_segments_every_point_and_subsamples_only_the_view(tiny_model3d, example_scan, tmp_path):
    from rewis.model3d import load_model3d
    from rewis.scans import raw_ids

    model = load_model3d(tiny_model3d)
    points, has_remission = read_point_cloud(example_scan, Limits())
    assert has_remission and 30_000 < len(points) <= 150_000
    result = segment_cloud(model, points, "scan", tmp_path, max_shown=10_000)
    labels = np.fromfile(result.labels, "<u4")
    assert len(labels) == len(points) and labels.max() < 9
    assert (labels == model.predict(points)).all()
    assert result.counts.sum() == len(points) and result.shown == 10_000
    glb = result.view.read_bytes()
    assert glb[:4] == b"glTF"
    accessor = json.loads(glb[20:20 + int.from_bytes(glb[12:16], "little")])["accessors"][0]
    assert accessor["count"] == 10_000
    import open3d as o3d

    assert len(o3d.io.read_point_cloud(str(result.ply)).points) == len(points)
    legend = legend_html(result.counts, model.classes)
    shown_classes = [n for n, c in zip(model.classes.names, result.counts) if c]
    assert all(n in legend for n in shown_classes) and f"{result.counts.max():,}" in legend
    kitti = export_tiny_model3d(tmp_path / "kitti", label_map="semantickitti")
    raw = np.fromfile(segment_cloud(load_model3d(kitti), points[:500], "k", tmp_path, 100).labels, "<u4")
    assert (raw == raw_ids(load_model3d(kitti).predict(points[:500]))).all()


# ---------------------------------------------------------------------------------------------- browser

def coloured_pixels(png: bytes, background=(31, 31, 36)) -> int:
    """Pixels of a viewer screenshot, below its label and buttons, that are clearly neither the clear colour nor
    grey. The viewer shades the points, so the class colours are not matched exactly."""
    from PIL import Image

    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)[40:]
    off_background = np.abs(rgb - np.array(background)).max(axis=2) > 40
    saturated = rgb.max(axis=2) - rgb.min(axis=2) > 40
    return int((off_background & saturated).sum())


@pytest.mark.skipif(browser_available() is not None, reason=str(browser_available()))
def test_point_cloud_tab_in_the_browser(tiny_model3d, tmp_path):
    args = ["--model3d", str(tiny_model3d), "--models-dir", str(tmp_path / "no_models"),
            "--cache-dir", str(tmp_path / "cache")]
    with demo_server(args, tmp_path / "server.log") as (url, _), chromium() as driver:
        driver.get(url)
        click_tab(driver, "Point cloud", PAGE_TIMEOUT)
        wait_until(driver, lambda d: css(d, "#pc-example") and css(d, "#pc-example")[0].is_displayed(),
                   PAGE_TIMEOUT, "the Point cloud tab")
        css(driver, "#pc-example")[0].click()
        wait_until(driver, lambda d: "Example loaded" in css(d, "#pc-status")[0].text, RUN_TIMEOUT, "the example")
        css(driver, "#pc-run")[0].click()
        wait_until(driver, lambda d: "Segmented" in css(d, "#pc-status")[0].text, RUN_TIMEOUT, "the segmentation")
        link = wait_until(driver, lambda d: css(d, "#pc-viewer a[href$='.glb']"), PAGE_TIMEOUT, "the GLB link")
        with urllib.request.urlopen(link[0].get_attribute("href"), timeout=30) as response:
            assert response.read(4) == b"glTF"
        assert css(driver, "#pc-legend .rewis-chip"), "no class legend"
        downloads = css(driver, "#pc-download")[0].text.replace("\n", "")
        assert "synthetic_street.label" in downloads and "synthetic_street.ply" in downloads
        canvas = css(driver, "#pc-viewer canvas")[0]
        wait_until(driver, lambda d: coloured_pixels(canvas.screenshot_as_png) > 500, PAGE_TIMEOUT,
                   "coloured points drawn on the 3D canvas")
        screenshot(driver, tmp_path, "pointcloud")

        cut = tmp_path / "cut.bin"
        cut.write_bytes(b"\0" * 20)
        css(driver, "#pc-file button[aria-label*='Clear'], #pc-file button[aria-label*='clear']")[0].click()
        wait_until(driver, lambda d: css(d, "#pc-file input[type=file]"), PAGE_TIMEOUT, "the emptied upload")
        css(driver, "#pc-file input[type=file]")[0].send_keys(str(cut))
        wait_until(driver, lambda d: "cut.bin" in css(d, "#pc-file")[0].text.replace("\n", ""), PAGE_TIMEOUT,
                   "the upload")
        css(driver, "#pc-run")[0].click()
        texts = wait_until(driver, lambda d: [t.text for t in css(d, "[data-testid='toast-text']") if t.text.strip()],
                           RUN_TIMEOUT, "an error message")
        assert "'cut.bin': 20 bytes is not a multiple of 16" in texts[0]
        assert "Traceback" not in driver.page_source
