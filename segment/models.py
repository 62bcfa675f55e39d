"""2D SegFormer models: build b0..b5 from a config, load exported/run/hub models offline-safe, export them so
`AutoModelForSemanticSegmentation` and `pipeline("image-segmentation")` load them unchanged.

Class names travel as id2label; the palette and ignore index travel as extra config fields (`config.palette`,
`config.ignore_index`), so an exported folder is all `rewis predict` / `rewis eval` need."""

from __future__ import annotations

import colorsys
import os
import re
from dataclasses import dataclass
from pathlib import Path

from recon.dataset import IGNORE_INDEX, ClassList
from recon.errors import InputError

# The standard Mix Transformer encoder sizes (SegFormer paper, table 1); heads, sr ratios, patch sizes and
# strides are the same for every size (SegformerConfig defaults).
MIT_SIZES = {
    "b0": dict(hidden_sizes=[32, 64, 160, 256], depths=[2, 2, 2, 2], decoder_hidden_size=256),
    "b1": dict(hidden_sizes=[64, 128, 320, 512], depths=[2, 2, 2, 2], decoder_hidden_size=256),
    "b2": dict(hidden_sizes=[64, 128, 320, 512], depths=[3, 4, 6, 3], decoder_hidden_size=768),
    "b3": dict(hidden_sizes=[64, 128, 320, 512], depths=[3, 4, 18, 3], decoder_hidden_size=768),
    "b4": dict(hidden_sizes=[64, 128, 320, 512], depths=[3, 8, 27, 3], decoder_hidden_size=768),
    "b5": dict(hidden_sizes=[64, 128, 320, 512], depths=[3, 6, 40, 3], decoder_hidden_size=768),
}
DEFAULT_INPUT_SIZE = 512
RUN_SUBFOLDERS = ("export", "best")  # where a training run keeps a loadable model, in order of preference
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass
class LoadedModel:
    """A model ready for inference: the network, its image processor, its classes and where it came from."""
    model: object  # a SegformerForSemanticSegmentation, or anything with the same call signature
    processor: object
    classes: ClassList
    source: str


def build_config(size: str, classes: ClassList, **overrides):
    """A SegformerConfig of MiT size `size` (b0..b5) labelled with `classes`; `overrides` change any field
    (tests use tiny hidden sizes)."""
    from transformers import SegformerConfig

    if size not in MIT_SIZES:
        raise InputError(f"model size '{size}': choose one of {', '.join(MIT_SIZES)}")
    fields = {**MIT_SIZES[size], **label_fields(classes), **overrides}
    return SegformerConfig(**fields)


def label_fields(classes: ClassList) -> dict:
    return {"num_labels": classes.num_classes,
            "id2label": dict(enumerate(classes.names)),
            "label2id": {n: i for i, n in enumerate(classes.names)},
            "palette": [list(c) for c in classes.palette],
            "ignore_index": classes.ignore_index,
            "no_3d": list(classes.no_3d)}


def build_model(size: str, classes: ClassList, seed: int | None = None, **overrides):
    """A randomly initialised SegformerForSemanticSegmentation (never touches the network)."""
    import torch
    from transformers import SegformerForSemanticSegmentation

    if seed is not None:
        torch.manual_seed(seed)
    return SegformerForSemanticSegmentation(build_config(size, classes, **overrides))


def build_processor(input_size: int | tuple[int, int] = DEFAULT_INPUT_SIZE):
    """The SegFormer image processor (resize, rescale, ImageNet normalisation) at `input_size` (S or (H, W))."""
    height, width = (input_size, input_size) if isinstance(input_size, int) else input_size
    return _processor_class()(size={"height": int(height), "width": int(width)})


def _processor_class():
    # Without torchvision transformers falls back to the PIL backend anyway, with a warning; pick it directly.
    import importlib.util

    import transformers

    if importlib.util.find_spec("torchvision") is not None:
        return transformers.SegformerImageProcessor
    return transformers.SegformerImageProcessorPil


def classes_from_config(config) -> ClassList:
    """The ClassList stored in a model config; models from elsewhere get names from id2label and a generated
    palette."""
    id2label = {int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()}
    names = tuple(id2label.get(i, f"class_{i}") for i in range(int(config.num_labels)))
    palette = getattr(config, "palette", None)
    if not palette or len(palette) != len(names):
        palette = generated_palette(len(names))
    no_3d = tuple(n for n in (getattr(config, "no_3d", None) or ()) if n in names)
    return ClassList(names=names, palette=tuple(tuple(int(v) for v in c) for c in palette),
                     ignore_index=int(getattr(config, "ignore_index", IGNORE_INDEX)), no_3d=no_3d)


def generated_palette(n: int) -> list[tuple[int, int, int]]:
    """Distinct colours by walking the hue circle with the golden ratio (deterministic)."""
    colours = []
    for i in range(n):
        r, g, b = colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.65, 0.95 - 0.25 * (i % 2))
        colours.append((int(r * 255), int(g * 255), int(b * 255)))
    return colours


