"""Loss math of docs/METHODS.md on hand-computed tiny cases."""

from __future__ import annotations

import math

import pytest
import torch
from test_train_data import CLASSES, TINY, tiny_config, tiny_scene  # noqa: F401  (fixture)

from recon.errors import InputError
from rewis.ema import ema_decay, ema_update
from rewis.losses import ClassMap, partial_consistency, ramp, weighted_ce

LN = math.log


def test_partial_consistency_hand_case():
    student = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    teacher = torch.tensor([[LN(99), 0.0], [LN(3), 0.0]])  # p = (.99, .01) reliable, (.75, .25) not
    target = torch.tensor([0, 255])
    ce, cons, w_t = partial_consistency(student, teacher, target, beta=0.5, threshold=0.95)
    kl = 0.75 * LN(0.75 / 0.5) + 0.25 * LN(0.25 / 0.5)
    assert w_t.item() == pytest.approx(0.5)
    assert ce.item() == pytest.approx(0.5 * LN(2), rel=1e-6)
    assert cons.item() == pytest.approx(0.5 * 0.5 * kl, rel=1e-5)
    _, cons_ref, _ = partial_consistency(student, teacher, target, beta=0.5, kl_over_classes=True)
    assert cons_ref.item() == pytest.approx(0.5 * 0.5 * kl / 2, rel=1e-5)  # the reference's mean over N*C


def test_partial_consistency_gradients_only_into_student():
    student = torch.zeros(3, 4, requires_grad=True)
    teacher = torch.randn(3, 4, requires_grad=True)
    ce, cons, _ = partial_consistency(student, teacher, torch.tensor([1, 255, 255]), threshold=0.0)
    (ce + cons).backward()
    assert student.grad.abs().sum() > 0 and teacher.grad is None
    ce, cons, _ = partial_consistency(student, teacher.detach(), torch.full((3,), 255))  # nothing labeled
    assert ce.item() == 0.0 and torch.isfinite(cons)


def test_weighted_ce_hand_case():
    logits = torch.tensor([[LN(3), 0.0], [0.0, 0.0], [5.0, 0.0]])
    target = torch.tensor([0, 0, 255])
    weight = torch.tensor([1.0, 3.0, 7.0])
    expected = (1 * -LN(0.75) + 3 * LN(2)) / 4
    assert weighted_ce(logits, target, weight).item() == pytest.approx(expected, rel=1e-6)
    assert weighted_ce(logits, target, torch.zeros(3)).item() == 0.0


def test_ramp_and_ema_decay():
    assert [ramp(s, 10, 4, 0.1) for s in (0, 9, 10, 11, 14, 100)] == pytest.approx([0, 0, 0, 0.025, 0.1, 0.1])
    assert ramp(10, 10, 0, 0.2) == 0.2
    assert ema_decay(0, 0.99) == 0.0 and ema_decay(1, 0.99) == 0.5 and ema_decay(10_000, 0.99) == 0.99


def test_ema_update_moves_params_and_copies_buffers():
    student, teacher = torch.nn.BatchNorm1d(2), torch.nn.BatchNorm1d(2)
    with torch.no_grad():
        student.weight.fill_(1.0), teacher.weight.fill_(0.0)
        student.running_mean.fill_(3.0)
    ema_update(teacher, student, 0.25)
    assert torch.allclose(teacher.weight, torch.full((2,), 0.75)) and torch.equal(teacher.running_mean, student.running_mean)


def test_class_map_without_sky():
    cm = ClassMap(4, [2])
    assert cm.num_3d == 3
    assert cm.to_3d(torch.tensor([0, 1, 2, 3, 255])).tolist() == [0, 1, 255, 2, 255]
    assert cm.from_3d(torch.tensor([0, 1, 2])).tolist() == [0, 1, 3]


