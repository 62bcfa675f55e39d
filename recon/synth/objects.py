"""Object builders shared by the presets: each adds the parts of one object to a SceneMesh.

Every builder takes a local frame (rotation R whose columns are the object's x, y, z axes in the world,
and a ground position t) so the scene layout code only decides where things go.
"""

from __future__ import annotations

import numpy as np

from recon.synth import mesh as m
from recon.synth.materials import MATERIAL_ID, WHEEL_RADIUS


class Placer:
    """Adds local-frame shapes to a SceneMesh with their semantics."""

    def __init__(self, scene_mesh: m.SceneMesh, rng: np.random.Generator, class_ids: dict[str, int]):
        self.mesh = scene_mesh
        self.rng = rng
        self.ids = class_ids

    def obj(self) -> int:
        return self.mesh.new_object(self.rng.random(3))

    def obj_like(self, obj: int) -> int:
        """A new object with `obj`'s colour tint (e.g. one window of a facade): it gets its own texture
        offset, so identical windows differ in their glass, without drawing from the layout generator."""
        return self.mesh.new_object(self.mesh.tints[obj])

    def put(self, shape: m.Shape, R, t, cls: str, material: str, obj: int, instance: int = 0,
            offset=(0.0, 0.0, 0.0)) -> None:
        """Add `shape` moved by `offset` in the object frame, then placed with (R, t)."""
        world_t = np.asarray(t, dtype=float) + np.asarray(R) @ np.asarray(offset, dtype=float)
        self.mesh.add(shape.transformed(R, world_t), self.ids[cls], MATERIAL_ID[material], obj, instance)


def frame_from_forward(forward_xy) -> np.ndarray:
    """Rotation whose x axis is the given horizontal direction and z axis is up."""
    f = np.asarray(forward_xy, dtype=float)
    f = f / np.linalg.norm(f)
    return np.array([[f[0], -f[1], 0.0], [f[1], f[0], 0.0], [0.0, 0.0, 1.0]])


def car(p: Placer, R, t, ground: float = 0.0) -> None:
    rng = p.rng
    length, width = rng.uniform(3.9, 4.8), rng.uniform(1.7, 1.9)
    inst, obj = p.mesh.new_instance(), p.obj()
    base = np.asarray(t, dtype=float) + [0.0, 0.0, ground]
    p.put(m.box((length, width, 0.72)), R, base, "car", "car_paint", obj, inst, offset=(0, 0, 0.28))
    cabin_len = length * rng.uniform(0.45, 0.58)
    p.put(m.box((cabin_len, width - 0.14, 0.52)), R, base, "car", "car_glass", obj, inst,
          offset=(-length * 0.06, 0, 1.0))
    wheel = m.cylinder(WHEEL_RADIUS, 0.22, 14, caps=False)
    hub_out = m.disk(WHEEL_RADIUS, 0.22, 1.0, 14)
    hub_in = m.disk(WHEEL_RADIUS, 0.0, -1.0, 14)
    axle = m.rot_x(-np.pi / 2)  # cylinder axis z -> object y
    for fx in (0.36, -0.34):
        for side in (-1.0, 1.0):
            at = (fx * length, side * width / 2 - 0.11 - 0.09 * side, WHEEL_RADIUS)  # tyre spans +y 0.22
            rot = np.asarray(R) @ axle
            place = base + np.asarray(R) @ np.asarray(at)
            p.put(wheel, rot, place, "car", "tyre", obj, inst)
            p.put(hub_out if side > 0 else hub_in, rot, place, "car", "hub", obj, inst)


