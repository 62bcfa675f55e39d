import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from apps.cli import main
from recon.dataset import ClassList, read_label, sequence_images, write_classes, write_label
from recon.errors import InputError
from segment.evaluate import evaluate, find_sequences
from segment.models import LoadedModel, build_model, build_processor, export_model
from segment.predict import InferenceOptions

CLASSES = ClassList(names=("road", "car", "sky"), palette=((128, 64, 128), (0, 0, 142), (70, 130, 180)))
TINY = dict(hidden_sizes=[8, 16, 24, 32], decoder_hidden_size=32, num_attention_heads=[1, 1, 1, 1])


class NearestColourModel(torch.nn.Module):
    """Test double: predicts, per pixel, the class whose palette colour is nearest to the pixel's colour, at
    full input resolution. Fed images painted with label colours, it predicts exactly those labels."""

    def __init__(self, classes: ClassList, processor):
        super().__init__()
        self.config = SimpleNamespace(num_labels=classes.num_classes)
        self.register_buffer("palette", torch.tensor(classes.palette, dtype=torch.float32) / 255)
        self.register_buffer("mean", torch.tensor(processor.image_mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(processor.image_std).view(1, 3, 1, 1))

    def forward(self, pixel_values):
        rgb = pixel_values * self.std + self.mean
        distance = ((rgb[:, None] - self.palette[None, :, :, None, None]) ** 2).sum(2)
        return SimpleNamespace(logits=-distance)


def painted_model(classes: ClassList, height: int, width: int) -> LoadedModel:
    # The processor size equals the image size, so neither resizing step changes a pixel.
    processor = build_processor((height, width))
    return LoadedModel(NearestColourModel(classes, processor), processor, classes, source="nearest-colour double")


def paint(seq, classes: ClassList, predictions: dict | None = None) -> None:
    """Replace each frame by its label (or by `predictions[stem]`) drawn in class colours; void stays black."""
    for image in sequence_images(seq):
        label = predictions[image.stem] if predictions else read_label(seq / "labels" / f"{image.stem}.png")
        colours = np.zeros((256, 3), dtype=np.uint8)
        colours[:classes.num_classes] = classes.palette
        Image.fromarray(colours[label]).save(image)


def random_sequence(folder, classes: ClassList, frames: int = 3, size=(48, 36)) -> None:
    rng = np.random.default_rng(0)
    for i in range(frames):
        label = rng.integers(0, classes.num_classes, (size[1], size[0])).astype(np.uint8)
        label[:2] = 255
        write_label(folder / "labels" / f"{i:06d}.png", label, classes)
        (folder / "images").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size).save(folder / "images" / f"{i:06d}.png")
    write_classes(folder, classes)


@pytest.fixture
def painted_sequence(tmp_path, synth_sequence):
    """Synthetic street frames (random labels until the generator exists), painted with their labels."""
    seq = tmp_path / "seq"
    try:
        from recon.synth import generate  # noqa: F401
        shutil.copytree(synth_sequence(preset="street", frames=3, seed=1, size=(96, 72)), seq)
    except ImportError:
        random_sequence(seq, CLASSES)
    from recon.dataset import read_classes
    classes = read_classes(seq)
    paint(seq, classes)
    return seq, classes


def test_a_model_that_predicts_ground_truth_scores_miou_1(painted_sequence):
    seq, classes = painted_sequence
    height, width = read_label(next((seq / "labels").iterdir())).shape
    report = evaluate(painted_model(classes, height, width), seq, InferenceOptions(batch_size=2, mode="resize"),
                      progress=False)
    assert report["miou"] == 1.0 and report["pixel_accuracy"] == 1.0
    assert report["images"] == len(sequence_images(seq)) and report["split"] == "sequence"


