"""Reading and writing the dataset folder layout of docs/FORMATS.md (one sequence folder)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from recon.errors import InputError

IGNORE_INDEX = 255
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
CLASSES_FORMAT = "rewis.classes/1"
CAMERAS_FORMAT = "rewis.cameras/1"


@dataclass(frozen=True)
class ClassList:
    names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    ignore_index: int = IGNORE_INDEX
    no_3d: tuple[str, ...] = field(default_factory=tuple)
    moving: tuple[str, ...] | None = None  # classes that move: SfM masks them (recon/moving.py)

    def __post_init__(self):
        if len(self.names) != len(self.palette):
            raise InputError(f"classes: {len(self.names)} names but {len(self.palette)} palette colours")
        if not 0 < len(self.names) < 255:
            raise InputError(f"classes: need 1..254 classes, got {len(self.names)}")
        unknown = set(self.no_3d) - set(self.names)
        if unknown:
            raise InputError(f"classes: no_3d names {sorted(unknown)} are not class names")
        unknown = set(self.moving or ()) - set(self.names)
        if unknown:
            raise InputError(f"classes: moving names {sorted(unknown)} are not class names")

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @property
    def no_3d_ids(self) -> list[int]:
        return [self.names.index(n) for n in self.no_3d]

    def to_json(self) -> dict:
        out = {"format": CLASSES_FORMAT, "names": list(self.names), "palette": [list(c) for c in self.palette],
               "ignore_index": self.ignore_index, "no_3d": list(self.no_3d)}
        return out if self.moving is None else {**out, "moving": list(self.moving)}

    @classmethod
    def from_json(cls, data: dict, where: str = "classes.json") -> "ClassList":
        if not isinstance(data, dict) or "names" not in data or "palette" not in data:
            raise InputError(f"{where}: expected an object with 'names' and 'palette' (see docs/FORMATS.md)")
        try:
            palette = tuple(tuple(int(x) for x in c) for c in data["palette"])
        except (TypeError, ValueError):
            raise InputError(f"{where}: field 'palette' must be a list of [r, g, b] integer triples") from None
        if any(len(c) != 3 for c in palette):
            raise InputError(f"{where}: field 'palette' must hold [r, g, b] triples")
        return cls(names=tuple(str(n) for n in data["names"]), palette=palette,
                   ignore_index=int(data.get("ignore_index", IGNORE_INDEX)),
                   no_3d=tuple(data.get("no_3d", ())),
                   moving=tuple(data["moving"]) if data.get("moving") is not None else None)

    def palette_bytes(self) -> list[int]:
        """A 256-entry PIL palette: class colours, black elsewhere, white for the ignore index."""
        flat = [v for c in self.palette for v in c] + [0, 0, 0] * (256 - len(self.palette))
        flat[3 * IGNORE_INDEX:3 * IGNORE_INDEX + 3] = [255, 255, 255]
        return flat


def read_json(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None


def write_json(path: Path, data) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")


def read_classes(seq_dir: Path) -> ClassList:
    path = Path(seq_dir) / "classes.json"
    if not path.is_file():
        raise InputError(f"{path}: missing; every sequence folder needs a classes.json (see docs/FORMATS.md)")
    return ClassList.from_json(read_json(path), where=str(path))


def write_classes(seq_dir: Path, classes: ClassList) -> None:
    write_json(Path(seq_dir) / "classes.json", classes.to_json())


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside `folder`, sorted by name (= time order)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: folder not found")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def sequence_images(seq_dir: Path) -> list[Path]:
    seq_dir = Path(seq_dir)
    if not seq_dir.is_dir():
        raise InputError(f"{seq_dir}: folder not found")
    images = list_images(seq_dir / "images") if (seq_dir / "images").is_dir() else []
    if not images:
        raise InputError(f"{seq_dir}: no images in {seq_dir / 'images'}; put the frames there (png or jpg)")
    return images


def read_label(path: Path) -> np.ndarray:
    """A class-id PNG as uint8 (H, W); palette and greyscale PNGs both work."""
    with Image.open(path) as im:
        if im.mode not in ("P", "L"):
            raise InputError(f"{path}: label PNG must hold class ids (mode P or L), got mode {im.mode}")
        return np.array(im, dtype=np.uint8)


def write_label(path: Path, label: np.ndarray, classes: ClassList) -> None:
    """Class ids as a palette PNG: pixel values are ids, viewers show the class colours."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    label = np.ascontiguousarray(label, dtype=np.uint8)
    im = Image.frombytes("P", (label.shape[1], label.shape[0]), label.tobytes())
    im.putpalette(classes.palette_bytes())
    im.save(path, optimize=False)


