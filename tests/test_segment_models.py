import json

import numpy as np
import pytest
import torch
from PIL import Image

from recon.dataset import ClassList
from recon.errors import InputError
from segment.models import (MIT_SIZES, build_config, build_model, build_processor, classes_from_config,
                            export_model, load_model, resolve_model_folder)

CLASSES = ClassList(names=("road", "car", "sky"), palette=((128, 64, 128), (0, 0, 142), (70, 130, 180)),
                    no_3d=("sky",))
TINY = dict(hidden_sizes=[8, 16, 24, 32], decoder_hidden_size=32, num_attention_heads=[1, 1, 1, 1])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model") / "export"
    model = build_model("b0", CLASSES, seed=0, **TINY)
    card = {"mode": "scribbles", "data": "synthetic street, seed 0", "metrics": {"miou": 0.4321}}
    return export_model(model, folder, build_processor(64), card=card)


@pytest.mark.parametrize("size", sorted(MIT_SIZES))
def test_standard_sizes_from_config(size):
    config = build_config(size, CLASSES)
    assert config.hidden_sizes == MIT_SIZES[size]["hidden_sizes"]
    assert config.depths == MIT_SIZES[size]["depths"]
    assert config.decoder_hidden_size == (256 if size in ("b0", "b1") else 768)
    assert config.num_labels == 3 and config.id2label[2] == "sky" and config.label2id["car"] == 1


def test_b0_has_the_published_parameter_count():
    with torch.device("meta"):  # shapes only: no memory, no init time
        model = build_model("b0", CLASSES)
    assert 3.5e6 < sum(p.numel() for p in model.parameters()) < 3.9e6


def test_unknown_size_is_bad_input():
    with pytest.raises(InputError, match="b0"):
        build_config("b9", CLASSES)


def test_export_loads_with_auto_classes_and_pipeline(exported):
    from transformers import AutoModelForSemanticSegmentation, pipeline

    assert (exported / "model.safetensors").is_file() and not list(exported.glob("*.bin"))
    model = AutoModelForSemanticSegmentation.from_pretrained(exported)
    assert model.config.id2label == {0: "road", 1: "car", 2: "sky"}
    segment = pipeline("image-segmentation", model=str(exported))
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8))
    labels = {item["label"] for item in segment(image)}
    assert labels <= set(CLASSES.names) and labels


def test_classes_and_palette_travel_in_the_config(exported):
    config = json.loads((exported / "config.json").read_text())
    assert config["palette"] == [list(c) for c in CLASSES.palette] and config["ignore_index"] == 255
    loaded = load_model(str(exported))
    assert loaded.classes == CLASSES
    assert loaded.processor.size["height"] == 64


def test_model_card_records_mode_data_metrics_and_classes(exported):
    card = (exported / "README.md").read_text()
    assert "pipeline_tag: image-segmentation" in card
    for text in ("scribbles", "synthetic street, seed 0", "0.4321", "| 2 | sky |"):
        assert text in card


def test_models_from_elsewhere_get_a_generated_palette():
    config = build_config("b0", CLASSES)
    del config.palette
    classes = classes_from_config(config)
    assert classes.names == CLASSES.names and len(set(classes.palette)) == 3


def test_run_folder_resolves_to_export_then_best(tmp_path, exported):
    run = tmp_path / "run"
    (run / "best").mkdir(parents=True)
    (run / "best" / "config.json").write_text("{}")
    assert resolve_model_folder(str(run)) == run / "best"
    (run / "export").mkdir()
    (run / "export" / "config.json").write_text("{}")
    assert resolve_model_folder(str(run)) == run / "export"
    assert resolve_model_folder(str(exported)) == exported


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing", "folder not found"),
    (lambda p: p, "no config.json"),
    (lambda p: (p / "weights.safetensors").write_bytes(b"") or p / "weights.safetensors", "is a file"),
])
def test_bad_local_models_are_one_line_errors(tmp_path, make, message):
    with pytest.raises(InputError, match=message):
        load_model(str(make(tmp_path)))


def test_pickled_weights_are_never_loaded(tmp_path, exported):
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text((exported / "config.json").read_text())
    torch.save({}, folder / "pytorch_model.bin")
    with pytest.raises(InputError, match="safetensors"):
        load_model(str(folder))


def test_hub_id_without_cache_says_how_to_get_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(InputError, match="HF_HOME") as err:
        load_model("nobody-here/segformer-none")
    assert "--model DIR" in str(err.value) and "\n" not in str(err.value)
