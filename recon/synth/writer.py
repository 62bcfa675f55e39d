"""Writes a rendered sequence in the dataset folder layout of docs/FORMATS.md (deterministic bytes)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from recon.dataset import CameraFrame, ClassList, write_cameras, write_classes, write_json, write_label
from recon.synth import lidar as lidar_io
from recon.synth.render import FrameRender


def stem(index: int) -> str:
    return f"{index:06d}"


def boxes_from_instances(label: np.ndarray, instance: np.ndarray) -> list[dict]:
    """One box per visible instance: [x1, y1, x2, y2] inclusive-exclusive, class = its majority label."""
    flat = instance.ravel()
    hit = np.flatnonzero(flat)
    if hit.size == 0:
        return []
    ids = flat[hit]
    order = np.argsort(ids, kind="stable")
    hit, ids = hit[order], ids[order]
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    width = instance.shape[1]
    rows, cols = hit // width, hit % width
    labels = label.ravel()[hit]
    boxes = []
    for start, end in zip(starts, np.r_[starts[1:], len(ids)]):
        cls = int(np.bincount(labels[start:end]).argmax())
        box = [int(cols[start:end].min()), int(rows[start:end].min()),
               int(cols[start:end].max()) + 1, int(rows[start:end].max()) + 1]
        boxes.append({"class": cls, "instance": int(ids[start]), "box": box})
    return boxes


def write_frame(seq: Path, index: int, frame: FrameRender, classes: ClassList) -> None:
    name = stem(index)
    Image.fromarray(frame.rgb).save(seq / "images" / f"{name}.png", optimize=False, compress_level=3)
    write_label(seq / "labels" / f"{name}.png", frame.label, classes)
    Image.fromarray(frame.instance.astype(np.uint16)).save(seq / "instances" / f"{name}.png", optimize=False)
    np.save(seq / "depth" / f"{name}.npy", frame.depth.astype(np.float32), allow_pickle=False)
    write_json(seq / "boxes" / f"{name}.json", {"boxes": boxes_from_instances(frame.label, frame.instance)})


def make_folders(seq: Path, lidar: bool) -> None:
    subs = ["images", "labels", "instances", "depth", "boxes"]
    if lidar:
        subs += ["lidar/velodyne", "lidar/labels", "lidar/image_2"]
    for sub in subs:
        (seq / sub).mkdir(parents=True, exist_ok=True)


def write_sequence_meta(seq: Path, classes: ClassList, K: np.ndarray, poses: list[np.ndarray],
                        size: tuple[int, int], info: dict) -> None:
    width, height = size
    frames = [CameraFrame(f"{stem(i)}.png", width, height, K, pose) for i, pose in enumerate(poses)]
    write_cameras(seq, frames)
    write_classes(seq, classes)
    write_json(seq / "synth.json", info)


def write_lidar_scan(seq: Path, index: int, points: np.ndarray, labels: np.ndarray) -> None:
    name = stem(index)
    lidar_io.write_scan(seq / "lidar" / "velodyne" / f"{name}.bin", seq / "lidar" / "labels" / f"{name}.label",
                        points, labels)
    shutil.copyfile(seq / "images" / f"{name}.png", seq / "lidar" / "image_2" / f"{name}.png")


def write_lidar_meta(seq: Path, classes: ClassList, K: np.ndarray, cam_from_velo: np.ndarray,
                     poses: list[np.ndarray]) -> None:
    lidar_io.write_calib(seq / "lidar" / "calib.txt", K, cam_from_velo)
    lidar_io.write_poses(seq / "lidar" / "poses.txt", poses)
    write_json(seq / "lidar" / "meta.json", {"format": "rewis.lidar/1", "classes": classes.to_json(),
                                             "frames": len(poses)})
