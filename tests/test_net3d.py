"""The sparse voxel convolutions against dense torch convolutions, and the properties the 3D network must have:
batch independence, permutation equivariance, translation invariance, finite gradients, it can learn, and its
checkpoints round-trip through safetensors."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck

from rewis.net3d import Net3DConfig, SparseUNet3D
from rewis.sparse_conv import (StridedConv3d, _StridedConv, _SubmanifoldGather, _SubmanifoldIm2col, _TransposedConv, SubmanifoldConv3d, TransposedConv3d, VoxelLevel, build_hierarchy,
                               concat_clouds, voxelize)

TINY = dict(base_channels=8, channel_multipliers=(1, 2, 3), blocks=(1, 1, 1), voxel_size=0.25)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def grid_coords(size: int, occupancy: float) -> torch.Tensor:
    """(M, 4) coords of one cloud on a size^3 grid; occupancy 1 = every site."""
    sites = torch.tensor(list(itertools.product(range(size), repeat=3)), dtype=torch.long)
    keep = torch.rand(len(sites)) < occupancy
    return torch.cat([torch.zeros(int(keep.sum()), 1, dtype=torch.long), sites[keep]], dim=1)


def to_dense(features: torch.Tensor, coords: torch.Tensor, size: int) -> torch.Tensor:
    dense = torch.zeros(1, features.shape[1], size, size, size, dtype=features.dtype)
    dense[0, :, coords[:, 1], coords[:, 2], coords[:, 3]] = features.t()
    return dense


def at_sites(dense: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    return dense[0, :, coords[:, 1], coords[:, 2], coords[:, 3]].t()


@pytest.mark.parametrize("algorithm", ["im2col", "gather"])
@pytest.mark.parametrize("occupancy", [1.0, 0.4])
def test_submanifold_conv_matches_dense_conv3d_on_active_sites(algorithm, occupancy):
    size, cin, cout = 6, 3, 5
    level = VoxelLevel.from_coords(grid_coords(size, occupancy))
    x = torch.randn(level.num_voxels, cin, dtype=torch.float64)
    conv = SubmanifoldConv3d(cin, cout, algorithm).double()
    dense_weight = conv.weight.detach().permute(2, 1, 0).reshape(cout, cin, 3, 3, 3)
    expected = at_sites(F.conv3d(to_dense(x, level.coords, size), dense_weight, padding=1), level.coords)
    torch.testing.assert_close(conv(x, level), expected)


def test_strided_and_transposed_convs_match_dense_convs_on_active_sites():
    size, cin, cout = 6, 4, 3
    levels, links = build_hierarchy(VoxelLevel.from_coords(grid_coords(size, 0.4)), 2)
    fine, coarse = levels
    x = torch.randn(fine.num_voxels, cin, dtype=torch.float64)
    down = StridedConv3d(cin, cout).double()
    down_dense = down.weight.detach().permute(2, 1, 0).reshape(cout, cin, 2, 2, 2)
    expected = at_sites(F.conv3d(to_dense(x, fine.coords, size), down_dense, stride=2), coarse.coords)
    torch.testing.assert_close(down(x, links[0]), expected)

    y = torch.randn(coarse.num_voxels, cout, dtype=torch.float64)
    up = TransposedConv3d(cout, cin).double()
    up_dense = up.weight.detach().permute(1, 2, 0).reshape(cout, cin, 2, 2, 2)
    dense_up = F.conv_transpose3d(to_dense(y, coarse.coords, size // 2), up_dense, stride=2)
    torch.testing.assert_close(up(y, links[0]), at_sites(dense_up, fine.coords))


def test_custom_backward_passes_match_numerical_gradients():
    levels, links = build_hierarchy(VoxelLevel.from_coords(grid_coords(4, 0.5)), 2)
    link = links[0]
    x = torch.randn(levels[0].num_voxels, 2, dtype=torch.float64, requires_grad=True)
    y = torch.randn(levels[1].num_voxels, 3, dtype=torch.float64, requires_grad=True)
    w27 = torch.randn(27, 2, 3, dtype=torch.float64, requires_grad=True)
    w8 = torch.randn(8, 2, 3, dtype=torch.float64, requires_grad=True)
    w8t = torch.randn(8, 3, 2, dtype=torch.float64, requires_grad=True)
    assert gradcheck(_SubmanifoldIm2col.apply, (x, w27, levels[0].neighbors()))
    assert gradcheck(lambda a, w: _SubmanifoldGather.apply(a, w, levels[0].kernel_pairs()), (x, w27))
    assert gradcheck(_StridedConv.apply, (x, w8, link.parent, link.slot, link.children))
    assert gradcheck(_TransposedConv.apply, (y, w8t, link.parent, link.slot, link.children))


def test_voxelize_groups_points_and_averages_features():
    xyz = torch.tensor([[0.01, 0.02, 0.03], [0.04, 0.05, 0.06], [0.31, 0.0, 0.0], [5.0, 5.0, 5.0]])
    batch = torch.tensor([0, 0, 0, 1])
    vox = voxelize(xyz, batch, voxel_size=0.1)
    assert vox.level.num_voxels == 3
    assert vox.point_to_voxel[0] == vox.point_to_voxel[1] != vox.point_to_voxel[2]
    torch.testing.assert_close(vox.mean(xyz)[vox.point_to_voxel[0]], xyz[:2].mean(0))
    assert vox.level.coords[vox.point_to_voxel[3]].tolist() == [1, 0, 0, 0]  # each cloud starts at voxel 0


def street_like(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    xyz = torch.rand(n, 3, generator=g) * torch.tensor([6.0, 3.0, 0.2])
    wall = torch.rand(n // 3, 3, generator=g) * torch.tensor([6.0, 0.2, 2.0]) + torch.tensor([0.0, 3.0, 0.0])
    xyz = torch.cat([xyz, wall])
    return xyz, torch.rand(len(xyz), 3, generator=g)


def tiny_model(num_classes: int = 4, **overrides) -> SparseUNet3D:
    return SparseUNet3D(num_classes, **{**TINY, **overrides})


def test_forward_outputs_have_documented_shapes():
    model = tiny_model().eval()
    xyz, rgb = street_like(300, 0)
    out = model(xyz, rgb)
    assert out["logits"].shape == (len(xyz), 4)
    assert out["features"].shape == (len(xyz), model.config.feature_channels)
    assert [level.stride for level in out["multiscale"]] == [1, 2, 4]
    for level, width in zip(out["multiscale"], model.config.channels):
        assert level.per_point().shape == (len(xyz), width)


def test_batch_of_two_clouds_equals_each_cloud_alone():
    model = tiny_model().eval()
    clouds = [street_like(200, 1), street_like(250, 2)]
    xyz, batch = concat_clouds([c[0] for c in clouds])
    rgb, _ = concat_clouds([c[1] for c in clouds])
    with torch.no_grad():
        together = model(xyz, rgb, batch)["logits"]
        alone = torch.cat([model(*cloud)["logits"] for cloud in clouds])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-4)


def test_permuting_points_permutes_outputs():
    model = tiny_model().eval()
    xyz, rgb = street_like(300, 3)
    order = torch.randperm(len(xyz))
    with torch.no_grad():
        base, permuted = model(xyz, rgb), model(xyz[order], rgb[order])
    torch.testing.assert_close(permuted["logits"], base["logits"][order], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(permuted["features"], base["features"][order], atol=1e-5, rtol=1e-4)


def test_translation_by_whole_voxels_leaves_logits_unchanged():
    model = tiny_model().eval()  # voxel 0.25 m: a power of two, so xyz / voxel_size is exact
    xyz, rgb = street_like(300, 4)
    xyz = torch.round(xyz * 64) / 64
    shift = torch.tensor([3, -7, 1]) * model.config.voxel_size  # odd shifts also move the 2x2x2 cell parity
    with torch.no_grad():
        torch.testing.assert_close(model(xyz + shift, rgb)["logits"], model(xyz, rgb)["logits"],
                                   atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("algorithm", ["im2col", "gather"])
def test_backward_gives_finite_gradients_for_every_parameter(algorithm):
    model = tiny_model(conv_algorithm=algorithm).train()
    xyz, rgb = street_like(300, 5)
    out = model(xyz, rgb)
    (out["logits"].logsumexp(1).mean() + out["features"].pow(2).mean()).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name


def test_bfloat16_autocast_runs_the_sparse_convs_in_bfloat16_with_float32_gradients():
    model = tiny_model().train()
    xyz, rgb = street_like(200, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(xyz, rgb)
    assert out["multiscale"][1].features.dtype == torch.bfloat16
    out["logits"].float().logsumexp(1).mean().backward()
    assert model.stem.conv.weight.grad.dtype == torch.float32
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_gather_and_im2col_models_agree():
    xyz, rgb = street_like(200, 6)
    a = tiny_model(conv_algorithm="im2col").eval()
    b = tiny_model(conv_algorithm="gather").eval()
    b.load_state_dict(a.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(a(xyz, rgb)["logits"], b(xyz, rgb)["logits"], atol=1e-5, rtol=1e-4)


def test_tiny_model_overfits_three_separated_classes():
    centres = torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.5, 0.0], [1.0, 2.0, 1.0]])
    labels = torch.arange(3).repeat_interleave(150)
    xyz = centres[labels] + 0.4 * torch.randn(len(labels), 3)
    rgb = torch.rand(len(labels), 3)  # uninformative colours: only geometry separates the classes
    model = SparseUNet3D(3, base_channels=8, channel_multipliers=(1, 2), blocks=(1, 1), voxel_size=0.2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(100):
        loss = F.cross_entropy(model(xyz, rgb)["logits"], labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        accuracy = (model.eval()(xyz, rgb)["logits"].argmax(1) == labels).float().mean().item()
    assert accuracy > 0.95, f"accuracy {accuracy:.3f} after 100 steps"


def test_safetensors_round_trip_restores_config_and_outputs(tmp_path):
    model = tiny_model(num_classes=5).eval()
    xyz, rgb = street_like(200, 7)
    path = tmp_path / "net3d.safetensors"
    model.save(path)
    loaded = SparseUNet3D.load(path).eval()
    assert loaded.config == model.config
    with torch.no_grad():
        torch.testing.assert_close(loaded(xyz, rgb)["logits"], model(xyz, rgb)["logits"])


def test_from_config_and_input_errors():
    model = SparseUNet3D.from_config(Net3DConfig(num_classes=2, **TINY))
    with pytest.raises(ValueError, match="feature channels"):
        model(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="one entry per level"):
        Net3DConfig(num_classes=2, channel_multipliers=(1, 2), blocks=(1,))
    with pytest.raises(ValueError, match="larger voxel size"):
        model(torch.tensor([[0.0, 0, 0], [1e6, 0, 0]]), torch.zeros(2, 3))
