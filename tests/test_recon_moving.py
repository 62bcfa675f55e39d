"""Keypoint masks over moving classes: SIFT finds no keypoint on a car that the frame's labels mark, the
classes come from the command line or classes.json's `moving` (none otherwise), and recon reports the masks."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pycolmap
import pytest

from recon import colmap_adapter as colmap
from recon.dataset import ClassList, read_classes, read_label
from recon.errors import InputError
from recon.moving import moving_class_ids, write_moving_masks


def keypoints_by_name(database) -> dict[str, np.ndarray]:
    db = pycolmap.Database.open(database)
    try:
        return {im.name: db.read_keypoints(im.image_id)[:, :2] for im in db.read_all_images()}
    finally:
        db.close()


def test_no_keypoint_lands_on_a_labelled_car(synth_sequence, tmp_path):
    seq = synth_sequence("street", frames=2, seed=0, size=(240, 180))
    classes = read_classes(seq)
    images = sorted((seq / "images").iterdir())
    frames = [(im, (240, 180), [seq / "labels" / f"{im.stem}.png"]) for im in images]
    car = classes.names.index("car")
    cars = {im.name: read_label(seq / "labels" / f"{im.stem}.png") == car for im in images}
    assert all(c.mean() > 0.01 for c in cars.values())  # the test needs cars in view
    assert write_moving_masks(frames, classes, tmp_path / "none") is None  # the street declares no moving class
    masks = write_moving_masks(frames, classes, tmp_path / "masks", ("car", "person"), grow_px=0)
    assert masks["frames"] == 2 and masks["classes"] == ["car", "person"] and masks["masked_share"] > 0.01
    found = {}
    for name, mask_dir in (("plain", None), ("masked", tmp_path / "masks")):
        colmap.extract_features(tmp_path / f"{name}.db", seq / "images", [im.name for im in images],
                                num_threads=1, mask_dir=mask_dir)
        found[name] = keypoints_by_name(tmp_path / f"{name}.db")

    def on_cars(name):
        return sum(int(cars[n][kp[:, 1].astype(int).clip(0, 179), kp[:, 0].astype(int).clip(0, 239)].sum())
                   for n, kp in found[name].items())

    assert on_cars("plain") > 20 and on_cars("masked") == 0
    assert sum(len(k) for k in found["masked"].values()) > 100  # the street keeps its keypoints


def test_moving_classes_come_from_the_command_line_or_classes_json():
    names = ("road", "car", "person", "tree")
    palette = ((0, 0, 0),) * 4
    assert moving_class_ids(ClassList(names, palette)) == []
    assert moving_class_ids(ClassList(names, palette, moving=("car", "person"))) == [1, 2]
    assert moving_class_ids(ClassList(names, palette, moving=("car",)), ("tree",)) == [3]
    with pytest.raises(InputError, match="--moving-classes: \\['bus'\\]"):
        moving_class_ids(ClassList(names, palette), ("bus",))
    assert ClassList.from_json(ClassList(names, palette, moving=("car",)).to_json()).moving == ("car",)
    assert "moving" not in ClassList(names, palette).to_json()
    with pytest.raises(InputError, match="moving names"):
        ClassList(names, palette, moving=("bus",))


def test_recon_reports_its_moving_masks(synth_sequence, tmp_path):
    from recon.build import reconstruct
    from recon.sources import ReconOptions

    seq = tmp_path / "seq"
    shutil.copytree(synth_sequence("street", frames=4, seed=1, size=(160, 120)), seq)
    classes = json.loads((seq / "classes.json").read_text())
    (seq / "classes.json").write_text(json.dumps({**classes, "moving": ["car"]}))
    report = reconstruct(seq, tmp_path / "scene", ReconOptions(source="images", dense=False, progress=False,
                                                               use_intrinsics=True), overwrite=True)
    masks = report["moving_masks"]
    assert masks["frames"] == 4 and masks["classes"] == ["car"] and 0 < masks["masked_share"] < 0.5
    off = reconstruct(seq, tmp_path / "scene2", ReconOptions(source="images", dense=False, progress=False,
                                                             use_intrinsics=True, mask_moving="off"), overwrite=True)
    assert off["moving_masks"] is None
