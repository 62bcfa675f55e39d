"""Training data: view-aware point sampling, links remapped through 2D geometry, determinism, collation.

Also home of `make_scene`, a tiny hand-built Scene (3 classes incl. sky without 3D, 64x48 frames, a cloud from
back-projected analytic depth) shared by the other test_train* files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from recon.dataset import ClassList, write_classes, write_label
from recon.scene import Cloud, Frame, Links, Scene

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny.yaml"
CLASSES = ClassList(names=("ground", "box", "sky"), palette=((128, 64, 128), (220, 20, 60), (70, 130, 180)),
                    no_3d=("sky",))
W, H = 64, 48


def make_scene(root: Path, frames: int = 4, seed: int = 0) -> tuple[Path, Path]:
    """(scene folder, sequence folder) of a tiny synthetic scene; sky pixels have no depth and no points."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    seq, scene_dir = root / "seq", root / "scene"
    for sub in ("images", "labels", "weak/scribbles"):
        (seq / sub).mkdir(parents=True, exist_ok=True)
    write_classes(seq, CLASSES)
    K = np.array([[40.0, 0, W / 2], [0, 40.0, H / 2], [0, 0, 1]])
    vv, uu = np.mgrid[0:H, 0:W]
    per_frame, parts, scene_frames = [], [], []
    count = 0
    for f in range(frames):
        shift = 4 * f
        label = np.where(uu + shift < 40, 0, 1).astype(np.uint8)
        label[vv < 14 + (uu % 7 == 0)] = 2
        colours = np.array(CLASSES.palette, np.float64)[label]
        image = np.clip(colours + rng.normal(0, 12, colours.shape), 0, 255).astype(np.uint8)
        weak = np.full_like(label, 255)
        for r in (6, 22, 38):
            weak[r, 2:-2] = label[r, 2:-2]
        weak[18:44, 10] = label[18:44, 10]
        stem = f"{f:06d}"
        Image.fromarray(image).save(seq / "images" / f"{stem}.png")
        write_label(seq / "labels" / f"{stem}.png", label, CLASSES)
        write_label(seq / "weak" / "scribbles" / f"{stem}.png", weak, CLASSES)
        pose = np.eye(4)
        pose[0, 3] = -0.3 * f  # camera moves along +x
        valid = label != 2
        v, u = vv[valid], uu[valid]
        z = 4.0 + 0.03 * v + np.where(label[valid] == 1, -1.0, 0.0)
        cam = np.stack([(u + 0.5 - K[0, 2]) / K[0, 0] * z, (v + 0.5 - K[1, 2]) / K[1, 1] * z, z], 1)
        world = (cam - pose[:3, 3]) @ pose[:3, :3]
        parts.append(dict(xyz=world, rgb=image[valid], label=label[valid], weak=weak[valid], frame=np.full(len(v), f)))
        per_frame.append((np.arange(count, count + len(v)), v, u))
        count += len(v)
        scene_frames.append(Frame(image=str(seq / "images" / f"{stem}.png"), width=W, height=H, K=K,
                                  cam_from_world=pose, label=str(seq / "labels" / f"{stem}.png"),
                                  weak_label=str(seq / "weak" / "scribbles" / f"{stem}.png")))
    cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    cloud = Cloud(xyz=cat["xyz"].astype(np.float32), rgb=cat["rgb"].astype(np.uint8),
                  conf=rng.uniform(0.2, 1.0, count).astype(np.float32), weak_label=cat["weak"].astype(np.uint8),
                  source_frame=cat["frame"].astype(np.int32), label=cat["label"].astype(np.uint8))
    Scene(classes=CLASSES, frames=scene_frames, cloud=cloud, links=Links.from_per_frame(per_frame),
          source="rgbd").save(scene_dir)
    return scene_dir, seq



