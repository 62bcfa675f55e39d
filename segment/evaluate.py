"""Evaluate a segmentation model on labelled sequence folders: one confusion matrix over the whole split,
IoU per class, mIoU over the classes that occur (segment/metrics.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recon.dataset import ClassList, find_beside, read_classes, read_json, read_label, sequence_images
from recon.errors import InputError
from segment.metrics import IGNORE_INDEX, ConfusionMeter
from segment.models import LoadedModel
from segment.predict import InferenceOptions, Segmenter, validate_options

SPLITS = ("auto", "val", "train", "all")


@dataclass
class Sample:
    image: Path
    label: Path
    lut: np.ndarray  # dataset class id -> model class id (256 entries, void -> 255)
    void: int = IGNORE_INDEX  # the dataset's ignore index


# ------------------------------------------------------------------------------------------ finding data

def find_sequences(data_dir: Path, split: str = "auto") -> tuple[list[Path], str]:
    """Sequence folders to evaluate and the split they came from. DIR is a sequence (has images/), or a dataset
    with train/ and val/ subfolders, or with split.json, or just a folder of sequences. `auto` picks the val split
    of a dataset that has splits (and fails when it has none rather than score training data), else every
    sequence."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise InputError(f"--data {data_dir}: folder not found")
    if split not in SPLITS:
        raise InputError(f"--split {split}: choose one of {', '.join(SPLITS)}")
    if (data_dir / "images").is_dir():
        return [data_dir], "sequence"
    if (data_dir / "train").is_dir() or (data_dir / "val").is_dir():
        return _split_folders(data_dir, split)
    if (data_dir / "split.json").is_file():
        return _split_file(data_dir, split)
    if split in ("val", "train"):
        raise InputError(f"--data {data_dir}: no {split}/ folder and no split.json; use --split all")
    return _sequences_in(data_dir), "all"


def _split_folders(data_dir: Path, split: str) -> tuple[list[Path], str]:
    if split == "auto":
        if not (data_dir / "val").is_dir():
            raise InputError(f"{data_dir}: has train/ but no val/ folder; evaluate its training data explicitly "
                             "with --split train, or add a val/ folder")
        split = "val"
    names = ("train", "val") if split == "all" else (split,)
    if not all((data_dir / n).is_dir() for n in names):
        raise InputError(f"--data {data_dir}: no {split}/ subfolder; choose --split among the ones present")
    return [seq for n in names for seq in _sequences_in(data_dir / n)], split


def _split_file(data_dir: Path, split: str) -> tuple[list[Path], str]:
    splits = read_json(data_dir / "split.json")
    if split == "auto":
        if "val" not in splits:
            raise InputError(f"{data_dir / 'split.json'}: no 'val' list; choose --split {' or '.join(splits) or 'all'}")
        split = "val"
    names = [n for v in splits.values() for n in v] if split == "all" else splits.get(split)
    if not names:
        raise InputError(f"{data_dir / 'split.json'}: no '{split}' list; choose another --split")
    missing = [n for n in names if not (data_dir / n / "images").is_dir()]
    if missing:
        raise InputError(f"{data_dir / 'split.json'}: sequence folder(s) {missing[:3]} not found in {data_dir}")
    return [data_dir / n for n in names], split


def _sequences_in(folder: Path) -> list[Path]:
    if (folder / "images").is_dir():
        return [folder]
    found = sorted(p for p in folder.iterdir() if (p / "images").is_dir())
    if not found:
        raise InputError(f"{folder}: no sequence folders (folders with images/ and labels/) in it")
    return found


def class_lut(dataset: ClassList, model: ClassList, where: Path) -> np.ndarray:
    """Map dataset class ids to model class ids by name; both must hold the same names (order may differ)."""
    missing = sorted(set(dataset.names) - set(model.names))
    extra = sorted(set(model.names) - set(dataset.names))
    if missing or extra:
        raise InputError(f"{where}: dataset and model classes differ (only in dataset: {missing or 'none'}; "
                         f"only in model: {extra or 'none'}); evaluate with a model trained on these classes")
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for i, name in enumerate(dataset.names):
        lut[i] = model.names.index(name)
    return lut


