"""--source colmap: an existing sparse model (bin or txt) plus its images becomes a Scene."""

from __future__ import annotations

import numpy as np
import pycolmap
import pytest
from PIL import Image

from recon.build import reconstruct
from recon.scene import Scene
from recon.sources import ReconOptions


def synthetic_model(folder, text: bool):
    options = pycolmap.SyntheticDatasetOptions()
    options.num_rigs, options.num_frames_per_rig, options.num_points3D = 1, 4, 50
    options.camera_width, options.camera_height, options.camera_params = 64, 48, [80.0, 32.0, 24.0, 0.0]
    model = pycolmap.synthesize_dataset(options)
    sparse = folder / "sparse" / "0"
    sparse.mkdir(parents=True)
    model.write_text(sparse) if text else model.write_binary(sparse)
    (folder / "images").mkdir()
    for image in model.images.values():
        Image.fromarray(np.full((48, 64, 3), 100, np.uint8)).save(folder / "images" / image.name)
    return model


@pytest.mark.parametrize("text", [False, True])
def test_colmap_model_import(tmp_path, text):
    model = synthetic_model(tmp_path / "seq", text)
    report = reconstruct(tmp_path / "seq", tmp_path / "scene", ReconOptions(source="colmap", progress=False))
    scene = Scene.load(tmp_path / "scene")
    assert report["frames_registered"] == len(scene.frames) == 4
    assert len(scene.cloud) == model.num_points3D() == 50
    assert len(scene.links.point) == model.compute_num_observations()
    for f, frame in enumerate(scene.frames):
        name = frame.image.rsplit("/", 1)[-1]
        truth = next(im for im in model.images.values() if im.name == name)
        assert np.allclose(frame.cam_from_world[:3], truth.cam_from_world().matrix())
        point, v, u = scene.links.frame(f)
        cam = scene.cloud.xyz[point].astype(np.float64) @ frame.cam_from_world[:3, :3].T + frame.cam_from_world[:3, 3]
        pix = cam @ frame.K.T
        assert np.abs(pix[:, :2] / pix[:, 2:] - np.stack([u + 0.5, v + 0.5], 1)).max() <= 0.5 + 1e-3


def test_missing_images_are_named(tmp_path):
    synthetic_model(tmp_path / "seq", text=False)
    first = sorted((tmp_path / "seq" / "images").iterdir())[0]
    first.unlink()
    from recon.errors import InputError
    with pytest.raises(InputError, match="not found"):
        reconstruct(tmp_path / "seq", tmp_path / "scene", ReconOptions(source="colmap", progress=False))
    assert not (tmp_path / "scene").exists()
