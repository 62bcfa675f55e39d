"""Ray-casting renderer: open3d RaycastingScene on the CPU, procedural albedo, Lambertian light + shadows."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import open3d as o3d

from recon.dataset import IGNORE_INDEX, ClassList
from recon.synth.materials import Surface, shade_albedo
from recon.synth.mesh import rotate
from recon.synth.noise import NoiseBank

SHADOW_OFFSET = 2e-3  # metres along the normal, so a shadow ray does not hit its own surface


@dataclass
class Lighting:
    ambient: float
    diffuse: float
    sun_direction: np.ndarray | None = None        # unit vector towards the sun (street)
    lamp_position: np.ndarray | None = None        # point light (room)
    lamp_range: float = 4.0                        # metres at which a lamp's light has halved
    sky: Callable[[np.ndarray], np.ndarray] | None = None  # unit directions (N,3) -> rgb (N,3)
    haze_distance: float | None = None
    haze_colour: np.ndarray = field(default_factory=lambda: np.array([0.75, 0.8, 0.85]))


@dataclass
class Mover:
    """Mesh rows of one rigid object that moves between frames (a driving car). It is built at the origin
    after every static part, and placed per frame by `Renderer.show_frame`."""
    vertices: slice    # its rows of mesh["vertices"] and mesh["normals"]
    triangles: slice   # its rows of mesh["triangles"] (and of the per-triangle semantics)
    world_from_local: list  # per frame: (4, 4) placement, or None where it is out of the scene


@dataclass
class SynthScene:
    """Everything a preset builds: geometry with semantics, light, the camera path."""
    classes: ClassList
    mesh: dict[str, np.ndarray]
    lighting: Lighting
    K: np.ndarray                  # (3, 3) for the requested image size
    poses: list[np.ndarray]        # cam_from_world (4, 4) per frame
    miss_class: int = IGNORE_INDEX  # class of rays that hit nothing (sky)
    noise_seed: int = 0
    movers: list[Mover] = field(default_factory=list)  # their triangles come after all static ones
    info: dict = field(default_factory=dict)  # what the preset adds to synth.json (a drive's events)


@dataclass
class Hits:
    t: np.ndarray        # (N,) ray parameter (inf on a miss)
    prim: np.ndarray     # (N,) int64 triangle index, -1 on a miss
    bary: np.ndarray     # (N, 2) barycentric (u, v): p = (1-u-v) a + u b + v c
    geo_normal: np.ndarray  # (N, 3) unit triangle normal (unoriented)

    def subset(self, mask: np.ndarray) -> "Hits":
        return Hits(self.t[mask], self.prim[mask], self.bary[mask], self.geo_normal[mask])


@dataclass
class FrameRender:
    rgb: np.ndarray       # (H, W, 3) uint8
    label: np.ndarray     # (H, W) uint8
    instance: np.ndarray  # (H, W) uint16
    depth: np.ndarray     # (H, W) float32 z in metres, 0 = none


class Renderer:
    def __init__(self, scene: SynthScene):
        self.scene = scene
        self.mesh = scene.mesh
        self.noise = NoiseBank(scene.noise_seed)
        self.texture_offsets = texture_offsets(len(self.mesh["tints"]), scene.noise_seed)
        self._ray_cache: dict = {}
        self.pixel_angle = 0.0  # radians per pixel of the current camera (texture pre-filtering)
        movers = scene.movers
        static_end = movers[0].triangles.start if movers else len(self.mesh["triangles"])
        self.raycaster = _raycaster(self.mesh["vertices"], self.mesh["triangles"][:static_end])
        self._rest_pose = [(self.mesh["vertices"][mv.vertices].copy(), self.mesh["normals"][mv.vertices].copy())
                           for mv in movers]
        self._moving = None           # RaycastingScene of the movers placed for the current frame
        self._moving_prims = None     # its triangle index -> mesh triangle index

    def show_frame(self, index: int) -> None:
        """Place the movers where they are at frame `index` (mesh rows and their own ray-caster)."""
        present = []
        for mover, (rest_v, rest_n) in zip(self.scene.movers, self._rest_pose):
            pose = mover.world_from_local[index]
            if pose is None:
                continue
            self.mesh["vertices"][mover.vertices] = rotate(rest_v, pose[:3, :3]) + pose[:3, 3]
            self.mesh["normals"][mover.vertices] = rotate(rest_n, pose[:3, :3])
            present.append(np.arange(mover.triangles.start, mover.triangles.stop))
        if not present:
            self._moving = self._moving_prims = None
            return
        self._moving_prims = np.concatenate(present)
        corners = self.mesh["triangles"][self._moving_prims]
        used, local = np.unique(corners, return_inverse=True)
        self._moving = _raycaster(self.mesh["vertices"][used], local.reshape(corners.shape))

    # ------------------------------------------------------------------ rays

    def cast(self, origins: np.ndarray, directions: np.ndarray) -> Hits:
        rays = o3d.core.Tensor(np.concatenate([origins, directions], axis=1).astype(np.float32))
        hits = _cast(self.raycaster, rays)
        if self._moving is None:
            return hits
        moving = _cast(self._moving, rays)
        moving.prim = np.where(moving.prim >= 0, self._moving_prims[np.maximum(moving.prim, 0)], -1)
        return _nearer(hits, moving)

    def occluded(self, origins: np.ndarray, directions: np.ndarray, t_far: float) -> np.ndarray:
        rays = o3d.core.Tensor(np.concatenate([origins, directions], axis=1).astype(np.float32))
        hit = self.raycaster.test_occlusions(rays, tnear=0.0, tfar=t_far).numpy().astype(bool)
        if self._moving is not None:
            hit |= self._moving.test_occlusions(rays, tnear=0.0, tfar=t_far).numpy().astype(bool)
        return hit

    def interpolate(self, attribute: str, prim: np.ndarray, bary: np.ndarray) -> np.ndarray:
        corners = self.mesh["triangles"][prim]
        values = self.mesh[attribute]
        w = np.stack([1.0 - bary[:, 0] - bary[:, 1], bary[:, 0], bary[:, 1]], axis=1)
        return np.einsum("nk,nkd->nd", w, values[corners])

    # ------------------------------------------------------------------ shading

    def shade(self, origins: np.ndarray, directions: np.ndarray, hits: Hits) -> np.ndarray:
        light = self.scene.lighting
        rgb = np.zeros((len(directions), 3))
        unit = directions / np.linalg.norm(directions, axis=1, keepdims=True)
        miss = hits.prim < 0
        if light.sky is not None and miss.any():
            rgb[miss] = light.sky(unit[miss])
        sel = ~miss
        if not sel.any():
            return rgb
        prim, bary, d = hits.prim[sel], hits.bary[sel], unit[sel]
        pos = origins[sel] + directions[sel] * hits.t[sel, None]
        normal = self.interpolate("normals", prim, bary)
        normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-9)
        facing = np.sign(np.sum(hits.geo_normal[sel] * d, axis=1))
        geo = hits.geo_normal[sel] * -np.where(facing == 0, 1.0, facing)[:, None]
        normal *= np.where(np.sum(normal * geo, axis=1) < 0, -1.0, 1.0)[:, None]
        dist = hits.t[sel] * np.linalg.norm(directions[sel], axis=1)
        slant = np.maximum(np.abs(np.sum(geo * d, axis=1)), 0.15)
        obj = self.mesh["obj"][prim]
        surface = Surface(self.interpolate("uv", prim, bary), pos, self.mesh["tints"][obj],
                          self.noise, dist * self.pixel_angle / slant, self.texture_offsets[obj])
        albedo = shade_albedo(self.mesh["material"][prim], surface)
        light_in = self.incoming_light(pos + geo * SHADOW_OFFSET, normal)
        colour = albedo * light_in[:, None]
        if light.haze_distance:
            colour = _mix(colour, light.haze_colour, 1.0 - np.exp(-dist / light.haze_distance))
        rgb[sel] = colour
        return rgb

    def incoming_light(self, points: np.ndarray, normal: np.ndarray) -> np.ndarray:
        light = self.scene.lighting
        hemisphere = 0.8 + 0.2 * normal[:, 2]  # more sky light on up-facing surfaces
        total = light.ambient * hemisphere
        if light.sun_direction is not None:
            sun = np.asarray(light.sun_direction, dtype=np.float64)
            cos = np.clip(np.einsum("nd,d->n", normal, sun), 0.0, None)
            lit = cos > 0
            visible = np.zeros(len(points), dtype=bool)
            visible[lit] = ~self.occluded(points[lit], np.broadcast_to(sun, (lit.sum(), 3)), np.inf)
            total = total + light.diffuse * cos * visible
        if light.lamp_position is not None:
            to_lamp = np.asarray(light.lamp_position) - points
            dist = np.linalg.norm(to_lamp, axis=1)
            cos = np.clip(np.sum(normal * to_lamp, axis=1) / np.maximum(dist, 1e-9), 0.0, None)
            lit = cos > 0
            visible = np.zeros(len(points), dtype=bool)
            visible[lit] = ~self.occluded(points[lit], to_lamp[lit], 0.999)
            falloff = 1.0 / (1.0 + (dist / light.lamp_range) ** 2)
            total = total + light.diffuse * cos * visible * falloff
        return total

    # ------------------------------------------------------------------ cameras

    def render_frame(self, K: np.ndarray, cam_from_world: np.ndarray, width: int, height: int,
                     supersample: int = 2) -> FrameRender:
        """Labels and depth from the pixel-centre ray; colour from the centre ray, averaged over
        supersample x supersample sub-pixel rays where the pixel touches a surface edge (anti-aliasing)."""
        world_from_cam = np.linalg.inv(cam_from_world)
        self.pixel_angle = 1.0 / K[0, 0]
        origins, dirs = self._camera_rays(K, world_from_cam, width, height, (0.5,))
        centre = self.cast(origins, dirs)
        label, instance, depth = self._semantics(centre)
        edge = _edge_pixels(self._surface_key(centre).reshape(height, width)).ravel()
        rgb = np.zeros((width * height, 3))
        rgb[~edge] = self.shade(origins[~edge], dirs[~edge], centre.subset(~edge))
        offsets = tuple((np.arange(supersample) + 0.5) / supersample)
        samples = supersample * supersample
        sub_origins, sub_dirs = self._camera_rays(K, world_from_cam, width, height, offsets,
                                                  np.repeat(edge, samples))
        edge_rgb = self.shade(sub_origins, sub_dirs, self.cast(sub_origins, sub_dirs))
        rgb[edge] = edge_rgb.reshape(-1, samples, 3).mean(axis=1)
        rgb8 = np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8).reshape(height, width, 3)
        shape = (height, width)
        return FrameRender(rgb8, label.reshape(shape), instance.reshape(shape), depth.reshape(shape))

    def _surface_key(self, hits: Hits) -> np.ndarray:
        """Same key = same object face (object index and rounded normal), -1 for a miss."""
        prim = np.where(hits.prim >= 0, hits.prim, 0)
        quantised = np.round(np.abs(hits.geo_normal) * 4.0).astype(np.int64)
        face = quantised[:, 0] * 81 + quantised[:, 1] * 9 + quantised[:, 2]
        return np.where(hits.prim >= 0, self.mesh["obj"][prim].astype(np.int64) * 1000 + face, -1)

    def _semantics(self, hits: Hits):
        hit = hits.prim >= 0
        prim = np.where(hit, hits.prim, 0)
        label = np.where(hit, self.mesh["cls"][prim], self.scene.miss_class).astype(np.uint8)
        instance = np.where(hit, self.mesh["instance"][prim], 0).astype(np.uint16)
        depth = np.where(hit, hits.t, 0.0).astype(np.float32)  # camera rays have z = 1: t is depth
        return label, instance, depth

    def _camera_rays(self, K, world_from_cam, width, height, offsets, keep=None):
        """Rays through pixel (u + ou, v + ov) for every offset pair; ordered (row, column, sample)."""
        key = (tuple(np.asarray(K).ravel()), width, height, offsets)
        if key not in self._ray_cache:
            v, u, ov, ou = np.meshgrid(np.arange(height), np.arange(width), offsets, offsets, indexing="ij")
            x = (u + ou - K[0, 2]) / K[0, 0]
            y = (v + ov - K[1, 2]) / K[1, 1]
            self._ray_cache[key] = np.stack([x.ravel(), y.ravel(), np.ones(x.size)], axis=1)
        dirs_cam = self._ray_cache[key] if keep is None else self._ray_cache[key][keep]
        dirs = rotate(dirs_cam, world_from_cam[:3, :3])
        origins = np.broadcast_to(world_from_cam[:3, 3], dirs.shape)
        return origins, dirs


def _raycaster(vertices: np.ndarray, triangles: np.ndarray) -> o3d.t.geometry.RaycastingScene:
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(vertices.astype(np.float32)), o3d.core.Tensor(triangles.astype(np.uint32)))
    return scene


def _cast(raycaster: o3d.t.geometry.RaycastingScene, rays: o3d.core.Tensor) -> Hits:
    out = raycaster.cast_rays(rays)
    prim = out["primitive_ids"].numpy().astype(np.int64)
    prim[prim == o3d.t.geometry.RaycastingScene.INVALID_ID] = -1
    t = out["t_hit"].numpy().astype(np.float64)
    t[prim < 0] = np.inf
    return Hits(t, prim, out["primitive_uvs"].numpy().astype(np.float64),
                out["primitive_normals"].numpy().astype(np.float64))


def _nearer(a: Hits, b: Hits) -> Hits:
    """Per ray, the closer of two hit sets (static scene and movers)."""
    b_wins = b.t < a.t
    return Hits(np.where(b_wins, b.t, a.t), np.where(b_wins, b.prim, a.prim),
                np.where(b_wins[:, None], b.bary, a.bary), np.where(b_wins[:, None], b.geo_normal, a.geo_normal))


def texture_offsets(num_objects: int, seed: int) -> np.ndarray:
    """(num_objects, 2) shifts of the texture coordinates in metres, one per object. Drawn from their own
    stream, so the scene layout (drawn from the preset's generator) stays what it was for a seed."""
    return np.random.default_rng([seed, 5]).uniform(0.0, 1000.0, size=(num_objects, 2))


def _edge_pixels(key: np.ndarray) -> np.ndarray:
    """Pixels whose surface differs from a 4-neighbour's: only these get sub-pixel rays."""
    edge = np.zeros(key.shape, dtype=bool)
    horizontal = key[:, 1:] != key[:, :-1]
    vertical = key[1:, :] != key[:-1, :]
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    edge[1:, :] |= vertical
    edge[:-1, :] |= vertical
    return edge


def _mix(a, b, t):
    return a * (1.0 - t[:, None]) + np.asarray(b) * t[:, None]
