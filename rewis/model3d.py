"""The exported 3D model folder, and point-cloud prediction and evaluation with it.

A 3D model folder holds `config.json` ({"format": "rewis.model3d/1", classes, input features and their column
count (`feature_columns`; rgb = r, g, b, seen: rewis/scan_colour.py), label map,
voxel size, the class id of every network output}), `model.safetensors` (the SparseUNet3D weights with its
architecture in the metadata, rewis/net3d.py) and `README.md` (a model card). It loads without anything of
the training run. Prediction reads `.bin` (KITTI float32 x, y, z, remission), `.npy` ((N, 3) or (N, 4)),
`.ply` and `.pcd` (open3d; no remission: a model that wants it gets zeros, said once; a model with the `rgb`
feature is refused, see predict_folder3d) and writes
`<stem>.label` (uint32; raw SemanticKITTI ids when the model learnt through the learning map) and a
`<stem>.ply` coloured by class.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from recon.dataset import IGNORE_INDEX, ClassList
from recon.errors import InputError
from rewis.ema import unwrap
from rewis.scans import FEATURE_COLUMNS, ScanSource, feature_channels, point_features, raw_ids, scan_rgb

FORMAT = "rewis.model3d/1"
CLOUD_SUFFIXES = (".bin", ".npy", ".ply", ".pcd")


@dataclass
class Model3D:
    net: nn.Module
    classes: ClassList
    head_classes: np.ndarray  # class id of each network output
    features: tuple[str, ...]
    label_map: str  # ids | semantickitti
    source: str = "training"

    @torch.no_grad()
    def scores(self, points: np.ndarray, device: torch.device | str = "cpu",
               rgb: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Class ids (N,) uint8 and their softmax probabilities (N,) float32 of one cloud (N, 4): x, y, z,
        remission; `rgb` (N, 4) the camera colours (rewis/scan_colour.py) when the model takes them."""
        xyz = torch.from_numpy(np.ascontiguousarray(points[:, :3], dtype=np.float32)).to(device)
        feats = torch.from_numpy(point_features(points, self.features, rgb)).to(device)
        net = unwrap(self.net).to(device).eval()
        prob, index = net(xyz, feats if self.features else None, None)["logits"].float().softmax(1).max(1)
        return self.head_classes[index.cpu().numpy()], prob.cpu().numpy()

    def predict(self, points: np.ndarray, device: torch.device | str = "cpu",
                rgb: np.ndarray | None = None) -> np.ndarray:
        return self.scores(points, device, rgb)[0]


def export_model3d(model: Model3D, folder: Path, card: dict) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    net = unwrap(model.net)
    net.save(folder / "model.safetensors")
    config = {"format": FORMAT, "classes": model.classes.to_json(), "features": list(model.features),
              "feature_columns": feature_channels(model.features),
              "label_map": model.label_map, "voxel_size": net.config.voxel_size,
              "head_classes": model.head_classes.tolist()}
    (folder / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    lines = [f"# rewis 3D model ({card.get('mode', 'unknown mode')})", "",
             f"Point-cloud segmentation, {len(model.classes.names)} classes: {', '.join(model.classes.names)}.",
             f"Input: xyz{''.join(', ' + f for f in model.features)}; voxel size {net.config.voxel_size} m; "
             f"labels written as {'raw SemanticKITTI ids' if model.label_map == 'semantickitti' else 'class ids'}.",
             "", "Use: `rewis predict --model THIS --input SCANS --output OUT`, `rewis eval --model THIS --data DIR`."]
    for key, value in card.items():
        lines.append(f"- {key}: {value}")
    (folder / "README.md").write_text("\n".join(lines) + "\n")
    return folder


def model3d_folder(ref: str | Path) -> Path | None:
    """The 3D model folder behind a model reference (itself or a run folder's export/), or None."""
    path = Path(ref).expanduser()
    for candidate in (path, path / "export"):
        config = candidate / "config.json"
        if config.is_file():
            try:
                return candidate if json.loads(config.read_text()).get("format") == FORMAT else None
            except ValueError:
                return None
    return None


def load_model3d(ref: str | Path, device: str | torch.device = "cpu") -> Model3D:
    from rewis.net3d import SparseUNet3D

    folder = model3d_folder(ref)
    if folder is None:
        raise InputError(f"model '{ref}': not a rewis 3D model folder (config.json with format {FORMAT})")
    config = json.loads((folder / "config.json").read_text())
    net = SparseUNet3D.load(folder / "model.safetensors", device).eval()
    classes = ClassList.from_json(config["classes"], where=f"{folder / 'config.json'}: classes")
    unknown = sorted(set(config["features"]) - set(FEATURE_COLUMNS))
    if unknown:
        raise InputError(f"{folder / 'config.json'}: features {unknown} are unknown to this rewis (known: "
                         f"{', '.join(FEATURE_COLUMNS)}); update rewis")
    return Model3D(net, classes, np.asarray(config["head_classes"], np.uint8), tuple(config["features"]),
                   config["label_map"], str(folder))


# ---------------------------------------------------------------------------------------------- clouds

def read_cloud(path: Path) -> tuple[np.ndarray, bool]:
    """(N, 4) float32 x, y, z, remission of a point-cloud file, and whether it had remission."""
    from rewis.scans import read_points

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".bin":
        return read_points(path), True
    if suffix == ".npy":
        data = np.load(path, allow_pickle=False)
        if data.ndim != 2 or data.shape[1] not in (3, 4):
            raise InputError(f"{path}: array of shape {data.shape}; expected (N, 3) xyz or (N, 4) xyz + remission")
        has = data.shape[1] == 4
    else:
        import open3d as o3d

        cloud = o3d.io.read_point_cloud(str(path))
        data, has = np.asarray(cloud.points), False
        if not len(data):
            raise InputError(f"{path}: no points could be read (empty or not a {suffix[1:]} point cloud)")
    out = np.zeros((len(data), 4), np.float32)
    out[:, :data.shape[1]] = data
    return out, has


def find_clouds(folder: Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"--input {folder}: folder not found")
    found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in CLOUD_SUFFIXES and p.is_file())
    if not found:
        raise InputError(f"--input {folder}: no point clouds ({', '.join(CLOUD_SUFFIXES)}) in it")
    return found


