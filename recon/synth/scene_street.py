"""The `street` preset: a (possibly curving) road lined with sidewalks, buildings, trees and street
furniture, seen from a camera on a car driving along the right lane. World frame: z up, metres."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recon.dataset import ClassList
from recon.synth import mesh as m
from recon.synth import objects as ob
from recon.synth.noise import NoiseBank, mix
from recon.synth.render import Lighting, SynthScene

CLASSES = ClassList(
    names=("road", "sidewalk", "building", "vegetation", "terrain", "car", "pole", "sign", "person", "sky"),
    palette=((128, 64, 128), (244, 35, 232), (70, 70, 70), (107, 142, 35), (152, 251, 152), (0, 0, 142),
             (153, 153, 153), (220, 220, 0), (220, 20, 60), (70, 130, 180)),
    no_3d=("sky",))
CLASS_IDS = {name: i for i, name in enumerate(CLASSES.names)}
KERB = 0.15
SINK = 0.03  # objects start slightly below the ground so their bottoms never coincide with it
BEHIND = 30.0    # metres of street behind the first camera
AHEAD = 100.0    # metres of street beyond the last camera


@dataclass
class Curve:
    """The road centreline sampled every metre: arc length, points, unit tangents and left normals."""
    arc: np.ndarray
    points: np.ndarray
    tangents: np.ndarray
    lefts: np.ndarray

    def at(self, s: float):
        i = int(np.clip(np.searchsorted(self.arc, s), 1, len(self.arc) - 1))
        w = (s - self.arc[i - 1]) / (self.arc[i] - self.arc[i - 1])
        point = self.points[i - 1] * (1 - w) + self.points[i] * w
        tangent = self.tangents[i - 1] * (1 - w) + self.tangents[i] * w
        tangent /= np.linalg.norm(tangent)
        return point, tangent, np.array([-tangent[1], tangent[0]])

    def ground(self, s: float, offset: float, height: float = 0.0) -> np.ndarray:
        point, _, left = self.at(s)
        return np.array([*(point + left * offset), height])

    def span(self, s0: float, s1: float) -> "Curve":
        keep = (self.arc >= s0) & (self.arc <= s1)
        return Curve(self.arc[keep], self.points[keep], self.tangents[keep], self.lefts[keep])


def make_curve(rng: np.random.Generator, start: float, end: float) -> Curve:
    """Straight stretches and gentle bends with per-seed radii and turn directions."""
    arc = np.arange(start, end + 1.0, 1.0)
    curvature = np.zeros_like(arc)
    s = start + BEHIND + rng.uniform(0.0, 20.0)  # the first camera always starts on a straight
    while s < end:
        length = rng.uniform(25.0, 60.0)
        if rng.random() < 0.55:
            curvature[(arc >= s) & (arc < s + length)] = rng.choice([-1, 1]) / rng.uniform(70.0, 200.0)
        s += length + rng.uniform(15.0, 40.0)
    return curve_from_curvature(arc, curvature)


def curve_from_curvature(arc: np.ndarray, curvature: np.ndarray) -> Curve:
    """Integrate radians per metre (sampled every metre along `arc`) into a curve through the origin at s = 0."""
    heading = np.concatenate([[0.0], np.cumsum(curvature[:-1])])
    tangents = np.stack([np.cos(heading), np.sin(heading)], 1)
    points = np.concatenate([[[0.0, 0.0]], np.cumsum(tangents[:-1], axis=0)])
    points -= points[np.searchsorted(arc, 0.0)]
    return Curve(arc, points, tangents, np.stack([-tangents[:, 1], tangents[:, 0]], 1))


@dataclass
class Side:
    """Cross-section of one side of the street, lateral offsets in metres from the centreline."""
    sign: float          # +1 left, -1 right
    road_edge: float     # kerb position
    verge: float         # grass strip width after the kerb (0 = none)
    sidewalk: float
    parking: bool

    @property
    def building_line(self) -> float:
        return self.road_edge + self.verge + self.sidewalk


def make_side(rng: np.random.Generator, sign: float, lane: float) -> Side:
    parking = bool(rng.random() < 0.7)
    verge = rng.uniform(1.0, 1.8) if rng.random() < 0.5 else 0.0
    return Side(sign, lane + 2.2 * parking, verge, rng.uniform(2.5, 4.5), parking)


class StreetPreset:
    name = "street"
    classes = CLASSES
    default_step = 1.0
    lidar_mount_height = 0.10  # metres above the camera: small parallax between LiDAR and image
    focal_factor = 0.62  # fx = factor * width: about 78 degrees horizontal field of view

    def build(self, seed: int, frames: int, step: float, size: tuple[int, int]) -> SynthScene:
        rng = np.random.default_rng([seed, 1])
        travel = (frames - 1) * step
        curve = make_curve(rng, -BEHIND, travel + AHEAD)
        lane = rng.uniform(3.0, 3.6)
        sides = [make_side(rng, sign, lane) for sign in (1.0, -1.0)]
        scene_mesh = m.SceneMesh()
        placer = ob.Placer(scene_mesh, rng, CLASS_IDS)
        build_ground(placer, curve, lane, sides)
        for side in sides:
            build_frontage(placer, curve, side)
            build_cars(placer, curve, side, lane, travel)
        build_end_walls(placer, curve, sides)
        poses = camera_path(rng, curve, lane, frames, step)
        return SynthScene(CLASSES, scene_mesh.finish(), street_lighting(rng, seed), intrinsics(size, self.focal_factor),
                          poses, miss_class=CLASS_IDS["sky"], noise_seed=seed)


def intrinsics(size: tuple[int, int], focal_factor: float) -> np.ndarray:
    width, height = size
    f = focal_factor * width
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])


def build_ground(p: ob.Placer, curve: Curve, lane: float, sides: list[Side]) -> None:
    left, right = sides
    paint = build_road(p, curve, lane, sides)
    if p.rng.random() < 0.7:
        add_crosswalk(p, curve, left, right, paint)
    for side in sides:
        add_side_ground(p, curve, side)


def build_road(p: ob.Placer, curve: Curve, lane: float, sides: list[Side]) -> int:
    """Asphalt between the kerbs with lane edge lines and a dashed centre line; returns the paint object."""
    left, right = sides
    road = m.ribbon(curve.points, curve.lefts, curve.arc, [-right.road_edge, 0.0, left.road_edge], [0, 0, 0], "up")
    p.put(road, np.eye(3), (0, 0, 0), "road", "asphalt", p.obj())
    paint = p.obj()
    for offset in (lane, -lane):  # lane edge lines next to the parking strips or kerbs
        line = m.ribbon(curve.points, curve.lefts, curve.arc, [offset - 0.07, offset + 0.07], [0.01, 0.01], "up")
        p.put(line, np.eye(3), (0, 0, 0), "road", "paint", paint)
    for s0 in np.arange(curve.arc[0], curve.arc[-1] - 4, 9.0):  # dashed centre line
        dash = curve.span(s0, s0 + 3.0)
        p.put(m.ribbon(dash.points, dash.lefts, dash.arc, [-0.06, 0.06], [0.01, 0.01], "up"),
              np.eye(3), (0, 0, 0), "road", "paint", paint)
    return paint


def add_crosswalk(p: ob.Placer, curve: Curve, left: Side, right: Side, paint: int) -> None:
    s0 = p.rng.uniform(15.0, max(20.0, curve.arc[-1] - 60.0))
    for k in range(int((left.road_edge + right.road_edge) / 1.0)):
        stripe = curve.span(s0, s0 + 3.0)
        lo = -right.road_edge + 0.25 + k * 1.0
        p.put(m.ribbon(stripe.points, stripe.lefts, stripe.arc, [lo, lo + 0.5], [0.012, 0.012], "up"),
              np.eye(3), (0, 0, 0), "road", "paint", paint)


def add_side_ground(p: ob.Placer, curve: Curve, side: Side) -> None:
    sg = side.sign
    facing = "right" if sg > 0 else "left"  # the kerb face looks towards the road
    kerb = m.ribbon(curve.points, curve.lefts, curve.arc, [sg * side.road_edge] * 2, [0.0, KERB], facing)
    p.put(kerb, np.eye(3), (0, 0, 0), "sidewalk", "concrete", p.obj())
    walk_from = side.road_edge
    if side.verge > 0:
        edge = side.road_edge + side.verge
        grass = m.ribbon(curve.points, curve.lefts, curve.arc, sorted([sg * side.road_edge, sg * edge]),
                         [KERB, KERB], "up")
        p.put(grass, np.eye(3), (0, 0, 0), "terrain", "grass", p.obj())
        walk_from = edge
    far = side.building_line + 14.0
    walk = m.ribbon(curve.points, curve.lefts, curve.arc, sorted([sg * walk_from, sg * far]), [KERB, KERB], "up")
    p.put(walk, np.eye(3), (0, 0, 0), "sidewalk", "paving", p.obj())


def build_frontage(p: ob.Placer, curve: Curve, side: Side) -> None:
    """Buildings along the building line, with trees, hedges, lamps, signs and pedestrians in front."""
    rng = p.rng
    s = curve.arc[0] + rng.uniform(0.0, 5.0)
    while s < curve.arc[-1] - 5.0:
        width = rng.uniform(8.0, 20.0)
        if rng.random() < 0.15:  # a gap with a hedge and a recessed building behind it
            add_building(p, curve, side, s + width / 2, width + 2.0, setback=rng.uniform(6.0, 9.0))
            add_hedge(p, curve, side, s + width / 2, width)
        else:
            add_building(p, curve, side, s + width / 2, width, setback=rng.uniform(0.0, 0.6))
        s += width + rng.uniform(0.05, 0.5)
    add_street_furniture(p, curve, side)


def side_frame(curve: Curve, s: float, side: Side) -> np.ndarray:
    """Object frame at arc length s: y axis points away from the road, so -y faces the street."""
    _, _, left = curve.at(s)
    away = left * side.sign
    return np.array([[away[1], away[0], 0.0], [-away[0], away[1], 0.0], [0.0, 0.0, 1.0]])


def add_building(p: ob.Placer, curve: Curve, side: Side, s: float, width: float, setback: float) -> None:
    rng = p.rng
    depth, floors = rng.uniform(9.0, 14.0), int(rng.integers(2, 8))
    floor_h = rng.uniform(3.0, 3.5)
    height = floors * floor_h + rng.uniform(0.3, 1.5)
    R = side_frame(curve, s, side)
    front = side.building_line + setback
    centre = curve.ground(s, side.sign * (front + depth / 2), KERB - SINK)
    facade = "brick" if rng.random() < 0.35 else "plaster"
    obj = p.obj()
    p.put(m.box((width, depth, height)), R, centre, "building", facade, obj)
    face_y = -depth / 2
    s_base = 0.35 + SINK
    columns = max(1, int(width / rng.uniform(2.4, 3.6)))
    win_w, win_h = rng.uniform(1.0, 1.6), rng.uniform(1.3, 1.9)
    frame_obj = p.obj()
    pitch = width / columns
    door_col = int(rng.integers(columns))
    for c in range(columns):
        x = -width / 2 + pitch * (c + 0.5)
        if c == door_col:
            p.put(m.box((1.2, 0.1, 2.3)), R, centre, "building", "door", p.obj(), offset=(x, face_y, SINK))
        else:
            shop_h = min(2.6, floor_h - 0.5)
            p.put(m.box((pitch - 0.6, 0.08, shop_h)), R, centre, "building", "window", p.obj_like(frame_obj),
                  offset=(x, face_y, s_base))
        for f in range(1, floors):
            if rng.random() < 0.93:
                p.put(m.box((win_w, 0.08, win_h)), R, centre, "building", "window", p.obj_like(frame_obj),
                      offset=(x, face_y, SINK + f * floor_h + 0.9))


def add_hedge(p: ob.Placer, curve: Curve, side: Side, s: float, width: float) -> None:
    R = side_frame(curve, s, side)
    t = curve.ground(s, side.sign * (side.building_line + 0.6))
    ob.hedge(p, R, t, width - 0.5, KERB - SINK)


def add_street_furniture(p: ob.Placer, curve: Curve, side: Side) -> None:
    rng = p.rng
    near_kerb = side.road_edge + (side.verge / 2 if side.verge > 0 else 0.6)
    for s in _spaced(rng, curve, 7.0, 16.0):
        if side.verge > 0 or rng.random() < 0.35:
            ob.tree(p, curve.ground(s, side.sign * near_kerb), KERB - SINK)
    for s in _spaced(rng, curve, 22.0, 40.0):
        R = side_frame(curve, s, side)
        ob.street_lamp(p, R @ m.rot_z(-np.pi / 2), curve.ground(s + 1.5, side.sign * (side.road_edge + 0.35)), KERB - SINK)
    for s in _spaced(rng, curve, 25.0, 60.0):
        _, tangent, _ = curve.at(s)
        ob.traffic_sign(p, _facing_traffic(tangent), curve.ground(s, side.sign * (side.road_edge + 0.4)), KERB - SINK)
    walk_lo = side.road_edge + side.verge + 0.5
    for s in _spaced(rng, curve, 4.0, 18.0):
        offset = rng.uniform(walk_lo, side.building_line - 0.5)
        ob.person(p, ob.frame_from_forward(rng.normal(size=2)), curve.ground(s, side.sign * offset, KERB - SINK))


def _facing_traffic(tangent) -> np.ndarray:
    """Frame whose -y axis points against the driving direction (towards oncoming cameras)."""
    y = np.array([tangent[0], tangent[1], 0.0])
    x = np.cross(y, [0.0, 0.0, 1.0])
    return np.stack([x, y, [0.0, 0.0, 1.0]], axis=1)


def _spaced(rng: np.random.Generator, curve: Curve, lo: float, hi: float) -> list[float]:
    out, s = [], curve.arc[0] + rng.uniform(0.0, hi)
    while s < curve.arc[-1] - 3.0:
        out.append(s)
        s += rng.uniform(lo, hi)
    return out


def build_cars(p: ob.Placer, curve: Curve, side: Side, lane: float, travel: float) -> None:
    build_parked_cars(p, curve, side, lane)
    build_lane_cars(p, curve, side, lane, travel)


def build_parked_cars(p: ob.Placer, curve: Curve, side: Side, lane: float) -> None:
    rng = p.rng
    against = side.sign > 0  # left-side cars face the oncoming direction
    if side.parking:
        s = curve.arc[0] + rng.uniform(0.0, 6.0)
        while s < curve.arc[-1] - 6.0:
            if rng.random() < 0.75:
                _place_car(p, curve, s, side.sign * (lane + 1.1), against)
            s += rng.uniform(5.0, 9.0)


def build_lane_cars(p: ob.Placer, curve: Curve, side: Side, lane: float, travel: float) -> None:
    """Cars standing in the driving lanes, none on the camera's own path up to `travel`."""
    rng = p.rng
    against = side.sign > 0
    lane_centre = side.sign * lane / 2
    for s in _spaced(rng, curve, 12.0, 45.0):
        ego_lane = side.sign < 0
        if ego_lane and s < travel + 8.0:  # never on the camera's own path
            continue
        _place_car(p, curve, s, lane_centre + rng.uniform(-0.3, 0.3), against)


