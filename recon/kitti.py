"""KITTI readers: 3D object benchmark calibration and boxes, odometry / SemanticKITTI calib, poses, scans, labels.

Matrices come back as float64 numpy arrays; homogeneous transforms as 4 x 4. A malformed file raises
InputError naming the file and the field. Projection: lidar -> pixel of camera c is
`P_c @ R0_rect @ Tr_velo_to_cam` (object) or `P_c @ Tr` (odometry); `split_projection` turns a P into the
(K, cam_from_ref) pair that recon.projection takes, so z is the depth in that camera's own frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recon.errors import InputError

CAMERAS = ("P0", "P1", "P2", "P3")


# ------------------------------------------------------------------------------------------ key: numbers

def read_key_values(path: str | Path) -> dict[str, np.ndarray]:
    """'KEY: n1 n2 ...' lines -> {KEY: float64 array}; blank lines are skipped."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    values = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        key, sep, rest = line.partition(":")
        if not sep:
            raise InputError(f"{path}: line {number} is not 'KEY: numbers' (got {line[:40]!r})")
        try:
            values[key.strip()] = np.array(rest.split(), dtype=np.float64)
        except ValueError:
            raise InputError(f"{path}: field '{key.strip()}' holds a non-number") from None
    return values


def _matrix(values: dict[str, np.ndarray], key: str, shape: tuple[int, int], path: Path) -> np.ndarray:
    if key not in values:
        raise InputError(f"{path}: field '{key}' is missing")
    if values[key].size != shape[0] * shape[1]:
        raise InputError(f"{path}: field '{key}' has {values[key].size} numbers, expected "
                         f"{shape[0] * shape[1]} ({shape[0]}x{shape[1]})")
    return values[key].reshape(shape)


def to_4x4(matrix: np.ndarray) -> np.ndarray:
    """3x3 rotation or 3x4 [R | t] -> 4x4 homogeneous."""
    out = np.eye(4)
    out[:matrix.shape[0], :matrix.shape[1]] = matrix
    return out


def split_projection(P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A rectified KITTI P = K @ [I | t] (3x4) -> K (3x3), cam_from_ref (4x4) = [I | t].

    Holds for every rectified KITTI camera (P_c = K_c [I | t_c]: the stereo baseline sits in t)."""
    K = np.array(P[:, :3], dtype=np.float64)
    cam_from_ref = np.eye(4)
    cam_from_ref[:3, 3] = np.linalg.solve(K, P[:, 3])
    return K, cam_from_ref


# ---------------------------------------------------------------------------------------- object benchmark

@dataclass(frozen=True)
class ObjectCalib:
    """KITTI object calibration: P0..P3 (3x4), R0_rect and Tr_velo_to_cam as 4x4."""
    P: dict[str, np.ndarray]
    R0_rect: np.ndarray
    velo_to_cam: np.ndarray

    def lidar_to_pixel(self, camera: str = "P2") -> np.ndarray:
        """3x4 matrix: homogeneous velodyne point -> homogeneous pixel (P @ R0_rect @ Tr_velo_to_cam)."""
        return self.P[camera] @ self.R0_rect @ self.velo_to_cam

    def camera(self, camera: str = "P2") -> tuple[np.ndarray, np.ndarray]:
        """(K, cam_from_lidar 4x4) of camera P0..P3 for recon.projection."""
        K, cam_from_rect = split_projection(self.P[camera])
        return K, cam_from_rect @ self.R0_rect @ self.velo_to_cam


def read_object_calib(path: str | Path) -> ObjectCalib:
    path = Path(path)
    values = read_key_values(path)
    return ObjectCalib(P={c: _matrix(values, c, (3, 4), path) for c in CAMERAS},
                       R0_rect=to_4x4(_matrix(values, "R0_rect", (3, 3), path)),
                       velo_to_cam=to_4x4(_matrix(values, "Tr_velo_to_cam", (3, 4), path)))


@dataclass(frozen=True)
class ObjectBox:
    """One label_2 line: 2D box in pixels, 3D box in the rectified camera frame (bottom centre)."""
    kind: str
    truncated: float
    occluded: int
    alpha: float
    box_2d: tuple[float, float, float, float]  # x1, y1, x2, y2
    size_hwl: tuple[float, float, float]
    location: tuple[float, float, float]
    rotation_y: float
    score: float | None = None


def read_object_labels(path: str | Path) -> list[ObjectBox]:
    """KITTI label_2 file: 15 fields per line (16 with a detection score)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    boxes = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) not in (15, 16):
            raise InputError(f"{path}: line {number} has {len(fields)} fields, expected 15 "
                             "(type truncated occluded alpha x1 y1 x2 y2 h w l x y z rotation_y [score])")
        try:
            nums = [float(f) for f in fields[1:]]
        except ValueError:
            raise InputError(f"{path}: line {number} ({fields[0]}) holds a non-number") from None
        boxes.append(ObjectBox(fields[0], nums[0], int(nums[1]), nums[2], tuple(nums[3:7]), tuple(nums[7:10]),
                               tuple(nums[10:13]), nums[13], nums[14] if len(nums) == 15 else None))
    return boxes