def test_per_class_iou_matches_hand_computation(tmp_path):
    seq = tmp_path / "hand"
    gt = {"a": np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 255], [2, 2, 2, 255]]),
          "b": np.ones((4, 4), dtype=int)}
    pred = {"a": np.array([[0, 1, 1, 1], [0, 0, 1, 1], [2, 2, 0, 0], [2, 2, 2, 2]]),
            "b": np.array([[1, 1, 1, 0]] * 4)}
    for stem in gt:
        write_label(seq / "labels" / f"{stem}.png", gt[stem], CLASSES)
        (seq / "images").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4)).save(seq / "images" / f"{stem}.png")
    write_classes(seq, CLASSES)
    paint(seq, CLASSES, {k: v.astype(np.uint8) for k, v in pred.items()})
    report = evaluate(painted_model(CLASSES, 4, 4), seq, InferenceOptions(mode="resize"), progress=False)
    # Over both images (void pixels left out): road tp 3, gt 4, predicted 8 (3 + 1 from sky + 4 from car);
    # car tp 4 + 12, gt 20, predicted 1 + 16; sky tp 5, gt 6, predicted 5.
    assert report["iou"]["road"] == pytest.approx(3 / (4 + 8 - 3))
    assert report["iou"]["car"] == pytest.approx(16 / (20 + 17 - 16))
    assert report["iou"]["sky"] == pytest.approx(5 / (6 + 5 - 5))
    assert report["miou"] == pytest.approx((3 / 9 + 16 / 21 + 5 / 6) / 3)
    assert report["confusion"] == [[3, 1, 0], [4, 16, 0], [1, 0, 5]]
    assert report["gt_pixels"] == {"road": 4, "car": 20, "sky": 6}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model") / "export"
    return export_model(build_model("b0", CLASSES, seed=2, **TINY), folder, build_processor(64))


def test_cli_on_a_dataset_with_splits_writes_json_and_heat_map(model_dir, tmp_path, capsys):
    for split, n in (("train", 1), ("val", 2)):
        for i in range(n):
            random_sequence(tmp_path / "data" / split / f"seq{i}", CLASSES, frames=2)
    out = tmp_path / "report" / "metrics.json"
    args = ["eval", "--model", str(model_dir), "--data", str(tmp_path / "data"), "--json", str(out), "--quiet"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "mIoU" in printed and "road" in printed
    report = json.loads(out.read_text())
    assert report["split"] == "val" and report["images"] == 4 and len(report["sequences"]) == 2
    assert 0 <= report["miou"] <= 1 and set(report["iou"]) == set(CLASSES.names)
    heat = Image.open(out.with_suffix(".confusion.png"))
    assert heat.width > 3 * 28 and heat.mode == "RGB"
    assert main(args) == 2  # outputs exist
    assert main(args + ["--split", "train", "--overwrite"]) == 0
    assert json.loads(out.read_text())["images"] == 2


def test_class_names_must_match(model_dir, tmp_path, capsys):
    other = ClassList(names=("road", "truck", "sky"), palette=CLASSES.palette)
    random_sequence(tmp_path / "seq", other, frames=1)
    assert main(["eval", "--model", str(model_dir), "--data", str(tmp_path / "seq"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "only in dataset: ['truck']" in err and "only in model: ['car']" in err


def test_class_order_may_differ(tmp_path):
    reordered = ClassList(names=("sky", "road", "car"), palette=(CLASSES.palette[2], *CLASSES.palette[:2]))
    random_sequence(tmp_path / "seq", reordered, frames=2)
    paint(tmp_path / "seq", reordered)
    report = evaluate(painted_model(CLASSES, 36, 48), tmp_path / "seq", InferenceOptions(mode="resize"),
                      progress=False)
    assert report["miou"] == 1.0


@pytest.mark.parametrize("layout, message", [("missing", "not found"), ("empty", "no sequence folders"),
                                             ("nolabels", "no dense labels")])
def test_bad_data_is_one_line(tmp_path, layout, message):
    data = tmp_path / layout
    if layout != "missing":
        data.mkdir()
    if layout == "nolabels":
        (data / "images").mkdir()
        Image.new("RGB", (8, 8)).save(data / "images" / "0.png")
        write_classes(data, CLASSES)
    with pytest.raises(InputError, match=message):
        evaluate(painted_model(CLASSES, 8, 8), data, progress=False)


def test_split_file_is_honoured(tmp_path):
    for name in ("a", "b", "c"):
        (tmp_path / name / "images").mkdir(parents=True)
    (tmp_path / "split.json").write_text(json.dumps({"train": ["a", "b"], "val": ["c"]}))
    assert find_sequences(tmp_path) == ([tmp_path / "c"], "val")
    assert find_sequences(tmp_path, "train")[0] == [tmp_path / "a", tmp_path / "b"]
