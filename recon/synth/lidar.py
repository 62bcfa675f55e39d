"""A spinning LiDAR on the camera rig, and writers for the KITTI odometry layout of docs/FORMATS.md."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recon.synth.materials import reflectivity_table
from recon.synth.mesh import rotate
from recon.synth.render import Renderer

# velodyne axes (x forward, y left, z up) expressed in camera axes (x right, y down, z forward)
CAM_FROM_VELO_ROTATION = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])


@dataclass(frozen=True)
class SpinningLidar:
    beams: int = 64
    elevation_deg: tuple[float, float] = (-25.0, 3.0)
    azimuth_steps: int = 1024
    min_range: float = 0.5
    max_range: float = 100.0
    mount_height: float = 0.15  # metres above the camera centre

    def cam_from_velo(self) -> np.ndarray:
        """Tr of calib.txt as 4x4: the sensor sits `mount_height` above the camera, axes aligned with it."""
        T = np.eye(4)
        T[:3, :3] = CAM_FROM_VELO_ROTATION
        T[:3, 3] = [0.0, -self.mount_height, 0.0]
        return T

    def directions(self) -> np.ndarray:
        """Unit beam directions in the sensor frame, (beams * azimuth_steps, 3), scan order."""
        elev = np.deg2rad(np.linspace(self.elevation_deg[1], self.elevation_deg[0], self.beams))
        azim = np.linspace(0.0, 2 * np.pi, self.azimuth_steps, endpoint=False)
        e, a = np.meshgrid(elev, azim, indexing="ij")
        return np.stack([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)], axis=-1).reshape(-1, 3)

    def sweep(self, renderer: Renderer, cam_from_world: np.ndarray, rng: np.random.Generator):
        """Points (N, 4) float32 [x, y, z, intensity] in the sensor frame and labels (N,) uint32."""
        world_from_velo = np.linalg.inv(cam_from_world) @ self.cam_from_velo()
        dirs_velo = self.directions()
        dirs = rotate(dirs_velo, world_from_velo[:3, :3])
        origins = np.broadcast_to(world_from_velo[:3, 3], dirs.shape)
        hits = renderer.cast(np.ascontiguousarray(origins), dirs)
        keep = (hits.prim >= 0) & (hits.t >= self.min_range) & (hits.t <= self.max_range)
        prim, rng_m = hits.prim[keep], hits.t[keep]
        xyz = dirs_velo[keep] * rng_m[:, None]
        cos = np.abs(np.sum(hits.geo_normal[keep] * dirs[keep], axis=1))
        mesh = renderer.mesh
        reflect = reflectivity_table()[mesh["material"][prim]]
        noise = rng.normal(0.0, 0.02, size=len(prim))
        intensity = np.clip(reflect * (0.3 + 0.7 * cos) + noise, 0.0, 1.0)
        cls = mesh["cls"][prim].astype(np.uint32)
        inst = mesh["instance"][prim].astype(np.uint32)
        labels = (cls & 0xFFFF) | (inst << 16)
        points = np.concatenate([xyz, intensity[:, None]], axis=1).astype(np.float32)
        return points, labels.astype(np.uint32)


def _numbers(values) -> str:
    return " ".join(f"{float(v):.12e}" for v in np.asarray(values).ravel())


def write_calib(path: Path, K: np.ndarray, cam_from_velo: np.ndarray) -> None:
    P = np.concatenate([K, np.zeros((3, 1))], axis=1)
    lines = [f"P{i}: {_numbers(P)}" for i in range(4)] + [f"Tr: {_numbers(cam_from_velo[:3, :4])}"]
    Path(path).write_text("\n".join(lines) + "\n")


def write_poses(path: Path, cam_from_world: list[np.ndarray]) -> None:
    """world_from_cam0 per scan, where world is the camera frame of the first scan (KITTI odometry)."""
    first = cam_from_world[0]
    lines = [_numbers((first @ np.linalg.inv(pose))[:3, :4]) for pose in cam_from_world]
    Path(path).write_text("\n".join(lines) + "\n")


def write_scan(velodyne_path: Path, label_path: Path, points: np.ndarray, labels: np.ndarray) -> None:
    np.ascontiguousarray(points, dtype="<f4").tofile(velodyne_path)
    np.ascontiguousarray(labels, dtype="<u4").tofile(label_path)