@dataclass
class Predict3DSummary:
    written: int
    points: int
    skipped: list[tuple[str, str]]

    def line(self) -> str:
        extra = f", {len(self.skipped)} skipped" if self.skipped else ""
        return f"{self.written} point clouds segmented ({self.points} points){extra}"


def predict_folder3d(model: Model3D, input_dir: Path, output: Path, device: str = "cpu", overwrite: bool = False,
                     progress: bool = True) -> Predict3DSummary:
    """Segment every cloud under `input_dir` into `output`, keeping relative paths.

    A model that takes camera colour (`rgb`) is refused here, before anything is written, rather than fed
    zeros: zero colour with seen = 0 is what it learnt for points outside the camera view, so it would segment
    the whole cloud as if no camera saw it, silently worse exactly where the images helped; a user who trained
    with images expects them used, and `rewis eval --data` on the scan folder (images and calibration beside
    the scans) gives them. Missing remission only warns: bare .ply / .pcd files cannot carry it."""
    from tqdm import tqdm

    if "rgb" in model.features:
        raise InputError(f"model {model.source}: needs camera colour (feature 'rgb': image and calibration per "
                         "scan), which bare point clouds lack; score a scan folder with images via rewis eval "
                         "--data, or train without rgb in method.features")
    clouds = find_clouds(input_dir)
    targets = [(c, output / c.relative_to(input_dir).with_suffix(".label")) for c in clouds]
    existing = [t for _, t in targets if t.exists() or t.with_suffix(".ply").exists()]
    if existing and not overwrite:
        raise InputError(f"{existing[0]}: already exists; pass --overwrite to replace outputs or choose another "
                         "--output")
    summary, warned = Predict3DSummary(0, 0, []), False
    for cloud, target in tqdm(targets, desc="predict", unit="scan", disable=not progress):
        try:
            points, has_remission = read_cloud(cloud)
        except (InputError, OSError, ValueError) as e:
            summary.skipped.append((str(cloud.relative_to(input_dir)), str(e)))
            continue
        if "remission" in model.features and not has_remission and not warned:
            warnings.warn(f"{cloud.suffix} clouds carry no remission; the model gets zeros there", stacklevel=2)
            warned = True
        labels = model.predict(points, device)
        target.parent.mkdir(parents=True, exist_ok=True)
        written = raw_ids(labels) if model.label_map == "semantickitti" else labels.astype(np.uint32)
        written.astype("<u4").tofile(target)
        write_coloured_ply(target.with_suffix(".ply"), points[:, :3], labels, model.classes)
        summary.written += 1
        summary.points += len(points)
    return summary


def write_coloured_ply(path: Path, xyz: np.ndarray, labels: np.ndarray, classes: ClassList) -> None:
    import open3d as o3d

    palette = np.asarray(classes.palette, np.float64) / 255.0
    colours = np.zeros((len(labels), 3))
    known = labels != IGNORE_INDEX
    colours[known] = palette[labels[known]]
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(xyz.astype(np.float64)))
    cloud.colors = o3d.utility.Vector3dVector(colours)
    o3d.io.write_point_cloud(str(path), cloud)


# ---------------------------------------------------------------------------------------------- evaluation

def score_scans(model: Model3D, folders: list[ScanSource], device: str | torch.device = "cpu",
                progress: bool = False) -> dict:
    """One point confusion matrix of `model` over every scan of `folders` (their dense labels; their camera
    images when the model takes rgb)."""
    from tqdm import tqdm

    from segment.evaluate import class_lut
    from segment.metrics import ConfusionMeter

    meter = ConfusionMeter(model.classes.num_classes)
    luts = {folder.path: class_lut(folder.classes, model.classes, folder.path) for folder in folders}
    items = [(f, s) for f in folders for s in f.scans]
    for folder, scan in tqdm(items, desc="eval", unit="scan", disable=not progress, leave=False):
        points = folder.points(scan)
        truth = luts[folder.path][folder.labels(scan, "labels", len(points))]
        predicted = model.predict(points, device, scan_rgb(folder, scan, points, model.features))
        meter.update(torch.from_numpy(predicted.astype(np.int64)),
                     torch.from_numpy(truth.astype(np.int64)))
    report = meter.summary(list(model.classes.names))
    report.update(scans=len(items), gt_points={n: int(v) for n, v in zip(model.classes.names,
                                                                         meter.counts().sum(1).tolist())})
    return report
