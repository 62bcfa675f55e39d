"""The demo's pieces without a server: scribble layers -> class ids, upload checks, zip extraction, session
folders, readable errors, pixel shares, the loopback default, the model catalog."""

from __future__ import annotations

import zipfile

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from apps.demo import scribbles
from apps.demo.models import UNTRAINED, ModelCatalog
from apps.demo.safety import (
    Limits,
    SessionFolders,
    SingleJob,
    check_images,
    extract_zip_images,
    readable_errors,
)
from apps.demo.tab_reconstruct import viewer_axes
from apps.demo.tab_segment import class_shares, unique_stems
from recon.dataset import ClassList, read_label
from recon.errors import InputError

CLASSES = ClassList(names=("road", "car", "sky"), palette=((128, 64, 128), (0, 0, 142), (70, 130, 180)))


def stroke_layer(h=20, w=30) -> np.ndarray:
    layer = np.zeros((h, w, 4), np.uint8)
    layer[5, 2:20] = (128, 64, 128, 255)  # a road stroke
    layer[12:15, 10] = (0, 0, 142, 255)  # a car stroke
    layer[8, 2:5] = (0, 0, 142, 60)  # anti-aliased fringe: too faint to count
    layer[1, 1] = (255, 255, 0, 255)  # not a class colour
    return layer


def test_editor_layers_become_class_ids():
    label = scribbles.editor_to_label({"background": None, "layers": [stroke_layer()], "composite": None},
                                      CLASSES, (30, 20))
    assert (label[5, 2:20] == 0).all() and (label[12:15, 10] == 1).all()
    assert label[8, 3] == 255 and label[1, 1] == 255
    assert int((label != 255).sum()) == 18 + 3


def test_later_layers_paint_over_and_scaled_canvas_is_resized_without_blending():
    top = np.zeros((20, 30, 4), np.uint8)
    top[5, 2:20] = (70, 130, 180, 255)
    label = scribbles.editor_to_label({"layers": [stroke_layer(), top]}, CLASSES, (30, 20))
    assert (label[5, 2:20] == 2).all()
    doubled = np.repeat(np.repeat(stroke_layer(), 2, axis=0), 2, axis=1)
    label = scribbles.editor_to_label({"layers": [doubled]}, CLASSES, (30, 20))
    assert set(np.unique(label)) <= {0, 1, 255} and (label[5, 2:20] == 0).all()


def test_scribbles_round_trip_through_weak_label_files(tmp_path):
    label = np.full((20, 30), 255, np.uint8)
    label[3, 4:9] = 2
    path = scribbles.save_scribbles(tmp_path, "000001", label, CLASSES)
    assert path == tmp_path / "weak" / "scribbles" / "000001.png"
    assert (read_label(path) == label).all() and Image.open(path).mode == "P"
    layer = scribbles.label_to_layer(label, CLASSES)
    assert (scribbles.editor_to_label({"layers": [layer]}, CLASSES, (30, 20)) == label).all()
    assert scribbles.scribble_pixels(tmp_path) == {"000001": 5}
    assert scribbles.save_scribbles(tmp_path, "000001", np.full_like(label, 255), CLASSES) is None
    assert scribbles.annotated_stems(tmp_path) == []


def test_fake_png_and_wrong_types_are_refused_by_name(tmp_path):
    fake = tmp_path / "notes.png"
    fake.write_text("not an image")
    with pytest.raises(InputError, match="'notes.png' is not a readable image"):
        check_images([fake], Limits())
    script = tmp_path / "run.sh"
    script.write_text("echo hi")
    with pytest.raises(InputError, match="not an image file"):
        check_images([script], Limits())
    with pytest.raises(InputError, match="no images"):
        check_images([], Limits())
    good = tmp_path / "ok.png"
    Image.new("RGB", (8, 6)).save(good)
    with pytest.raises(InputError, match="at most 1 per request"):
        check_images([good, good], Limits(max_images=1))
    with pytest.raises(InputError, match="pixels"):
        check_images([good], Limits(max_pixels=10))


def test_zip_extraction_flattens_paths_and_skips_non_images(tmp_path):
    archive = tmp_path / "frames.zip"
    png = tmp_path / "a.png"
    Image.new("RGB", (8, 6)).save(png)
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(png, "../../escape/000.png")
        zf.write(png, "seq/images/001.png")
        zf.writestr("readme.txt", "hello")
    out = extract_zip_images(archive, tmp_path / "out", Limits())
    assert [p.name for p in out] == ["00000_000.png", "00001_001.png"]
    assert all(p.parent == tmp_path / "out" for p in out)
    with pytest.raises(InputError, match="holds 2 images"):
        extract_zip_images(archive, tmp_path / "out2", Limits(max_zip_members=1))
    (tmp_path / "bad.zip").write_text("not a zip")
    with pytest.raises(InputError, match="not a readable zip"):
        extract_zip_images(tmp_path / "bad.zip", tmp_path / "out3", Limits())


