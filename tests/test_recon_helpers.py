"""A tiny ray-cast scene for the reconstruction tests (a textured room with two boxes), independent of
`rewis synth`: images, metric depth, labels, scribbles, cameras.json and classes.json in the dataset layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import open3d as o3d
from PIL import Image

CLASSES = {"format": "rewis.classes/1", "names": ["floor", "wall", "box"],
           "palette": [[128, 64, 128], [70, 70, 70], [220, 20, 60]], "ignore_index": 255, "no_3d": []}


def room_mesh() -> tuple[o3d.t.geometry.RaycastingScene, np.ndarray]:
    """Raycasting scene and class id per triangle: a 10 x 8 x 3 m room (seen from inside) and two boxes."""
    scene = o3d.t.geometry.RaycastingScene()
    classes = []
    room = o3d.geometry.TriangleMesh.create_box(10, 8, 3).translate((-5, -4, 0))
    tri = np.asarray(room.triangles)
    room.triangles = o3d.utility.Vector3iVector(tri[:, ::-1].copy())  # normals point inwards
    centres = np.asarray(room.vertices)[tri].mean(1)
    classes.append(np.where(centres[:, 2] < 1e-6, 0, 1))
    scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(room))
    for corner, size in (((-1.5, 1.0, 0.0), (1.2, 1.0, 1.1)), ((1.2, 2.0, 0.0), (0.8, 1.4, 0.7))):
        box = o3d.geometry.TriangleMesh.create_box(*size).translate(corner)
        scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(box))
        classes.append(np.full(len(box.triangles), 2))
    return scene, np.concatenate(classes)


def value_noise(points: np.ndarray, seed: int = 0) -> np.ndarray:
    """Multi-octave 3D value noise in [0, 1]: blob texture with corners SIFT can find."""
    total = np.zeros(len(points))
    for octave, cell in enumerate((0.4, 0.17, 0.07)):
        p = points / cell
        i0 = np.floor(p).astype(np.int64)
        t = p - i0
        t = t * t * (3 - 2 * t)
        acc = np.zeros(len(points))
        for corner in np.ndindex(2, 2, 2):
            c = i0 + np.array(corner)
            h = (c[:, 0] * 73856093 ^ c[:, 1] * 19349663 ^ c[:, 2] * 83492791 ^ (seed + octave) * 2654435761) % 1000003
            w = np.prod(np.where(np.array(corner), t, 1 - t), axis=1)
            acc += w * (h / 1000003.0)
        total += acc / (octave + 1)
    return (total - total.min()) / max(np.ptp(total), 1e-9)


def look_at(eye, target) -> np.ndarray:
    """cam_from_world (OpenCV axes, z up in the world)."""
    eye, target = np.asarray(eye, float), np.asarray(target, float)
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, [0, 0, 1.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])
    pose = np.eye(4)
    pose[:3, :3], pose[:3, 3] = R, -R @ eye
    return pose


def trajectory(frames: int) -> list[np.ndarray]:
    """Sideways walk along the room looking at the far wall and the boxes."""
    xs = np.linspace(-2.0, 2.0, frames)
    return [look_at((x, -3.0, 1.5), (0.3 * x, 4.0, 0.6)) for x in xs]


def render_room(out: Path, frames: int = 8, size: tuple[int, int] = (160, 120), seed: int = 0) -> Path:
    out = Path(out)
    for sub in ("images", "depth", "labels", "weak/scribbles"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    w, h = size
    K = np.array([[0.9 * w, 0, w / 2], [0, 0.9 * w, h / 2], [0, 0, 1.0]])
    scene, tri_class = room_mesh()
    rng = np.random.default_rng(seed)
    cams = []
    for i, pose in enumerate(trajectory(frames)):
        depth, rgb, label = _render(scene, tri_class, K, pose, w, h, seed)
        stem = f"{i:06d}"
        Image.fromarray(rgb).save(out / "images" / f"{stem}.png")
        np.save(out / "depth" / f"{stem}.npy", depth)
        Image.fromarray(label, mode="L").save(out / "labels" / f"{stem}.png")
        weak = np.where(rng.random(label.shape) < 0.05, label, 255).astype(np.uint8)
        Image.fromarray(weak, mode="L").save(out / "weak" / "scribbles" / f"{stem}.png")
        cams.append({"image": f"{stem}.png", "width": w, "height": h, "K": K.tolist(), "cam_from_world": pose.tolist()})
    (out / "cameras.json").write_text(json.dumps({"format": "rewis.cameras/1", "frames": cams}))
    (out / "classes.json").write_text(json.dumps(CLASSES))
    return out


def _render(scene, tri_class, K, pose, w, h, seed):
    v, u = np.mgrid[:h, :w]
    pix = np.stack([u + 0.5, v + 0.5, np.ones_like(u, float)], -1).reshape(-1, 3)
    dirs_cam = pix @ np.linalg.inv(K).T
    world_from_cam = np.linalg.inv(pose)
    dirs = dirs_cam @ world_from_cam[:3, :3].T
    origin = np.broadcast_to(world_from_cam[:3, 3], dirs.shape)
    rays = o3d.core.Tensor(np.concatenate([origin, dirs], 1).astype(np.float32))
    hit = scene.cast_rays(rays)
    t = hit["t_hit"].numpy().astype(np.float64)
    prim = hit["primitive_ids"].numpy().astype(np.int64)
    valid = np.isfinite(t)
    depth = np.where(valid, t, 0.0)  # rays have unit z in the camera, so t is z-depth
    points = origin + dirs * depth[:, None]
    shade = value_noise(points, seed)
    tint = np.array([[0.8, 0.7, 0.6], [0.6, 0.7, 0.9], [0.9, 0.4, 0.3]])[tri_class[np.where(valid, prim, 0)]]
    rgb = np.clip(255 * (0.15 + 0.85 * shade[:, None]) * tint, 0, 255).astype(np.uint8)
    label = np.where(valid, tri_class[np.where(valid, prim, 0)], 255).astype(np.uint8)
    return depth.reshape(h, w).astype(np.float32), rgb.reshape(h, w, 3), label.reshape(h, w)


def test_render_room_depth_is_consistent(tmp_path):
    seq = render_room(tmp_path / "seq", frames=2, size=(64, 48))
    depth = np.load(seq / "depth" / "000000.npy")
    assert depth.shape == (48, 64) and (depth > 0).all()
    assert 1.0 < depth.min() and depth.max() < 15.0
    assert len(json.loads((seq / "cameras.json").read_text())["frames"]) == 2