def _place_car(p: ob.Placer, curve: Curve, s: float, offset: float, against: bool) -> None:
    _, tangent, _ = curve.at(s)
    forward = -tangent if against else tangent
    yaw_jitter = m.rot_z(p.rng.normal(0.0, 0.03))
    ob.car(p, ob.frame_from_forward(forward) @ yaw_jitter, curve.ground(s, offset, -SINK))


def build_end_walls(p: ob.Placer, curve: Curve, sides: list[Side]) -> None:
    """Buildings across both ends of the street, so the view never runs out of geometry below the horizon."""
    span = sides[0].building_line + sides[1].building_line + 30.0
    for s, toward in ((curve.arc[-1] + 3.0, -1.0), (curve.arc[0] - 3.0, 1.0)):
        point, tangent, _ = curve.at(s)
        R = ob.frame_from_forward([tangent[1], -tangent[0]])  # x across the street, y along it
        centre = np.array([*(point - tangent * toward * 4.0), -SINK])
        p.put(m.box((span, 12.0, p.rng.uniform(12.0, 25.0))), R, centre, "building", "plaster", p.obj())


def camera_path(rng: np.random.Generator, curve: Curve, lane: float, frames: int, step: float) -> list[np.ndarray]:
    """cam_from_world per frame: right lane, ~1.5 m high, looking along the road with small vibrations."""
    return camera_path_at(rng, curve, lane, np.arange(frames) * step)


