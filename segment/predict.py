"""Batched inference with a SegFormer (or any model with the same call signature).

Preprocessing is the model's own image processor and postprocessing is the one of
`post_process_semantic_segmentation` (bilinear upsampling of the logits to the input size, then argmax), so in
`resize` mode the class maps equal `pipeline("image-segmentation")`'s. Images are decoded and preprocessed in
worker threads while the model runs (PIL and numpy release the GIL); outputs are written by another thread."""

from __future__ import annotations

import math
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from recon.dataset import decode_rgb
from segment.models import DEFAULT_INPUT_SIZE, LoadedModel

MODES = ("auto", "resize", "slide")
WIDE_ASPECT = 1.5  # auto mode slides windows over images at least this much wider than tall
WINDOW_OVERLAP = 1 / 3
MAX_WINDOWS = 64  # images wider than this many windows (after scaling) are skipped in slide mode
PRECISIONS = {"fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class InferenceOptions:
    batch_size: int = 4
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (fp16 on CUDA, fp32 on CPU) | fp32 | fp16 | bf16
    size: int | None = None  # model input size S (S x S); None = the image processor's size
    mode: str = "auto"  # resize | slide | auto (slide when width >= 1.5 x height)
    workers: int = 2  # decoding/preprocessing threads
    probs: str | None = None  # None | "softmax" (C x H x W) | "top1" (H x W)
    keep_rgb: bool = False  # hand the decoded image back with the result (for overlays)


@dataclass
class Prepared:
    """One decoded and preprocessed image: its model-input crops and where they sit in the scaled image."""
    path: Path
    height: int = 0
    width: int = 0
    crops: np.ndarray | None = None  # (n, 3, h, w) float32
    offsets: list[int] = field(default_factory=list)  # x of each crop in the scaled image (slide mode)
    scaled_width: int = 0
    rgb: np.ndarray | None = None
    error: str | None = None


@dataclass
class Prediction:
    path: Path
    label: np.ndarray | None = None  # (H, W) uint8 class ids
    probs: np.ndarray | None = None  # float16 (C, H, W) or (H, W)
    rgb: np.ndarray | None = None
    error: str | None = None  # set when the file was skipped


def open_rgb(path: Path) -> Image.Image:
    """Decode like transformers' `load_image` (EXIF orientation applied, RGB), forcing the full decode here
    so a truncated file fails now and not inside a batch."""
    with Image.open(path) as im:
        return decode_rgb(im)


def describe_read_error(error: Exception) -> str:
    if isinstance(error, Image.UnidentifiedImageError):
        return "not an image PIL can read (corrupt or wrong file type)"
    return f"cannot decode ({type(error).__name__}: {error})"


class Segmenter:
    """Runs a loaded model over image files, yielding one Prediction per file."""

    def __init__(self, loaded: LoadedModel, options: InferenceOptions):
        self.loaded, self.options = loaded, options
        self.device = pick_device(options.device)
        self.autocast_dtype = pick_autocast(options.precision, self.device)
        self.input_hw = input_size(loaded.processor, options.size)
        self.model = loaded.model.to(self.device).eval()

    # -------------------------------------------------------------------- preprocessing (worker threads)
    def prepare(self, path: Path) -> Prepared:
        try:
            image = open_rgb(path)
        except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
            return Prepared(path=path, error=describe_read_error(e))
        item = Prepared(path=path, height=image.height, width=image.width)
        win_h, win_w = self.input_hw
        scaled_w = round(image.width * win_h / image.height)
        if scaled_w > MAX_WINDOWS * win_w and self._slides(image.width, image.height):
            return Prepared(path=path, error=f"too wide for sliding windows ({image.width}x{image.height}); "
                                             "use --mode resize")
        try:
            if self._slides(image.width, image.height) and scaled_w > win_w:
                pixels = self._preprocess(image, win_h, scaled_w)
                item.offsets = window_offsets(scaled_w, win_w)
                item.crops = np.stack([pixels[:, :, x:x + win_w] for x in item.offsets])
                item.scaled_width = scaled_w
            else:
                item.crops = self._preprocess(image, win_h, win_w)[None]
        except Exception as e:  # one odd file must not end a long run; it is listed as skipped instead
            return Prepared(path=path, error=f"cannot preprocess ({type(e).__name__}: {e})")
        if self.options.keep_rgb:
            item.rgb = np.asarray(image)
        return item

    def _slides(self, width: int, height: int) -> bool:
        mode = self.options.mode
        return mode == "slide" or (mode == "auto" and width >= WIDE_ASPECT * height)

    def _preprocess(self, image: Image.Image, height: int, width: int) -> np.ndarray:
        out = self.loaded.processor(images=[image], size={"height": height, "width": width}, return_tensors="np")
        return np.asarray(out["pixel_values"][0], dtype=np.float32)

    # -------------------------------------------------------------------- model + postprocessing (this thread)
    @torch.inference_mode()
    def predict(self, items: list[Prepared]) -> list[Prediction]:
        crops = torch.from_numpy(np.concatenate([it.crops for it in items]))
        logits = self._forward(crops)
        results, start = [], 0
        for it in items:
            n = len(it.crops)
            full = self._full_resolution(it, logits[start:start + n])
            results.append(self._finish(it, full))
            start += n
        return results

    def _forward(self, crops: torch.Tensor) -> torch.Tensor:
        chunks = []
        for chunk in crops.split(self.options.batch_size):
            with self._autocast():
                out = self.model(pixel_values=chunk.to(self.device, non_blocking=True)).logits
            chunks.append(out.float())
        return torch.cat(chunks)

    def _autocast(self):
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def _full_resolution(self, item: Prepared, logits: torch.Tensor) -> torch.Tensor:
        """(C, H, W) logits at the input image size."""
        if not item.offsets:
            merged = logits
        else:
            merged = stitch_windows(logits, item.offsets, self.input_hw, item.scaled_width)[None]
        return F.interpolate(merged, size=(item.height, item.width), mode="bilinear", align_corners=False)[0]

    def _finish(self, item: Prepared, logits: torch.Tensor) -> Prediction:
        label = logits.argmax(dim=0).to(torch.uint8).cpu().numpy()
        probs = None
        if self.options.probs:
            soft = logits.softmax(dim=0)
            probs = (soft.max(dim=0).values if self.options.probs == "top1" else soft).half().cpu().numpy()
        return Prediction(path=item.path, label=label, probs=probs, rgb=item.rgb)

    # -------------------------------------------------------------------- the loop
    def run(self, paths: Iterable[Path]) -> Iterator[Prediction]:
        """One Prediction per path (unreadable files come back at once with `error` set, the others after
        their batch ran). Decoding runs
        `workers` threads ahead of the model, a couple of batches deep."""
        paths = iter(paths)
        lookahead = 2 * self.options.batch_size + self.options.workers
        with ThreadPoolExecutor(max(1, self.options.workers), thread_name_prefix="rewis-load") as pool:
            pending = deque(pool.submit(self.prepare, p) for _, p in zip(range(lookahead), paths))
            batch: list[Prepared] = []
            while pending:
                item = pending.popleft().result()
                next_path = next(paths, None)
                if next_path is not None:
                    pending.append(pool.submit(self.prepare, next_path))
                if item.error:
                    yield Prediction(path=item.path, error=item.error)
                    continue
                batch.append(item)
                if len(batch) == self.options.batch_size:
                    yield from self.predict(batch)
                    batch = []
            if batch:
                yield from self.predict(batch)


def stitch_windows(logits: torch.Tensor, offsets: list[int], window_hw: tuple[int, int],
                   scaled_width: int) -> torch.Tensor:
    """Window logits (n, C, h, w) -> (C, H_win, scaled_width): each upsampled to the window size and summed
    where windows overlap, then divided by the number of windows covering each column."""
    win_h, win_w = window_hw
    up = F.interpolate(logits, size=(win_h, win_w), mode="bilinear", align_corners=False)
    total = logits.new_zeros((logits.shape[1], win_h, scaled_width))
    count = logits.new_zeros((1, 1, scaled_width))
    for x, window in zip(offsets, up):
        total[:, :, x:x + win_w] += window
        count[:, :, x:x + win_w] += 1
    return total / count


def window_offsets(width: int, window: int) -> list[int]:
    """Left edges of horizontal windows covering [0, width) with at least WINDOW_OVERLAP overlap, spread evenly
    so that the first starts at 0 and the last ends at `width`."""
    if width <= window:
        return [0]
    stride = max(1, int(window * (1 - WINDOW_OVERLAP)))
    n = math.ceil((width - window) / stride) + 1
    return [round(i * (width - window) / (n - 1)) for i in range(n)]


def input_size(processor, size: int | None) -> tuple[int, int]:
    """(H, W) of the model input: --size S gives S x S; else the processor's height/width (or shortest edge)."""
    if size:
        return int(size), int(size)
    proc_size = getattr(processor, "size", None) or {}
    get = proc_size.get if isinstance(proc_size, dict) else (lambda k: getattr(proc_size, k, None))
    if get("height") and get("width"):
        return int(get("height")), int(get("width"))
    edge = get("shortest_edge") or DEFAULT_INPUT_SIZE
    return int(edge), int(edge)


def pick_device(name: str) -> torch.device:
    from recon.errors import InputError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(f"--device {name}: not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {name}: CUDA is not available on this machine; use --device cpu or auto")
    return device


def pick_autocast(precision: str, device: torch.device) -> torch.dtype | None:
    if precision == "auto":
        return torch.float16 if device.type == "cuda" else None
    return PRECISIONS.get(precision)


# ------------------------------------------------------------------------------------------ folders

MASKS, OVERLAYS, PROBS = "masks", "overlays", "probs"
WRITE_QUEUE = 8  # results waiting for the writer thread before the model waits


@dataclass
class FolderSummary:
    done: int
    skipped: list[tuple[str, str]]  # (relative path, reason)
    seconds: float
    output: Path

    @property
    def images_per_second(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else float("nan")

    def line(self) -> str:
        return (f"{self.done} done, {len(self.skipped)} skipped, {self.seconds:.1f} s, "
                f"{self.images_per_second:.2f} img/s -> {self.output}")


def list_inputs(input_dir: Path, output_dir: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """All files under `input_dir` (recursive, sorted): image-suffix files to try, and the others rejected
    with a reason. Hidden files and anything inside `output_dir` are left out silently."""
    from recon.dataset import IMAGE_SUFFIXES

    images, rejected = [], []
    output_dir = output_dir.resolve()
    for path in sorted(input_dir.rglob("*")):
        rel = path.relative_to(input_dir)
        if not path.is_file() or any(part.startswith(".") for part in rel.parts):
            continue
        if path.resolve().is_relative_to(output_dir):
            continue
        if path.suffix.lower() in IMAGE_SUFFIXES:
            images.append(path)
        else:
            rejected.append((path, f"not an image file (suffix '{path.suffix or 'none'}')"))
    return images, rejected


def check_input_folder(input_dir: Path, output_dir: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    from recon.errors import InputError

    if not input_dir.is_dir():
        raise InputError(f"--input {input_dir}: folder not found")
    images, rejected = list_inputs(input_dir, output_dir)
    if not images and not rejected:
        raise InputError(f"--input {input_dir}: no files in it; point --input at a folder of images")
    return images, rejected


def output_paths(rel: Path, output_dir: Path, overlay: bool, probs: bool) -> list[Path]:
    """Where the outputs of input `rel` go: masks/REL.png, overlays/REL.jpg, probs/REL.npy."""
    paths = [output_dir / MASKS / rel.with_suffix(".png")]
    if overlay:
        paths.append(output_dir / OVERLAYS / rel.with_suffix(".jpg"))
    if probs:
        paths.append(output_dir / PROBS / rel.with_suffix(".npy"))
    return paths


def check_outputs(images: list[Path], input_dir: Path, output_dir: Path, overlay: bool, probs: bool,
                  overwrite: bool) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Inputs whose outputs are free, and inputs whose output name clashes with an earlier input's (a.png and
    a.jpg). Raises InputError when outputs exist already and `overwrite` is off: nothing is written then."""
    from recon.errors import InputError

    owner: dict[Path, Path] = {}
    kept, clashes, existing = [], [], []
    for path in images:
        rel = path.relative_to(input_dir)
        outs = output_paths(rel, output_dir, overlay, probs)
        if outs[0] in owner:
            clashes.append((path, f"same output name as {owner[outs[0]].relative_to(input_dir)}"))
            continue
        owner[outs[0]] = path
        kept.append(path)
        existing += [p for p in outs if p.exists()]
    if existing and not overwrite:
        raise InputError(f"{output_dir}: {len(existing)} output file(s) already exist (e.g. {existing[0]}); "
                         "nothing was written: pass --overwrite to replace them or choose another --output")
    return kept, clashes


def predict_folder(loaded: LoadedModel, input_dir: Path, output_dir: Path, options: InferenceOptions,
                   overlay: bool = False, overwrite: bool = False, progress: bool = True) -> FolderSummary:
    """Segment every image under `input_dir` into `output_dir` (relative paths kept). Raises InputError for bad
    input, existing outputs without `overwrite`, or when not a single image could be read."""
    import time

    from recon.errors import InputError
    from tqdm import tqdm

    input_dir, output_dir = Path(input_dir), Path(output_dir)
    validate_options(options)
    images, rejected = check_input_folder(input_dir, output_dir)
    images, clashes = check_outputs(images, input_dir, output_dir, overlay, bool(options.probs), overwrite)
    skipped = [(str(p.relative_to(input_dir)), why) for p, why in rejected + clashes]
    options = replace(options, keep_rgb=overlay)
    start, done = time.perf_counter(), 0
    bar = tqdm(total=len(images), desc="predict", unit="img", disable=not progress, leave=False)
    with ThreadPoolExecutor(1, thread_name_prefix="rewis-write") as writer:
        pending: deque = deque()
        for result in Segmenter(loaded, options).run(images):
            rel = result.path.relative_to(input_dir)
            if result.error:
                skipped.append((str(rel), result.error))
            else:
                pending.append(writer.submit(write_outputs, result, rel, output_dir, loaded.classes, overlay))
                done += 1
            while len(pending) > WRITE_QUEUE or (pending and pending[0].done()):
                pending.popleft().result()
            bar.update(1)
        for job in pending:
            job.result()
    bar.close()
    summary = FolderSummary(done=done, skipped=sorted(skipped), seconds=time.perf_counter() - start,
                            output=output_dir)
    if done == 0:
        raise InputError(f"--input {input_dir}: none of its {len(skipped)} file(s) could be read as an image "
                         f"(e.g. {skipped[0][0]}: {skipped[0][1]})")
    return summary


def write_outputs(result: Prediction, rel: Path, output_dir: Path, classes, overlay: bool) -> None:
    from recon.dataset import write_label
    from segment.draw import overlay as draw_overlay

    outs = output_paths(rel, output_dir, overlay, result.probs is not None)
    write_label(outs[0], result.label, classes)
    rest = outs[1:]
    if overlay:
        rest[0].parent.mkdir(parents=True, exist_ok=True)
        draw_overlay(result.rgb, result.label, classes).save(rest[0], quality=90)
        rest = rest[1:]
    if result.probs is not None:
        rest[0].parent.mkdir(parents=True, exist_ok=True)
        np.save(rest[0], result.probs)


def validate_options(options: InferenceOptions) -> None:
    from recon.errors import InputError

    if options.batch_size < 1:
        raise InputError(f"--batch-size {options.batch_size}: must be at least 1")
    if options.size is not None and options.size < 32:
        raise InputError(f"--size {options.size}: must be at least 32 pixels (SegFormer downsamples by 32)")
    if options.mode not in MODES:
        raise InputError(f"--mode {options.mode}: choose one of {', '.join(MODES)}")
    if options.workers < 0:
        raise InputError(f"--workers {options.workers}: must be 0 or more")
    pick_device(options.device)