def test_cmc_hand_case(tmp_path):
    from rewis.modes import load_config
    from rewis.modes.rewis3d import Rewis3dMode

    cfg = load_config(TINY, ["method.sky_teacher=true"])
    mode = Rewis3dMode(cfg, CLASSES)  # classes ground, box, sky (no 3D)
    # one image 1 x 3 pixels; point 0 <-> pixel (0, 0), point 1 <-> pixel (0, 2); pixel (0, 1) has no point
    s2 = torch.zeros(1, 3, 1, 3)
    s2[0, 2, 0, 2] = LN(2)  # student at pixel (0, 2): p = (.25, .25, .5)
    s2.requires_grad_()
    t2 = torch.zeros(1, 3, 1, 3)
    t2[0, :, 0, 0] = torch.tensor([LN(3), 0.0, 0.0])  # p = (.6, .2, .2) -> ground
    t2[0, :, 0, 2] = torch.tensor([0.0, 0.0, 5.0])  # sky: no 3D label for point 1
    s3 = torch.zeros(2, 2, requires_grad=True)
    t3 = torch.tensor([[0.0, LN(4)], [0.0, 0.0]])  # point 0: p = (.2, .8) -> box
    pts = {"conf": torch.tensor([0.5, 1.0])}
    links = {"batch": torch.tensor([0, 0]), "v": torch.tensor([0, 0]), "u": torch.tensor([0, 2]),
             "point": torch.tensor([0, 1])}
    l2, l3 = mode.cmc(s2, t2, s3, t3, pts, links, None)
    assert l3.item() == pytest.approx(LN(2), rel=1e-6)  # only point 0, CE of uniform 2-way logits
    # 3D -> 2D: pixel (0, 2) is sky for the 2D teacher, so its point gives it no label; pixel (0, 0) takes "box"
    # (t3 p = .8, r = .5, weight .4) and the student's uniform 3-way logits give CE ln 3
    assert l2.item() == pytest.approx(LN(3), rel=1e-6)
    s2.grad = None
    l2.backward()
    assert s2.grad[0, :, 0, 2].abs().sum() == 0 and s2.grad[0, :, 0, 0].abs().sum() > 0
    # the sky teacher labels pixel (0, 1) (no point) as sky with prob .9
    mode.sky.taken = True
    mode._sky_labels = lambda images: (torch.tensor([2, 2, 2]), torch.tensor([0.9, 0.9, 0.9]))
    l2s, _ = mode.cmc(s2, t2, s3, t3, pts, links, None)
    assert l2s.item() == pytest.approx((0.4 * LN(3) + 0.9 * LN(3)) / (0.4 + 0.9), rel=1e-5)
    mode.cfg.method.use_recon_conf = False
    l2n, _ = mode.cmc(s2, t2, s3, t3, pts, links, None)
    assert l2n.item() == pytest.approx((0.8 * LN(3) + 0.9 * LN(3)) / (0.8 + 0.9), rel=1e-5)


def test_3d_teacher_follows_its_own_ema_cap():
    """method.ema_max_3d caps only the 3D teacher's EMA weight; the 2D teacher keeps ema_max."""
    from types import SimpleNamespace

    from rewis.modes import load_config
    from rewis.modes.ema import EMAMode
    from rewis.modes.rewis3d import Rewis3dMode

    cfg = load_config(TINY, ["method.ema_max=0.99", "method.ema_max_3d=0.5"])
    students = {name: torch.nn.Linear(1, 1, bias=False) for name in ("2d", "3d")}
    teachers = {name: torch.nn.Linear(1, 1, bias=False) for name in ("2d", "3d")}
    for s, t in zip(students.values(), teachers.values()):
        torch.nn.init.ones_(s.weight), torch.nn.init.zeros_(t.weight)
    mode = SimpleNamespace(cfg=cfg, students=students, teachers=teachers, logs={}, ema_step=lambda info: info.step)
    mode.ema_max = lambda name: Rewis3dMode.ema_max(mode, name)
    EMAMode.after_step(mode, SimpleNamespace(step=1000, step_in_epoch=0))
    assert teachers["2d"].weight.item() == pytest.approx(0.01)
    assert teachers["3d"].weight.item() == pytest.approx(0.5)
    assert mode.logs == {"2d/ema_a": 0.99, "3d/ema_a": 0.5}


def test_2d_to_3d_term_can_start_later():
    """method.cmc_3d_start delays lambda_3D alone; unset, both weights ramp from cmc_start."""
    from types import SimpleNamespace

    from rewis.modes import load_config
    from rewis.modes.rewis3d import Rewis3dMode

    def weights(*overrides):
        cfg = load_config(TINY, ["method.cmc_start=10", "method.cmc_ramp=10", "method.lambda_2d=0.5",
                                 "method.lambda_3d=0.2", *overrides])
        mode = SimpleNamespace(cfg=cfg)
        return [Rewis3dMode.cmc_weights(mode, step) for step in (5, 15, 25, 30)]

    assert weights() == [(0.0, 0.0), (0.25, 0.1), (0.5, 0.2), (0.5, 0.2)]
    assert weights("method.cmc_3d_start=25") == [(0.0, 0.0), (0.25, 0.0), (0.5, 0.0), (0.5, 0.1)]
    with pytest.raises(InputError, match="method.cmc_3d_start"):
        load_config(TINY, ["method.cmc_3d_start=-1"])


