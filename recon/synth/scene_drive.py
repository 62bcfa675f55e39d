"""The `drive` preset: a dash-cam drive through town at about one frame per second, with what breaks
reconstruction on real drives: stops at crossings, 90-degree turns, 10-15 m between frames on fast stretches,
cars that move, dusk, and rows of identical buildings. Same classes as `street`, built from its pieces.

The camera path is planned first (a list of metres between frames); the road is then laid out under it: one
curve with a 90-degree arc per turn and a crossing street in front of every stop. What a drive contains goes
into synth.json as "events" ({kind, frames: [first, last]}) so a benchmark can report per case.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import numpy as np

from recon.synth import mesh as m
from recon.synth import objects as ob
from recon.synth.noise import mix
from recon.synth.render import Lighting, Mover, SynthScene
from recon.synth.scene_street import (
    AHEAD,
    BEHIND,
    CLASS_IDS,
    CLASSES,
    KERB,
    SINK,
    Curve,
    Side,
    StreetPreset,
    add_building,
    add_side_ground,
    build_end_walls,
    build_frontage,
    build_parked_cars,
    build_road,
    camera_path_at,
    curve_from_curvature,
    intrinsics,
    make_side,
    side_frame,
    street_lighting,
)

FRONTAGE_OVERSHOOT = 16.5  # metres street's frontage may build past the end of its span (its last building)
BUILDING_REACH = 14.0      # metres from the building line to the back of the deepest building (and sidewalk)
ARM_LENGTH = 55.0          # metres of a crossing street on either side of the drive's road
CLEAR = 40.0               # metres of straight road between a turn and a crossing, so their frontages never meet


@dataclass(frozen=True)
class DriveKnobs:
    """What a drive contains. Pairs are (low, high) ranges drawn per seed, integer pairs inclusive. Every drive
    has one stop, one turn and one fast stretch (in an order drawn per seed) before any extra ones, so with about
    45 frames or more it has all three; later events are cut off where the frames run out."""
    cruise_step: tuple[float, float] = (0.75, 1.25)  # times --step (default 4.5 m) between frames on ordinary stretches
    cruise_frames: tuple[int, int] = (2, 5)          # frames of an ordinary stretch between two events
    fast_step: tuple[float, float] = (10.0, 15.0)    # metres between frames on a fast stretch
    fast_frames: tuple[int, int] = (4, 7)
    stop_frames: tuple[int, int] = (3, 8)            # frames with the very same camera pose, before a crossing
    turn_step: tuple[float, float] = (4.0, 6.0)      # metres between frames through a turn
    turn_radius_margin: tuple[float, float] = (1.0, 8.0)  # metres beyond the road's half width plus frontage
    extra_stops: tuple[int, int] = (0, 1)
    extra_turns: tuple[int, int] = (0, 1)
    extra_fast: tuple[int, int] = (0, 1)
    oncoming_cars: tuple[int, int] = (1, 2)          # cars driving towards the camera in the other lane
    lead_car_probability: float = 0.7                # a car driving ahead in the camera's lane
    crossing_car_probability: float = 0.8            # a car crossing in front of the camera while it stops
    dusk_probability: float = 0.4                    # low sun, dim light and haze: low light, low contrast
    repetitive_probability: float = 0.6              # a row of identical buildings (same texture instance)
    repetitive_length: tuple[float, float] = (60.0, 120.0)  # metres of that row


@dataclass
class Crossing:
    """A straight street across the drive's road at arc length `s`; `sides` as seen driving along +left."""
    s: float
    lane: float
    sides: list[Side]

    @property
    def extent(self) -> tuple[float, float]:
        """Arc lengths of the drive's road between which the crossing's road lies."""
        return self.s - self.sides[0].road_edge, self.s + self.sides[1].road_edge


@dataclass
class Plan:
    arcs: np.ndarray                  # camera arc length per frame
    turns: list[tuple[float, float, float]] = field(default_factory=list)  # (start, length, +1 left / -1 right)
    crossings: list[Crossing] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)


