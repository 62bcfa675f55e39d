"""Which 3D point-cloud models (folders with config.json of format rewis.model3d/1) the Point cloud tab offers,
and loading them once.

Choices: the folder given with --model3d first, then, newest first, every 3D model directly under the models
folder (an exported folder or a run folder with export/), the LiDAR quickstart's output `quickstart-lidar/model`
and the run folders `runs/*` (their export/) of the folder the demo was started in. Folders are looked up again
on every page load, so a model that finished training meanwhile appears without a restart."""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

from apps.demo.models import DEFAULT_MODELS_DIR
from recon.errors import InputError

CACHED_MODELS = 2
QUICKSTART_MODEL = Path("quickstart-lidar") / "model"
HOW_TO_GET_ONE = ("No 3D model found. Train one with `rewis quickstart --lidar` (writes `quickstart-lidar/model`), "
                  "or `rewis train configs/street_lidar.yaml mode=lidar_full data.train=[SEQ] data.val=[SEQ]` "
                  "(writes `runs/street_lidar/export`), then reload this page, or start the demo with "
                  "`--model3d FOLDER`. The example scan loads without one.")


class Model3DCatalog:
    def __init__(self, explicit: str | None = None, models_dir: Path | None = DEFAULT_MODELS_DIR,
                 work_dir: Path | None = None):
        from rewis.model3d import model3d_folder

        self.explicit = str(explicit) if explicit else None
        self.models_dir = Path(models_dir).expanduser() if models_dir else None
        self.work_dir = Path(work_dir) if work_dir else Path.cwd()
        self._loaded: OrderedDict[tuple, object] = OrderedDict()
        self._lock = threading.Lock()
        if self.explicit and model3d_folder(self.explicit) is None:  # a wrong flag fails at start-up
            raise InputError(f"--model3d {self.explicit}: not a rewis 3D model folder (config.json with format "
                             "rewis.model3d/1, or a run folder with export/); train one with "
                             "`rewis quickstart --lidar`")

    def found(self) -> dict[str, Path]:
        """label -> 3D model folder, in the order offered."""
        from rewis.model3d import model3d_folder

        out: dict[str, Path] = {}
        if self.explicit:
            out[f"{Path(self.explicit).name or self.explicit} (--model3d)"] = model3d_folder(self.explicit)
        seen = {p.resolve() for p in out.values()}
        for label, folder in sorted(self._discovered(), key=lambda item: -_age_key(item[1])):
            if folder.resolve() not in seen:
                seen.add(folder.resolve())
                out[_unique(label, out)] = folder
        return out

    def _discovered(self) -> list[tuple[str, Path]]:
        from rewis.model3d import model3d_folder

        candidates = [(QUICKSTART_MODEL.as_posix(), self.work_dir / QUICKSTART_MODEL)]
        candidates += [(f"runs/{p.name}", p) for p in _subfolders(self.work_dir / "runs")]
        if self.models_dir:
            candidates += [(p.name, p) for p in _subfolders(self.models_dir)]
        found = [(label, model3d_folder(path)) for label, path in candidates]
        return [(label, folder) for label, folder in found if folder is not None]

    def choices(self) -> list[str]:
        return list(self.found())

    def default(self) -> str | None:
        return next(iter(self.found()), None)

    def get(self, label: str | None):
        """The loaded Model3D behind a choice; the last few stay in memory (reloaded when the folder's weights
        change, e.g. a run that exported again)."""
        from rewis.model3d import load_model3d

        if not label:
            raise InputError(HOW_TO_GET_ONE if not self.found() else "pick a 3D model first")
        folder = self.found().get(label)
        if folder is None:
            raise InputError(f"3D model '{label}' is not available (any more); reload the page and pick another")
        key = (str(folder.resolve()), _age_key(folder))
        with self._lock:  # one load at a time; concurrent requests for the same model share it
            if key not in self._loaded:
                self._loaded[key] = load_model3d(folder)
                while len(self._loaded) > CACHED_MODELS:
                    self._loaded.popitem(last=False)
            self._loaded.move_to_end(key)
            return self._loaded[key]


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def _age_key(folder: Path) -> int:
    weights = folder / "model.safetensors"
    return (weights if weights.is_file() else folder / "config.json").stat().st_mtime_ns


def _unique(label: str, taken: dict) -> str:
    n, out = 1, label
    while out in taken:
        n += 1
        out = f"{label} ({n})"
    return out
