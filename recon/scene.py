"""The Scene: the contract between reconstruction and training (docs/FORMATS.md, "Scene").

A scene folder holds `scene.json` (classes, frames with camera and file paths, source kind), `cloud.npz`
(points with colour, confidence, accumulated weak label, optional ground truth, source frame) and
`links.npz` (per frame: which points are seen at which pixels, as CSR arrays). Loading validates every
field and names the file and field on any error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from recon.atomic import staged_folder
from recon.dataset import ClassList
from recon.errors import InputError

SCENE_FORMAT = "rewis.scene"
SCENE_VERSION = 1
SOURCES = ("images", "rgbd", "lidar", "colmap", "synthetic")
UNLABELED = 255


@dataclass
class Frame:
    image: str
    width: int
    height: int
    K: np.ndarray  # (3, 3) float64
    cam_from_world: np.ndarray  # (4, 4) float64, OpenCV axes
    depth: str | None = None
    label: str | None = None
    weak_label: str | None = None
    window: int | None = None  # windowed scenes: the window whose coordinates the pose is in; None = one window

    def to_json(self) -> dict:
        data = {"image": self.image, "width": self.width, "height": self.height, "K": self.K.tolist(),
                "cam_from_world": self.cam_from_world.tolist(), "depth": self.depth, "label": self.label,
                "weak_label": self.weak_label}
        return data if self.window is None else data | {"window": self.window}


@dataclass
class Cloud:
    xyz: np.ndarray  # (N, 3) float32
    rgb: np.ndarray  # (N, 3) uint8
    conf: np.ndarray  # (N,) float32 in [0, 1]
    weak_label: np.ndarray  # (N,) uint8, 255 = none
    source_frame: np.ndarray  # (N,) int32, -1 = none
    label: np.ndarray | None = None  # (N,) uint8 ground truth, optional
    window: np.ndarray | None = None  # (N,) int32 window id of each point (own coordinates); None = one window

    def __len__(self) -> int:
        return int(self.xyz.shape[0])

    @classmethod
    def from_xyz(cls, xyz: np.ndarray, **fields) -> "Cloud":
        """A cloud with defaults for the fields not given (grey, confidence 1, unlabeled, no frame)."""
        n = len(xyz)
        defaults = {"rgb": np.full((n, 3), 128, np.uint8), "conf": np.ones(n, np.float32),
                    "weak_label": np.full(n, UNLABELED, np.uint8), "source_frame": np.full(n, -1, np.int32)}
        defaults.update(fields)
        return cls(xyz=np.asarray(xyz, np.float32), **defaults)


@dataclass
class Links:
    """Point <-> pixel correspondences of every frame, CSR: frame f owns `offsets[f]:offsets[f+1]`."""

    offsets: np.ndarray  # (F + 1,) int64
    point: np.ndarray  # (L,) int64
    v: np.ndarray  # (L,) int32, row
    u: np.ndarray  # (L,) int32, column

    @property
    def num_frames(self) -> int:
        return len(self.offsets) - 1

    def frame(self, f: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        s = slice(int(self.offsets[f]), int(self.offsets[f + 1]))
        return self.point[s], self.v[s], self.u[s]

    @classmethod
    def from_per_frame(cls, per_frame: list[tuple]) -> "Links":
        """Pack a list of (point, v, u) arrays, one tuple per frame, into CSR form."""
        counts = [len(np.asarray(p)) for p, _, _ in per_frame]
        offsets = np.zeros(len(per_frame) + 1, np.int64)
        np.cumsum(counts, out=offsets[1:])

        def cat(i, dtype):
            parts = [np.asarray(t[i]).astype(dtype, copy=False).reshape(-1) for t in per_frame]
            return np.concatenate(parts) if parts else np.zeros(0, dtype)

        return cls(offsets=offsets, point=cat(0, np.int64), v=cat(1, np.int32), u=cat(2, np.int32))


@dataclass
class Scene:
    classes: ClassList
    frames: list[Frame]
    cloud: Cloud
    links: Links
    source: str = "images"
    root: Path | None = field(default=None, compare=False)

    @property
    def windowed(self) -> bool:
        return self.cloud.window is not None

    def window_points(self) -> list[np.ndarray]:
        """Sorted point indices of each window (one entry, all points, for a scene without windows)."""
        if self.cloud.window is None:
            return [np.arange(len(self.cloud))]
        order = np.argsort(self.cloud.window, kind="stable")
        counts = np.bincount(self.cloud.window, minlength=self.num_windows)
        return np.split(order, np.cumsum(counts)[:-1])

    @property
    def num_windows(self) -> int:
        if self.cloud.window is None:
            return 1
        ids = [int(self.cloud.window.max()) if len(self.cloud) else 0]
        return 1 + max(ids + [f.window for f in self.frames if f.window is not None])

    def resolve(self, relative: str | None) -> Path | None:
        """A path stored in scene.json, made absolute against the scene folder."""
        if relative is None:
            return None
        p = Path(relative)
        return p if p.is_absolute() or self.root is None else self.root / p

    def validate(self, where: str = "scene") -> None:
        _validate_cloud(self.cloud, f"{where}/cloud.npz")
        _validate_links(self.links, len(self.frames), len(self.cloud), self.frames, f"{where}/links.npz")
        _validate_windows(self, where)
        if self.source not in SOURCES:
            raise InputError(f"{where}/scene.json: field 'source' is {self.source!r}, expected one of {SOURCES}")
        labels = [a for a in (self.cloud.weak_label, self.cloud.label) if a is not None]
        for name, arr in zip(("weak_label", "label"), labels):
            bad = (arr != UNLABELED) & (arr >= self.classes.num_classes)
            if bad.any():
                raise InputError(f"{where}/cloud.npz: field '{name}' holds class id {int(arr[bad][0])} but "
                                 f"scene.json lists {self.classes.num_classes} classes")

    def save(self, folder: Path, overwrite: bool = False) -> Path:
        """Write the scene atomically (recon.atomic): a non-empty folder is replaced only with `overwrite`."""
        folder = Path(folder)
        self.validate(str(folder))
        with staged_folder(folder, overwrite) as staging:
            self.write_files(staging)
        self.root = folder
        return folder

    def write_files(self, folder: Path) -> None:
        """scene.json, cloud.npz and links.npz into an existing folder (no staging; see save)."""
        meta = {"format": SCENE_FORMAT, "version": SCENE_VERSION, "classes": self.classes.to_json(),
                "source": self.source, "frames": [f.to_json() for f in self.frames]}
        (folder / "scene.json").write_text(json.dumps(meta, indent=1) + "\n")
        cloud = {"xyz": self.cloud.xyz, "rgb": self.cloud.rgb, "conf": self.cloud.conf,
                 "weak_label": self.cloud.weak_label, "source_frame": self.cloud.source_frame}
        if self.cloud.label is not None:
            cloud["label"] = self.cloud.label
        if self.cloud.window is not None:
            cloud["window"] = self.cloud.window
        np.savez(folder / "cloud.npz", **cloud)
        np.savez(folder / "links.npz", offsets=self.links.offsets, point=self.links.point, v=self.links.v,
                 u=self.links.u)

    @classmethod
    def load(cls, folder: Path) -> "Scene":
        folder = Path(folder)
        if not (folder / "scene.json").is_file():
            raise InputError(f"{folder}: not a scene folder (no scene.json); create one with 'rewis recon'")
        meta = _read_meta(folder / "scene.json")
        frames = [_frame_from_json(f, f"{folder}/scene.json: frames[{i}]") for i, f in enumerate(meta["frames"])]
        cloud = Cloud(**_read_npz(folder / "cloud.npz", CLOUD_FIELDS))
        links = Links(**_read_npz(folder / "links.npz", LINK_FIELDS))
        scene = cls(classes=ClassList.from_json(meta["classes"], f"{folder}/scene.json: classes"), frames=frames,
                    cloud=cloud, links=links, source=meta.get("source", "images"), root=folder)
        scene.validate(str(folder))
        return scene


# field -> (dtype, trailing shape, required)
CLOUD_FIELDS = {"xyz": (np.float32, (3,), True), "rgb": (np.uint8, (3,), True), "conf": (np.float32, (), True),
                "weak_label": (np.uint8, (), True), "source_frame": (np.int32, (), True),
                "label": (np.uint8, (), False), "window": (np.int32, (), False)}
LINK_FIELDS = {"offsets": (np.int64, (), True), "point": (np.int64, (), True), "v": (np.int32, (), True),
               "u": (np.int32, (), True)}


def _read_meta(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if meta.get("format") != SCENE_FORMAT:
        raise InputError(f"{path}: field 'format' is {meta.get('format')!r}, expected {SCENE_FORMAT!r}")
    if meta.get("version") != SCENE_VERSION:
        raise InputError(f"{path}: field 'version' is {meta.get('version')!r}; this rewis reads version "
                         f"{SCENE_VERSION}: re-run 'rewis recon' or upgrade rewis")
    for key in ("classes", "frames"):
        if key not in meta:
            raise InputError(f"{path}: missing field '{key}'")
    return meta


def _frame_from_json(data: dict, where: str) -> Frame:
    try:
        frame = Frame(image=str(data["image"]), width=int(data["width"]), height=int(data["height"]),
                      K=np.asarray(data["K"], np.float64), cam_from_world=np.asarray(data["cam_from_world"], np.float64),
                      depth=data.get("depth"), label=data.get("label"), weak_label=data.get("weak_label"),
                      window=None if data.get("window") is None else int(data["window"]))
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"{where}: missing or malformed field ({e})") from None
    if frame.K.shape != (3, 3):
        raise InputError(f"{where}: field 'K' must be 3x3, got shape {frame.K.shape}")
    if frame.cam_from_world.shape != (4, 4):
        raise InputError(f"{where}: field 'cam_from_world' must be 4x4, got shape {frame.cam_from_world.shape}")
    if frame.width <= 0 or frame.height <= 0:
        raise InputError(f"{where}: fields 'width'/'height' must be positive")
    return frame


def _read_npz(path: Path, spec: dict) -> dict:
    if not path.is_file():
        raise InputError(f"{path}: file not found; the scene folder is incomplete, re-run 'rewis recon'")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: cannot read ({e})") from None
    out = {}
    for name, (dtype, trailing, required) in spec.items():
        if name not in arrays:
            if required:
                raise InputError(f"{path}: missing field '{name}'")
            continue
        arr = arrays[name]
        if arr.dtype != dtype:
            raise InputError(f"{path}: field '{name}' has dtype {arr.dtype}, expected {np.dtype(dtype)}")
        if arr.ndim != 1 + len(trailing) or arr.shape[1:] != trailing:
            raise InputError(f"{path}: field '{name}' has shape {arr.shape}, expected (N, {', '.join(map(str, trailing))})"
                             if trailing else f"{path}: field '{name}' has shape {arr.shape}, expected (N,)")
        out[name] = arr
    return out


def _validate_cloud(cloud: Cloud, where: str) -> None:
    n = len(cloud)
    for name, (dtype, trailing, required) in CLOUD_FIELDS.items():
        arr = getattr(cloud, name)
        if arr is None:
            if required:
                raise InputError(f"{where}: missing field '{name}'")
            continue
        if arr.dtype != dtype or arr.shape != (n, *trailing):
            raise InputError(f"{where}: field '{name}' is {arr.dtype}{arr.shape}, expected "
                             f"{np.dtype(dtype)}{(n, *trailing)}")
    if n and not np.isfinite(cloud.xyz).all():
        raise InputError(f"{where}: field 'xyz' holds NaN or inf")
    if n and (cloud.conf.min() < 0 or cloud.conf.max() > 1):
        raise InputError(f"{where}: field 'conf' must lie in [0, 1], got {cloud.conf.min()}..{cloud.conf.max()}")


def _validate_links(links: Links, num_frames: int, num_points: int, frames: list[Frame], where: str) -> None:
    if links.offsets.shape != (num_frames + 1,):
        raise InputError(f"{where}: field 'offsets' has {len(links.offsets)} entries, expected frames + 1 = "
                         f"{num_frames + 1}")
    total = len(links.point)
    if links.offsets[0] != 0 or links.offsets[-1] != total or np.any(np.diff(links.offsets) < 0):
        raise InputError(f"{where}: field 'offsets' must rise from 0 to {total}")
    if len(links.v) != total or len(links.u) != total:
        raise InputError(f"{where}: fields 'point', 'v', 'u' must have equal length")
    if total and (links.point.min() < 0 or links.point.max() >= num_points):
        raise InputError(f"{where}: field 'point' indexes outside the cloud of {num_points} points")
    if total:
        frame_of_link = np.repeat(np.arange(num_frames), np.diff(links.offsets))
        heights = np.array([f.height for f in frames])[frame_of_link]
        widths = np.array([f.width for f in frames])[frame_of_link]
        if np.any((links.v < 0) | (links.v >= heights) | (links.u < 0) | (links.u >= widths)):
            raise InputError(f"{where}: fields 'v'/'u' hold pixels outside their frame's image")


def _validate_windows(scene: Scene, where: str) -> None:
    """Windowed scenes: every point has a window id >= 0, and a frame's links point into its own window only."""
    framed = [i for i, f in enumerate(scene.frames) if f.window is not None]
    if scene.cloud.window is None:
        if framed:
            raise InputError(f"{where}/scene.json: frames[{framed[0]}] has field 'window' but cloud.npz has no "
                             "'window' field; save both or neither")
        return
    if len(scene.cloud) and scene.cloud.window.min() < 0:
        raise InputError(f"{where}/cloud.npz: field 'window' holds {int(scene.cloud.window.min())}; window ids "
                         "start at 0")
    if any(scene.frames[i].window < 0 for i in framed):
        raise InputError(f"{where}/scene.json: a frame's field 'window' is negative; window ids start at 0")
    counts = np.diff(scene.links.offsets)
    frame_window = np.array([-1 if f.window is None else f.window for f in scene.frames], np.int64)
    link_window = np.repeat(frame_window, counts)
    wrong = scene.cloud.window[scene.links.point] != link_window
    if wrong.any():
        frame = int(np.repeat(np.arange(len(scene.frames)), counts)[np.argmax(wrong)])
        raise InputError(f"{where}/links.npz: frames[{frame}] (window {scene.frames[frame].window}) links points "
                         "of another window; a frame links only points of its own window")