class DrivePreset:
    name = "drive"
    classes = CLASSES
    default_step = 4.5
    lidar_mount_height = StreetPreset.lidar_mount_height
    focal_factor = StreetPreset.focal_factor

    def __init__(self, knobs: DriveKnobs | None = None):
        self.knobs = knobs or DriveKnobs()

    def build(self, seed: int, frames: int, step: float, size: tuple[int, int]) -> SynthScene:
        rng = np.random.default_rng([seed, 4])
        cases = np.random.default_rng([seed, 6])  # which optional cases a drive has, apart from its layout
        with_dusk, with_row = (cases.random(2) < [self.knobs.dusk_probability, self.knobs.repetitive_probability])
        lane = rng.uniform(3.0, 3.6)
        sides = [make_side(rng, sign, lane) for sign in (1.0, -1.0)]
        radius = turn_radius(rng, self.knobs, sides)
        plan = plan_drive(rng, self.knobs, frames, step, lane, radius)
        curve = drive_curve(plan)
        mesh, movers = self.build_world(rng, curve, plan, lane, sides, with_row)
        lighting = street_lighting(rng, seed)
        if with_dusk:
            lighting = dusk(rng, lighting)
            plan.events.append({"kind": "dusk", "frames": [0, frames - 1]})
        poses = hold_still(camera_path_at(rng, curve, lane, plan.arcs), plan.arcs)
        info = {"events": sorted(plan.events, key=lambda e: (e["frames"][0], e["kind"])),
                "drive": {"knobs": asdict(self.knobs), "turn_radius": radius}}
        return SynthScene(CLASSES, mesh, lighting, intrinsics(size, self.focal_factor), poses,
                          miss_class=CLASS_IDS["sky"], noise_seed=seed, movers=movers, info=info)

    def build_world(self, rng: np.random.Generator, curve: Curve, plan: Plan, lane: float, sides: list[Side],
                    with_row: bool) -> tuple[dict, list[Mover]]:
        """The static town, then the moving cars (their mesh rows after every static one)."""
        scene_mesh = m.SceneMesh()
        placer = ob.Placer(scene_mesh, rng, CLASS_IDS)
        build_town(placer, curve, plan, lane, sides, self.knobs if with_row else None)
        paths = plan_movers(rng, self.knobs, curve, plan, lane)
        rows = [add_mover(placer) for _ in paths]
        mesh = scene_mesh.finish()
        plan.events += mover_events(paths, rows, mesh)
        return mesh, [Mover(v, t, path) for (v, t), path in zip(rows, paths.values())]

# ---------------------------------------------------------------------------------------------- the camera path

def turn_radius(rng: np.random.Generator, knobs: DriveKnobs, sides: list[Side]) -> float:
    """Large enough that the inner frontage (sidewalk ribbon, buildings) never folds over or reaches the road."""
    return max(side.building_line for side in sides) + BUILDING_REACH + rng.uniform(*knobs.turn_radius_margin)


def plan_drive(rng: np.random.Generator, knobs: DriveKnobs, frames: int, step: float, lane: float,
               radius: float) -> Plan:
    planner = _Planner(rng, knobs, step, lane, radius)
    mandatory = list(rng.permutation(["stop", "turn", "fast"]))
    extra = ["stop"] * count(rng, knobs.extra_stops) + ["turn"] * count(rng, knobs.extra_turns) + \
        ["fast"] * count(rng, knobs.extra_fast)
    for kind in mandatory + list(rng.permutation(extra)):
        planner.cruise()
        getattr(planner, kind)()
    while len(planner.steps) < frames - 1:
        planner.cruise()
    arcs = np.concatenate([[0.0], np.cumsum(planner.steps)])[:frames]
    return Plan(arcs, planner.turns, planner.crossings, clip_events(planner.events, frames))


def count(rng: np.random.Generator, bounds: tuple[int, int]) -> int:
    """An integer drawn from the inclusive range."""
    return int(rng.integers(bounds[0], bounds[1] + 1))


