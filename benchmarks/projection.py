"""Projection + z-buffer visibility benchmark: recon.projection (torch) vs a vectorised numpy baseline.

1 M scene-like points seen by 10 cameras of 480 x 360 moving along a street; both implementations use the
same explicit float32 formula (recon/projection.py module doc), so their visibility must be identical, and it
is asserted. Prints a table and writes JSON.

    .venv/bin/python benchmarks/projection.py [--points 1000000] [--views 10] [--repeats 7] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from recon.projection import compute_links, projection_matrices  # noqa: E402

WIDTH, HEIGHT = 480, 360
MIN_DEPTH, ABS_TOL, REL_TOL = 0.1, 0.05, 0.01


def street_scene(num_points: int, seed: int = 0) -> np.ndarray:
    """Ground, two facades and clutter in OpenCV-style world axes (x right, y down, z forward), float32."""
    rng = np.random.default_rng(seed)
    n_ground, n_walls = int(0.4 * num_points), int(0.3 * num_points)
    n_clutter = num_points - n_ground - n_walls
    ground = np.c_[rng.uniform(-8, 8, n_ground), rng.normal(1.6, 0.02, n_ground), rng.uniform(0, 70, n_ground)]
    side = rng.choice([-8.0, 8.0], n_walls)
    walls = np.c_[side + rng.normal(0, 0.05, n_walls), rng.uniform(-10, 1.6, n_walls), rng.uniform(0, 70, n_walls)]
    clutter = np.c_[rng.uniform(-7, 7, n_clutter), rng.uniform(-1, 1.6, n_clutter), rng.uniform(3, 70, n_clutter)]
    points = np.concatenate([ground, walls, clutter]).astype(np.float32)
    return points[rng.permutation(num_points)]


def street_cameras(num_views: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """K (V, 3, 3) and cam_from_world (V, 4, 4): a camera driving forward 1.5 m per frame, small yaw wobble."""
    rng = np.random.default_rng(seed + 1)
    K = np.array([[400.0, 0, WIDTH / 2], [0, 400.0, HEIGHT / 2], [0, 0, 1]])
    poses = []
    for i in range(num_views):
        yaw = rng.uniform(-0.15, 0.15)
        c, s = np.cos(yaw), np.sin(yaw)
        world_from_cam = np.eye(4)
        world_from_cam[:3, :3] = [[c, 0, s], [0, 1, 0], [-s, 0, c]]
        world_from_cam[:3, 3] = [rng.uniform(-1, 1), 0.0, 1.5 * i]
        poses.append(np.linalg.inv(world_from_cam))
    return np.repeat(K[None], num_views, 0), np.stack(poses)


def numpy_visibility(points: np.ndarray, P: np.ndarray) -> tuple[np.ndarray, ...]:
    """The baseline: whole-array numpy, same formula as recon.projection, z-buffer with np.minimum.at."""
    x, y, z = (np.ascontiguousarray(points[:, i]) for i in range(3))
    rows = [((P[:, i, 0, None] * x + P[:, i, 1, None] * y) + P[:, i, 2, None] * z) + P[:, i, 3, None]
            for i in range(3)]
    px, py, depth = rows[0] / rows[2], rows[1] / rows[2], rows[2]
    inside = (depth > MIN_DEPTH) & (px >= 0) & (px < WIDTH) & (py >= 0) & (py < HEIGHT)
    view, point = np.nonzero(inside)
    u, v, zc = px[view, point].astype(np.int32), py[view, point].astype(np.int32), depth[view, point]
    key = (view * HEIGHT + v) * WIDTH + u
    nearest = np.full(len(P) * HEIGHT * WIDTH, np.inf, dtype=zc.dtype)
    np.minimum.at(nearest, key, zc)
    z_near = nearest[key]
    keep = zc <= z_near + (ABS_TOL + REL_TOL * z_near)
    return view[keep], point[keep], v[keep], u[keep]


def torch_visibility(points: torch.Tensor, K: torch.Tensor, cam_from_world: torch.Tensor):
    return compute_links(points, K, cam_from_world, WIDTH, HEIGHT, visibility="zbuffer", min_depth=MIN_DEPTH,
                         abs_tol=ABS_TOL, rel_tol=REL_TOL)


def in_image_pairs(points, K, cam_from_world) -> int:
    links = compute_links(points, K, cam_from_world, WIDTH, HEIGHT, visibility="none", min_depth=MIN_DEPTH)
    return sum(len(p) for p, _, _ in links)


def flatten_links(links) -> tuple[np.ndarray, ...]:
    view = np.concatenate([np.full(len(p), i, np.int64) for i, (p, _, _) in enumerate(links)])
    return (view, *(np.concatenate([l[j].cpu().numpy() for l in links]) for j in range(3)))


def median_seconds(fn, repeats: int, sync=lambda: None) -> float:
    fn()  # warm-up (allocator, lazy init)
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(l.split(":", 1)[1].strip() for l in out.splitlines() if l.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or "unknown"


def gpu_points_per_second(points, K, cam_from_world, repeats: int) -> float | None:
    if not torch.cuda.is_available():
        return None
    dev = torch.device("cuda")
    pts, Kd, Td = points.to(dev), K.to(dev), cam_from_world.to(dev)
    seconds = median_seconds(lambda: torch_visibility(pts, Kd, Td), repeats, torch.cuda.synchronize)
    return len(points) / seconds


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--views", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch intra-op threads")
    ap.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "projection.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    points_np = street_scene(args.points)
    K_np, T_np = street_cameras(args.views)
    P_np = projection_matrices(K_np, T_np).to(torch.float32).numpy()
    points, K, T = torch.from_numpy(points_np), torch.from_numpy(K_np), torch.from_numpy(T_np)

    ours = flatten_links(torch_visibility(points, K, T))
    base = numpy_visibility(points_np, P_np)
    for name, a, b in zip(("view", "point", "v", "u"), ours, base):
        assert np.array_equal(a, b.astype(a.dtype)), f"torch and numpy visibility differ in '{name}'"

    t_numpy = median_seconds(lambda: numpy_visibility(points_np, P_np), args.repeats)
    t_torch = median_seconds(lambda: torch_visibility(points, K, T), args.repeats)
    gpu = gpu_points_per_second(points, K, T, args.repeats)
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()}-core {platform.machine()}, {cpu_model()}",
        "torch": torch.__version__, "numpy": np.__version__, "torch_threads": torch.get_num_threads(),
        "points": args.points, "views": args.views, "image": [WIDTH, HEIGHT], "repeats": args.repeats,
        "in_image_pairs": in_image_pairs(points, K, T),
        "visible_pairs": int(len(ours[0])),
        "numpy_s": t_numpy, "torch_cpu_s": t_torch,
        "numpy_points_per_s": args.points / t_numpy, "torch_cpu_points_per_s": args.points / t_torch,
        "speedup_torch_cpu_vs_numpy": t_numpy / t_torch,
        "torch_gpu_points_per_s": gpu,
    }
    print_table(result)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")
    return result


def print_table(r: dict) -> None:
    gpu = "not measured (no CUDA)" if r["torch_gpu_points_per_s"] is None else f"{r['torch_gpu_points_per_s'] / 1e6:,.0f} M/s"
    print(f"{r['points']:,} points x {r['views']} views of {r['image'][0]}x{r['image'][1]}, "
          f"z-buffer; {r['visible_pairs']:,} visible pairs; median of {r['repeats']}; {r['machine']}")
    print(f"{'implementation':<28}{'seconds':>10}{'points/s':>16}")
    print(f"{'numpy (np.minimum.at)':<28}{r['numpy_s']:>10.3f}{r['numpy_points_per_s'] / 1e6:>14.2f} M")
    print(f"{'torch CPU (recon.projection)':<28}{r['torch_cpu_s']:>10.3f}{r['torch_cpu_points_per_s'] / 1e6:>14.2f} M")
    print(f"speed-up torch CPU / numpy: {r['speedup_torch_cpu_vs_numpy']:.2f}x;  torch GPU: {gpu}")


if __name__ == "__main__":
    main()