def person(p: Placer, R, t) -> None:
    rng = p.rng
    height = rng.uniform(1.55, 1.95)
    inst = p.mesh.new_instance()
    legs, torso, head = p.obj(), p.obj(), p.obj()
    leg_h, torso_h = 0.47 * height, 0.33 * height
    stride = rng.uniform(-0.15, 0.15)
    for side in (-1, 1):
        p.put(m.box((0.14, 0.15, leg_h)), R, t, "person", "cloth", legs, inst, offset=(side * stride, side * 0.1, 0))
        p.put(m.box((0.1, 0.1, torso_h * 0.95)), R, t, "person", "cloth", torso, inst,
              offset=(0, side * 0.26, leg_h + 0.02))
    p.put(m.box((0.24, 0.42, torso_h)), R, t, "person", "cloth", torso, inst, offset=(0, 0, leg_h))
    r = 0.105 * height / 1.75
    p.put(m.sphere((r, r * 0.9, r * 1.15), 8, 12), R, t, "person", "skin", head, inst,
          offset=(0, 0, leg_h + torso_h + r * 1.2))


def tree(p: Placer, t, ground: float) -> None:
    rng = p.rng
    inst = p.mesh.new_instance()
    trunk_h, crown_r = rng.uniform(1.8, 3.2), rng.uniform(1.4, 2.8)
    base = np.asarray(t, dtype=float) + [0.0, 0.0, ground]
    p.put(m.cylinder(rng.uniform(0.12, 0.22), trunk_h + crown_r * 0.5, 10, top_radius=0.08), np.eye(3), base,
          "vegetation", "bark", p.obj(), inst)
    lobes = rng.normal(size=(6, 3))
    lobes /= np.linalg.norm(lobes, axis=1, keepdims=True)
    amp = rng.uniform(0.08, 0.2, size=6)

    def bumps(dirs):
        return 1.0 + (np.clip(dirs @ lobes.T, 0, None) ** 3 * amp).sum(axis=1) - amp.mean() * 0.5

    shape = m.sphere((crown_r, crown_r, crown_r * rng.uniform(0.8, 1.3)), 10, 16, bumps=bumps)
    p.put(shape, np.eye(3), base, "vegetation", "leaves", p.obj(), inst, offset=(0, 0, trunk_h + crown_r * 0.8))


def hedge(p: Placer, R, t, length: float, ground: float) -> None:
    rng = p.rng
    size = (length, rng.uniform(0.6, 1.2), rng.uniform(0.7, 1.6))
    p.put(m.box(size), R, np.asarray(t, dtype=float) + [0.0, 0.0, ground], "vegetation", "leaves", p.obj(),
          p.mesh.new_instance())


def street_lamp(p: Placer, R, t, ground: float) -> None:
    """A lamp post; object x axis points towards the road."""
    rng = p.rng
    height = rng.uniform(5.5, 8.0)
    inst, obj = p.mesh.new_instance(), p.obj()
    base = np.asarray(t, dtype=float) + [0.0, 0.0, ground]
    p.put(m.cylinder(0.11, height, 12, top_radius=0.07), R, base, "pole", "metal", obj, inst)
    arm = rng.uniform(1.0, 2.0)
    p.put(m.box((arm, 0.08, 0.08)), R, base, "pole", "metal", obj, inst, offset=(arm / 2, 0, height - 0.1))
    p.put(m.box((0.6, 0.25, 0.15)), R, base, "pole", "metal", obj, inst, offset=(arm, 0, height - 0.22))


def traffic_sign(p: Placer, R, t, ground: float) -> None:
    """A sign on a post; the sign face looks along the object's -y axis."""
    rng = p.rng
    base = np.asarray(t, dtype=float) + [0.0, 0.0, ground]
    post_h = rng.uniform(2.2, 2.7)
    p.put(m.cylinder(0.04, post_h + 0.3, 8), R, base, "pole", "metal", p.obj(), p.mesh.new_instance())
    inst, obj = p.mesh.new_instance(), p.obj()
    p.put(m.box((0.6, 0.03, 0.6)), R, base, "sign", "metal", obj, inst, offset=(0, -0.07, post_h - 0.3))
    p.put(m.quad(0.6, 0.6), R, base, "sign", "sign_face", obj, inst, offset=(0, -0.09, post_h - 0.3))