EXIF_ORIENTATION_TAG = 0x0112
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I")


def decode_rgb(im: Image.Image) -> Image.Image:
    """8-bit RGB as viewers (and transformers' load_image) show the image: EXIF orientation applied, 16-bit
    greyscale scaled down rather than clipped. Every reader of frames goes through here, so labels, training,
    prediction and evaluation all see the same pixel grid."""
    im.load()  # decode fully now, so a truncated file fails here and not later in a batch
    im = ImageOps.exif_transpose(im)
    if im.mode in SIXTEEN_BIT_MODES:
        im = Image.fromarray((np.asarray(im, dtype=np.uint32) >> 8).clip(0, 255).astype(np.uint8))
    return im.convert("RGB")


def exif_orientation(path: Path) -> int:
    """The EXIF orientation of an image file (1 = stored upright, the default when absent)."""
    with Image.open(path) as im:
        return int(im.getexif().get(EXIF_ORIENTATION_TAG, 1) or 1)


def read_rgb(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.array(decode_rgb(im))
    except (OSError, SyntaxError, Image.DecompressionBombError) as e:
        raise InputError(f"{path}: cannot read image ({e}); replace or remove the file") from None


def read_depth(path: Path) -> np.ndarray:
    """Metric depth (z, metres) as float32; .npy float32 metres or .png uint16 millimetres; 0 = none."""
    path = Path(path)
    if path.suffix == ".npy":
        depth = np.load(path, allow_pickle=False)
        return depth.astype(np.float32, copy=False)
    with Image.open(path) as im:
        return np.array(im, dtype=np.float32) / 1000.0


def find_beside(seq_dir: Path, sub: str, stem: str, suffixes=(".png",)) -> Path | None:
    """The file `SEQ/<sub>/<stem><suffix>` if it exists."""
    for suffix in suffixes:
        p = Path(seq_dir) / sub / f"{stem}{suffix}"
        if p.is_file():
            return p
    return None


@dataclass
class CameraFrame:
    image: str
    width: int
    height: int
    K: np.ndarray  # (3, 3) float64
    cam_from_world: np.ndarray | None  # (4, 4) float64


def read_cameras(seq_dir: Path) -> list[CameraFrame]:
    path = Path(seq_dir) / "cameras.json"
    data = read_json(path)
    frames = []
    for i, f in enumerate(data.get("frames", [])):
        where = f"{path}: frames[{i}]"
        try:
            K = np.asarray(f["K"], dtype=np.float64)
            pose = f.get("cam_from_world")
            pose = None if pose is None else np.asarray(pose, dtype=np.float64)
            frame = CameraFrame(str(f["image"]), int(f["width"]), int(f["height"]), K, pose)
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"{where}: bad or missing field ({e}); see docs/FORMATS.md") from None
        if K.shape != (3, 3):
            raise InputError(f"{where}.K: expected 3x3, got shape {K.shape}")
        if pose is not None and pose.shape != (4, 4):
            raise InputError(f"{where}.cam_from_world: expected 4x4, got shape {pose.shape}")
        frames.append(frame)
    return frames


def write_cameras(seq_dir: Path, frames: list[CameraFrame]) -> None:
    out = []
    for f in frames:
        item = {"image": f.image, "width": f.width, "height": f.height, "K": np.asarray(f.K).tolist()}
        if f.cam_from_world is not None:
            item["cam_from_world"] = np.asarray(f.cam_from_world).tolist()
        out.append(item)
    write_json(Path(seq_dir) / "cameras.json", {"format": CAMERAS_FORMAT, "frames": out})
