"""Triangle soup with per-triangle semantics, built from simple primitives in numpy.

Every vertex carries a normal (for smooth shading) and a 2D texture coordinate in metres (so textures
have a physical scale and are identical from every viewpoint). Every triangle carries a class id, an
instance id, a material id and an object index (per-object colour tint).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recon.errors import InputError


@dataclass
class Shape:
    """Local-frame geometry: vertices (V,3), normals (V,3), uv (V,2) in metres, triangles (T,3)."""
    vertices: np.ndarray
    normals: np.ndarray
    uv: np.ndarray
    triangles: np.ndarray

    def transformed(self, rotation: np.ndarray, translation) -> "Shape":
        rotation = np.asarray(rotation, dtype=np.float64)
        return Shape(rotate(self.vertices, rotation) + np.asarray(translation, dtype=np.float64),
                     rotate(self.normals, rotation), self.uv, self.triangles)


def rotate(vectors: np.ndarray, R: np.ndarray) -> np.ndarray:
    """vectors @ R.T without BLAS (BLAS threads crawl on shared cores,
    and elementwise maths gives the same bits whatever the thread count)."""
    return vectors[:, 0:1] * R[:, 0] + vectors[:, 1:2] * R[:, 1] + vectors[:, 2:3] * R[:, 2]


def rot_z(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def rot_x(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _quad_grid_triangles(rows: int, cols: int) -> np.ndarray:
    """Triangles of a (rows x cols) vertex grid, counter-clockwise seen from the grid's front."""
    r, c = np.meshgrid(np.arange(rows - 1), np.arange(cols - 1), indexing="ij")
    a = (r * cols + c).ravel()
    b, d = a + 1, a + cols
    e = d + 1
    return np.concatenate([np.stack([a, b, e], 1), np.stack([a, e, d], 1)]).astype(np.int64)


def box(size, origin_at_bottom: bool = True) -> Shape:
    """Axis-aligned box centred on x, y; bottom at z=0 (or centred). uv per face, in metres from a corner."""
    sx, sy, sz = (float(v) for v in size)
    z0 = 0.0 if origin_at_bottom else -sz / 2
    lo = np.array([-sx / 2, -sy / 2, z0])
    hi = lo + [sx, sy, sz]
    verts, norms, uvs, tris = [], [], [], []
    for axis in range(3):
        a1, a2 = [a for a in range(3) if a != axis]
        for sign in (-1.0, 1.0):
            corners = np.zeros((4, 3))
            corners[:, axis] = hi[axis] if sign > 0 else lo[axis]
            grid = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], dtype=float)
            corners[:, a1] = lo[a1] + grid[:, 0] * (hi[a1] - lo[a1])
            corners[:, a2] = lo[a2] + grid[:, 1] * (hi[a2] - lo[a2])
            base = len(verts) * 4
            n = np.zeros(3)
            n[axis] = sign
            verts.append(corners)
            norms.append(np.tile(n, (4, 1)))
            uvs.append(corners[:, [a1, a2]] - lo[[a1, a2]])
            tris.append(np.array([[0, 1, 2], [0, 2, 3]]) + base)
    return Shape(np.concatenate(verts), np.concatenate(norms), np.concatenate(uvs), np.concatenate(tris))


def cylinder(radius: float, height: float, segments: int = 16, caps: bool = True, top_radius=None) -> Shape:
    """Vertical (possibly tapered) cylinder standing on z=0; side uv = (arc length, height)."""
    top_radius = radius if top_radius is None else top_radius
    ang = np.linspace(0.0, 2 * np.pi, segments + 1)
    ring = np.stack([np.cos(ang), np.sin(ang), np.zeros_like(ang)], 1)
    bottom = ring * radius
    top = ring * top_radius + [0.0, 0.0, height]
    verts = np.concatenate([bottom, top])
    slope = (radius - top_radius) / max(height, 1e-6)
    side_n = ring + [0.0, 0.0, slope]
    side_n /= np.linalg.norm(side_n, axis=1, keepdims=True)
    norms = np.concatenate([side_n, side_n])
    uv = np.concatenate([np.stack([ang * radius, np.zeros_like(ang)], 1),
                         np.stack([ang * radius, np.full_like(ang, height)], 1)])
    tris = _quad_grid_triangles(2, segments + 1)
    shape = Shape(verts, norms, uv, tris)
    if caps:
        shape = merge([shape, disk(radius, 0.0, -1.0, segments), disk(top_radius, height, 1.0, segments)])
    return shape


def disk(radius: float, z: float, facing: float, segments: int) -> Shape:
    ang = np.linspace(0.0, 2 * np.pi, segments, endpoint=False)
    rim = np.stack([np.cos(ang) * radius, np.sin(ang) * radius, np.full_like(ang, z)], 1)
    verts = np.concatenate([[[0.0, 0.0, z]], rim])
    idx = np.arange(segments)
    tris = np.stack([np.zeros(segments, int), 1 + idx, 1 + (idx + 1) % segments], 1)
    if facing < 0:
        tris = tris[:, [0, 2, 1]]
    norms = np.tile([0.0, 0.0, facing], (len(verts), 1))
    return Shape(verts, norms, verts[:, :2] + radius, tris)


