"""Material shaders: albedo from surface coordinates (uv in metres), world position, normal and object tint.

Each class gets its own texture family, but families overlap in colour on purpose (grey asphalt and grey
paving, green grass and green leaves, beige plaster and beige sidewalk) so colour alone does not segment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from recon.synth.noise import NoiseBank, bricks, hash01, joint_line, mix, pick, smoothstep


@dataclass
class Surface:
    """The shading inputs of N surface points of one material."""
    uv: np.ndarray    # (N, 2) metres
    pos: np.ndarray   # (N, 3) world
    tint: np.ndarray  # (N, 3) per-object random numbers in [0, 1)
    noise: NoiseBank
    footprint: np.ndarray | float = 0.0  # (N,) metres covered by one pixel there, for pre-filtering
    # (N, 2) per-object shift of the texture coordinates (metres): two facades whose uv both start at
    # their corner still get different noise and tile patterns, as real facades do
    offset: np.ndarray | float = 0.0

    @property
    def tex_uv(self) -> np.ndarray:
        """uv shifted by the object's offset: for noise and random tiles, not for shapes tied to geometry
        (window frames, floor bands, seams), which use `uv`."""
        return self.uv + self.offset

    def fbm(self, scale, kind=NoiseBank.SMOOTH, du: float = 0.0):
        tex = self.tex_uv
        return self.noise.fbm(tex[:, 0] + du, tex[:, 1], scale, kind)


@dataclass(frozen=True)
class Material:
    name: str
    shader: Callable[[Surface], np.ndarray]
    reflectivity: float  # LiDAR intensity before the incidence term


MATERIALS: list[Material] = []
MATERIAL_ID: dict[str, int] = {}


def material(name: str, reflectivity: float):
    def register(fn):
        MATERIAL_ID[name] = len(MATERIALS)
        MATERIALS.append(Material(name, fn, reflectivity))
        return fn
    return register


def _grain(s: Surface, scale: float, amount: float) -> np.ndarray:
    return 1.0 + amount * 2.0 * s.fbm(scale, NoiseBank.GRAIN)


# ---------------------------------------------------------------- street


@material("asphalt", 0.15)
def asphalt(s: Surface):
    u, v = s.tex_uv[:, 0], s.tex_uv[:, 1]
    base = 0.36 + 0.1 * s.tint[:, 0]
    patches = 0.12 * s.fbm(0.4) + 0.10 * s.fbm(3.0)
    grain = 0.30 * s.fbm(4.0, NoiseBank.GRAIN) + 0.25 * s.fbm(1.2, NoiseBank.GRAIN, du=13.0)
    cell_u, cell_v = np.floor(u / 2.5), np.floor(v / 1.7)
    repair = hash01(cell_u, cell_v, 41) < 0.12
    stone_u, stone_v, _ = bricks(u, v, 0.04, 0.03, 0.5)
    stones = 0.18 * (hash01(stone_u, stone_v, 47) - 0.5)
    grey = base + patches + grain + stones - 0.07 * repair
    crack = joint_line(np.abs(s.noise.fbm(u, v * 0.7, 0.6, NoiseBank.SMOOTH)), 0.012, s.footprint)
    grey = grey * (1.0 - 0.5 * crack * (hash01(cell_u, cell_v, 43) < 0.5))
    return grey[:, None] * np.array([1.0, 1.0, 1.04])


@material("paint", 0.7)
def paint(s: Surface):
    wear = smoothstep(-0.2, 0.15, s.fbm(6.0, NoiseBank.GRAIN))
    return mix([0.88, 0.88, 0.84], [0.42, 0.42, 0.42], wear * 0.7)


@material("paving", 0.25)
def paving(s: Surface):
    size = 0.3 + 0.25 * s.tint[:, 0]
    col, row, edge = bricks(s.tex_uv[:, 0], s.tex_uv[:, 1], size, size * (0.5 + s.tint[:, 1]), 0.5)
    tile = hash01(col, row, 3)
    warm = np.array([0.52, 0.47, 0.42]) * (0.75 + 0.3 * s.tint[:, 2:3])
    grey = np.array([0.46, 0.46, 0.46])
    colour = mix(grey, warm, tile) * (0.85 + 0.3 * hash01(col, row, 9))[:, None]
    colour *= _grain(s, 6.0, 0.12)[:, None]
    joint = 1.0 - 0.55 * joint_line(edge, 0.012, s.footprint)
    return colour * joint[:, None] + 0.08 * s.fbm(0.8)[:, None]


@material("concrete", 0.3)
def concrete(s: Surface):
    _, _, edge = bricks(s.uv[:, 0], s.uv[:, 1], 1.0, 10.0, 0.0)
    grey = 0.55 + 0.10 * s.fbm(1.0) + 0.12 * s.fbm(5.0, NoiseBank.GRAIN)
    grey *= 1.0 - 0.4 * joint_line(edge, 0.012, s.footprint)
    return grey[:, None] * np.array([1.0, 0.98, 0.95])


@material("grass", 0.35)
def grass(s: Surface):
    dry = smoothstep(-0.15, 0.25, s.fbm(0.6) + 0.3 * (s.tint[:, 0] - 0.5))
    colour = mix([0.20, 0.36, 0.12], [0.46, 0.42, 0.26], dry)
    blades = 1.0 + 0.6 * s.fbm(5.0, NoiseBank.GRAIN) + 0.3 * s.fbm(5.0)
    return colour * blades[:, None]


FACADE_COLOURS = [[0.78, 0.72, 0.60], [0.70, 0.68, 0.64], [0.80, 0.62, 0.50], [0.62, 0.64, 0.66],
                  [0.85, 0.80, 0.70], [0.58, 0.50, 0.44], [0.72, 0.74, 0.70]]


@material("plaster", 0.45)
def plaster(s: Surface):
    colour = pick(FACADE_COLOURS, s.tint[:, 0])
    floor_h = 3.0 + 0.4 * s.tint[:, 1]
    in_floor = np.mod(s.uv[:, 1], floor_h)
    band = (in_floor < 0.25).astype(float) * 0.15
    dirt = 0.12 * s.fbm(0.5) + 0.08 * s.fbm(4.0) + 0.10 * s.fbm(6.0, NoiseBank.GRAIN)
    return colour * (1.0 + dirt - band)[:, None]


@material("brick", 0.4)
def brick(s: Surface):
    col, row, edge = bricks(s.tex_uv[:, 0], s.tex_uv[:, 1], 0.25, 0.08, 0.5)
    hue = hash01(col, row, 11)
    base = mix([0.55, 0.25, 0.17], [0.68, 0.45, 0.32], 0.6 * s.tint[:, 0] + 0.4 * hue)
    base *= (0.8 + 0.35 * hash01(col, row, 17))[:, None]
    mortar = np.array([0.70, 0.68, 0.64])
    colour = mix(base, mortar, joint_line(edge, 0.014, s.footprint))
    return colour * _grain(s, 8.0, 0.10)[:, None]


@material("window", 0.2)
def window(s: Surface):
    u, v = s.uv[:, 0], s.uv[:, 1]
    frame_w = 0.07
    cross_u = np.abs(np.mod(u, 0.6) - 0.3) > 0.3 - frame_w / 2
    cross_v = np.abs(np.mod(v + 0.25, 0.9) - 0.45) > 0.45 - frame_w / 2
    sky = 0.25 + 0.25 * smoothstep(0.0, 1.8, v) + 0.15 * s.fbm(0.7, NoiseBank.CLOUDY)
    glass = mix([0.10, 0.13, 0.17], [0.45, 0.55, 0.65], sky)
    curtain = hash01(np.floor(s.pos[:, 0] * 0.3), np.floor(s.pos[:, 1] * 0.3), 5) < 0.3
    glass[curtain] = mix(glass[curtain], [0.75, 0.70, 0.60], 0.6)
    frame = pick([[0.92, 0.92, 0.90], [0.35, 0.22, 0.12], [0.20, 0.20, 0.22]], s.tint[:, 2])
    on_frame = cross_u | cross_v | (u < frame_w) | (v < frame_w)
    return np.where(on_frame[:, None], frame, glass)


@material("door", 0.3)
def door(s: Surface):
    u, v = s.uv[:, 0], s.uv[:, 1]
    wood = pick([[0.38, 0.22, 0.12], [0.25, 0.28, 0.32], [0.55, 0.40, 0.25], [0.15, 0.25, 0.18]], s.tint[:, 0])
    grain = 1.0 + 0.25 * s.noise.fbm(s.tex_uv[:, 0] * 0.2, s.tex_uv[:, 1] * 3.0, 10.0, NoiseBank.GRAIN)
    panel = (np.abs(np.mod(u, 0.5) - 0.25) < 0.17) & (np.abs(np.mod(v, 0.7) - 0.35) < 0.25)
    return wood * (grain * np.where(panel, 0.85, 1.0))[:, None]


@material("roof", 0.2)
def roof(s: Surface):
    return (0.25 + 0.1 * s.fbm(2.0) + 0.1 * s.fbm(20.0, NoiseBank.GRAIN))[:, None] * np.ones(3)


@material("bark", 0.3)
def bark(s: Surface):
    streak = s.noise.fbm(s.tex_uv[:, 0] * 4.0, s.tex_uv[:, 1] * 0.5, 6.0, NoiseBank.GRAIN)
    colour = mix([0.22, 0.16, 0.10], [0.45, 0.38, 0.28], 0.5 + 1.2 * streak + 0.3 * (s.tint[:, 0] - 0.5))
    return colour


@material("leaves", 0.5)
def leaves(s: Surface):
    clumps = s.fbm(2.5) + 0.9 * s.fbm(2.0, NoiseBank.GRAIN)
    hue = s.tint[:, 0]
    dark = mix([0.07, 0.16, 0.05], [0.14, 0.17, 0.06], hue)
    light = mix([0.30, 0.46, 0.15], [0.55, 0.48, 0.20], hue * hue)
    colour = mix(dark, light, 0.5 + 1.6 * clumps)
    autumn = smoothstep(0.15, 0.35, s.fbm(0.8, du=17.0)) * s.tint[:, 1]
    return mix(colour, [0.48, 0.30, 0.12], autumn * 0.7)


CAR_COLOURS = [[0.85, 0.85, 0.85], [0.08, 0.08, 0.09], [0.55, 0.56, 0.58], [0.60, 0.08, 0.07],
               [0.10, 0.18, 0.45], [0.15, 0.28, 0.18], [0.35, 0.35, 0.37], [0.70, 0.62, 0.45]]


@material("car_paint", 0.55)
def car_paint(s: Surface):
    colour = pick(CAR_COLOURS, s.tint[:, 0])
    u, v = s.uv[:, 0], s.uv[:, 1]
    seam = (np.abs(np.mod(u + 0.3, 1.15) - 0.575) > 0.565) | (np.abs(v - 0.45) < 0.012)
    bumper = v < 0.16
    colour = np.where(bumper[:, None], [0.12, 0.12, 0.13], colour)
    colour = colour * np.where(seam, 0.45, 1.0)[:, None]
    return colour * (1.0 + 0.05 * s.fbm(3.0) + 0.04 * s.fbm(5.0, NoiseBank.GRAIN))[:, None]


@material("car_glass", 0.1)
def car_glass(s: Surface):
    u, v = s.uv[:, 0], s.uv[:, 1]
    pillar = (np.abs(np.mod(u, 1.0) - 0.5) > 0.44) | (v < 0.06) | (v > 0.5)
    glass = mix([0.06, 0.07, 0.09], [0.35, 0.40, 0.48], 0.35 + 0.6 * s.fbm(0.9, NoiseBank.CLOUDY))
    return np.where(pillar[:, None], pick(CAR_COLOURS, s.tint[:, 0]), glass)


WHEEL_RADIUS = 0.33


@material("tyre", 0.1)
def tyre(s: Surface):
    return np.array([0.07, 0.07, 0.08]) * _grain(s, 8.0, 0.3)[:, None]


@material("hub", 0.3)
def hub(s: Surface):
    radius = np.linalg.norm(s.uv - WHEEL_RADIUS, axis=1)
    spokes = np.abs(np.sin(5.0 * np.arctan2(s.uv[:, 1] - WHEEL_RADIUS, s.uv[:, 0] - WHEEL_RADIUS))) > 0.5
    rim = (radius < 0.2) & (spokes | (radius < 0.06) | (radius > 0.17))
    colour = np.where(rim[:, None], [0.6, 0.6, 0.62], [0.07, 0.07, 0.08])
    return colour * _grain(s, 8.0, 0.2)[:, None]


@material("metal", 0.6)
def metal(s: Surface):
    colour = pick([[0.50, 0.52, 0.54], [0.20, 0.24, 0.22], [0.12, 0.12, 0.13], [0.62, 0.62, 0.60]], s.tint[:, 2])
    streak = s.noise.fbm(s.tex_uv[:, 0] * 8.0, s.tex_uv[:, 1] * 0.5, 4.0, NoiseBank.GRAIN)
    return colour * (1.0 + 0.3 * streak + 0.15 * s.fbm(1.0))[:, None]


@material("sign_face", 0.95)
def sign_face(s: Surface):
    u, v = s.uv[:, 0] - 0.3, s.uv[:, 1] - 0.3
    r = np.sqrt(u * u + v * v)
    kind = np.floor(s.tint[:, 1] * 4)
    white, red, blue, yellow, black = ([0.92, 0.92, 0.9], [0.75, 0.08, 0.07], [0.06, 0.2, 0.6],
                                       [0.95, 0.75, 0.1], [0.05, 0.05, 0.05])
    ring = np.where((r > 0.21)[:, None], red, white)
    ring = np.where(((r < 0.12) & (np.abs(u) < 0.1) & (np.abs(v) < 0.04))[:, None], black, ring)
    arrow = np.where(((np.abs(u) < 0.04) | ((v > 0.02) & (np.abs(u) < 0.13 - (v - 0.02))))[:, None], white, blue)
    diamond = np.where(((np.abs(u) + np.abs(v)) < 0.2)[:, None], yellow, white)
    diamond = np.where((np.abs(np.abs(u) + np.abs(v) - 0.2) < 0.025)[:, None], black, diamond)
    board = np.where(((np.abs(u) > 0.25) | (np.abs(v) > 0.25))[:, None], blue, white)
    stripes = (np.abs(np.mod(v, 0.12) - 0.06) < 0.02) & (np.abs(u) < 0.18) & (s.fbm(3.0, NoiseBank.GRAIN) > 0)
    board = np.where(stripes[:, None], black, board)
    out = np.select([kind[:, None] == k for k in range(4)], [ring, arrow, diamond, board])
    return out * _grain(s, 8.0, 0.05)[:, None]


CLOTHES = [[0.10, 0.12, 0.20], [0.55, 0.10, 0.10], [0.85, 0.85, 0.82], [0.25, 0.35, 0.20], [0.45, 0.40, 0.35],
           [0.15, 0.15, 0.15], [0.70, 0.55, 0.20], [0.30, 0.45, 0.65], [0.50, 0.30, 0.45]]


@material("cloth", 0.4)
def cloth(s: Surface):
    colour = pick(CLOTHES, s.tint[:, 0])
    weave = 1.0 + 0.12 * s.fbm(10.0, NoiseBank.GRAIN) + 0.15 * s.fbm(3.0)
    return colour * weave[:, None]


@material("skin", 0.4)
def skin(s: Surface):
    tone = mix([0.95, 0.76, 0.62], [0.38, 0.24, 0.16], s.tint[:, 1])
    hair = s.uv[:, 1] > 0.17 + 0.05 * s.tint[:, 2]
    return np.where(hair[:, None], pick([[0.1, 0.07, 0.05], [0.45, 0.32, 0.18], [0.6, 0.6, 0.6]], s.tint[:, 2]),
                    tone)


# ---------------------------------------------------------------- room


@material("wood_floor", 0.35)
def wood_floor(s: Surface):
    col, row, edge = bricks(s.uv[:, 1], s.uv[:, 0], 1.4, 0.16, 0.37)
    plank = hash01(col, row, 21)
    base = mix([0.45, 0.30, 0.17], [0.70, 0.52, 0.33], 0.6 * s.tint[:, 0] + 0.4 * plank)
    grain = s.noise.fbm(s.tex_uv[:, 0] * 1.0, s.tex_uv[:, 1] * 0.08, 12.0, NoiseBank.GRAIN)
    colour = base * (1.0 + 0.35 * grain + 0.1 * s.fbm(2.0))[:, None]
    return colour * (1.0 - 0.6 * joint_line(edge, 0.006, s.footprint))[:, None]


@material("rug", 0.3)
def rug(s: Surface):
    u, v = s.uv[:, 0], s.uv[:, 1]
    a = pick([[0.55, 0.15, 0.12], [0.15, 0.25, 0.45], [0.45, 0.40, 0.25]], s.tint[:, 0])
    b = pick([[0.85, 0.78, 0.60], [0.20, 0.15, 0.12], [0.70, 0.55, 0.40]], s.tint[:, 1])
    motif = (np.sin(u * 18.0) * np.sin(v * 18.0) + 0.5 * s.fbm(4.0)) > 0.2
    border = (np.abs(np.mod(u + v, 0.3) - 0.15) < 0.05)
    colour = np.where(motif[:, None] | border[:, None], a, b)
    return colour * (1.0 + 0.25 * s.fbm(15.0, NoiseBank.GRAIN))[:, None]


WALLPAPERS = [[0.80, 0.76, 0.66], [0.66, 0.74, 0.70], [0.78, 0.68, 0.62], [0.70, 0.72, 0.80], [0.86, 0.84, 0.80]]


@material("wallpaper", 0.5)
def wallpaper(s: Surface):
    u, v = s.uv[:, 0], s.uv[:, 1]
    base = pick(WALLPAPERS, s.tint[:, 0])
    period = 0.12 + 0.12 * s.tint[:, 1]
    stripe = np.abs(np.mod(u, period) / period - 0.5) < 0.18
    col, row, _ = bricks(u, v, period, period * 1.3, 0.5)
    cu = np.mod(u + 0.5 * period * (row % 2), period) / period - 0.5
    cv = np.mod(v, period * 1.3) / (period * 1.3) - 0.5
    motif = (cu * cu + cv * cv) < 0.04 + 0.03 * hash01(col, row, 4)
    pattern = np.where(s.tint[:, 2] < 0.5, stripe, motif)
    colour = base * np.where(pattern, 0.78, 1.0)[:, None]
    colour = colour * (1.0 + 0.08 * s.fbm(1.0) + 0.06 * s.fbm(10.0, NoiseBank.GRAIN))[:, None]
    skirting = v < 0.1
    return np.where(skirting[:, None], [0.90, 0.89, 0.86], colour)


@material("ceiling_tiles", 0.5)
def ceiling_tiles(s: Surface):
    _, _, edge = bricks(s.uv[:, 0], s.uv[:, 1], 0.6, 0.6, 0.0)
    holes = s.fbm(15.0, NoiseBank.GRAIN) > 0.12
    grey = 0.86 - 0.12 * holes + 0.05 * s.fbm(1.0)
    grey = grey * (1.0 - 0.35 * joint_line(edge, 0.02, s.footprint))
    return grey[:, None] * np.array([1.0, 0.99, 0.96])


@material("wood", 0.35)
def wood(s: Surface):
    base = pick([[0.55, 0.36, 0.20], [0.32, 0.20, 0.12], [0.75, 0.62, 0.45], [0.85, 0.84, 0.80]], s.tint[:, 0])
    rings = s.noise.fbm(s.tex_uv[:, 0] * 0.15, s.tex_uv[:, 1] * 1.0, 14.0, NoiseBank.GRAIN)
    return base * (1.0 + 0.4 * rings + 0.1 * s.fbm(3.0))[:, None]


@material("fabric", 0.3)
def fabric(s: Surface):
    base = pick([[0.45, 0.20, 0.18], [0.25, 0.32, 0.45], [0.55, 0.52, 0.45], [0.30, 0.38, 0.25],
                 [0.62, 0.48, 0.30]], s.tint[:, 0])
    u, v = s.uv[:, 0], s.uv[:, 1]
    check = (np.mod(np.floor(u / 0.1) + np.floor(v / 0.1), 2) == 0) & (s.tint[:, 1] < 0.4)
    weave = 1.0 + 0.2 * s.fbm(15.0, NoiseBank.GRAIN) + 0.15 * s.fbm(2.0)
    return base * (weave * np.where(check, 0.8, 1.0))[:, None]


@material("outside", 0.1)
def outside(s: Surface):
    u, v = s.uv[:, 0], s.uv[:, 1]
    frame = (u < 0.06) | (v < 0.06) | (np.abs(np.mod(u, 0.7) - 0.35) > 0.32) | (np.abs(v - 0.8) < 0.03)
    skyline = 0.6 + 0.3 * s.fbm(0.8, NoiseBank.CLOUDY)
    view = np.where((v > skyline)[:, None], mix([0.75, 0.85, 0.95], [0.95, 0.95, 0.97], s.fbm(2.0) + 0.5),
                    mix([0.20, 0.35, 0.15], [0.45, 0.50, 0.30], 0.5 + 1.5 * s.fbm(8.0, NoiseBank.GRAIN)))
    return np.where(frame[:, None], [0.93, 0.93, 0.91], view)


@material("painting", 0.3)
def painting(s: Surface):
    u, v = s.uv[:, 0], s.uv[:, 1]
    palette = np.array([[0.8, 0.3, 0.1], [0.1, 0.3, 0.6], [0.9, 0.8, 0.3], [0.2, 0.5, 0.3], [0.9, 0.9, 0.85]])
    t = np.mod(0.5 + 2.0 * s.noise.fbm(u + 10 * s.tint[:, 0], v, 2.5, NoiseBank.CLOUDY) + s.tint[:, 1], 1.0)
    colour = pick(palette, t) * (1.0 + 0.2 * s.fbm(15.0, NoiseBank.GRAIN))[:, None]
    return colour


@material("frame", 0.3)
def frame(s: Surface):
    return pick([[0.75, 0.6, 0.2], [0.1, 0.08, 0.06], [0.9, 0.9, 0.88]], s.tint[:, 2]) * \
        (1.0 + 0.2 * s.fbm(20.0, NoiseBank.GRAIN))[:, None]


@material("books", 0.3)
def books(s: Surface):
    spine = np.floor(s.uv[:, 0] / 0.035)
    colour = pick([[0.6, 0.1, 0.1], [0.1, 0.2, 0.5], [0.85, 0.8, 0.7], [0.2, 0.4, 0.2], [0.1, 0.1, 0.1],
                   [0.8, 0.6, 0.2]], hash01(spine, np.floor(s.tint[:, 2] * 97), 32))
    label = np.abs(s.uv[:, 1] - 0.1) < 0.015
    return np.where(label[:, None], [0.9, 0.85, 0.6], colour)


@material("ceramic", 0.4)
def ceramic(s: Surface):
    base = pick([[0.85, 0.85, 0.80], [0.2, 0.35, 0.55], [0.65, 0.25, 0.15], [0.2, 0.2, 0.2]], s.tint[:, 0])
    band = np.abs(np.mod(s.uv[:, 1], 0.08) - 0.04) < 0.01
    return base * np.where(band, 0.6, 1.0)[:, None]


@material("cardboard", 0.3)
def cardboard(s: Surface):
    tape = np.abs(np.mod(s.uv[:, 0], 0.4) - 0.2) < 0.025
    base = np.array([0.62, 0.47, 0.30]) * (1.0 + 0.2 * s.fbm(10.0, NoiseBank.GRAIN))[:, None]
    return np.where(tape[:, None], [0.70, 0.62, 0.45], base)


def shade_albedo(material_ids: np.ndarray, surface: Surface) -> np.ndarray:
    """Albedo (N, 3) in [0, 1] for points of mixed materials."""
    out = np.zeros((len(material_ids), 3))
    order = np.argsort(material_ids, kind="stable")
    sorted_ids = material_ids[order]
    bounds = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1], True])
    for start, end in zip(bounds[:-1], bounds[1:]):
        sel = order[start:end]
        footprint = np.broadcast_to(surface.footprint, material_ids.shape)[sel]
        offset = np.broadcast_to(surface.offset, surface.uv.shape)[sel]
        sub = Surface(surface.uv[sel], surface.pos[sel], surface.tint[sel], surface.noise, footprint, offset)
        out[sel] = MATERIALS[sorted_ids[start]].shader(sub)
    tint_gain = 0.92 + 0.16 * surface.tint[:, 1:2]
    return np.clip(out * tint_gain, 0.0, 1.0)


def reflectivity_table() -> np.ndarray:
    return np.array([m.reflectivity for m in MATERIALS])