# ---------------------------------------------------------------------------------------------- export

def export_model(model, folder: Path, processor=None, card: dict | None = None) -> Path:
    """Write `model` (safetensors + config), its image processor and a README.md model card to `folder`.
    `card` may hold 'mode', 'data', 'metrics' (dict) and any other short fields."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    (processor or build_processor()).save_pretrained(folder)
    (folder / "README.md").write_text(model_card(classes_from_config(model.config), card or {}))
    return folder


def model_card(classes: ClassList, card: dict) -> str:
    lines = ["---", "library_name: transformers", "pipeline_tag: image-segmentation",
             "tags: [segformer, semantic-segmentation, rewis]", "---", "",
             "# SegFormer trained with rewis", "",
             "Load with `AutoModelForSemanticSegmentation.from_pretrained(folder)` or "
             "`pipeline(\"image-segmentation\", model=folder)`; segment a folder with "
             "`rewis predict --model folder --input DIR --output OUT`.", ""]
    lines += [f"- **training mode**: {card.get('mode', 'unknown')}", f"- **data**: {card.get('data', 'unknown')}"]
    lines += [f"- **{k}**: {v}" for k, v in card.items() if k not in ("mode", "data", "metrics")]
    lines += ["", "## Classes", "", "| id | name | colour |", "|---|---|---|"]
    lines += [f"| {i} | {n} | {tuple(c)} |" for i, (n, c) in enumerate(zip(classes.names, classes.palette))]
    metrics = card.get("metrics") or {}
    if metrics:
        lines += ["", "## Metrics", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in metrics.items()]
    return "\n".join(lines) + "\n"


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


# ---------------------------------------------------------------------------------------------- loading

def resolve_model_folder(ref: str) -> Path | None:
    """The folder holding config.json for a local MODEL reference, or None when `ref` is not a local path.
    Rules: a folder with config.json; else a run folder's export/ or best/ subfolder with config.json."""
    path = Path(ref).expanduser()
    if not path.exists():
        if _looks_like_path(ref):
            raise InputError(f"model '{ref}': folder not found; pass an exported model folder, a run folder "
                             "or a Hugging Face model id")
        return None
    if not path.is_dir():
        raise InputError(f"model '{ref}': is a file; pass the folder that holds config.json and model.safetensors")
    for candidate in (path, *(path / sub for sub in RUN_SUBFOLDERS)):
        if (candidate / "config.json").is_file():
            return candidate
    raise InputError(f"model '{ref}': no config.json there nor in {' or '.join(s + '/' for s in RUN_SUBFOLDERS)}; "
                     "pass an exported model folder (save_pretrained) or a training run folder")


def _looks_like_path(ref: str) -> bool:
    return ref.startswith((".", "/", "~")) or os.sep + os.sep in ref or not _HUB_ID.match(ref)


def load_model(ref: str, allow_download: bool = False) -> LoadedModel:
    """Load a SegFormer (or any semantic-segmentation model) from a local folder, a run folder or a hub id.
    Hub ids come from the local cache only unless `allow_download`; weights are read from safetensors only."""
    folder = resolve_model_folder(ref)
    source = str(folder) if folder is not None else ref
    local_only = folder is not None or not allow_download
    try:
        model, processor = _from_pretrained(source, local_only)
    except (OSError, ValueError, KeyError) as e:
        raise _load_error(ref, folder, allow_download, e) from None
    model.eval()
    return LoadedModel(model=model, processor=processor, classes=classes_from_config(model.config), source=source)


def _from_pretrained(source: str, local_only: bool):
    from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # the PIL-backend fallback warning and weight-loading bars are noise here
    hf_logging.disable_progress_bar()
    try:
        model = AutoModelForSemanticSegmentation.from_pretrained(source, local_files_only=local_only,
                                                                 use_safetensors=True)
        try:
            processor = AutoImageProcessor.from_pretrained(source, local_files_only=local_only)
        except OSError:  # a bare save_pretrained folder without preprocessor_config.json
            processor = build_processor()
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    return model, processor


def _load_error(ref: str, folder: Path | None, allow_download: bool, error: Exception) -> InputError:
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if folder is not None:
        return InputError(f"model '{ref}': cannot load {folder} ({reason}); it must hold config.json and "
                          "model.safetensors written by save_pretrained (pickled .bin weights are not loaded)")
    cache = os.environ.get("HF_HOME", "~/.cache/huggingface")
    how = ("check the id and the network" if allow_download else
           f"not a local folder, not in the local Hugging Face cache ({cache}), and downloads are off: download it where there is "
           "network (e.g. `hf download ID --local-dir DIR`) and pass --model DIR, set HF_HOME to a cache that "
           "holds it, or pass --allow-download")
    return InputError(f"model '{ref}': cannot load it ({how}; {reason})")
