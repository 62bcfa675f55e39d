"""The `room` preset: a furnished room (NYU-like classes) seen from a handheld camera walking a loop
through it and looking across the room. World frame: z up, the room spans [0, Lx] x [0, Ly] x [0, H]."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from recon.dataset import ClassList
from recon.synth import mesh as m
from recon.synth import objects as ob
from recon.synth.render import Lighting, SynthScene
from recon.synth.scene_street import intrinsics, look_pose

CLASSES = ClassList(
    names=("floor", "wall", "ceiling", "table", "chair", "cabinet", "window", "door", "bed", "sofa", "picture",
           "clutter"),
    palette=((152, 223, 138), (174, 199, 232), (220, 220, 220), (255, 152, 150), (188, 189, 34), (31, 119, 180),
             (197, 176, 213), (214, 39, 40), (255, 187, 120), (140, 86, 75), (196, 156, 148), (23, 190, 207)))
CLASS_IDS = {name: i for i, name in enumerate(CLASSES.names)}
SINK = 0.01  # furniture starts just below the floor so no face coincides with it


@dataclass
class Wall:
    """A wall as seen from inside: frame with x along the wall, -y facing the room, z up."""
    origin: np.ndarray   # floor point where the along-wall coordinate is 0
    R: np.ndarray
    length: float
    used: list[tuple[float, float]] = field(default_factory=list)  # occupied along-wall intervals

    def point(self, along: float, out: float = 0.0, z: float = 0.0) -> np.ndarray:
        """World point `along` metres along the wall and `out` metres into the room."""
        return self.origin + self.R[:, 0] * along - self.R[:, 1] * out + [0.0, 0.0, z]

    def reserve(self, rng: np.random.Generator, width: float, margin: float = 0.25) -> float | None:
        """A free along-wall centre for an item of `width`, or None when the wall is full."""
        for _ in range(12):
            lo = rng.uniform(margin, self.length - margin - width) if self.length > width + 2 * margin else None
            if lo is None:
                return None
            if all(lo + width + 0.1 < a or lo > b + 0.1 for a, b in self.used):
                self.used.append((lo, lo + width))
                return lo + width / 2
        return None


def make_walls(lx: float, ly: float) -> list[Wall]:
    corners = [np.array(c, dtype=float) for c in ((0, 0), (lx, 0), (lx, ly), (0, ly))]
    walls = []
    for k in range(4):
        a, b = corners[k], corners[(k + 1) % 4]
        along = (b - a) / np.linalg.norm(b - a)
        inward = np.array([-along[1], along[0]])  # corners go counter-clockwise, so left is inside
        y = -np.array([*inward, 0.0])
        x = np.cross(y, [0.0, 0.0, 1.0])
        start = a if np.dot(b - a, x[:2]) > 0 else b
        walls.append(Wall(np.array([*start, 0.0]), np.stack([x, y, [0.0, 0.0, 1.0]], axis=1),
                          float(np.linalg.norm(b - a))))
    return walls


class RoomPreset:
    name = "room"
    classes = CLASSES
    default_step = 0.25
    lidar_mount_height = 0.05  # a handheld rig: the depth sensor sits a few centimetres from the camera
    focal_factor = 0.58

    def build(self, seed: int, frames: int, step: float, size: tuple[int, int]) -> SynthScene:
        rng = np.random.default_rng([seed, 2])
        lx, ly, height = rng.uniform(5.0, 7.5), rng.uniform(4.2, 6.0), rng.uniform(2.5, 3.0)
        scene_mesh = m.SceneMesh()
        p = ob.Placer(scene_mesh, rng, CLASS_IDS)
        walls = make_walls(lx, ly)
        build_shell(p, walls, lx, ly, height)
        furnish(p, walls, lx, ly)
        poses = camera_loop(rng, lx, ly, frames, step)
        light = Lighting(ambient=rng.uniform(0.45, 0.55), diffuse=rng.uniform(0.8, 1.0),
                         lamp_position=np.array([lx / 2 + rng.uniform(-0.5, 0.5), ly / 2 + rng.uniform(-0.5, 0.5),
                                                 height - 0.25]), lamp_range=3.5)
        return SynthScene(CLASSES, scene_mesh.finish(), light, intrinsics(size, self.focal_factor), poses,
                          noise_seed=seed)


def build_shell(p: ob.Placer, walls: list[Wall], lx: float, ly: float, height: float) -> None:
    centre = np.array([lx / 2, ly / 2, 0.0])
    p.put(m.box((lx + 0.4, ly + 0.4, 0.1)), np.eye(3), centre, "floor", "wood_floor", p.obj(), offset=(0, 0, -0.1))
    p.put(m.box((lx + 0.4, ly + 0.4, 0.1)), np.eye(3), centre, "ceiling", "ceiling_tiles", p.obj(),
          offset=(0, 0, height))
    if p.rng.random() < 0.7:
        rug = (p.rng.uniform(1.6, 3.0), p.rng.uniform(1.2, 2.2), 0.015)
        p.put(m.box(rug), m.rot_z(p.rng.uniform(-0.2, 0.2)), centre + p.rng.uniform(-0.4, 0.4, 3) * [1, 1, 0],
              "floor", "rug", p.obj(), offset=(0, 0, -0.005))
    paper = p.obj()
    accent = int(p.rng.integers(4)) if p.rng.random() < 0.5 else -1
    for k, wall in enumerate(walls):
        obj = p.obj() if k == accent else paper
        size = (wall.length + 0.2, 0.1, height)
        p.put(m.box(size), wall.R, wall.point(wall.length / 2, -0.05), "wall", "wallpaper", obj)


def on_wall(p: ob.Placer, wall: Wall, along: float, size, z: float, cls: str, material: str, obj: int,
            inst: int, proud: float) -> None:
    """A thin box on the wall whose front face stands `proud` metres into the room."""
    w, depth, h = size
    p.put(m.box((w, depth, h)), wall.R, wall.point(along, proud - depth / 2, z), cls, material, obj, inst)


def furnish(p: ob.Placer, walls: list[Wall], lx: float, ly: float) -> None:
    rng = p.rng
    order = rng.permutation(4)
    add_door(p, walls[order[0]])
    for k in order[1:1 + int(rng.integers(1, 3))]:
        add_window(p, walls[k])
    add_bed_or_sofa(p, walls[order[int(rng.integers(1, 4))]])
    for k in order[rng.permutation(4)][:int(rng.integers(1, 3))]:
        add_cabinet(p, walls[k])
    for _ in range(int(rng.integers(2, 5))):
        add_picture(p, walls[int(rng.integers(4))])
    add_table_and_chairs(p, lx, ly)
    for _ in range(int(rng.integers(1, 4))):
        clutter_box(p, np.array([rng.uniform(0.6, lx - 0.6), rng.uniform(0.6, ly - 0.6), -SINK]))


def add_door(p: ob.Placer, wall: Wall) -> None:
    along = wall.reserve(p.rng, 0.95)
    if along is not None:
        on_wall(p, wall, along, (0.95, 0.08, 2.08), -SINK, "door", "door", p.obj(), p.mesh.new_instance(), 0.03)


def add_window(p: ob.Placer, wall: Wall) -> None:
    w = p.rng.uniform(1.0, 1.8)
    along = wall.reserve(p.rng, w)
    if along is not None:
        on_wall(p, wall, along, (w, 0.08, p.rng.uniform(1.2, 1.5)), p.rng.uniform(0.8, 1.0), "window", "outside",
                p.obj(), p.mesh.new_instance(), 0.03)


def add_picture(p: ob.Placer, wall: Wall) -> None:
    w, h = p.rng.uniform(0.4, 1.0), p.rng.uniform(0.3, 0.8)
    along = wall.reserve(p.rng, w + 0.1)
    if along is None:
        return
    inst, z = p.mesh.new_instance(), p.rng.uniform(1.3, 1.6)
    on_wall(p, wall, along, (w + 0.08, 0.04, h + 0.08), z - 0.04, "picture", "frame", p.obj(), inst, 0.02)
    on_wall(p, wall, along, (w, 0.06, h), z, "picture", "painting", p.obj(), inst, 0.03)


def add_cabinet(p: ob.Placer, wall: Wall) -> None:
    rng = p.rng
    w, depth, h = rng.uniform(0.8, 1.8), rng.uniform(0.4, 0.6), rng.choice([rng.uniform(0.7, 1.0), rng.uniform(1.6, 2.1)])
    along = wall.reserve(rng, w)
    if along is None:
        return
    inst, body = p.mesh.new_instance(), p.obj()
    base = wall.point(along, depth / 2 + 0.02, -SINK)
    p.put(m.box((w, depth, h)), wall.R, base, "cabinet", "wood", body, inst)
    rows = max(1, int(h / 0.45))
    fronts, cols = p.obj(), 2 if w > 1.0 else 1
    for r in range(rows):
        for c in range(cols):
            x = -w / 2 + (c + 0.5) * w / cols
            z = 0.08 + r * (h - 0.1) / rows
            size = (w / cols - 0.05, 0.02, (h - 0.1) / rows - 0.04)
            p.put(m.box(size), wall.R, base, "cabinet", "wood", fronts, inst, offset=(x, -depth / 2 - 0.005, z))
            p.put(m.box((0.12, 0.03, 0.02)), wall.R, base, "cabinet", "metal", body, inst,
                  offset=(x, -depth / 2 - 0.02, z + size[2] * 0.75))
    if h < 1.2:
        clutter_on(p, base + [0.0, 0.0, h], wall.R, w * 0.7, depth * 0.6)


def add_bed_or_sofa(p: ob.Placer, wall: Wall) -> None:
    rng = p.rng
    if rng.random() < 0.5:
        w, length = rng.uniform(1.4, 1.8), rng.uniform(1.95, 2.1)
        along = wall.reserve(rng, w, margin=0.4)
        if along is None:
            return
        inst, frame, cover = p.mesh.new_instance(), p.obj(), p.obj()
        base = wall.point(along, length / 2 + 0.02, -SINK)
        p.put(m.box((w, length, 0.35)), wall.R, base, "bed", "wood", frame, inst)
        p.put(m.box((w - 0.06, length - 0.06, 0.22)), wall.R, base, "bed", "fabric", cover, inst, offset=(0, 0, 0.34))
        p.put(m.box((w, 0.08, 1.0)), wall.R, base, "bed", "wood", frame, inst, offset=(0, length / 2 - 0.04, 0))
        for side in (-1, 1) if w > 1.5 else (0,):
            p.put(m.box((0.55, 0.35, 0.14)), wall.R, base, "bed", "fabric", p.obj(), inst,
                  offset=(side * w / 4, length / 2 - 0.3, 0.55))
    else:
        w, depth = rng.uniform(1.8, 2.4), rng.uniform(0.85, 0.95)
        along = wall.reserve(rng, w, margin=0.4)
        if along is None:
            return
        inst, cloth = p.mesh.new_instance(), p.obj()
        base = wall.point(along, depth / 2 + 0.05, -SINK)
        p.put(m.box((w, depth, 0.42)), wall.R, base, "sofa", "fabric", cloth, inst)
        p.put(m.box((w, 0.22, 0.88)), wall.R, base, "sofa", "fabric", cloth, inst, offset=(0, depth / 2 - 0.11, 0))
        for side in (-1, 1):
            p.put(m.box((0.2, depth, 0.62)), wall.R, base, "sofa", "fabric", cloth, inst,
                  offset=(side * (w / 2 - 0.1), 0, 0))
        for c in range(2):
            p.put(m.box((0.4, 0.14, 0.38)), wall.R, base, "sofa", "fabric", p.obj(), inst,
                  offset=((c - 0.5) * w * 0.45, depth / 2 - 0.3, 0.44))


def add_table_and_chairs(p: ob.Placer, lx: float, ly: float) -> None:
    rng = p.rng
    w, d, h = rng.uniform(1.1, 1.6), rng.uniform(0.7, 0.9), rng.uniform(0.72, 0.78)
    R = m.rot_z(rng.uniform(-0.3, 0.3) + rng.integers(2) * np.pi / 2)
    centre = np.array([lx / 2 + rng.uniform(-0.5, 0.5), ly / 2 + rng.uniform(-0.4, 0.4), -SINK])
    inst, wood = p.mesh.new_instance(), p.obj()
    p.put(m.box((w, d, 0.04)), R, centre, "table", "wood", wood, inst, offset=(0, 0, h - 0.04))
    for sx in (-1, 1):
        for sy in (-1, 1):
            p.put(m.box((0.06, 0.06, h - 0.04)), R, centre, "table", "wood", wood, inst,
                  offset=(sx * (w / 2 - 0.08), sy * (d / 2 - 0.08), 0))
    clutter_on(p, centre + [0.0, 0.0, h], R, w * 0.8, d * 0.7)
    count = int(rng.integers(2, 5))
    for k in range(count):
        side = (-1, 1)[k % 2]
        along = (k // 2 - 0.5) * w * 0.5 if count > 2 else rng.uniform(-0.2, 0.2)
        chair_R = R @ m.rot_z(np.pi / 2 if side < 0 else -np.pi / 2)
        chair(p, chair_R, centre + R @ [along, side * (d / 2 + 0.25), 0.0])


def chair(p: ob.Placer, R, t) -> None:
    """A chair whose back is on its -x side."""
    inst, wood = p.mesh.new_instance(), p.obj()
    seat_h = p.rng.uniform(0.43, 0.48)
    p.put(m.box((0.44, 0.44, 0.04)), R, t, "chair", "fabric" if p.rng.random() < 0.5 else "wood", p.obj(), inst,
          offset=(0, 0, seat_h))
    for sx in (-1, 1):
        for sy in (-1, 1):
            p.put(m.box((0.04, 0.04, seat_h)), R, t, "chair", "wood", wood, inst, offset=(sx * 0.19, sy * 0.19, 0))
    p.put(m.box((0.04, 0.44, 0.45)), R, t, "chair", "wood", wood, inst, offset=(-0.2, 0, seat_h + 0.04))


def clutter_on(p: ob.Placer, top, R, width: float, depth: float) -> None:
    """A few small objects on a surface centred at `top` (the surface height)."""
    rng = p.rng
    for _ in range(int(rng.integers(1, 4))):
        at = np.asarray(top) + np.asarray(R) @ [rng.uniform(-0.5, 0.5) * width, rng.uniform(-0.5, 0.5) * depth, -SINK]
        inst = p.mesh.new_instance()
        kind = rng.integers(3)
        if kind == 0:
            p.put(m.box((rng.uniform(0.15, 0.3), 0.2, rng.uniform(0.04, 0.15))), R @ m.rot_z(rng.uniform(0, 3)), at,
                  "clutter", "books", p.obj(), inst)
        elif kind == 1:
            r = rng.uniform(0.05, 0.1)
            p.put(m.cylinder(r, rng.uniform(0.15, 0.35), 16, top_radius=r * rng.uniform(0.6, 1.2)), np.eye(3), at,
                  "clutter", "ceramic", p.obj(), inst)
        else:
            p.put(m.box((0.18, 0.05, 0.25)), R @ m.rot_z(rng.uniform(0, 3)), at, "clutter", "books", p.obj(), inst)


def clutter_box(p: ob.Placer, at) -> None:
    size = p.rng.uniform(0.25, 0.5, size=3)
    p.put(m.box(size), m.rot_z(p.rng.uniform(0, np.pi)), at, "clutter", "cardboard", p.obj(), p.mesh.new_instance())


def camera_loop(rng: np.random.Generator, lx: float, ly: float, frames: int, step: float) -> list[np.ndarray]:
    """A handheld loop around the room centre, looking across the room, with small shakes."""
    centre = np.array([lx / 2, ly / 2]) + rng.uniform(-0.2, 0.2, 2)
    ax, ay = max(0.6, lx / 2 - 1.5), max(0.5, ly / 2 - 1.4)
    phi = np.linspace(0.0, 2 * np.pi, 2001)
    ring = centre + np.stack([ax * np.cos(phi), ay * np.sin(phi)], 1)
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(ring, axis=0), axis=1))])
    start, direction = rng.uniform(0.0, arc[-1]), rng.choice([-1.0, 1.0])
    look_offset = np.deg2rad(rng.uniform(-35.0, 35.0))
    pitch0, height0 = np.deg2rad(rng.uniform(-20.0, -8.0)), rng.uniform(1.4, 1.7)
    poses = []
    for i in range(frames):
        s = np.mod(start + direction * i * step, arc[-1])
        xy = np.array([np.interp(s, arc, ring[:, 0]), np.interp(s, arc, ring[:, 1])])
        inward = np.arctan2(*(centre - xy)[::-1])
        shake = rng.normal(0.0, 1.0, size=5)
        heading = inward + look_offset + np.deg2rad(0.8) * shake[0]
        pitch = pitch0 + np.deg2rad(4.0) * np.sin(i * 0.21) + np.deg2rad(0.6) * shake[1]
        roll = np.deg2rad(0.8) * shake[2]
        position = np.array([*(xy + 0.02 * shake[3:5]), height0 + 0.05 * np.sin(i * 0.37)])
        poses.append(look_pose(position, heading, pitch, roll))
    return poses