class _Planner:
    """Appends metres-between-frames phase by phase; records events with the frames they span."""

    def __init__(self, rng, knobs: DriveKnobs, step: float, lane: float, radius: float):
        self.rng, self.knobs, self.base, self.lane, self.radius = rng, knobs, step, lane, radius
        self.steps: list[float] = []
        self.free_from = 0.0  # arc length from which the road may turn or be crossed again
        self.turns, self.crossings, self.events = [], [], []

    @property
    def s(self) -> float:
        return float(np.sum(self.steps))

    @property
    def frame(self) -> int:
        return len(self.steps)

    def advance(self, *steps: float) -> None:
        self.steps.extend(float(x) for x in steps)

    def cruise(self, frames: int | None = None) -> None:
        for _ in range(frames if frames is not None else count(self.rng, self.knobs.cruise_frames)):
            self.advance(self.base * self.rng.uniform(*self.knobs.cruise_step))

    def fast(self) -> None:
        first = self.frame
        self.advance(*self.rng.uniform(*self.knobs.fast_step, size=count(self.rng, self.knobs.fast_frames)))
        self.events.append({"kind": "fast", "frames": [first, self.frame]})

    def stop(self) -> None:
        """Brake, stand still a few frames a little before a crossing street, and pull away."""
        gap = self.rng.uniform(2.0, 4.0)  # camera to the crossing's near kerb line
        while self.s + 3.0 + gap < self.free_from:
            self.cruise(1)
        self.advance(2.0, 1.0)
        first = self.frame
        self.advance(*[0.0] * (count(self.rng, self.knobs.stop_frames) - 1))
        self.events.append({"kind": "stop", "frames": [first, self.frame]})
        crossing = make_crossing(self.rng, self.s + gap, self.lane)
        self.crossings.append(crossing)
        self.advance(1.5, 3.0)
        self.free_from = crossing.extent[1] + CLEAR

    def turn(self) -> None:
        start = max(self.s + self.rng.uniform(1.0, 3.0), self.free_from)
        length = self.radius * np.pi / 2
        self.turns.append((start, length, float(self.rng.choice([-1.0, 1.0]))))
        while self.s + self.base * self.knobs.cruise_step[1] < start:  # the last frame before the arc
            self.cruise(1)
        first = self.frame
        while self.s < start + length + 1.0:  # the heading settles a curve sample (1 m) after the arc
            self.advance(self.rng.uniform(*self.knobs.turn_step))
        self.events.append({"kind": "turn", "frames": [first, self.frame]})
        self.free_from = start + length + CLEAR


def make_crossing(rng: np.random.Generator, near_kerb: float, lane: float) -> Crossing:
    cross_lane = rng.uniform(3.0, 3.6)
    sides = [make_side(rng, sign, cross_lane) for sign in (1.0, -1.0)]
    return Crossing(near_kerb + sides[0].road_edge, cross_lane, sides)


def clip_events(events: list[dict], frames: int) -> list[dict]:
    """Events cut to the rendered frames (marked "complete": false where the frames ran out in the middle of
    one); a stop needs two frames and the others one step to count."""
    kept = []
    for event in events:
        first, last = event["frames"][0], min(event["frames"][1], frames - 1)
        if last > first:
            cut = {} if last == event["frames"][1] else {"complete": False}
            kept.append({**event, "frames": [first, last], **cut})
    return kept


def hold_still(poses: list[np.ndarray], arcs: np.ndarray) -> list[np.ndarray]:
    """A standing car's camera keeps its pose exactly (no vibration), as its images would say."""
    held = list(poses)
    for i in np.flatnonzero(np.diff(arcs) == 0.0) + 1:
        held[i] = held[i - 1]
    return held


def drive_curve(plan: Plan) -> Curve:
    """Straight road with a 90-degree arc per turn, from behind the first camera to beyond the last."""
    ends = [plan.arcs[-1]] + [start + length for start, length, _ in plan.turns] + \
        [c.s + ARM_LENGTH for c in plan.crossings]
    arc = np.arange(-BEHIND, max(ends) + AHEAD + 1.0, 1.0)
    curvature = np.zeros_like(arc)
    for start, length, direction in plan.turns:
        inside = (arc >= start) & (arc < start + length)
        curvature[inside] = direction * (np.pi / 2) / inside.sum()  # exactly 90 degrees over the samples
    return curve_from_curvature(arc, curvature)


# ---------------------------------------------------------------------------------------------- the town

def build_town(p: ob.Placer, curve: Curve, plan: Plan, lane: float, sides: list[Side],
               row_knobs: DriveKnobs | None) -> None:
    """The drive's road and sides, its crossings, and a row of identical buildings if `row_knobs` is given."""
    build_road(p, curve, lane, sides)
    road_cuts = [c.extent for c in plan.crossings]
    # both arms of a crossing have its sides[0] towards the start of the drive: see build_crossing
    frontage_cuts = [(c.s - c.sides[0].building_line, c.s + c.sides[1].building_line) for c in plan.crossings]
    rows = plan_identical_rows(p.rng, row_knobs, plan) if row_knobs else {}
    for index, side in enumerate(sides):
        build_side(p, curve, side, lane, road_cuts, frontage_cuts, rows.get(index))
    for crossing in plan.crossings:
        build_crossing(p, curve, crossing, sides)
    build_end_walls(p, curve, sides)
    plan.events += row_events(rows, plan.arcs)


