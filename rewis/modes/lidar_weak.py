"""Mode `lidar_weak`: the lower bound of the LiDAR modes: CE on the scribbled points only (no teacher, no
pseudo-labels, no Lovasz unless `method.lovasz` is set)."""

from __future__ import annotations

from dataclasses import dataclass

from rewis.modes.base3d import LidarMethod, Mode3D


@dataclass
class LidarWeakMethod(LidarMethod):
    lovasz: float = 0.0


class LidarWeakMode(Mode3D):
    Method = LidarWeakMethod
    label_kind = "scribbles"
