"""Training and validation data, cut on the fly from Scenes (docs/FORMATS.md); nothing is stored per sample.

A training sample is one frame of a scene (or of a plain sequence folder, for 2D-only modes):
- `image` float (3, h, w) in [0, 255] and `label` int64 (h, w) (weak labels of the chosen kind, or dense
  labels for mode `full`; 255 = unlabeled), after a random rescale / crop / flip;
- with points (view-aware sampling, docs/METHODS.md section 2): M points around the view - the view's own points
  inside a ball of `ball_factor` x the view radius (at most `in_view_share` x M; with `crop_first` only those
  whose pixel lies in the training crop, as only they give links), filled with other points of the ball, then
  random points of the cloud; the least confident `view_drop_fraction` of the view's points are
  dropped first. `points` holds xyz (teacher, centred on the view), xyz_aug (student), rgb in [0, 1], conf,
  weak (accumulated weak label of the whole scene); `links` the view's point<->pixel pairs restricted to the
  sampled points and remapped through the 2D geometry.

Randomness: sample k of epoch e draws from `np.random.default_rng([seed, e, k])` only, and `EpochSampler`
shuffles with `default_rng([seed, e])`, so a run is deterministic and resumable whatever the worker count.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from recon.dataset import ClassList, find_beside, read_classes, read_label, read_rgb, sequence_images
from recon.errors import InputError
from recon.scale import cameras_up
from recon.scene import Scene
from rewis import augment
from rewis.config import DataConfig


@dataclass
class FrameRef:
    image: Path
    label: Path | None  # the label the mode trains on (weak or dense)
    dense: Path | None
    source: int  # index into TrainDataset.scenes, -1 = plain sequence (no points)
    frame: int


@dataclass
class ViewInfo:
    points: np.ndarray  # the view's linked points kept after dropping the least confident share
    centre: np.ndarray  # (3,) float64
    radius: float


def weak_path(image: Path, kind: str) -> Path | None:
    return find_beside(image.parent.parent, f"weak/{kind}", image.stem)


class TrainDataset(Dataset):
    def __init__(self, cfg: DataConfig, labels: str = "weak", points: bool = False, seed: int = 0):
        if not cfg.train:
            raise InputError("config: data.train is empty; list scene folders (rewis recon) or sequence folders")
        self.cfg, self.labels, self.points, self.seed = cfg, labels, points, seed
        self.scenes: list[Scene] = []
        self.views: list[list[ViewInfo]] = []
        self.ups: list[np.ndarray] = []
        # windowed scenes (recon/windows.py): each window's point indices and up axis; None = one window
        self.pools: list[list[np.ndarray] | None] = []
        self.window_ups: list[np.ndarray | None] = []
        self.frames: list[FrameRef] = []
        self.classes: ClassList | None = None
        for path in cfg.train:
            self._add(Path(path))
        if not self.frames:
            raise InputError(f"data.train: no usable frames in {', '.join(cfg.train)}")

    # ------------------------------------------------------------------------------------------ indexing
    def _add(self, path: Path) -> None:
        if (path / "scene.json").is_file():
            scene = Scene.load(path)
            classes = scene.classes
            refs = [(scene.resolve(f.image), scene.resolve(f.label), scene.resolve(f.weak_label), i)
                    for i, f in enumerate(scene.frames)]
            src = len(self.scenes)
            self.scenes.append(scene)
            if self.points:
                self.views.append([self._view(scene, i) for i in range(len(scene.frames))])
                self.ups.append(self._up(scene))
                self.pools.append(scene.window_points() if scene.windowed else None)
                self.window_ups.append(self._window_ups(scene) if scene.windowed else None)
        elif (path / "images").is_dir():
            if self.points:
                raise InputError(f"{path}: this mode needs a scene (points and links); run 'rewis recon {path} "
                                 f"--out SCENE' and list SCENE in data.train")
            classes, src = read_classes(path), -1
            refs = [(im, find_beside(path, "labels", im.stem), None, i) for i, im in enumerate(sequence_images(path))]
        else:
            raise InputError(f"data.train: {path} is neither a scene folder (scene.json) nor a sequence (images/)")
        if self.classes is None:
            self.classes = classes
        elif classes.names != self.classes.names:
            raise InputError(f"{path}: classes {list(classes.names)} differ from {list(self.classes.names)} of the "
                             "first training folder; all training data must share one class list")
        for image, dense, weak, i in refs:
            if self.cfg.weak_kind is not None:
                weak = weak_path(image, self.cfg.weak_kind)
            label = dense if self.labels == "dense" else weak
            if label is None:
                what = "dense labels (labels/)" if self.labels == "dense" else \
                    f"weak labels ({'weak/' + self.cfg.weak_kind if self.cfg.weak_kind else 'none recorded in the scene'})"
                raise InputError(f"{path}: frame {image.name} has no {what}; create them with 'rewis labels' "
                                 "(and re-run 'rewis recon') or set data.weak_kind")
            self.frames.append(FrameRef(image, label, dense, src, i))

    def _view(self, scene: Scene, f: int) -> ViewInfo:
        point, _, _ = scene.links.frame(f)
        point = np.unique(point)
        drop = self.cfg.view_drop_fraction
        if drop > 0 and len(point) > 1:
            conf = scene.cloud.conf[point]
            keep = np.argsort(conf, kind="stable")[int(round(drop * len(point))):]
            point = np.sort(point[keep])
        if len(point) == 0:
            centre = scene.frames[f].cam_from_world
            centre = -centre[:3, :3].T @ centre[:3, 3]
            return ViewInfo(point, centre, 1.0)
        xyz = scene.cloud.xyz[point].astype(np.float64)
        centre = xyz.mean(0)
        radius = float(np.percentile(np.linalg.norm(xyz - centre, axis=1), self.cfg.radius_percentile))
        return ViewInfo(point, centre, max(radius, 1e-3))

    def _up(self, scene: Scene) -> np.ndarray:
        if self.cfg.up_axis != "auto":
            return augment.axis_vector(self.cfg.up_axis)
        linked = np.flatnonzero(np.diff(scene.links.offsets) > 0)  # frames rejected by pose validation have none
        frames = [scene.frames[i] for i in linked] or scene.frames
        return cameras_up([f.cam_from_world for f in frames])

    def _window_ups(self, scene: Scene) -> np.ndarray:
        """(windows, 3): the up axis of each window from its own linked frames, as _up does for a scene."""
        if self.cfg.up_axis != "auto":
            return np.tile(augment.axis_vector(self.cfg.up_axis), (scene.num_windows, 1))
        linked = np.diff(scene.links.offsets) > 0
        ups = []
        for w in range(scene.num_windows):
            mine = [f for f in scene.frames if f.window == w]
            own_linked = [f for f, link in zip(scene.frames, linked) if f.window == w and link]
            ups.append(cameras_up([f.cam_from_world for f in own_linked or mine]) if mine else self._up(scene))
        return np.stack(ups)

    def __len__(self) -> int:
        return len(self.frames) * self.cfg.epoch_repeats

    # ------------------------------------------------------------------------------------------ samples
    def __getitem__(self, key: int) -> dict:
        epoch, k = divmod(int(key), len(self))
        rng = np.random.default_rng([self.seed, epoch, k])
        ref = self.frames[k % len(self.frames)]
        rgb = read_rgb(ref.image)
        label = read_label(ref.label)
        if label.shape != rgb.shape[:2]:
            raise InputError(f"{ref.label}: label size {label.shape[::-1]} differs from its image {rgb.shape[1::-1]}")
        geo = augment.draw_geometry(rng, rgb.shape[:2], self.cfg.height, self.cfg.crop, self.cfg.scale_range,
                                    self.cfg.flip)
        image, (lab,) = augment.apply_geometry(geo, torch.from_numpy(rgb).permute(2, 0, 1),
                                               [torch.from_numpy(label.astype(np.int64))])
        sample = {"image": image, "label": lab}
        if self.points:
            sample.update(self._points(rng, ref, geo))
        return sample

    def _points(self, rng: np.random.Generator, ref: FrameRef, geo: augment.Geometry) -> dict:
        cfg, scene = self.cfg, self.scenes[ref.source]
        view = self.views[ref.source][ref.frame]
        point, v, u = scene.links.frame(ref.frame)
        v2, u2, inside = augment.remap_pixels(geo, v, u)
        visible = np.unique(point[inside]) if cfg.crop_first else None
        pools = self.pools[ref.source]
        window = scene.frames[ref.frame].window if pools is not None else None
        if window is None or not len(pools[window]):  # a rejected frame of a window that kept no points
            idx = sample_view_points(rng, scene.cloud.xyz, view, cfg.num_points, cfg.in_view_share, cfg.ball_factor,
                                     visible)
            up = self.ups[ref.source]
        else:  # the other windows' points live in other coordinates
            idx = sample_window_points(rng, scene.cloud.xyz, pools[window], view, cfg.num_points,
                                       cfg.in_view_share, cfg.ball_factor, visible)
            up = self.window_ups[ref.source][window]
        cloud = scene.cloud
        xyz = (cloud.xyz[idx].astype(np.float64) - view.centre).astype(np.float32)
        xyz_aug = augment.augment_points(rng, xyz, up, np.zeros(3), cfg.rotate_up, cfg.scale3d,
                                         cfg.flip3d, cfg.jitter_sigma, cfg.jitter_clip)
        point = point[inside]
        pos = np.minimum(np.searchsorted(idx, point), len(idx) - 1)
        hit = idx[pos] == point
        points = {"xyz": torch.from_numpy(xyz), "xyz_aug": torch.from_numpy(xyz_aug),
                  "rgb": torch.from_numpy(cloud.rgb[idx].astype(np.float32) / 255.0),
                  "conf": torch.from_numpy(cloud.conf[idx].astype(np.float32)),
                  "weak": torch.from_numpy(cloud.weak_label[idx].astype(np.int64))}
        if cloud.label is not None:  # ground truth (synthetic scenes): diagnostics only, never trained on
            points["truth"] = torch.from_numpy(cloud.label[idx].astype(np.int64))
        return {"points": points,
                "links": {"point": torch.from_numpy(pos[hit].astype(np.int64)),
                          "v": torch.from_numpy(v2[hit]), "u": torch.from_numpy(u2[hit])}}


def sample_view_points(rng: np.random.Generator, xyz: np.ndarray, view: ViewInfo, m: int, in_view_share: float,
                       ball_factor: float, visible: np.ndarray | None = None) -> np.ndarray:
    """Sorted indices of M points around a view (fewer when the cloud is smaller); see the module doc.
    `visible` (sorted point indices, optional): the view's points whose pixel lies in the training crop; then
    only these count as the view's own points, and its points outside the crop join the other points of the
    ball (they give no link, only context)."""
    n = len(xyz)
    m = min(m, n)
    d2 = ((xyz.astype(np.float64) - view.centre) ** 2).sum(1)
    in_ball = d2 <= (ball_factor * view.radius) ** 2
    candidates = view.points if visible is None else np.intersect1d(view.points, visible, assume_unique=True)
    own = candidates[in_ball[candidates]]
    n_own = min(len(own), int(in_view_share * m))
    chosen = rng.choice(own, n_own, replace=False) if n_own < len(own) else own
    taken = np.zeros(n, bool)
    taken[candidates] = True  # the view's other own points do not count as "other points in the ball"
    others = np.flatnonzero(in_ball & ~taken)
    n_other = min(len(others), m - n_own)
    parts = [chosen, rng.choice(others, n_other, replace=False) if n_other < len(others) else others]
    taken[parts[1]] = True
    rest = m - n_own - n_other
    if rest > 0:
        taken[:] = False
        taken[parts[0]] = True
        taken[parts[1]] = True
        pool = np.flatnonzero(~taken)
        parts.append(rng.choice(pool, min(rest, len(pool)), replace=False))
    return np.sort(np.concatenate(parts).astype(np.int64))


def sample_window_points(rng: np.random.Generator, xyz: np.ndarray, pool: np.ndarray, view: ViewInfo, m: int,
                         in_view_share: float, ball_factor: float, visible: np.ndarray | None = None) -> np.ndarray:
    """sample_view_points over the points `pool` (sorted indices, e.g. one window's) only; the view's own and
    visible points must lie in the pool."""
    local = ViewInfo(np.searchsorted(pool, view.points), view.centre, view.radius)
    local_visible = None if visible is None else np.searchsorted(pool, visible)
    return pool[sample_view_points(rng, xyz[pool], local, m, in_view_share, ball_factor, local_visible)]


def collate(samples: list[dict]) -> dict:
    """Stack images/labels; concatenate points with a `batch` index and shift link point indices."""
    out = {"image": torch.stack([s["image"] for s in samples]), "label": torch.stack([s["label"] for s in samples])}
    if "points" in samples[0]:
        offset, pts, links = 0, {k: [] for k in samples[0]["points"]}, {"point": [], "v": [], "u": [], "batch": []}
        pts["batch"] = []
        for b, s in enumerate(samples):
            count = len(s["points"]["xyz"])
            for k, v in s["points"].items():
                pts[k].append(v)
            pts["batch"].append(torch.full((count,), b, dtype=torch.long))
            links["point"].append(s["links"]["point"] + offset)
            links["v"].append(s["links"]["v"])
            links["u"].append(s["links"]["u"])
            links["batch"].append(torch.full((len(s["links"]["point"]),), b, dtype=torch.long))
            offset += count
        out["points"] = {k: torch.cat(v) for k, v in pts.items()}
        out["links"] = {k: torch.cat(v) for k, v in links.items()}
    return out


class EpochSampler(Sampler):
    """A shuffled permutation per epoch from `default_rng([seed, epoch])`, yielding `epoch * n + k` so the
    dataset knows the epoch inside worker processes too."""

    def __init__(self, n: int, seed: int, shuffle: bool = True):
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n) if self.shuffle else np.arange(self.n)
        return iter((self.epoch * self.n + order).tolist())