def sphere(radius, rings: int = 10, segments: int = 16, bumps=None) -> Shape:
    """UV sphere centred at the origin; radius may be a 3-vector (ellipsoid); bumps(dirs) -> radial scale."""
    radius = np.broadcast_to(np.asarray(radius, dtype=float), (3,))
    lat = np.linspace(-np.pi / 2, np.pi / 2, rings + 1)
    lon = np.linspace(0.0, 2 * np.pi, segments + 1)
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    dirs = np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], -1).reshape(-1, 3)
    scale = np.ones(len(dirs)) if bumps is None else bumps(dirs)
    verts = dirs * radius * scale[:, None]
    norms = dirs / radius
    norms /= np.linalg.norm(norms, axis=1, keepdims=True)
    mean_r = float(radius.mean())
    uv = np.stack([lo.ravel() * mean_r, (la.ravel() + np.pi / 2) * mean_r], 1)
    return Shape(verts, norms, uv, _quad_grid_triangles(rings + 1, segments + 1))


def quad(width: float, height: float) -> Shape:
    """Rectangle in the x-z plane facing -y (towards a viewer at negative y), bottom edge on z=0."""
    verts = np.array([[-width / 2, 0, 0], [width / 2, 0, 0], [width / 2, 0, height], [-width / 2, 0, height]])
    uv = verts[:, [0, 2]] + [width / 2, 0.0]
    return Shape(verts, np.tile([0.0, -1.0, 0.0], (4, 1)), uv, np.array([[0, 1, 2], [0, 2, 3]]))


def ribbon(points: np.ndarray, lefts: np.ndarray, arc: np.ndarray, offsets, heights, normal) -> Shape:
    """A strip along a ground curve: cross-section vertices at lateral `offsets` and `heights`.

    points/lefts (K,2): curve points and unit left vectors; arc (K,): arc length (texture u).
    The texture v is the lateral offset for flat strips and the height for vertical ones.
    """
    offsets = np.asarray(offsets, dtype=float)
    heights = np.asarray(heights, dtype=float)
    k, m = len(points), len(offsets)
    xy = points[:, None, :] + lefts[:, None, :] * offsets[None, :, None]
    verts = np.concatenate([xy, np.broadcast_to(heights, (k, m))[..., None]], -1).reshape(-1, 3)
    vertical = np.ptp(heights) > np.ptp(offsets)
    v = np.broadcast_to(heights if vertical else offsets, (k, m))
    uv = np.stack([np.broadcast_to(arc[:, None], (k, m)), v], -1).reshape(-1, 2)
    if normal == "up":
        norms = np.tile([0.0, 0.0, 1.0], (k * m, 1))
    else:  # "left" or "right": horizontal normal across the curve
        sign = 1.0 if normal == "left" else -1.0
        n = np.concatenate([lefts * sign, np.zeros((k, 1))], 1)
        norms = np.repeat(n, m, axis=0)
    return Shape(verts, norms, uv, _quad_grid_triangles(k, m))


def merge(shapes: list[Shape]) -> Shape:
    offsets = np.cumsum([0] + [len(s.vertices) for s in shapes])
    return Shape(np.concatenate([s.vertices for s in shapes]), np.concatenate([s.normals for s in shapes]),
                 np.concatenate([s.uv for s in shapes]),
                 np.concatenate([s.triangles + o for s, o in zip(shapes, offsets)]))


class SceneMesh:
    """Accumulates shapes with semantics; `finish()` returns flat numpy arrays for the renderer."""

    def __init__(self):
        self._parts: list[tuple[Shape, int, int, int, int]] = []
        self.tints: list[np.ndarray] = []
        self._next_instance = 1

    def new_instance(self) -> int:
        if self._next_instance > 0xFFFF:
            raise InputError("synth: more than 65535 objects (instance ids are uint16); "
                             "render fewer frames or a smaller --step")
        self._next_instance += 1
        return self._next_instance - 1

    def new_object(self, tint) -> int:
        """An object index; `tint` (3 values in [0,1)) lets shaders vary colour per object."""
        self.tints.append(np.asarray(tint, dtype=np.float64))
        return len(self.tints) - 1

    def add(self, shape: Shape, cls: int, material: int, obj: int, instance: int = 0) -> None:
        self._parts.append((shape, cls, instance, material, obj))

    def part_count(self) -> int:
        return len(self._parts)

    def size(self) -> tuple[int, int]:
        """(vertices, triangles) added so far: where the next part's rows will start in `finish()`."""
        return (sum(len(p[0].vertices) for p in self._parts), sum(len(p[0].triangles) for p in self._parts))

    def repeat(self, first: int, last: int, rotation: np.ndarray, translation) -> None:
        """Add parts [first, last) once more, moved rigidly, with the same objects: the copy has the very same
        tint and texture offset, so it looks identical (a row of identical buildings)."""
        for shape, cls, instance, material, obj in self._parts[first:last]:
            self._parts.append((shape.transformed(rotation, translation), cls, instance, material, obj))

    def finish(self) -> dict[str, np.ndarray]:
        shapes = [p[0] for p in self._parts]
        merged = merge(shapes)
        counts = [len(s.triangles) for s in shapes]

        def per_triangle(i, dtype):
            return np.repeat(np.array([p[i] for p in self._parts], dtype=dtype), counts)

        return {"vertices": merged.vertices, "normals": merged.normals, "uv": merged.uv,
                "triangles": merged.triangles, "cls": per_triangle(1, np.uint8),
                "instance": per_triangle(2, np.uint16), "material": per_triangle(3, np.int32),
                "obj": per_triangle(4, np.int32), "tints": np.array(self.tints).reshape(-1, 3)}
