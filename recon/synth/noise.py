"""Procedural texture helpers: tileable noise tables, integer hashes and tiling patterns (all vectorised).

Textures are functions of surface coordinates in metres, so every view of a point sees the same colour.
"""

from __future__ import annotations

import numpy as np

TABLE_SIZE = 256
_COS, _SIN = np.cos(0.5), np.sin(0.5)  # rotation of the second noise read (see NoiseBank.fbm)


def _spectral_noise(rng: np.random.Generator, size: int, exponent: float) -> np.ndarray:
    """Periodic noise with a 1/f^exponent spectrum, scaled to [0, 1]."""
    white = rng.standard_normal((size, size))
    freq = np.fft.fftfreq(size)
    radius = np.sqrt(freq[:, None] ** 2 + freq[None, :] ** 2)
    radius[0, 0] = 1.0
    field = np.real(np.fft.ifft2(np.fft.fft2(white) / radius ** exponent))
    field -= field.min()
    return field / field.max()


class NoiseBank:
    """A few tileable noise tables sampled with bilinear interpolation at any scale."""

    SMOOTH, GRAIN, CLOUDY = 0, 1, 2

    def __init__(self, seed: int):
        rng = np.random.default_rng([seed, 7919])
        self.tables = [_spectral_noise(rng, TABLE_SIZE, e) for e in (1.4, 0.6, 1.0)]

    def sample(self, kind: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Noise in [0, 1] at table coordinates (u, v); one table cell = one unit."""
        table = self.tables[kind]
        fu, fv = np.floor(u), np.floor(v)
        au, av = u - fu, v - fv
        i0 = fu.astype(np.int64) % TABLE_SIZE
        j0 = fv.astype(np.int64) % TABLE_SIZE
        i1, j1 = (i0 + 1) % TABLE_SIZE, (j0 + 1) % TABLE_SIZE
        top = table[j0, i0] * (1 - au) + table[j0, i1] * au
        bottom = table[j1, i0] * (1 - au) + table[j1, i1] * au
        return top * (1 - av) + bottom * av

    def fbm(self, u, v, scale: float, kind: int = SMOOTH) -> np.ndarray:
        """Noise with features of about `1/scale` metres, centred on 0 (roughly -0.5..0.5).

        One table repeats every TABLE_SIZE cells (8 m for fine grain), and a road that repeats every 8 m
        lets SfM match frames 24 m apart as well as neighbours. So the table is read twice, the second
        time on a grid rotated by an irrational angle and shifted: the sum of two lattices at such an
        angle never repeats. Dividing by sqrt(2) keeps the contrast of a single read."""
        su, sv = u * scale * 8.0, v * scale * 8.0
        first = self.sample(kind, su, sv) - 0.5
        second = self.sample(kind, _COS * su - _SIN * sv + 97.3, _SIN * su + _COS * sv + 41.7) - 0.5
        return (first + second) * np.sqrt(0.5)


def hash01(i, j, salt: int = 0) -> np.ndarray:
    """A deterministic pseudo-random number in [0, 1) per integer cell (i, j)."""
    i = np.asarray(i, dtype=np.int64).astype(np.uint32)
    j = np.asarray(j, dtype=np.int64).astype(np.uint32)
    h = (i * np.uint32(0x8DA6B343)) ^ (j * np.uint32(0xD8163841)) ^ np.uint32((salt * 0xCB1AB31F) & 0xFFFFFFFF)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0x5BD1E995)
    h = h ^ (h >> np.uint32(15))
    return h.astype(np.float64) / 2.0 ** 32


def bricks(u, v, width: float, height: float, stagger: float = 0.5):
    """Running-bond tiling: (column, row, distance to the nearest joint in metres)."""
    row = np.floor(v / height)
    shifted = u + stagger * width * (row % 2)
    col = np.floor(shifted / width)
    du = shifted - col * width
    dv = v - row * height
    edge = np.minimum(np.minimum(du, width - du), np.minimum(dv, height - dv))
    return col, row, edge


def joint_line(edge, width: float, footprint) -> np.ndarray:
    """Darkness in [0, 1] of a joint line of `width` metres at distance `edge`, pre-filtered over the pixel
    footprint (metres): far away the line widens and fades to its average coverage instead of aliasing."""
    footprint = np.asarray(footprint)
    coverage = np.clip(width / np.maximum(footprint, width), 0.0, 1.0)
    return (1.0 - smoothstep(0.0, 1.0, edge / (width / 2 + footprint))) * coverage


def mix(a, b, t) -> np.ndarray:
    """Blend colours a and b (3-vectors or (N,3)) by t (N,) in [0, 1]."""
    t = np.clip(np.asarray(t, dtype=np.float64), 0.0, 1.0)[..., None]
    return np.asarray(a) * (1.0 - t) + np.asarray(b) * t


def smoothstep(lo: float, hi: float, x) -> np.ndarray:
    t = np.clip((np.asarray(x) - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def pick(palette, t) -> np.ndarray:
    """A palette entry chosen by t in [0, 1): (N,) -> (N, 3)."""
    palette = np.asarray(palette, dtype=np.float64)
    idx = np.minimum((np.asarray(t) * len(palette)).astype(np.int64), len(palette) - 1)
    return palette[idx]
