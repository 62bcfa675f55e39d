"""The bundled example: a short synthetic street sequence rendered with `recon.synth.generate` on first use and
kept in a cache folder (a few seconds once, then instant). It carries ground truth, depth and poses, so every
tab can use it: segment a frame, reconstruct the sequence, scribble on it and train. The Point cloud tab's example
is one synthetic street LiDAR scan (KITTI velodyne .bin, about 65k points), rendered the same way, or a scan file
given at start-up."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from recon.dataset import ClassList, read_classes, sequence_images

DEFAULT_CACHE = Path("~/.cache/rewis/demo").expanduser()


@dataclass(frozen=True)
class ExampleSpec:
    preset: str = "street"
    frames: int = 8
    seed: int = 0
    size: tuple[int, int] = (240, 180)

    @property
    def title(self) -> str:
        w, h = self.size
        return f"synthetic {self.preset}, {self.frames} frames, {w}x{h}, seed {self.seed}"

    def folder_name(self) -> str:
        from recon.synth import GENERATOR_VERSION

        w, h = self.size
        return f"{self.preset}_{self.frames}f_{w}x{h}_seed{self.seed}_v{GENERATOR_VERSION}"


class Examples:
    """Renders the example sequence once per cache folder (thread-safe) and hands out its files."""

    def __init__(self, cache_dir: Path = DEFAULT_CACHE, spec: ExampleSpec = ExampleSpec()):
        self.cache_dir, self.spec = Path(cache_dir).expanduser(), spec
        self._lock = threading.Lock()

    def sequence(self) -> Path:
        """The example's sequence folder (docs/FORMATS.md layout), rendered now if not cached."""
        from recon.synth import generate

        seq = self.cache_dir / self.spec.folder_name()
        with self._lock:
            # synth.json is written last inside a folder that is renamed into place: its presence means complete
            if not (seq / "synth.json").is_file():
                generate(self.spec.preset, seq, frames=self.spec.frames, seed=self.spec.seed, size=self.spec.size,
                         overwrite=True, progress=False)
        return seq

    def frames(self) -> list[Path]:
        return sequence_images(self.sequence())

    def classes(self) -> ClassList:
        return read_classes(self.sequence())

    def label_of(self, image: Path) -> Path | None:
        label = self.sequence() / "labels" / f"{Path(image).stem}.png"
        return label if label.is_file() else None


class ExampleScan:
    """One LiDAR scan for the Point cloud tab: `path` when given, else a synthetic street scan rendered once into
    the cache folder (about a second, thread-safe)."""

    size = (96, 72)  # the camera image beside the scan; the LiDAR resolution does not depend on it

    def __init__(self, cache_dir: Path = DEFAULT_CACHE, path: Path | None = None, seed: int = 0):
        self.cache_dir, self.path, self.seed = Path(cache_dir).expanduser(), path, seed
        self._lock = threading.Lock()

    @property
    def title(self) -> str:
        return f"'{Path(self.path).name}'" if self.path else f"a synthetic street LiDAR scan (seed {self.seed})"

    def scan(self) -> Path:
        """The scan file, rendered now if not cached."""
        from recon.synth import GENERATOR_VERSION, generate

        if self.path:
            return Path(self.path)
        w, h = self.size
        seq = self.cache_dir / f"street_lidar_1f_{w}x{h}_seed{self.seed}_v{GENERATOR_VERSION}"
        with self._lock:
            if not (seq / "synth.json").is_file():  # written last, in a folder renamed into place: complete
                generate("street", seq, frames=1, seed=self.seed, size=self.size, lidar=True, overwrite=True,
                         progress=False)
        return seq / "lidar" / "velodyne" / "000000.bin"


def preset_classes(preset: str = "street") -> ClassList:
    """The class list of a synthetic preset without rendering anything (for the untrained demo model)."""
    if preset == "room":
        from recon.synth.scene_room import CLASSES
    else:
        from recon.synth.scene_street import CLASSES
    return CLASSES
