"""`rewis recon` on the command line: bad input gives one line and exit code 2, nothing is left half-written."""

from __future__ import annotations

import shutil
import struct
import json

import numpy as np
import pytest
from PIL import Image

from apps.cli import main
from recon.scene import Scene
from test_recon_helpers import render_room


@pytest.fixture(scope="module")
def room(tmp_path_factory):
    return render_room(tmp_path_factory.mktemp("room") / "seq", frames=3, size=(64, 48))


def run_bad(capsys, argv, out):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("rewis recon: error:")
    leftovers = [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]
    assert not leftovers
    return err[-1]


def noise_images(folder, sizes, seed=0):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i, (w, h) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")


def test_empty_folder(tmp_path, capsys):
    (tmp_path / "seq" / "images").mkdir(parents=True)
    msg = run_bad(capsys, ["recon", str(tmp_path / "seq"), "--out", str(tmp_path / "s")], tmp_path / "s")
    assert "no images" in msg and not (tmp_path / "s").exists()


def test_single_image(tmp_path, capsys):
    noise_images(tmp_path / "seq" / "images", [(64, 48)])
    msg = run_bad(capsys, ["recon", str(tmp_path / "seq"), "--out", str(tmp_path / "s")], tmp_path / "s")
    assert "only 1 image" in msg and not (tmp_path / "s").exists()


def test_unreadable_image(tmp_path, capsys):
    noise_images(tmp_path / "seq" / "images", [(64, 48)] * 2)
    (tmp_path / "seq" / "images" / "002.png").write_bytes(b"not a png")
    msg = run_bad(capsys, ["recon", str(tmp_path / "seq"), "--out", str(tmp_path / "s")], tmp_path / "s")
    assert "002.png" in msg and "cannot read" in msg


def test_mixed_sizes_with_shared_camera(tmp_path, capsys):
    noise_images(tmp_path / "seq" / "images", [(64, 48), (64, 48), (80, 48)])
    msg = run_bad(capsys, ["recon", str(tmp_path / "seq"), "--out", str(tmp_path / "s")], tmp_path / "s")
    assert "differ in size" in msg and "--camera per-image" in msg


def test_too_few_registered_says_how_many_and_what_to_try(tmp_path, capsys):
    noise_images(tmp_path / "seq" / "images", [(96, 72)] * 3)
    msg = run_bad(capsys, ["recon", str(tmp_path / "seq"), "--out", str(tmp_path / "s"), "--quiet", "--no-robust"],
                  tmp_path / "s")
    assert "registered only 0 of 3" in msg and "try" in msg and not (tmp_path / "s").exists()


def test_existing_scene_is_kept_without_overwrite(room, tmp_path, capsys):
    out = tmp_path / "s"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    msg = run_bad(capsys, ["recon", str(room), "--source", "rgbd", "--out", str(out)], out)
    assert "--overwrite" in msg and (out / "keep.txt").read_text() == "mine"
    assert main(["recon", str(room), "--source", "rgbd", "--out", str(out), "--overwrite", "--quiet"]) == 0
    assert not (out / "keep.txt").exists() and (out / "scene.json").is_file()


def test_rgbd_without_poses(room, tmp_path, capsys):
    seq = tmp_path / "seq"
    shutil.copytree(room, seq)
    (seq / "cameras.json").unlink()
    msg = run_bad(capsys, ["recon", str(seq), "--source", "rgbd", "--out", str(tmp_path / "s")], tmp_path / "s")
    assert "cameras.json" in msg


def test_export_only_recolours(room, tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["recon", str(room), "--source", "rgbd", "--out", str(out), "--quiet"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["points"] > 0 and report["frames_registered"] == 3
    before = (out / "cloud.ply").read_bytes()
    assert main(["recon", "--export-only", str(out), "--color", "label"]) == 0
    after = (out / "cloud.ply").read_bytes()
    assert len(after) == len(before) and after != before
    glb = (out / "cloud.glb").read_bytes()
    magic, version, length = struct.unpack("<4sII", glb[:12])
    assert magic == b"glTF" and version == 2 and length == len(glb)
    chunk_len, chunk_type = struct.unpack("<I4s", glb[12:20])
    gltf = json.loads(glb[20:20 + chunk_len])
    assert chunk_type == b"JSON" and gltf["accessors"][0]["count"] == report["points"]
    xyz = Scene.load(out).cloud.xyz  # glTF is y up: the GLB holds (x, -y, -z) of the scene's OpenCV axes
    accessor = gltf["accessors"][0]
    np.testing.assert_allclose(accessor["max"], [xyz[:, 0].max(), -xyz[:, 1].min(), -xyz[:, 2].min()], rtol=1e-6)
    assert main(["recon", "--export-only", str(tmp_path / "nothing")]) == 2


def test_mixed_sizes_with_dense_stereo_fail_before_sfm(tmp_path, capsys):
    noise_images(tmp_path / "seq" / "images", [(64, 48), (64, 48), (80, 48)])
    msg = run_bad(capsys, ["recon", str(tmp_path / "seq"), "--out", str(tmp_path / "s"), "--camera", "per-image"],
                  tmp_path / "s")
    assert "differ in size" in msg and "--no-dense" in msg


def test_output_inside_the_input_is_refused_and_the_input_kept(room, tmp_path, capsys):
    seq = tmp_path / "seq"
    shutil.copytree(room, seq)
    before = sorted(p.relative_to(seq) for p in seq.rglob("*"))
    msg = run_bad(capsys, ["recon", str(seq), "--out", str(seq), "--source", "rgbd", "--overwrite"], seq)
    assert "contains the input" in msg
    assert sorted(p.relative_to(seq) for p in seq.rglob("*")) == before


def test_images_stored_rotated_are_refused_with_the_fix(tmp_path, capsys):
    noise_images(tmp_path / "seq" / "images", [(64, 48)] * 3)
    rotated = Image.open(tmp_path / "seq" / "images" / "001.png").convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated.save(tmp_path / "seq" / "images" / "001.jpg", exif=exif)
    (tmp_path / "seq" / "images" / "001.png").unlink()
    msg = run_bad(capsys, ["recon", str(tmp_path / "seq"), "--out", str(tmp_path / "s"), "--no-dense"], tmp_path / "s")
    assert "001.jpg" in msg and "orientation 6" in msg and "upright" in msg


def test_negative_camera_height_is_refused(room, tmp_path, capsys):
    out = tmp_path / "s"
    msg = run_bad(capsys, ["recon", str(room), "--out", str(out), "--camera-height", "-1"], out)
    assert "--camera-height -1" in msg and not out.exists()
