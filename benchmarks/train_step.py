"""Training-step cost of mode rewis3d against mode ema on the same batch: time per optimizer step (forward of
students and teachers, backward, optimizer steps, EMA updates) and peak memory. Target: ratio <= 1.5 on CPU.

Each mode runs in its own child process so peak memory is its own (CPU: peak RSS and its rise over the RSS
before the first step; CUDA: torch.cuda.max_memory_allocated). The batch is synthetic but shaped like a real
one: B images of HxW with sparse scribble-like labels, M points per image on a few planes of a street-sized box
(so voxel occupancy resembles a surface scan), and every point linked to one pixel.

    python benchmarks/train_step.py [--size b0] [--hw 360x480] [--batch 2] [--points 10000] [--steps 5]

Defaults are the CPU-sized setting of the street presets (SegFormer-b0, 10k points per image, a 4-level sparse
U-Net of base width 16 at 0.2 m voxels); the paper's setting (B4, 120k points) is heavier on both sides.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_batch(b: int, h: int, w: int, m: int, num_classes: int, device):
    import torch

    g = torch.Generator().manual_seed(0)
    image = torch.rand(b, 3, h, w, generator=g) * 255
    label = torch.full((b, h, w), 255, dtype=torch.long)
    label[:, ::16, :] = torch.randint(0, num_classes, (b, (h + 15) // 16, w), generator=g)
    xyz, batch_idx = [], []
    for i in range(b):
        plane = torch.randint(0, 3, (m,), generator=g)
        p = torch.rand(m, 3, generator=g) * torch.tensor([20.0, 20.0, 6.0])
        p[plane == 0, 2] = 0.0  # ground
        p[plane == 1, 1] = 2.0  # facade
        p[plane == 2, 1] = 18.0  # facade
        xyz.append(p)
        batch_idx.append(torch.full((m,), i, dtype=torch.long))
    xyz = torch.cat(xyz)
    n = len(xyz)
    points = {"xyz": xyz, "xyz_aug": xyz + 0.01 * torch.randn(n, 3, generator=g),
              "rgb": torch.rand(n, 3, generator=g), "conf": torch.rand(n, generator=g),
              "weak": torch.where(torch.rand(n, generator=g) < 0.1, torch.randint(0, num_classes, (n,), generator=g),
                                  torch.full((n,), 255)), "batch": torch.cat(batch_idx)}
    links = {"point": torch.arange(n), "batch": points["batch"].clone(),
             "v": torch.randint(0, h, (n,), generator=g), "u": torch.randint(0, w, (n,), generator=g)}
    out = {"image": image, "label": label, "points": points, "links": links}
    return {k: ({kk: vv.to(device) for kk, vv in v.items()} if isinstance(v, dict) else v.to(device)) for k, v in out.items()}


def child(args) -> dict:
    import torch

    from recon.dataset import ClassList
    from rewis.modes import MODES, StepInfo, config_from_dict

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    names = ("road", "sidewalk", "building", "vegetation", "car", "pole", "sign", "person", "sky")
    classes = ClassList(names=names, palette=tuple((i * 20, 100, 200 - i * 20) for i in range(len(names))),
                        no_3d=("sky",))
    h, w = args.hw
    cfg = config_from_dict({"mode": args.mode, "data": {"crop": [h, w], "height": h},
                            "model2d": {"size": args.size},
                            "net3d": {"kind": args.net3d, "voxel_size": args.voxel, "channels": args.channels,
                                      "options": json.loads(args.net3d_options)},
                            "method": {"cmc_start": 0}})
    torch.manual_seed(0)
    mode = MODES[args.mode](cfg, classes)
    for m in (*mode.students.values(), *mode.teachers.values()):
        m.to(device)
    opts = [o for o, _ in mode.optimizers(1000).values()]
    batch = make_batch(args.batch, h, w, args.points, classes.num_classes, device)
    mode.train()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.precision)
    scaler = torch.amp.GradScaler(device.type) if args.precision == "fp16" else None
    from rewis.trainer import step_unscaled

    times, utilisation = [], UtilisationSampler(cuda)
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            utilisation.start()
        if cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        info = StepInfo(step, 0, step, 1000, "train", 1000)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            losses = mode.losses(batch, info)
        total = sum(losses.values())
        if scaler is None:
            total.backward()
            for o in opts:
                o.step()
        else:
            scaler.scale(total).backward()
            for o in opts:
                scaler.unscale_(o)
            step_unscaled(opts, scaler)
        for o in opts:
            o.zero_grad(set_to_none=True)
        mode.after_step(info)
        if cuda:
            torch.cuda.synchronize()
        if step >= args.warmup:
            times.append(time.perf_counter() - t)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    res = {"mode": args.mode, "device": torch.cuda.get_device_name() if cuda else "cpu", "precision": args.precision,
           "step_s": sorted(times)[len(times) // 2], "mean_step_s": sum(times) / len(times),
           "peak_rss_mb": round(peak, 1), "rss_rise_mb": round(peak - rss0, 1)}
    if cuda:
        res["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2 ** 20, 1)
        res["gpu_utilisation_pct"] = utilisation.stop()
    return res


class UtilisationSampler:
    """Mean GPU utilisation (NVML: share of time a kernel ran) over the timed steps, sampled every 20 ms."""

    def __init__(self, cuda: bool):
        self.cuda, self.samples, self.thread = cuda, [], None

    def start(self) -> None:
        import threading

        if not self.cuda:
            return
        try:
            import pynvml
        except ImportError:  # no NVML bindings: utilisation is not reported
            return
        try:
            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        except pynvml.NVMLError:
            return
        self.stop_flag = threading.Event()

        def sample():
            while not self.stop_flag.wait(0.02):
                self.samples.append(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)

        self.thread = threading.Thread(target=sample, daemon=True)
        self.thread.start()

    def stop(self) -> float | None:
        if self.thread is None:
            return None
        self.stop_flag.set()
        self.thread.join()
        return round(sum(self.samples) / max(1, len(self.samples)), 1)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="b0")
    p.add_argument("--hw", default="360x480", type=lambda s: tuple(int(v) for v in s.split("x")), help="HxW")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--points", type=int, default=10000, help="M points per image")
    p.add_argument("--net3d", default="sparse_unet", choices=("sparse_unet", "mlp"))
    p.add_argument("--voxel", type=float, default=0.2)
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--net3d-options", default='{"channel_multipliers": [1, 2, 4, 8], "blocks": [1, 1, 1, 1]}',
                   help="JSON of extra SparseUNet3D options (net3d.options)")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch threads (0 = torch default; 1 is steadiest on a busy CPU)")
    p.add_argument("--cpu", action="store_true", help="stay on the CPU even with a GPU")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"),
                   help="autocast dtype (fp16 with one GradScaler shared by both optimizers, as the trainer does)")
    p.add_argument("--json", default=None, help="default: benchmarks/results/train_step.json, or "
                   "train_step_cuda.json on a GPU")
    p.add_argument("--mode", help=argparse.SUPPRESS)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return 0
    results = {}
    passthrough = [a for a in sys.argv[1:] if a not in ("--child",)]
    for mode in ("ema", "rewis3d"):
        out = subprocess.run([sys.executable, __file__, *passthrough, "--child", "--mode", mode], capture_output=True,
                             text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        if out.returncode:
            print(out.stderr[-3000:], file=sys.stderr)
            return 1
        results[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    e, r = results["ema"], results["rewis3d"]
    ratio = r["step_s"] / e["step_s"]
    mem_key = "peak_cuda_mb" if "peak_cuda_mb" in e else "rss_rise_mb"
    mem_ratio = r[mem_key] / max(e[mem_key], 1e-6)
    print(f"SegFormer-{args.size} {args.hw[0]}x{args.hw[1]} batch {args.batch}, {args.points} points/image, "
          f"3D net {args.net3d} (voxel {args.voxel}, width {args.channels}), {args.precision}, device {e['device']}")
    cuda = mem_key == "peak_cuda_mb"
    print(f"{'mode':<8} {'step s (median)':>16} {'peak RSS MB':>12} {'RSS rise MB':>12}"
          + (f" {'peak CUDA MB':>13} {'GPU util %':>11}" if cuda else ""))
    for m in (e, r):
        print(f"{m['mode']:<8} {m['step_s']:>16.3f} {m['peak_rss_mb']:>12.0f} {m['rss_rise_mb']:>12.0f}"
              + (f" {m['peak_cuda_mb']:>13.0f} {m['gpu_utilisation_pct'] or float('nan'):>11.1f}" if cuda else ""))
    print(f"time ratio rewis3d / ema = {ratio:.2f} (target <= 1.5); memory ratio ({mem_key}) = {mem_ratio:.2f}")
    report = {"args": {k: v for k, v in vars(args).items() if k not in ("child", "mode", "json")}, "ema": e,
              "rewis3d": r, "time_ratio": ratio, "memory_ratio": mem_ratio, "memory_metric": mem_key}
    json_path = Path(args.json or ROOT / "benchmarks" / "results" /
                     ("train_step.json" if e["device"] == "cpu" else "train_step_cuda.json"))
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=1) + "\n")
    return 0 if ratio <= 1.5 or e["device"] != "cpu" else 1


if __name__ == "__main__":
    sys.exit(main())
