import numpy as np
import pytest
import torch
from PIL import Image

from apps.cli import main
from recon.dataset import ClassList, list_images, read_label
from segment.models import build_model, build_processor, export_model
from segment.predict import stitch_windows, window_offsets

CLASSES = ClassList(names=("road", "car", "sky"), palette=((128, 64, 128), (0, 0, 142), (70, 130, 180)))
TINY = dict(hidden_sizes=[8, 16, 24, 32], decoder_hidden_size=32, num_attention_heads=[1, 1, 1, 1])


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model") / "export"
    return export_model(build_model("b0", CLASSES, seed=1, **TINY), folder, build_processor(64))


@pytest.fixture(scope="module")
def frames(tmp_path_factory, synth_sequence):
    """Synthetic street frames when the generator exists, random images of a few sizes otherwise."""
    try:
        from recon.synth import generate  # noqa: F401
    except ImportError:
        folder = tmp_path_factory.mktemp("frames")
        rng = np.random.default_rng(0)
        for i, (w, h) in enumerate([(96, 72), (80, 80), (64, 90), (96, 72), (72, 60)]):
            Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / f"{i:06d}.png")
        return folder
    return synth_sequence(preset="street", frames=5, seed=0, size=(96, 72)) / "images"


@pytest.fixture
def mixed_input(tmp_path, frames):
    """The frames (one of them in a subfolder), a corrupt PNG and a text file."""
    folder = tmp_path / "input"
    (folder / "sub").mkdir(parents=True)
    for i, path in enumerate(list_images(frames)):
        (folder / ("sub" if i == 1 else "") / path.name).write_bytes(path.read_bytes())
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is no image")
    (folder / "notes.txt").write_text("not an image\n")
    return folder


def predict(model_dir, input_dir, output_dir, *extra):
    return main(["predict", "--model", str(model_dir), "--input", str(input_dir), "--output", str(output_dir),
                 "--quiet", *extra])


def pipeline_argmax(segment, path, names):
    size = Image.open(path).size
    label = np.full(size[::-1], 255, dtype=np.uint8)
    for item in segment(str(path)):
        label[np.asarray(item["mask"]) > 0] = names.index(item["label"])
    return label


def test_predictions_equal_the_transformers_pipeline(model_dir, frames, tmp_path):
    from transformers import pipeline

    assert predict(model_dir, frames, tmp_path / "out", "--batch-size", "3", "--mode", "resize") == 0
    segment = pipeline("image-segmentation", model=str(model_dir))
    for path in list_images(frames):
        ours = read_label(tmp_path / "out" / "masks" / f"{path.stem}.png")
        assert np.array_equal(ours, pipeline_argmax(segment, path, CLASSES.names)), path.name


def test_folder_with_bad_files_skips_them_and_keeps_relative_paths(model_dir, mixed_input, tmp_path, capsys):
    out = tmp_path / "out"
    assert predict(model_dir, mixed_input, out, "--overlay", "--save-probs", "top1") == 0
    captured = capsys.readouterr()
    assert "skipped broken.png: not an image" in captured.err
    assert "skipped notes.txt: not an image file" in captured.err
    assert "done, 2 skipped" in captured.out and "img/s" in captured.out
    images = [p for p in mixed_input.rglob("*") if p.suffix == ".png" and p.name != "broken.png"]
    assert len(images) == 5
    for path in images:
        rel = path.relative_to(mixed_input)
        mask = Image.open(out / "masks" / rel)
        assert mask.mode == "P" and mask.size == Image.open(path).size
        assert np.asarray(mask).max() < CLASSES.num_classes
        probs = np.load(out / "probs" / rel.with_suffix(".npy"))
        assert probs.dtype == np.float16 and probs.shape == mask.size[::-1] and probs.min() >= 1 / 3 - 1e-3
        assert Image.open(out / "overlays" / rel.with_suffix(".jpg")).height >= mask.height
    assert not (out / "masks" / "broken.png").exists()


def test_second_run_without_overwrite_writes_nothing(model_dir, mixed_input, tmp_path, capsys):
    out = tmp_path / "out"
    assert predict(model_dir, mixed_input, out) == 0
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    capsys.readouterr()
    assert predict(model_dir, mixed_input, out) == 2
    err = capsys.readouterr().err
    assert "already exist" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    assert predict(model_dir, mixed_input, out, "--overwrite") == 0


def test_only_bad_files_exit_2(model_dir, tmp_path, capsys):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"nope")
    (folder / "b.txt").write_text("nope")
    assert predict(model_dir, folder, tmp_path / "out") == 2
    assert "could be read" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["missing input", "empty input", "unknown model", "batch size 0"])
def test_bad_input_is_one_line_exit_2(model_dir, frames, tmp_path, capsys, case):
    (tmp_path / "empty").mkdir()
    model, input_dir, extra = model_dir, frames, []
    if case == "missing input":
        input_dir = tmp_path / "missing"
    elif case == "empty input":
        input_dir = tmp_path / "empty"
    elif case == "unknown model":
        model = tmp_path / "empty"
    else:
        extra = ["--batch-size", "0"]
    assert predict(model, input_dir, tmp_path / "out", *extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("rewis predict: error:") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_wide_images_slide_windows_and_keep_their_size(model_dir, tmp_path):
    folder = tmp_path / "wide"
    folder.mkdir()
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 255, (40, 200, 3), dtype=np.uint8)).save(folder / "wide.png")
    assert predict(model_dir, folder, tmp_path / "out", "--save-probs") == 0
    assert read_label(tmp_path / "out" / "masks" / "wide.png").shape == (40, 200)
    probs = np.load(tmp_path / "out" / "probs" / "wide.npy").astype(np.float32)
    assert probs.shape == (3, 40, 200) and np.allclose(probs.sum(0), 1, atol=1e-2)


def test_window_offsets_cover_the_width_with_overlap():
    assert window_offsets(50, 64) == [0]
    offsets = window_offsets(320, 64)
    assert offsets[0] == 0 and offsets[-1] == 320 - 64
    assert all(64 - (b - a) >= 64 / 3 - 1 for a, b in zip(offsets, offsets[1:]))


def test_stitching_averages_overlapping_windows():
    logits = torch.stack([torch.full((2, 4, 4), 1.0), torch.full((2, 4, 4), 3.0)])
    merged = stitch_windows(logits, [0, 2], (4, 4), 6)
    assert merged.shape == (2, 4, 6)
    assert merged[0, 0].tolist() == [1, 1, 2, 2, 3, 3]
