"""Throughput of `rewis predict` (segment.predict.predict_folder, the CLI's code path, called in-process) against
a bare loop of transformers forward passes over the same images, already preprocessed in memory (the cost of
the network alone). Runs alternate (ours, bare, ours, bare, ...) so that load from other processes on the
machine hits both alike; medians are compared. On CUDA it also reports b0 and b4 with fp16 autocast.

    .venv/bin/python benchmarks/predict.py [--images 64] [--size 512] [--reps 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recon.dataset import ClassList  # noqa: E402
from segment.models import build_model, build_processor, export_model, generated_palette, load_model  # noqa: E402
from segment.predict import InferenceOptions, predict_folder  # noqa: E402

NAMES = ("road", "sidewalk", "building", "wall", "fence", "pole", "light", "sign", "vegetation", "terrain",
         "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle")
CLASSES = ClassList(names=NAMES, palette=tuple(generated_palette(len(NAMES))))


def make_images(folder: Path, count: int, size: int) -> list[Path]:
    """Smooth random colour fields (compress like photos rather than like white noise)."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        coarse = rng.integers(0, 255, (size // 16, size // 16, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((size, size), Image.BILINEAR)
        paths.append(folder / f"{i:04d}.png")
        image.save(paths[-1])
    return paths


def export(size_name: str, root: Path, input_size: int) -> Path:
    model = build_model(size_name, CLASSES, seed=0)
    return export_model(model, root / f"model_{size_name}", build_processor(input_size), card={"mode": "benchmark"})


def time_ours(loaded, images_dir: Path, out: Path, options: InferenceOptions) -> float:
    summary = predict_folder(loaded, images_dir, out, options, overwrite=True, progress=False)
    return summary.done / summary.seconds


def time_bare(model, pixel_values: torch.Tensor, batch_size: int) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        for chunk in pixel_values.split(batch_size):
            model(pixel_values=chunk).logits
    return len(pixel_values) / (time.perf_counter() - start)


def cpu_comparison(args, root: Path, paths: list[Path]) -> dict:
    loaded = load_model(str(export("b0", root, args.size)))
    options = InferenceOptions(batch_size=args.batch_size, device="cpu", workers=args.workers)
    pixel_values = torch.from_numpy(np.concatenate(
        [loaded.processor(images=[Image.open(p).convert("RGB")], return_tensors="np")["pixel_values"]
         for p in paths]))
    time_bare(loaded.model, pixel_values[:args.batch_size], args.batch_size)  # warm-up
    ours, bare = [], []
    for rep in range(args.reps):
        ours.append(time_ours(loaded, paths[0].parent, root / "out", options))
        bare.append(time_bare(loaded.model, pixel_values, args.batch_size))
        print(f"  rep {rep + 1}/{args.reps}: rewis predict {ours[-1]:.2f} img/s, bare forward {bare[-1]:.2f} img/s",
              flush=True)
    return {"model": "b0", "device": "cpu", "threads": torch.get_num_threads(), "images": len(paths),
            "size": args.size, "batch_size": args.batch_size, "ours_img_s": ours, "bare_img_s": bare,
            "ours_median": statistics.median(ours), "bare_median": statistics.median(bare),
            "ratio": statistics.median(ours) / statistics.median(bare)}


def gpu_runs(args, root: Path, paths: list[Path]) -> list[dict]:
    if not torch.cuda.is_available():
        return [{"model": m, "device": "cuda", "precision": "fp16", "img_s": None, "note": "not measured (no CUDA)"}
                for m in ("b0", "b4")]
    rows = []
    for name in ("b0", "b4"):
        loaded = load_model(str(export(name, root, args.size)))
        options = InferenceOptions(batch_size=args.gpu_batch_size, device="cuda", precision="fp16",
                                   workers=args.workers)
        time_ours(loaded, paths[0].parent, root / "out_gpu", options)  # warm-up (cuDNN autotune, allocator)
        runs = [time_ours(loaded, paths[0].parent, root / "out_gpu", options) for _ in range(args.reps)]
        rows.append({"model": name, "device": torch.cuda.get_device_name(), "precision": "fp16",
                     "batch_size": args.gpu_batch_size, "img_s": statistics.median(runs), "runs": runs})
    return rows


def print_table(cpu: dict, gpu: list[dict]) -> None:
    print(f"\n{'what':<44} {'img/s (median)':>15}")
    print("-" * 60)
    print(f"{'rewis predict, b0 512x512, CPU':<44} {cpu['ours_median']:>15.2f}")
    print(f"{'bare transformers forward, b0 512x512, CPU':<44} {cpu['bare_median']:>15.2f}")
    print(f"{'ratio (>= 0.9 wanted)':<44} {cpu['ratio']:>15.3f}")
    for row in gpu:
        value = f"{row['img_s']:.1f}" if row["img_s"] else row["note"]
        print(f"{'rewis predict, ' + row['model'] + ' fp16, CUDA':<44} {value:>15}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--gpu-batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "predict.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rewis-bench-") as tmp:
        root = Path(tmp)
        paths = make_images(root / "images", args.images, args.size)
        cpu = cpu_comparison(args, root, paths)
        gpu = gpu_runs(args, root, paths)
    print_table(cpu, gpu)
    result = {"benchmark": "predict", "date": time.strftime("%Y-%m-%d %H:%M"), "python": platform.python_version(),
              "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "cpu": cpu, "gpu": gpu}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
