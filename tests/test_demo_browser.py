"""The demo in a real headless browser (Debian's Chromium through selenium), against a server in a subprocess
on a free loopback port (acceptance 1): Segment shows an overlay, Reconstruct shows a 3D viewer with a GLB,
a text file renamed .png gets a readable error. Screenshots go to pytest's tmp folder (path printed)."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from browser import (
    browser_available,
    chromium,
    click_tab,
    css,
    demo_server,
    screenshot,
    session_folders,
    wait_until,
)
from test_demo_client import EXAMPLE_ARGS, TINY_TRAINING, TRAIN_STEPS, export_tiny_model

pytestmark = pytest.mark.skipif(browser_available() is not None, reason=str(browser_available()))
PAGE_TIMEOUT = 60  # seconds for the page and its components to appear
RUN_TIMEOUT = 120  # seconds for a Segment or Reconstruct run on a busy 2-core machine


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo_browser")
    model = export_tiny_model(root / "tiny_model")
    (root / "train.yaml").write_text(yaml.safe_dump(TINY_TRAINING))
    args = ["--model", str(model), "--models-dir", str(root / "no_models"), "--cache-dir", str(root / "cache"),
            "--train-config", str(root / "train.yaml"), "--train-steps", str(TRAIN_STEPS), *EXAMPLE_ARGS]
    with demo_server(args, root / "server.log") as (url, _):
        yield url, root


@pytest.fixture(scope="module")
def driver():
    with chromium() as d:
        yield d


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("demo_screenshots")
    print(f"\ndemo screenshots in {folder}")
    return folder


def open_page(driver, url: str) -> None:
    driver.get(url)
    wait_until(driver, lambda d: css(d, "#segment-files input[type=file]"), PAGE_TIMEOUT, "the demo page")


def example_frame(root: Path) -> Path:
    from recon.synth import generate

    frame = root / "upload" / "images" / "000000.png"
    if not frame.is_file():  # a frame of our own, so the upload test does not depend on the server's cache
        generate("street", root / "upload", frames=1, size=(160, 120), overwrite=True, progress=False)
    return frame


def shows_file(driver, name: str) -> bool:
    # the file list renders stem and suffix in separate elements
    return name in css(driver, "#segment-files")[0].text.replace("\n", "")


def image_loaded(driver, element) -> bool:
    return bool(driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", element))


def test_segment_tab_shows_overlay_with_legend(server, driver, shots):
    url, root = server
    open_page(driver, url)
    css(driver, "#segment-files input[type=file]")[0].send_keys(str(example_frame(root)))
    wait_until(driver, lambda d: shows_file(d, "000000.png"), PAGE_TIMEOUT, "the upload")
    css(driver, "#segment-run")[0].click()
    wait_until(driver, lambda d: "Segmented 1 image" in css(d, "#segment-status")[0].text, RUN_TIMEOUT,
               "the segment status")
    base = wait_until(driver, lambda d: css(d, "#segment-overlay img.base-image"), PAGE_TIMEOUT, "the overlay image")
    masks = css(driver, "#segment-overlay img.mask")
    wait_until(driver, lambda d: image_loaded(d, base[0]) and all(image_loaded(d, m) for m in masks), PAGE_TIMEOUT,
               "overlay images loaded")
    assert masks, "no class masks on the overlay"
    # read the overlay back from the server: a real PNG of the input's size
    with urllib.request.urlopen(base[0].get_attribute("src"), timeout=30) as response:
        from io import BytesIO

        from PIL import Image

        assert Image.open(BytesIO(response.read())).size == (160, 120)
    legend = css(driver, "#segment-overlay .legend-item, #segment-overlay button")
    names = {e.text.strip() for e in legend}
    assert names & {"road", "sidewalk", "building", "vegetation", "terrain", "car", "pole", "sign", "person", "sky"}
    assert "share %" in css(driver, "#segment-shares")[0].text
    assert "rewis_masks.zip" in css(driver, "#segment-download")[0].text.replace("\n", "")
    screenshot(driver, shots, "segment")


def test_reconstruct_tab_shows_point_cloud_glb(server, driver, shots):
    url, _ = server
    open_page(driver, url)
    click_tab(driver, "Reconstruct")
    wait_until(driver, lambda d: css(d, "#recon-example") and css(d, "#recon-example")[0].is_displayed(),
               PAGE_TIMEOUT, "the Reconstruct tab")
    css(driver, "#recon-example")[0].click()
    wait_until(driver, lambda d: "Example loaded" in css(d, "#recon-report")[0].text, RUN_TIMEOUT, "the example")
    css(driver, "#recon-run")[0].click()
    wait_until(driver, lambda d: "registered frames" in css(d, "#recon-report")[0].text, RUN_TIMEOUT, "the report")
    link = wait_until(driver, lambda d: css(d, "#recon-viewer a[href$='.glb']"), PAGE_TIMEOUT, "the GLB link")
    assert css(driver, "#recon-viewer canvas"), "no 3D viewer canvas"
    with urllib.request.urlopen(link[0].get_attribute("href"), timeout=30) as response:
        assert response.read(4) == b"glTF"
    report = css(driver, "#recon-report")[0].text
    assert "6 / 6" in report and "points" in report
    time.sleep(1.5)  # let the viewer draw the cloud before the screenshot
    screenshot(driver, shots, "reconstruct")

    # switching the colouring loads another GLB into the same viewer
    confidence = [e for e in css(driver, "#recon-colour label") if "confidence" in e.text]
    confidence[0].click()
    wait_until(driver, lambda d: css(d, "#recon-viewer a[href$='view_confidence.glb']"), RUN_TIMEOUT,
               "the confidence-coloured GLB")
    time.sleep(1.5)
    screenshot(driver, shots, "reconstruct_confidence")
    predicted = [e for e in css(driver, "#recon-colour label") if "predicted" in e.text]
    predicted[0].click()
    wait_until(driver, lambda d: css(d, "#recon-viewer a[href*='view_predicted']"), RUN_TIMEOUT,
               "the GLB coloured by predicted labels")


def test_fake_png_upload_gets_readable_error(server, driver, shots, tmp_path):
    url, _ = server
    fake = tmp_path / "notes.png"
    fake.write_text("this is a text file, not an image\n")
    open_page(driver, url)
    css(driver, "#segment-files input[type=file]")[0].send_keys(str(fake))
    wait_until(driver, lambda d: shows_file(d, "notes.png"), PAGE_TIMEOUT, "the upload")
    css(driver, "#segment-run")[0].click()
    # the toast element appears before its text is rendered: wait for the text itself
    texts = wait_until(driver, lambda d: [t.text for t in css(d, "[data-testid='toast-text']") if t.text.strip()],
                       RUN_TIMEOUT, "an error message")
    message = texts[0]
    assert "'notes.png' is not a readable image" in message
    assert "Traceback" not in driver.page_source and 'File "' not in message
    screenshot(driver, shots, "bad_upload")


def scribbled_pixels(driver, stem: str) -> int:
    import re

    found = re.search(rf"{stem} \((\d+) px\)", css(driver, "#scribble-status")[0].text)
    return int(found.group(1)) if found else 0


def draw_stroke(driver, canvas) -> None:
    """Drag the mouse across the lower part of the canvas (the road) with the default class brush."""
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).move_to_element_with_offset(canvas, -100, 100).click_and_hold() \
        .move_by_offset(80, 0).move_by_offset(80, 0).release().perform()


def test_scribble_tab_auto_scribble_and_train(server, driver, shots):
    url, _ = server
    open_page(driver, url)
    click_tab(driver, "Scribble")
    wait_until(driver, lambda d: css(d, "#scribble-load") and css(d, "#scribble-load")[0].is_displayed(),
               PAGE_TIMEOUT, "the Scribble tab")
    css(driver, "#scribble-load")[0].click()
    wait_until(driver, lambda d: "0 of 6 frames" in css(d, "#scribble-status")[0].text, RUN_TIMEOUT, "the sequence")
    css(driver, "#scribble-auto")[0].click()
    wait_until(driver, lambda d: "1 of 6 frames scribbled" in css(d, "#scribble-status")[0].text, RUN_TIMEOUT,
               "the auto scribbles")
    before = scribbled_pixels(driver, "000000")
    draw_stroke(driver, css(driver, "#scribble-editor canvas")[0])
    css(driver, "#scribble-save")[0].click()
    wait_until(driver, lambda d: scribbled_pixels(d, "000000") > before, RUN_TIMEOUT, "the drawn stroke saved")
    screenshot(driver, shots, "scribble")
    css(driver, "#scribble-train")[0].click()
    wait_until(driver, lambda d: "Trained" in css(d, "#scribble-train-status")[0].text, RUN_TIMEOUT * 2, "training")
    wait_until(driver, lambda d: len(css(d, "#scribble-predictions img")) >= 6, PAGE_TIMEOUT, "six predictions")
    time.sleep(1)
    screenshot(driver, shots, "scribble_trained")


def test_session_folders_go_when_the_page_closes(server, driver):
    _, root = server
    log = root / "server.log"
    assert session_folders(log), "the tests above left no session folder to remove"
    driver.get("about:blank")  # the last page closes; its heartbeat stops and Gradio fires unload
    deadline = time.monotonic() + 60
    while session_folders(log) and time.monotonic() < deadline:
        time.sleep(1)
    assert not session_folders(log), f"left behind: {session_folders(log)}"