def camera_path_at(rng: np.random.Generator, curve: Curve, lane: float, arcs: np.ndarray) -> list[np.ndarray]:
    """cam_from_world at the given arc lengths along the road (one per frame)."""
    height = rng.uniform(1.4, 1.65)
    lateral = -lane / 2 + rng.uniform(-0.25, 0.25)
    yaw0, pitch0, roll0 = np.deg2rad(rng.uniform(-2, 2)), np.deg2rad(rng.uniform(-4, 1)), np.deg2rad(rng.uniform(-1, 1))
    poses = []
    for s in arcs:
        point, tangent, left = curve.at(s)
        shake = np.deg2rad(rng.normal(0.0, 0.25, size=3))
        heading = np.arctan2(tangent[1], tangent[0]) + yaw0 + shake[0]
        centre = np.array([*(point + left * lateral), height])
        poses.append(look_pose(centre, heading, pitch0 + shake[1], roll0 + shake[2]))
    return poses


def look_pose(centre, heading: float, pitch: float, roll: float) -> np.ndarray:
    """cam_from_world for a camera at `centre` looking along `heading` (radians from +x) with pitch (up+)."""
    forward = np.array([np.cos(heading) * np.cos(pitch), np.sin(heading) * np.cos(pitch), np.sin(pitch)])
    right = np.array([np.sin(heading), -np.cos(heading), 0.0])
    down = np.cross(forward, right)
    c, s = np.cos(roll), np.sin(roll)
    right, down = c * right + s * down, -s * right + c * down
    world_from_cam = np.eye(4)
    world_from_cam[:3, :3] = np.stack([right, down, forward], axis=1)
    world_from_cam[:3, 3] = centre
    return np.linalg.inv(world_from_cam)


