"""Scene cloud -> binary PLY and GLB (glTF 2.0 POINTS), coloured by rgb, class label or confidence.

Both writers are a few lines of struct packing, so no mesh library is needed; files are written under a
temporary name and renamed, so a crash never leaves a half-written export.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np

from recon.dataset import ClassList
from recon.errors import InputError
from recon.scene import UNLABELED, Cloud

COLOR_MODES = ("rgb", "label", "confidence")
NONE_GREY = np.array([160, 160, 160], np.uint8)


def point_colors(cloud: Cloud, classes: ClassList, mode: str = "rgb") -> np.ndarray:
    """(N, 3) uint8 colours. 'label' uses ground truth where present, else the weak label (grey = none)."""
    if mode == "rgb":
        return cloud.rgb
    if mode == "label":
        labels = cloud.label if cloud.label is not None else cloud.weak_label
        palette = np.tile(NONE_GREY, (256, 1))
        palette[:classes.num_classes] = np.asarray(classes.palette, np.uint8)
        palette[UNLABELED] = NONE_GREY
        return palette[labels]
    if mode == "confidence":
        return confidence_ramp(cloud.conf)
    raise InputError(f"unknown colour mode {mode!r}; choose one of {', '.join(COLOR_MODES)}")


def confidence_ramp(conf: np.ndarray) -> np.ndarray:
    """Blue (0) -> green (0.5) -> red (1)."""
    c = np.clip(conf, 0, 1)[:, None]
    blue, green, red = np.array([40, 60, 230.]), np.array([60, 200, 60.]), np.array([230, 40, 40.])
    low = blue + (green - blue) * (c * 2)
    high = green + (red - green) * (c * 2 - 1)
    return np.where(c < 0.5, low, high).round().astype(np.uint8)


def write_ply(path: Path, xyz: np.ndarray, colors: np.ndarray) -> None:
    n = len(xyz)
    header = ("ply\nformat binary_little_endian 1.0\ncomment written by rewis\n"
              f"element vertex {n}\nproperty float x\nproperty float y\nproperty float z\n"
              "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n").encode()
    record = np.dtype([("xyz", "<f4", (3,)), ("rgb", "u1", (3,))])
    body = np.empty(n, record)
    body["xyz"], body["rgb"] = xyz, colors
    _write_atomic(path, header + body.tobytes())


def write_glb(path: Path, xyz: np.ndarray, colors: np.ndarray) -> None:
    """A single glTF mesh with one POINTS primitive (mode 0): POSITION float32, COLOR_0 normalised uint8 RGBA."""
    n = len(xyz)
    positions = np.ascontiguousarray(xyz, "<f4").tobytes()
    rgba = np.concatenate([colors, np.full((n, 1), 255, np.uint8)], axis=1).tobytes()
    binary = positions + rgba
    lo = xyz.min(axis=0).tolist() if n else [0.0] * 3
    hi = xyz.max(axis=0).tolist() if n else [0.0] * 3
    gltf = {
        "asset": {"version": "2.0", "generator": "rewis"},
        "scene": 0, "scenes": [{"nodes": [0]}], "nodes": [{"mesh": 0}],
        "meshes": [{"primitives": [{"attributes": {"POSITION": 0, "COLOR_0": 1}, "mode": 0}]}],
        "buffers": [{"byteLength": len(binary)}],
        "bufferViews": [{"buffer": 0, "byteOffset": 0, "byteLength": len(positions), "target": 34962},
                        {"buffer": 0, "byteOffset": len(positions), "byteLength": len(rgba), "target": 34962}],
        "accessors": [{"bufferView": 0, "componentType": 5126, "count": n, "type": "VEC3", "min": lo, "max": hi},
                      {"bufferView": 1, "componentType": 5121, "normalized": True, "count": n, "type": "VEC4"}],
    }
    json_chunk = _pad(json.dumps(gltf, separators=(",", ":")).encode(), b" ")
    bin_chunk = _pad(binary, b"\0")
    total = 12 + 8 + len(json_chunk) + 8 + len(bin_chunk)
    data = (struct.pack("<4sII", b"glTF", 2, total) + struct.pack("<I4s", len(json_chunk), b"JSON") + json_chunk
            + struct.pack("<I4s", len(bin_chunk), b"BIN\0") + bin_chunk)
    _write_atomic(path, data)


def gltf_axes(xyz: np.ndarray) -> np.ndarray:
    """Scene (OpenCV) axes, y down and z forward, -> glTF's y up and z towards the viewer."""
    return (np.asarray(xyz, np.float32) * np.array([1.0, -1.0, -1.0], np.float32)).astype(np.float32)


def export_cloud(folder: Path, cloud: Cloud, classes: ClassList, mode: str = "rgb") -> list[Path]:
    """Write folder/cloud.ply (scene coordinates) and folder/cloud.glb (glTF axes, so viewers show it upright),
    coloured by `mode`."""
    colors = point_colors(cloud, classes, mode)
    folder = Path(folder)
    write_ply(folder / "cloud.ply", cloud.xyz, colors)
    write_glb(folder / "cloud.glb", gltf_axes(cloud.xyz), colors)
    return [folder / "cloud.ply", folder / "cloud.glb"]


def _pad(data: bytes, fill: bytes) -> bytes:
    return data + fill * (-len(data) % 4)


def _write_atomic(path: Path, data: bytes) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