# ------------------------------------------------------------------------------------ odometry layout

@dataclass(frozen=True)
class OdometryCalib:
    """KITTI odometry calib.txt: P0..P3 (3x4) and Tr (velodyne -> camera 0) as 4x4."""
    P: dict[str, np.ndarray]
    velo_to_cam0: np.ndarray

    def lidar_to_pixel(self, camera: str = "P2") -> np.ndarray:
        return self.P[camera] @ self.velo_to_cam0

    def camera(self, camera: str = "P2") -> tuple[np.ndarray, np.ndarray]:
        """(K, cam_from_cam0 4x4) of camera P0..P3."""
        return split_projection(self.P[camera])


def read_odometry_calib(path: str | Path) -> OdometryCalib:
    path = Path(path)
    values = read_key_values(path)
    return OdometryCalib(P={c: _matrix(values, c, (3, 4), path) for c in CAMERAS},
                         velo_to_cam0=to_4x4(_matrix(values, "Tr", (3, 4), path)))


def read_poses(path: str | Path) -> np.ndarray:
    """poses.txt: one row-major 3x4 world_from_cam0 per line -> (N, 4, 4) float64."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = np.array(line.split(), dtype=np.float64)
        except ValueError:
            raise InputError(f"{path}: pose on line {number} holds a non-number") from None
        if row.size != 12:
            raise InputError(f"{path}: pose on line {number} has {row.size} numbers, expected 12 (3x4 row-major)")
        rows.append(to_4x4(row.reshape(3, 4)))
    return np.stack(rows) if rows else np.zeros((0, 4, 4))


def lidar_cameras(calib: OdometryCalib, poses: np.ndarray, camera: str = "P2") -> tuple[np.ndarray, np.ndarray]:
    """K (3x3) and cam_from_world (N, 4, 4) of `camera` at every pose (world = camera 0 of the first scan)."""
    K, cam_from_cam0 = calib.camera(camera)
    return K, cam_from_cam0 @ np.linalg.inv(poses)


def lidar_to_world(calib: OdometryCalib, poses: np.ndarray) -> np.ndarray:
    """(N, 4, 4) world_from_velodyne of every scan (pose @ Tr)."""
    return poses @ calib.velo_to_cam0


def read_velodyne(path: str | Path, columns: int = 4) -> np.ndarray:
    """velodyne .bin -> float32 (N, columns) (4: x, y, z, intensity)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    data = np.fromfile(path, dtype=np.float32)
    if data.size % columns:
        raise InputError(f"{path}: {data.size} float32 values is not a multiple of {columns} columns "
                         "(wrong file, or pass the right column count)")
    return data.reshape(-1, columns)


def read_labels(path: str | Path, num_points: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """.label uint32 -> (class = lower 16 bits, instance = upper 16 bits), both uint16."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    if path.stat().st_size % 4:
        raise InputError(f"{path}: size {path.stat().st_size} bytes is not a whole number of uint32 labels")
    raw = np.fromfile(path, dtype=np.uint32)
    if num_points is not None and raw.size != num_points:
        raise InputError(f"{path}: {raw.size} labels for a scan of {num_points} points")
    return (raw & 0xFFFF).astype(np.uint16), (raw >> 16).astype(np.uint16)
