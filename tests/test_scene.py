import json

import numpy as np
import pytest

from recon.dataset import ClassList
from recon.errors import InputError
from recon.scene import Cloud, Frame, Links, Scene

CLASSES = ClassList(names=("road", "car", "sky"), palette=((128, 64, 128), (0, 0, 142), (70, 130, 180)),
                    no_3d=("sky",))


def make_scene(num_points=50, seed=0) -> Scene:
    rng = np.random.default_rng(seed)
    K = np.array([[100.0, 0, 32], [0, 100.0, 24], [0, 0, 1]])
    frames = [Frame(image=f"images/{i:06d}.png", width=64, height=48, K=K, cam_from_world=np.eye(4),
                    label=f"labels/{i:06d}.png") for i in range(3)]
    cloud = Cloud.from_xyz(rng.normal(size=(num_points, 3)),
                           rgb=rng.integers(0, 256, (num_points, 3), dtype=np.uint8),
                           conf=rng.random(num_points, dtype=np.float32),
                           weak_label=np.where(rng.random(num_points) < 0.2, 1, 255).astype(np.uint8),
                           label=rng.integers(0, 2, num_points, dtype=np.uint8),
                           source_frame=rng.integers(-1, 3, num_points, dtype=np.int32))
    per_frame = [(rng.choice(num_points, 10, replace=False), rng.integers(0, 48, 10), rng.integers(0, 64, 10))
                 for _ in range(3)]
    per_frame[1] = (np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0, np.int32))  # a frame with no links
    return Scene(classes=CLASSES, frames=frames, cloud=cloud, links=Links.from_per_frame(per_frame), source="rgbd")


def test_save_load_round_trip_keeps_every_field(tmp_path):
    scene = make_scene()
    scene.save(tmp_path / "s")
    loaded = Scene.load(tmp_path / "s")
    assert loaded.classes == CLASSES and loaded.source == "rgbd"
    for name in ("xyz", "rgb", "conf", "weak_label", "source_frame", "label"):
        np.testing.assert_array_equal(getattr(loaded.cloud, name), getattr(scene.cloud, name))
        assert getattr(loaded.cloud, name).dtype == getattr(scene.cloud, name).dtype
    for f in range(3):
        for a, b in zip(loaded.links.frame(f), scene.links.frame(f)):
            np.testing.assert_array_equal(a, b)
    assert len(loaded.links.frame(1)[0]) == 0
    np.testing.assert_array_equal(loaded.frames[2].K, scene.frames[2].K)
    assert loaded.resolve(loaded.frames[0].image) == tmp_path / "s" / "images/000000.png"


def test_save_refuses_to_replace_a_non_empty_folder(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="--overwrite"):
        make_scene().save(tmp_path / "s")
    assert (tmp_path / "s" / "keep.txt").read_text() == "mine"
    make_scene().save(tmp_path / "s", overwrite=True)
    assert not (tmp_path / "s" / "keep.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["s"]  # no temporary folder left behind


def _corrupt(tmp_path, filename, **changes):
    scene_dir = make_scene().save(tmp_path / "s")
    with np.load(scene_dir / filename) as data:
        arrays = dict(data)
    arrays.update(changes)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(scene_dir / filename, **arrays)
    return scene_dir


@pytest.mark.parametrize("filename, changes, message", [
    ("cloud.npz", {"xyz": np.zeros((50, 2), np.float32)}, r"cloud.npz: field 'xyz' has shape \(50, 2\)"),
    ("cloud.npz", {"conf": np.zeros(50, np.float64)}, "cloud.npz: field 'conf' has dtype float64"),
    ("cloud.npz", {"rgb": None}, "cloud.npz: missing field 'rgb'"),
    ("cloud.npz", {"conf": np.full(50, 2, np.float32)}, r"field 'conf' must lie in \[0, 1\]"),
    ("cloud.npz", {"weak_label": np.full(50, 7, np.uint8)}, "field 'weak_label' holds class id 7"),
    ("links.npz", {"point": np.full(20, 99, np.int64)}, "field 'point' indexes outside the cloud"),
    ("links.npz", {"offsets": np.array([0, 10, 20], np.int64)}, "field 'offsets' has 3 entries"),
    ("links.npz", {"v": np.full(20, 48, np.int32)}, "pixels outside their frame"),
])
def test_load_names_file_and_field_of_each_defect(tmp_path, filename, changes, message):
    scene_dir = _corrupt(tmp_path, filename, **changes)
    with pytest.raises(InputError, match=message):
        Scene.load(scene_dir)


def test_load_rejects_other_versions_and_missing_files(tmp_path):
    scene_dir = make_scene().save(tmp_path / "s")
    meta = json.loads((scene_dir / "scene.json").read_text())
    meta["version"] = 99
    (scene_dir / "scene.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="field 'version' is 99"):
        Scene.load(scene_dir)
    meta["version"] = 1
    del meta["frames"][0]["K"]
    (scene_dir / "scene.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match=r"frames\[0\]: missing or malformed field"):
        Scene.load(scene_dir)
    with pytest.raises(InputError, match="no scene.json"):
        Scene.load(tmp_path)
    scene_dir = make_scene().save(tmp_path / "t")
    (scene_dir / "links.npz").unlink()
    with pytest.raises(InputError, match="links.npz: file not found"):
        Scene.load(scene_dir)


def test_read_rgb_applies_exif_orientation_and_scales_16_bit(tmp_path):
    from PIL import Image

    from recon.dataset import read_rgb

    upright = np.zeros((36, 48, 3), np.uint8)
    upright[:, :8] = 255  # a bright left edge
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: viewers turn it 90 degrees clockwise
    Image.fromarray(upright).save(tmp_path / "r.jpg", exif=exif, quality=95)
    shown = read_rgb(tmp_path / "r.jpg")
    assert shown.shape == (48, 36, 3) and shown[:8].mean() > 200 and shown[-8:].mean() < 50

    grey16 = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
    Image.fromarray(grey16).save(tmp_path / "g.png")
    rgb = read_rgb(tmp_path / "g.png")
    assert rgb.dtype == np.uint8 and rgb[..., 0].ravel().tolist() == (grey16.ravel() >> 8).tolist()