def test_link_diagnostics_score_each_teacher_against_the_scene_truth():
    """links/pixel_share = links per crop pixel; teacher accuracy counts only links whose point has a truth."""
    from types import SimpleNamespace

    from rewis.modes.rewis3d import Rewis3dMode

    mode = SimpleNamespace(logs={})
    pts = {"truth": torch.tensor([0, 1, 2, 255, 7])}
    point = torch.tensor([0, 1, 2, 3])  # point 4 is not linked
    Rewis3dMode.log_diagnostics(mode, torch.tensor([0, 1, 0, 0]), torch.tensor([0, 1, 2, 5]), pts, point,
                                (1, 10, 2, 4))
    logged = {k: float(v) for k, v in mode.logs.items()}  # the trainer converts tensors when it logs
    assert logged == {"links/pixel_share": 0.5, "links/acc_3d_teacher": 1.0,
                      "links/acc_2d_teacher": pytest.approx(2 / 3)}
    mode.logs = {}
    Rewis3dMode.log_diagnostics(mode, torch.tensor([0]), torch.tensor([0]), {}, torch.tensor([0]), (1, 10, 2, 4))
    assert mode.logs == {"links/pixel_share": 0.125}  # without ground truth only the share


def test_fp16_two_optimizers_share_one_scaler_correctly():
    """An overflow in one optimizer's gradients skips that optimizer alone; the other steps with gradients
    unscaled by the scale they were scaled with; the scale is halved once (accelerate's per-optimizer update
    would halve it before the second optimizer unscaled)."""
    from rewis.trainer import step_unscaled

    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    opt_a, opt_b = torch.optim.SGD([a], lr=1.0), torch.optim.SGD([b], lr=1.0)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    scaler.scale(a.sum() * float("inf") + b.sum() * 3.0).backward()  # a's gradient overflows
    for opt in (opt_a, opt_b):
        scaler.unscale_(opt)
    step_unscaled([opt_a, opt_b], scaler)
    assert torch.equal(a.detach(), torch.zeros(2))  # overflowed: skipped
    assert torch.allclose(b.detach(), torch.full((2,), -3.0))  # gradient 3, unscaled by 1024, lr 1
    assert scaler.get_scale() == 512.0


def test_class_balanced_weights_by_hand():
    from rewis.losses import class_balanced_weights

    # shares .8 / .2 / none: share ** -.5 = 1.118 / 2.236, scaled so that .8 w0 + .2 w1 = 1
    norm = 0.8 ** 0.5 + 0.2 ** 0.5
    w = class_balanced_weights(torch.tensor([80, 20, 0]), 0.5)
    assert w.tolist() == pytest.approx([0.8 ** -0.5 / norm, 0.2 ** -0.5 / norm, 0.0], rel=1e-6)
    w1 = class_balanced_weights(torch.tensor([80, 20, 0]), 1.0)  # power 1: every class weighs the same in total
    assert w1.tolist() == pytest.approx([0.625, 2.5, 0.0])
    assert class_balanced_weights(torch.tensor([5, 5]), 0.5).tolist() == pytest.approx([1.0, 1.0])


def test_partial_consistency_class_weight():
    """With class weights the CE term is the class-weighted mean over labeled elements."""
    student = torch.zeros(3, 2)
    student[0, 0] = LN(3)  # p = (.75, .25)
    target = torch.tensor([0, 1, 255])
    ce, _, _ = partial_consistency(student, student, target, beta=0.0, class_weight=torch.tensor([1.0, 3.0]))
    assert ce.item() == pytest.approx((1 * -LN(0.75) + 3 * LN(2)) / 4, rel=1e-6)


def test_rewis3d_weighs_3d_classes_by_the_training_scenes_labels(tiny_scene, tmp_path):  # noqa: F811
    from rewis.modes.rewis3d import Rewis3dMode, weak_counts_3d

    cfg = tiny_config(*tiny_scene, tmp_path / "run", "method.class_balance_3d=0.5")
    mode = Rewis3dMode(cfg, CLASSES)
    assert mode.class_weight_3d is None
    train, _ = mode.train_data(mode.stages()[0])
    counts = weak_counts_3d(train.scenes, mode.classmap)  # ground, box (sky has no 3D output)
    assert len(counts) == 2 and counts.min() > 0
    share = counts.float() / counts.sum()
    assert mode.class_weight_3d.tolist() == pytest.approx((share ** -0.5 / (share ** 0.5).sum()).tolist(), rel=1e-5)
    assert (mode.class_weight_3d[share.argmin()] > 1) and (mode.class_weight_3d[share.argmax()] < 1)
    # and the 3D weak-label CE uses them (the same batch and networks give another loss without them)
    from rewis.data import collate
    from rewis.modes import StepInfo

    batch = collate([train[0], train[1]])
    info = StepInfo(step=0, epoch=0, step_in_epoch=0, steps_per_epoch=1, stage="train", max_steps=1)
    torch.manual_seed(0)
    weighted = mode.losses(batch, info)["3d/ce"].item()
    mode.class_weight_3d = None
    torch.manual_seed(0)
    assert mode.losses(batch, info)["3d/ce"].item() != pytest.approx(weighted, rel=1e-4)