def street_lighting(rng: np.random.Generator, seed: int) -> Lighting:
    elevation, azimuth = np.deg2rad(rng.uniform(25, 60)), rng.uniform(0, 2 * np.pi)
    sun = np.array([np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)])
    clouds = NoiseBank(seed + 101)
    horizon = np.array([0.80, 0.84, 0.88])
    zenith = np.array([0.30, 0.50, 0.82]) * rng.uniform(0.9, 1.1)
    cover = rng.uniform(-0.1, 0.15)

    def sky(dirs: np.ndarray) -> np.ndarray:
        up = np.clip(dirs[:, 2], 0.0, 1.0)
        colour = mix(horizon, zenith, np.sqrt(up))
        plane = dirs[:, :2] / np.maximum(dirs[:, 2:3], 0.03)  # clouds on a far horizontal plane
        density = clouds.fbm(plane[:, 0], plane[:, 1], 0.15, NoiseBank.CLOUDY) + cover
        return mix(colour, [0.95, 0.95, 0.96], np.clip(density * 3.0, 0.0, 1.0) * (up > 0.02))

    return Lighting(ambient=rng.uniform(0.55, 0.65), diffuse=rng.uniform(0.5, 0.6), sun_direction=sun, sky=sky,
                    haze_distance=350.0, haze_colour=horizon)
