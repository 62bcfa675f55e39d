"""nuScenes sample reader for the layout of shared/data/nuscenes_sample (one LiDAR sweep, six cameras).

Folder: LIDAR_TOP.pcd.bin (float32 N x 5: x, y, z, intensity, ring; LiDAR frame), CAM_*.jpg, sample.json
(per camera K, lidar2cam, cam2ego; lidar2ego; ego2global; boxes). Pixel of a LiDAR point in camera c:
K_c @ lidar2cam_c @ [x y z 1] (recon.projection with cam_from_world = lidar2cam, world = LiDAR frame).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from recon.errors import InputError

LIDAR_COLUMNS = 5


@dataclass(frozen=True)
class Camera:
    name: str
    image: Path
    width: int
    height: int
    K: np.ndarray  # (3, 3)
    lidar2cam: np.ndarray  # (4, 4)
    cam2ego: np.ndarray  # (4, 4)


@dataclass(frozen=True)
class Sample:
    root: Path
    points: np.ndarray  # float32 (N, 5)
    cameras: tuple[Camera, ...]
    lidar2ego: np.ndarray
    ego2global: np.ndarray
    meta: dict = field(repr=False)  # the whole sample.json (boxes, classes, tokens)

    @property
    def xyz(self) -> np.ndarray:
        return self.points[:, :3]

    def stacked_cameras(self) -> tuple[np.ndarray, np.ndarray, list[int], list[int]]:
        """K (V, 3, 3), cam_from_lidar (V, 4, 4), widths, heights, in camera order, for recon.projection."""
        return (np.stack([c.K for c in self.cameras]), np.stack([c.lidar2cam for c in self.cameras]),
                [c.width for c in self.cameras], [c.height for c in self.cameras])


def read_sample(folder: str | Path) -> Sample:
    root = Path(folder)
    meta_path = root / "sample.json"
    if not meta_path.is_file():
        raise InputError(f"{meta_path}: file not found (expected a nuScenes sample folder)")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as err:
        raise InputError(f"{meta_path}: not valid JSON ({err})") from None
    lidar = _field(meta, "lidar", meta_path)
    points = _read_points(root / str(_field(lidar, "file", meta_path, "lidar.file")))
    cameras = tuple(_camera(name, spec, root, meta_path) for name, spec in _field(meta, "cameras", meta_path).items())
    return Sample(root=root, points=points, cameras=cameras,
                  lidar2ego=_matrix(lidar, "lidar2ego", (4, 4), meta_path, "lidar.lidar2ego"),
                  ego2global=_matrix(meta, "ego2global", (4, 4), meta_path), meta=meta)


def _read_points(path: Path) -> np.ndarray:
    if not path.is_file():
        raise InputError(f"{path}: LiDAR file not found")
    data = np.fromfile(path, dtype=np.float32)
    if data.size % LIDAR_COLUMNS:
        raise InputError(f"{path}: {data.size} float32 values is not a multiple of {LIDAR_COLUMNS} columns")
    return data.reshape(-1, LIDAR_COLUMNS)


def _camera(name: str, spec: dict, root: Path, where: Path) -> Camera:
    image = root / str(_field(spec, "file", where, f"cameras.{name}.file"))
    if not image.is_file():
        raise InputError(f"{image}: image of camera {name} not found")
    with Image.open(image) as im:  # reads the header only
        width, height = im.size
    return Camera(name=name, image=image, width=width, height=height,
                  K=_matrix(spec, "K", (3, 3), where, f"cameras.{name}.K"),
                  lidar2cam=_matrix(spec, "lidar2cam", (4, 4), where, f"cameras.{name}.lidar2cam"),
                  cam2ego=_matrix(spec, "cam2ego", (4, 4), where, f"cameras.{name}.cam2ego"))


def _field(data: dict, key: str, where: Path, name: str | None = None):
    if not isinstance(data, dict) or key not in data:
        raise InputError(f"{where}: field '{name or key}' is missing")
    return data[key]


def _matrix(data: dict, key: str, shape: tuple[int, int], where: Path, name: str | None = None) -> np.ndarray:
    try:
        m = np.asarray(_field(data, key, where, name), dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{where}: field '{name or key}' must be a {shape[0]}x{shape[1]} matrix of numbers") from None
    if m.shape != shape:
        raise InputError(f"{where}: field '{name or key}' has shape {m.shape}, expected {shape}")
    return m


# ---------------------------------------------------------------------------------------------- v1.0 tables

# nuScenes-lidarseg categories in the index order of the official v1.0 category.json (its `index` field)
LIDARSEG_CATEGORIES = (
    "noise", "animal", "human.pedestrian.adult", "human.pedestrian.child", "human.pedestrian.construction_worker",
    "human.pedestrian.personal_mobility", "human.pedestrian.police_officer", "human.pedestrian.stroller",
    "human.pedestrian.wheelchair", "movable_object.barrier", "movable_object.debris",
    "movable_object.pushable_pullable", "movable_object.trafficcone", "static_object.bicycle_rack",
    "vehicle.bicycle", "vehicle.bus.bendy", "vehicle.bus.rigid", "vehicle.car", "vehicle.construction",
    "vehicle.emergency.ambulance", "vehicle.emergency.police", "vehicle.motorcycle", "vehicle.trailer",
    "vehicle.truck", "flat.driveable_surface", "flat.other", "flat.sidewalk", "flat.terrain", "static.manmade",
    "static.other", "static.vegetation", "vehicle.ego")
TABLES = ("sample", "sample_data", "calibrated_sensor", "ego_pose", "sensor")


@dataclass(frozen=True)
class CameraLink:
    """A camera sample_data of the same sample as a LiDAR sweep: pixel = K @ cam_from_lidar @ [x y z 1]."""
    channel: str
    token: str
    image: Path
    width: int
    height: int
    K: np.ndarray  # (3, 3)
    cam_from_lidar: np.ndarray  # (4, 4), through the ego poses at both timestamps


def quaternion_matrix(wxyz) -> np.ndarray:
    """3x3 rotation of a unit quaternion (w, x, y, z), the nuScenes order."""
    w, x, y, z = np.asarray(wxyz, np.float64) / np.linalg.norm(wxyz)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def pose_matrix(record: dict, where: str) -> np.ndarray:
    """4x4 of a calibrated_sensor (sensor -> ego) or ego_pose (ego -> global) record."""
    try:
        rotation, translation = np.asarray(record["rotation"], float), np.asarray(record["translation"], float)
    except KeyError as err:
        raise InputError(f"{where}: field {err.args[0]!r} is missing") from None
    if rotation.shape != (4,) or translation.shape != (3,):
        raise InputError(f"{where}: rotation must be 4 numbers (w, x, y, z) and translation 3")
    out = np.eye(4)
    out[:3, :3], out[:3, 3] = quaternion_matrix(rotation), translation
    return out


def table_versions(dataroot: Path) -> list[str]:
    """The `v1.0-*` folders of a dataroot that hold a sample_data.json."""
    return sorted(p.name for p in Path(dataroot).glob("v1.0-*") if (p / "sample_data.json").is_file())


class NuScenesTables:
    """The official nuScenes v1.0 tables of one version (dataroot/v1.0-*/*.json), indexed by token."""

    def __init__(self, dataroot: str | Path, version: str):
        self.root, self.version = Path(dataroot), version
        self.tables = {name: self._load(name) for name in TABLES}
        self.lidarseg = {r["sample_data_token"]: r for r in self._load_list("lidarseg")} \
            if (self.root / version / "lidarseg.json").is_file() else {}
        categories = self._load_list("category") if (self.root / version / "category.json").is_file() else []
        self.categories = {int(self._get(c, "index", "category")): str(self._get(c, "name", "category"))
                           for c in categories if "index" in c}

    def _load_list(self, name: str) -> list[dict]:
        path = self.root / self.version / f"{name}.json"
        if not path.is_file():
            raise InputError(f"{path}: table not found; a nuScenes dataroot needs {', '.join(TABLES)}.json")
        try:
            rows = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise InputError(f"{path}: not valid JSON ({err})") from None
        if not isinstance(rows, list) or not all(isinstance(r, dict) and "token" in r for r in rows):
            raise InputError(f"{path}: expected a list of records, each with a 'token'")
        return rows

    def _load(self, name: str) -> dict[str, dict]:
        return {r["token"]: r for r in self._load_list(name)}

    def _get(self, record: dict, key: str, table: str):
        if key not in record:
            raise InputError(f"{self.root / self.version / table}.json: record {record.get('token')} lacks field "
                             f"{key!r}")
        return record[key]

    def _ref(self, table: str, token: str, by: str) -> dict:
        if token not in self.tables[table]:
            raise InputError(f"{self.root / self.version / table}.json: token {token} (named by {by}) not found")
        return self.tables[table][token]

    def sensor(self, sample_data: dict) -> dict:
        calib = self._ref("calibrated_sensor", self._get(sample_data, "calibrated_sensor_token", "sample_data"),
                          f"sample_data {sample_data['token']}")
        return self._ref("sensor", self._get(calib, "sensor_token", "calibrated_sensor"), f"calibrated_sensor "
                         f"{calib['token']}")

    def lidar_keyframes(self) -> list[dict]:
        """Key-frame sample_data of LiDAR sensors, in time order."""
        rows = [sd for sd in self.tables["sample_data"].values()
                if sd.get("is_key_frame") and self.sensor(sd).get("modality") == "lidar"]
        return sorted(rows, key=lambda sd: (sd.get("timestamp", 0), sd["token"]))

    def file(self, sample_data_token: str) -> Path:
        sd = self._ref("sample_data", sample_data_token, "a scan id")
        return self.root / str(self._get(sd, "filename", "sample_data"))

    def lidarseg_file(self, sample_data_token: str) -> Path | None:
        record = self.lidarseg.get(sample_data_token)
        return None if record is None else self.root / str(self._get(record, "filename", "lidarseg"))

    def global_from_sensor(self, sample_data: dict) -> np.ndarray:
        """global <- ego (ego pose at the sample_data's timestamp) <- sensor (calibration)."""
        where = f"sample_data {sample_data['token']}"
        calib = self._ref("calibrated_sensor", self._get(sample_data, "calibrated_sensor_token", "sample_data"),
                          where)
        ego = self._ref("ego_pose", self._get(sample_data, "ego_pose_token", "sample_data"), where)
        return pose_matrix(ego, f"ego_pose {ego['token']}") @ pose_matrix(calib, f"calibrated_sensor {calib['token']}")

    def camera_links(self, lidar_token: str) -> list[CameraLink]:
        """Every camera sample_data of the LiDAR sweep's sample (key frames), channel order."""
        lidar = self._ref("sample_data", lidar_token, "a scan id")
        global_from_lidar = self.global_from_sensor(lidar)
        sample = self._get(lidar, "sample_token", "sample_data")
        links = []
        for sd in self.tables["sample_data"].values():
            if sd.get("sample_token") != sample or not sd.get("is_key_frame"):
                continue
            sensor = self.sensor(sd)
            if sensor.get("modality") != "camera":
                continue
            calib = self.tables["calibrated_sensor"][sd["calibrated_sensor_token"]]
            K = np.asarray(self._get(calib, "camera_intrinsic", "calibrated_sensor"), np.float64)
            if K.shape != (3, 3):
                raise InputError(f"{self.root / self.version}/calibrated_sensor.json: camera_intrinsic of "
                                 f"{calib['token']} must be 3x3")
            cam_from_lidar = np.linalg.inv(self.global_from_sensor(sd)) @ global_from_lidar
            links.append(CameraLink(str(sensor.get("channel", "")), sd["token"], self.root / sd["filename"],
                                    int(sd.get("width") or 0), int(sd.get("height") or 0), K, cam_from_lidar))
        return sorted(links, key=lambda link: link.channel)


def read_lidar_points(path: str | Path) -> np.ndarray:
    """A nuScenes LIDAR_TOP .pcd.bin -> float32 (N, 5): x, y, z, intensity (0..255), ring."""
    return _read_points(Path(path))