class FakeRequest:
    def __init__(self, session_hash):
        self.session_hash = session_hash


def test_session_folders_are_removed_when_the_session_ends(tmp_path):
    sessions = SessionFolders(tmp_path / "root")
    a = sessions.fresh(FakeRequest("abc"), "segment")
    (a / "x.png").write_text("x")
    sessions.folder(FakeRequest("../evil"))
    assert sessions.sessions() == ["abc", "evil"]  # path characters stripped: no escape from the root
    sessions.end_session(FakeRequest("abc"))
    assert sessions.sessions() == ["evil"]
    sessions.close()
    assert not (tmp_path / "root").exists()


def test_errors_become_one_readable_line_without_traceback():
    @readable_errors
    def bad_input():
        raise InputError("'x.png' is not a readable image")

    @readable_errors
    def crash():
        raise ZeroDivisionError("division by zero")

    @readable_errors
    def crash_later():
        yield 1
        raise KeyError("boom")

    with pytest.raises(gr.Error, match="'x.png' is not a readable image"):
        bad_input()
    with pytest.raises(gr.Error, match=r"Something went wrong \(ZeroDivisionError: division by zero\)"):
        crash()
    with pytest.raises(gr.Error, match="KeyError"):
        list(crash_later())


def test_one_training_job_at_a_time():
    job = SingleJob("training job")
    job.acquire()
    with pytest.raises(InputError, match="another training job is running"):
        job.acquire()
    job.release()
    job.acquire()
    job.release()
    assert not job.busy


def test_class_shares_and_unique_names(tmp_path):
    masks = [np.array([[0, 0, 1, 255]], np.uint8), np.array([[0, 2, 2, 2]], np.uint8)]
    rows = class_shares(masks, CLASSES)
    assert rows == [["road", 3, 42.86], ["sky", 3, 42.86], ["car", 1, 14.29]]
    assert unique_stems([tmp_path / "a.png", tmp_path / "b" / "a.jpg", tmp_path / "c.png"]) == ["a", "a_2", "c"]


def test_viewer_axes_turn_opencv_into_gltf():
    xyz = np.array([[0, 0, 5], [1, 2, 5], [0, 0, 7]], np.float32)  # median (0, 0, 5)
    out = viewer_axes(xyz)
    assert out.dtype == np.float32 and np.allclose(out[1], [1, -2, 0]) and np.allclose(out[2], [0, 0, -2])


def test_demo_binds_loopback_unless_public():
    from apps.cmd_demo import check_host

    check_host("127.0.0.1", False)
    check_host("localhost", False)
    with pytest.raises(InputError, match="--public"):
        check_host("0.0.0.0", False)
    check_host("0.0.0.0", True)


def test_catalog_offers_untrained_model_only_without_others(tmp_path):
    catalog = ModelCatalog(None, tmp_path / "none")
    assert catalog.choices() == [UNTRAINED]
    from test_demo_client import export_tiny_model

    export_tiny_model(tmp_path / "models" / "tiny")
    (tmp_path / "models" / "not_a_model").mkdir()
    catalog = ModelCatalog(None, tmp_path / "models")
    assert catalog.choices() == ["tiny"]
    loaded = catalog.get("tiny")
    assert catalog.get("tiny") is loaded and loaded.classes.names[0] == "road"
    with pytest.raises(InputError, match="not available"):
        catalog.get("gone")
    with pytest.raises(InputError, match="folder not found"):
        ModelCatalog(str(tmp_path / "missing_model"), None)


def test_reconstruct_report_says_how_many_frames_passed_validation_and_warns_when_weak():
    from apps.demo.tab_reconstruct import report_markdown

    base = {"source": "images", "points": 1000, "links": 5000, "seconds": 3.0, "frames_total": 10,
            "scale": {"method": "ground plane", "confidence": "low", "factor": 2.0, "reasons": ["41 ground points"]}}
    good = report_markdown({**base, "frames_registered": 9, "frames_rejected": [
        {"image": "000006.png", "reasons": ["the trajectory jumps into it"]}]}, "t")
    assert "passed pose validation: **9 / 10**" in good and "000006.png: the trajectory jumps" in good
    assert "weak reconstruction" not in good and "low confidence" in good
    weak = report_markdown({**base, "frames_registered": 5, "frames_rejected": [
        {"image": f"{i:06d}.png", "reasons": ["x"]} for i in range(5)]}, "t")
    assert "**5 / 10**" in weak and "and 2 more" in weak and "weak reconstruction" in weak
    rgbd = report_markdown({**base, "source": "rgbd", "frames_registered": 6, "frames_total": 6}, "t")
    assert "registered frames: **6 / 6**" in rgbd and "validation" not in rgbd
