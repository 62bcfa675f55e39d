"""Mode `lidar_full`: the fully supervised 3D reference (the FS of SS/FS for the LiDAR modes): CE on every
point's dense label plus Lovasz-softmax, the student on augmented scans."""

from __future__ import annotations

from rewis.modes.base3d import Mode3D


class LidarFullMode(Mode3D):
    label_kind = "labels"
