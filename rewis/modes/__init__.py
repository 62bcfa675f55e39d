"""Training modes, one file each; the contract they keep is in rewis/modes/base.py. `MODES` is the plain
name -> class table: adding a mode means a new file and one line here. `load_config` / `config_from_dict`
parse a preset with the method schemas of these modes."""

from __future__ import annotations

from pathlib import Path

from rewis import config as _config
from rewis.modes.base import Mode, Mode2D, OfflineContext, Stage, StepInfo, adamw, make_scheduler
from rewis.modes.ema import EMAMode
from rewis.modes.full import FullMode
from rewis.modes.lidar_full import LidarFullMode
from rewis.modes.lidar_weak import LidarWeakMode
from rewis.modes.rewis3d import Rewis3dMode
from rewis.modes.scribblekitti import ScribbleKittiMode

MODES: dict[str, type[Mode]] = {"full": FullMode, "ema": EMAMode, "rewis3d": Rewis3dMode, "lidar_full": LidarFullMode,
                                "lidar_weak": LidarWeakMode, "scribblekitti": ScribbleKittiMode}

__all__ = ["MODES", "Mode", "Mode2D", "OfflineContext", "Stage", "StepInfo", "adamw", "make_scheduler",
           "load_config", "config_from_dict", "method_schemas"]


def method_schemas() -> dict[str, type]:
    """Mode name -> the dataclass of its `method:` section (read at call time, so a mode added to MODES counts)."""
    return {name: cls.Method for name, cls in MODES.items()}


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> _config.Config:
    return _config.load_config(path, overrides, methods=method_schemas())


def config_from_dict(data: dict, where: str = "config") -> _config.Config:
    return _config.config_from_dict(data, where, methods=method_schemas())
