"""Which segmentation models the demo offers, and loading them once.

Choices, in order: the model given with --model; every exported model (a folder with config.json, or a run
folder with export/ or best/) directly under the models folder, except 3D point-cloud models (apps/demo/models3d.py);
models trained in the Scribble tab during this server's life; and, only when none of those exists, an untrained
random SegFormer-b0 so the page still works (labelled as untrained: its predictions are noise)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

from recon.errors import InputError
from segment.models import LoadedModel, load_model, resolve_model_folder

UNTRAINED = "untrained demo model (random b0, predictions are noise)"
UNTRAINED_INPUT = 256  # the random model needs no detail; a small input keeps the CPU demo snappy
DEFAULT_MODELS_DIR = Path("~/.cache/rewis/models").expanduser()
CACHED_MODELS = 3


class ModelCatalog:
    def __init__(self, explicit: str | None = None, models_dir: Path | None = DEFAULT_MODELS_DIR):
        self.explicit = explicit
        self.models_dir = Path(models_dir).expanduser() if models_dir else None
        self.trained: dict[str, Path] = {}  # label -> export folder (Scribble tab)
        self._loaded: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()
        if explicit:
            resolve_model_folder(explicit)  # a wrong --model fails at start-up, not at the first request

    def choices(self) -> list[str]:
        found = list(self._listed())
        found += list(self.trained)
        return found or [UNTRAINED]

    def default(self) -> str:
        return self.choices()[0]

    def add_trained(self, label: str, folder: Path) -> None:
        self.trained[label] = Path(folder)

    def _listed(self) -> dict[str, str]:
        """label -> model reference, for --model and the models folder."""
        out = {}
        if self.explicit:
            out[f"{Path(self.explicit).name or self.explicit} (--model)"] = self.explicit
        if self.models_dir and self.models_dir.is_dir():
            for folder in sorted(p for p in self.models_dir.iterdir() if p.is_dir()):
                if _loadable(folder):
                    out[folder.name] = str(folder)
        return out

    def reference(self, label: str) -> str:
        refs = {**self._listed(), **{k: str(v) for k, v in self.trained.items()}}
        if label == UNTRAINED:
            return UNTRAINED
        if label not in refs:
            raise InputError(f"model '{label}' is not available (any more); reload the page and pick another")
        return refs[label]

    def get(self, label: str) -> LoadedModel:
        """The loaded model behind a choice; the last few stay in memory."""
        ref = self.reference(label)
        with self._lock:  # one load at a time; concurrent requests for the same model share it
            if ref in self._loaded:
                self._loaded.move_to_end(ref)
                return self._loaded[ref]
            loaded = untrained_model() if ref == UNTRAINED else load_model(ref)
            self._loaded[ref] = loaded
            while len(self._loaded) > CACHED_MODELS:
                self._loaded.popitem(last=False)
            return loaded


def _loadable(folder: Path) -> bool:
    from rewis.model3d import model3d_folder

    if model3d_folder(folder) is not None:  # a point-cloud model: the Point cloud tab offers it
        return False
    try:
        return resolve_model_folder(str(folder)) is not None
    except InputError:
        return False


def untrained_model() -> LoadedModel:
    from apps.demo.examples import preset_classes
    from segment.models import build_model, build_processor

    classes = preset_classes("street")
    model = build_model("b0", classes, seed=0).eval()
    return LoadedModel(model=model, processor=build_processor(UNTRAINED_INPUT), classes=classes, source=UNTRAINED)