@pytest.fixture(scope="session")
def tiny_scene(tmp_path_factory) -> tuple[Path, Path]:
    return make_scene(tmp_path_factory.mktemp("tiny_scene"))


def tiny_config(scene: Path, seq: Path, out: Path, *overrides: str):
    from rewis.modes import load_config

    return load_config(TINY, [f"data.train=[{scene}]", f"data.val=[{seq}]", f"run.out={out}", *overrides])


# ------------------------------------------------------------------------------------------ tests

def test_view_sampling_respects_shares_and_ball(tiny_scene):
    from rewis.data import ViewInfo, sample_view_points

    rng = np.random.default_rng(0)
    xyz = rng.uniform(-10, 10, (5000, 3)).astype(np.float32)
    own = np.flatnonzero(np.linalg.norm(xyz, axis=1) < 3)
    view = ViewInfo(own, np.zeros(3), 3.0)
    idx = sample_view_points(rng, xyz, view, 400, 0.7, 1.5)
    assert len(idx) == 400 and len(np.unique(idx)) == 400 and (np.diff(idx) > 0).all()
    in_own = np.isin(idx, own).sum()
    assert in_own == min(len(own), int(0.7 * 400))
    d = np.linalg.norm(xyz[idx], axis=1)
    in_ball_other = ((d <= 4.5) & ~np.isin(idx, own)).sum()
    assert in_ball_other == min(400 - in_own, int(((np.linalg.norm(xyz, axis=1) <= 4.5)).sum() - len(own)))
    assert len(sample_view_points(rng, xyz[:100], ViewInfo(np.arange(10), np.zeros(3), 1.0), 400, 0.7, 1.5)) == 100


def test_links_follow_geometry_and_sampling(tiny_scene):
    from rewis.config import DataConfig
    from rewis.data import TrainDataset

    scene_dir, _ = tiny_scene
    cfg = DataConfig(train=[str(scene_dir)], height=48, crop=(40, 48), scale_range=(1.0, 1.5), num_points=700,
                     view_drop_fraction=0.1)
    ds = TrainDataset(cfg, "weak", points=True, seed=3)
    for k in range(len(ds)):
        s = ds[k]
        assert s["image"].shape == (3, 40, 48) and s["label"].shape == (40, 48)
        assert len(s["points"]["xyz"]) == 700
        v, u, p = s["links"]["v"], s["links"]["u"], s["links"]["point"]
        assert len(p) > 50 and (v >= 0).all() and (v < 40).all() and (u >= 0).all() and (u < 48).all()
        # a linked point carries the weak label of its pixel whenever that pixel's weak label survived
        # nearest-exact resampling: compare with the scene's GT label instead, which is dense
        gt_px = _gt_after_geometry(ds, k)
        pts_gt = s["points"]["truth"][p].numpy()
        assert (gt_px[v.numpy(), u.numpy()] == pts_gt).mean() > 0.97
        # teacher xyz is centred, student xyz is augmented (different) but has the same count
        assert not torch.allclose(s["points"]["xyz"], s["points"]["xyz_aug"])
    a, b = ds[1], ds[1]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["links"]["point"], b["links"]["point"])


@pytest.mark.parametrize("crop_first", [True, False])
def test_crop_first_samples_the_points_that_give_links(tiny_scene, crop_first):
    """With crop_first the view's own points come from the crop only, so a sample of the same size links more
    crop pixels; links stay right either way (checked against the scene's ground truth)."""
    from rewis.config import DataConfig
    from rewis.data import TrainDataset

    scene_dir, _ = tiny_scene
    cfg = DataConfig(train=[str(scene_dir)], height=48, crop=(24, 32), scale_range=(1.0, 1.0), num_points=400,
                     in_view_share=0.7, crop_first=crop_first)
    ds = TrainDataset(cfg, "weak", points=True, seed=1)
    counts = []
    for k in range(len(ds)):
        s = ds[k]
        p, v, u = (s["links"][key].numpy() for key in ("point", "v", "u"))
        assert (_gt_after_geometry(ds, k)[v, u] == s["points"]["truth"].numpy()[p]).mean() > 0.97
        counts.append(len(np.unique(p)))
    # 0.7 x 400 = 280 own points, all linked with crop_first; the crop holds a quarter of each 64x48 frame's
    # ~2.8k points, so without it about a quarter of them are
    assert min(counts) >= 280 if crop_first else max(counts) < 140