def build_side(p: ob.Placer, curve: Curve, side: Side, lane: float, road_cuts: list, frontage_cuts: list,
               row: tuple[float, float] | None) -> None:
    """Sidewalks, buildings and parked cars of one side, open where crossing streets join."""
    for a, b in free_spans(curve.arc[0], curve.arc[-1], road_cuts):
        add_side_ground(p, exact_span(curve, a, b), side)
    for extent in road_cuts:
        close_sidewalk_ends(p, curve, side, extent)
    build_blocks(p, curve, side, frontage_cuts + ([row] if row else []))
    if row:
        add_identical_row(p, curve, side, row, frontage_cuts)
    for a, b in free_spans(curve.arc[0], curve.arc[-1], frontage_cuts):
        build_parked_cars(p, curve.span(a, b), side, lane)


def free_spans(lo: float, hi: float, blocked: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """[lo, hi] without the blocked intervals, as (start, end) pairs longer than a metre."""
    spans, s = [], lo
    for a, b in sorted(blocked):
        if a > s:
            spans.append((s, min(a, hi)))
        s = max(s, b)
    spans.append((s, hi))
    return [(a, b) for a, b in spans if b - a > 1.0]


def exact_span(curve: Curve, a: float, b: float) -> Curve:
    """The curve between arc lengths a and b with samples at a and b themselves, so pieces meet exactly."""
    inner = curve.arc[(curve.arc > a) & (curve.arc < b)]
    arc = np.concatenate([[a], inner, [b]])
    points, tangents, lefts = (np.array(v) for v in zip(*(curve.at(s) for s in arc)))
    return Curve(arc, points, tangents, lefts)


def close_sidewalk_ends(p: ob.Placer, curve: Curve, side: Side, extent: tuple[float, float]) -> None:
    """Kerb-high walls just inside the sidewalk ends at a crossing: the crossing's (lowered) kerb leaves a
    slit under the sidewalk's edge that would show the sky."""
    width = side.building_line + BUILDING_REACH - side.road_edge
    for s in (extent[0] - 0.06, extent[1] + 0.06):
        centre = curve.ground(s, side.sign * (side.road_edge + width / 2))
        p.put(m.box((0.1, width, KERB - 0.001)), side_frame(curve, s, side), centre, "sidewalk", "concrete", p.obj())


def build_blocks(p: ob.Placer, curve: Curve, side: Side, blocked: list[tuple[float, float]]) -> None:
    """Street's frontage between the blocked intervals, ending early where its last building would reach in."""
    for a, b in free_spans(curve.arc[0], curve.arc[-1], blocked):
        end = b if b >= curve.arc[-1] else b - FRONTAGE_OVERSHOOT
        if end - a > 6.0:
            build_frontage(p, curve.span(a, end), side)


def plan_identical_rows(rng: np.random.Generator, knobs: DriveKnobs, plan: Plan) -> dict[int, tuple[float, float]]:
    """Side index -> arc interval of a row of identical buildings, beside the travelled road."""
    length = rng.uniform(*knobs.repetitive_length)
    start = rng.uniform(0.0, max(1.0, plan.arcs[-1] - 20.0))
    chosen = [0, 1] if rng.random() < 0.3 else [int(rng.integers(2))]
    return {index: (start, start + length) for index in chosen}


def add_identical_row(p: ob.Placer, curve: Curve, side: Side, row: tuple[float, float],
                      blocked: list[tuple[float, float]]) -> None:
    """One street building, then rigid copies of it (same objects, hence same texture) along the row."""
    width, gap = p.rng.uniform(10.0, 16.0), p.rng.uniform(0.1, 0.4)
    centres = np.arange(row[0] + width / 2, row[1] - width / 2, width + gap)
    clear = [all(s + width / 2 < a or s - width / 2 > b for a, b in blocked) for s in centres]
    centres = centres[np.asarray(clear, dtype=bool)]
    if len(centres) == 0:
        return
    first = p.mesh.part_count()
    add_building(p, curve, side, centres[0], width, setback=0.3)
    last = p.mesh.part_count()
    R0, c0 = side_frame(curve, centres[0], side), curve.ground(centres[0], side.sign * side.building_line)
    for s in centres[1:]:
        rotation = side_frame(curve, s, side) @ R0.T
        p.mesh.repeat(first, last, rotation, curve.ground(s, side.sign * side.building_line) - rotation @ c0)


def row_events(rows: dict[int, tuple[float, float]], arcs: np.ndarray) -> list[dict]:
    """Frames from which a row is ahead within 40 m until the camera passes its end."""
    events = []
    for a, b in sorted(set(rows.values())):
        seen = np.flatnonzero((arcs >= a - 40.0) & (arcs <= b))
        if len(seen) > 1:
            events.append({"kind": "repetitive", "frames": [int(seen[0]), int(seen[-1])]})
    return events


class _Lowered(ob.Placer):
    """Puts everything a little lower: a crossing's ground slides under the drive's road and sidewalks where
    they overlap, so coplanar surfaces never fight over a pixel."""

    def __init__(self, placer: ob.Placer, drop: float = 0.002):
        super().__init__(placer.mesh, placer.rng, placer.ids)
        self.drop = drop

    def put(self, shape, R, t, cls, material, obj, instance=0, offset=(0.0, 0.0, 0.0)) -> None:
        super().put(shape, R, np.asarray(t, dtype=float) - [0.0, 0.0, self.drop], cls, material, obj, instance,
                    offset)


def crossing_arm(curve: Curve, crossing: Crossing, toward: float, start: float) -> Curve:
    """Straight curve from `start` metres off the drive's centreline outwards (toward +1 left, -1 right)."""
    point, _, left = curve.at(crossing.s)
    direction = left * toward
    arc = np.arange(start, start + ARM_LENGTH + 1.0, 1.0)
    points = point + direction * arc[:, None]
    tangents = np.broadcast_to(direction, points.shape).copy()
    return Curve(arc, points, tangents, np.stack([-tangents[:, 1], tangents[:, 0]], 1))


def build_crossing(p: ob.Placer, curve: Curve, crossing: Crossing, sides: list[Side]) -> None:
    """Both arms of a crossing street: road and sidewalks from the drive's kerb outwards, buildings from
    beyond the corner buildings of the drive's road."""
    low = _Lowered(p)
    for index, toward in enumerate((1.0, -1.0)):
        own = sides[index]
        arm_sides = crossing.sides if toward > 0 else [replace(crossing.sides[1], sign=1.0),
                                                       replace(crossing.sides[0], sign=-1.0)]
        arm = crossing_arm(curve, crossing, toward, own.road_edge)
        build_road(low, arm, crossing.lane, arm_sides)
        corner = own.building_line + 9.0 + BUILDING_REACH + 1.0  # past a recessed corner building
        for side in arm_sides:
            add_side_ground(low, arm, side)
            build_frontage(p, arm.span(corner, arm.arc[-1]), side)


# ---------------------------------------------------------------------------------------------- moving cars

def plan_movers(rng: np.random.Generator, knobs: DriveKnobs, curve: Curve, plan: Plan,
                lane: float) -> dict[str, list]:
    """Motion name -> world_from_local (or None) per frame, for every car that moves."""
    movers = {}
    if rng.random() < knobs.lead_car_probability:
        movers["lead"] = lead_car(rng, curve, plan, lane)
    for k in range(count(rng, knobs.oncoming_cars)):
        movers[f"oncoming{k}"] = oncoming_car(rng, curve, plan.arcs, lane)
    stops = [e["frames"] for e in plan.events if e["kind"] == "stop"]
    for k, (crossing, frames) in enumerate(zip(plan.crossings, stops)):
        if rng.random() < knobs.crossing_car_probability:
            movers[f"crossing{k}"] = crossing_car(rng, curve, crossing, sum(frames) / 2, len(plan.arcs))
    return movers


def car_pose(point_xy, forward_xy) -> np.ndarray:
    pose = np.eye(4)
    pose[:3, :3] = ob.frame_from_forward(forward_xy)
    pose[:3, 3] = [point_xy[0], point_xy[1], -SINK]
    return pose


def pose_on_road(curve: Curve, s: float, offset: float, against: bool) -> np.ndarray | None:
    if not curve.arc[0] + 5.0 < s < curve.arc[-1] - 5.0:
        return None
    point, tangent, left = curve.at(s)
    return car_pose(point + left * offset, -tangent if against else tangent)


def lead_car(rng: np.random.Generator, curve: Curve, plan: Plan, lane: float) -> list:
    """Ahead in the camera's lane, keeping a drifting gap; at the first stop it drives on and away."""
    stops = [e["frames"][0] for e in plan.events if e["kind"] == "stop"]
    drives_off = stops[0] if stops else len(plan.arcs)
    gap = np.clip(rng.uniform(10.0, 18.0) + rng.uniform(-0.8, 1.5) * np.arange(len(plan.arcs)), 7.0, 35.0)
    s = plan.arcs + gap
    after = np.arange(len(plan.arcs)) >= drives_off
    s[after] = s[drives_off - 1] + 10.0 * np.arange(1, after.sum() + 1)  # a drive starts moving: drives_off > 0
    # out of sight far ahead; and gone rather than driven through should a fast stretch catch up with it
    return [pose_on_road(curve, si, -lane / 2, False) if 6.0 < si - cam < 60.0 else None
            for si, cam in zip(s, plan.arcs)]


def oncoming_car(rng: np.random.Generator, curve: Curve, arcs: np.ndarray, lane: float) -> list:
    first = int(rng.integers(0, max(1, len(arcs) - 3)))
    s = arcs[first] + rng.uniform(35.0, 60.0) - rng.uniform(6.0, 12.0) * (np.arange(len(arcs)) - first)
    return [pose_on_road(curve, si, lane / 2, True) if i >= first and si > cam - 12.0 else None
            for i, (si, cam) in enumerate(zip(s, arcs))]


def crossing_car(rng: np.random.Generator, curve: Curve, crossing: Crossing, middle: float, frames: int) -> list:
    """Drives along the crossing street, through the crossing in the middle of the camera's stop (so it is
    well clear when the camera pulls away)."""
    point, _, left = curve.at(crossing.s)
    direction = left * rng.choice([-1.0, 1.0])
    right_lane = np.array([direction[1], -direction[0]]) * crossing.lane / 2
    along = rng.uniform(7.0, 10.0) * (np.arange(frames) - middle)
    return [car_pose(point + direction * u + right_lane, direction) if abs(u) < 38.0 else None for u in along]


def add_mover(p: ob.Placer) -> tuple[slice, slice]:
    """A street car at the origin, after every static part; returns its vertex and triangle rows."""
    v0, t0 = p.mesh.size()
    ob.car(p, np.eye(3), np.zeros(3))
    v1, t1 = p.mesh.size()
    return slice(v0, v1), slice(t0, t1)


def mover_events(movers: dict[str, list], rows: list[tuple[slice, slice]], mesh: dict) -> list[dict]:
    events = []
    for (motion, path), (_, triangles) in zip(movers.items(), rows):
        present = [i for i, pose in enumerate(path) if pose is not None]
        if len(present) > 1:
            events.append({"kind": "moving_car", "frames": [present[0], present[-1]],
                           "motion": motion.rstrip("0123456789"), "instance": int(mesh["instance"][triangles.start])})
    return events


# ---------------------------------------------------------------------------------------------- light

def dusk(rng: np.random.Generator, day: Lighting) -> Lighting:
    """The day's light dimmed, a sun just above the horizon and thick haze: dark, low-contrast images."""
    dim = rng.uniform(0.35, 0.5)
    haze = np.array([0.32, 0.28, 0.27]) * rng.uniform(0.85, 1.15)
    elevation, azimuth = np.deg2rad(rng.uniform(3.0, 9.0)), rng.uniform(0.0, 2 * np.pi)
    sun = np.array([np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)])

    def sky(dirs: np.ndarray) -> np.ndarray:
        return mix(day.sky(dirs) * dim, haze, np.full(len(dirs), 0.5))

    return replace(day, ambient=day.ambient * dim, diffuse=day.diffuse * dim * 0.6, sun_direction=sun, sky=sky,
                   haze_distance=rng.uniform(50.0, 110.0), haze_colour=haze)