def collect_samples(sequences: list[Path], model_classes: ClassList) -> list[Sample]:
    samples = []
    for seq in sequences:
        classes = read_classes(seq)
        lut = class_lut(classes, model_classes, seq / "classes.json")
        for image in sequence_images(seq):
            label = find_beside(seq, "labels", image.stem)
            if label is not None:
                samples.append(Sample(image=image, label=label, lut=lut, void=classes.ignore_index))
    if not samples:
        raise InputError(f"{', '.join(map(str, sequences[:3]))}: no dense labels (labels/<stem>.png beside "
                         "images/); evaluation needs ground truth")
    return samples


# ------------------------------------------------------------------------------------------ evaluation

def evaluate(loaded: LoadedModel, data_dir: Path, options: InferenceOptions | None = None, split: str = "auto",
             progress: bool = True) -> dict:
    """Metrics of `loaded` on the split of `data_dir` as a JSON-ready dict."""
    sequences, used_split = find_sequences(data_dir, split)
    report = score_samples(loaded, collect_samples(sequences, loaded.classes), options, progress)
    report.update(model=loaded.source, data=str(data_dir), split=used_split, sequences=[str(s) for s in sequences])
    return report


def collect_val_samples(folders: list[Path], classes: ClassList) -> list[Sample]:
    """The labelled images of validation folders (each a sequence or a dataset, whose val split is taken)."""
    return collect_samples([seq for folder in folders for seq in find_sequences(folder, "auto")[0]], classes)


def score_samples(loaded: LoadedModel, samples: list[Sample], options: InferenceOptions | None = None,
                  progress: bool = True) -> dict:
    """One confusion matrix of `loaded` over `samples`: the evaluator of `rewis eval` and of training's
    validation alike (sliding windows and sizes as in `rewis predict`)."""
    from tqdm import tqdm

    options = options or InferenceOptions()
    validate_options(options)
    by_image = {s.image: s for s in samples}
    meter = ConfusionMeter(loaded.classes.num_classes)
    skipped = []
    for result in tqdm(Segmenter(loaded, options).run(list(by_image)), total=len(samples), desc="eval",
                       unit="img", disable=not progress, leave=False):
        if result.error:
            skipped.append({"image": str(result.path), "reason": result.error})
            continue
        meter.update(result.label, ground_truth(by_image[result.path], result.label.shape))
    if not meter.counts().sum():
        raise InputError(f"{', '.join(str(s.image.parent.parent) for s in samples[:2])}: no labelled pixel could be "
                         "evaluated (all images unreadable or all labels void)")
    report = meter.summary(list(loaded.classes.names))
    counts = meter.counts()
    report.update(images=len(samples) - len(skipped), skipped=skipped,
                  gt_pixels={n: int(v) for n, v in zip(loaded.classes.names, counts.sum(1).tolist())})
    return report


def ground_truth(sample: Sample, shape: tuple[int, int]) -> np.ndarray:
    label = read_label(sample.label)
    if label.shape != shape:
        raise InputError(f"{sample.label}: label is {label.shape[1]}x{label.shape[0]} but its image is "
                         f"{shape[1]}x{shape[0]}; labels must have the image's size")
    known = np.zeros(256, dtype=bool)
    known[sample.lut != IGNORE_INDEX] = True
    known[[IGNORE_INDEX, sample.void]] = True
    if not known[label].all():
        bad = sorted(set(np.unique(label[~known[label]]).tolist()))
        raise InputError(f"{sample.label}: class ids {bad[:5]} are not in classes.json (nor void {sample.void})")
    return sample.lut[label]


def format_table(report: dict, counts: str = "gt_pixels") -> str:
    """The per-class IoU table; `counts` names the report's ground-truth counts (gt_pixels, or gt_points)."""
    names = list(report["iou"])
    width = max(12, *(len(n) for n in names))
    heading = counts.replace("gt_", "GT ")
    lines = [f"{'class':<{width}}  {'IoU':>7}  {heading:>12}", "-" * (width + 23)]
    for name in names:
        iou = report["iou"][name]
        shown = "    n/a" if iou is None else f"{100 * iou:7.2f}"
        lines.append(f"{name:<{width}}  {shown}  {report[counts][name]:>12}")
    lines.append("-" * (width + 23))
    lines.append(f"{'mIoU':<{width}}  {100 * report['miou']:7.2f}")
    lines.append(f"{'pixel acc.':<{width}}  {100 * report['pixel_accuracy']:7.2f}")
    return "\n".join(lines)