def _gt_after_geometry(ds, k):
    from recon.dataset import read_label, read_rgb

    from rewis import augment
    epoch, kk = divmod(k, len(ds))
    rng = np.random.default_rng([ds.seed, epoch, kk])
    ref = ds.frames[kk % len(ds.frames)]
    geo = augment.draw_geometry(rng, read_rgb(ref.image).shape[:2], ds.cfg.height, ds.cfg.crop, ds.cfg.scale_range,
                                ds.cfg.flip)
    gt = torch.from_numpy(read_label(ref.dense).astype(np.int64))
    _, (out,) = augment.apply_geometry(geo, torch.zeros(3, *gt.shape), [gt])
    return out.numpy()


def test_collate_offsets_points_and_links(tiny_scene):
    from rewis.config import DataConfig
    from rewis.data import TrainDataset, collate

    ds = TrainDataset(DataConfig(train=[str(tiny_scene[0])], height=48, crop=(48, 64), num_points=300), "weak",
                      points=True)
    batch = collate([ds[0], ds[1]])
    assert batch["image"].shape == (2, 3, 48, 64)
    assert batch["points"]["xyz"].shape == (600, 3) and batch["points"]["batch"].tolist().count(1) == 300
    lb, lp = batch["links"]["batch"], batch["links"]["point"]
    assert ((lp >= 300) == (lb == 1)).all()


def test_remap_pixels_matches_label_resampling():
    from rewis import augment

    rng = np.random.default_rng(0)
    for _ in range(20):
        g = augment.draw_geometry(rng, (48, 64), 48, (32, 40), (0.8, 1.7), True)
        ids = torch.arange(48 * 64).reshape(48, 64)
        _, (out,) = augment.apply_geometry(g, torch.zeros(3, 48, 64), [ids])
        v, u = np.mgrid[0:48, 0:64]
        v2, u2, keep = augment.remap_pixels(g, v.ravel(), u.ravel())
        # the link of source pixel (v, u) lands on a pixel showing (v, u) itself, or one of its neighbours when
        # the image was shrunk (several source pixels share one output pixel)
        src_v, src_u = np.divmod(out.numpy()[v2, u2], 64)
        tol = max(1, int(np.ceil(g.source[0] / g.scaled[0])))
        assert (np.abs(src_v - v.ravel()[keep]) <= tol).all() and (np.abs(src_u - u.ravel()[keep]) <= tol).all()
        if g.scaled[0] >= g.source[0]:
            assert ((src_v == v.ravel()[keep]) & (src_u == u.ravel()[keep])).all()


def test_plain_sequences_feed_2d_modes_only(tiny_scene):
    from recon.errors import InputError
    from rewis.config import DataConfig
    from rewis.data import TrainDataset

    _, seq = tiny_scene
    cfg = DataConfig(train=[str(seq)], height=48, crop=(48, 64))
    dense = TrainDataset(cfg, "dense")
    assert len(dense) == 4 and dense[0]["label"].max() <= 2 and (dense[0]["label"] != 255).all()
    weak = TrainDataset(DataConfig(train=[str(seq)], height=48, crop=(48, 64), weak_kind="scribbles"), "weak")
    assert (weak[0]["label"] == 255).float().mean() > 0.8
    with pytest.raises(InputError, match="needs a scene"):
        TrainDataset(cfg, "weak", points=True)
    with pytest.raises(InputError, match="no weak labels"):
        TrainDataset(cfg, "weak")
