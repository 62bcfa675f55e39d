import math

import numpy as np
import pytest
import torch

from segment.metrics import ConfusionMeter, confusion_matrix, iou_per_class, mean_iou, pixel_accuracy, ss_fs


def test_confusion_matrix_counts_rows_truth_columns_prediction_and_skips_ignore():
    target = np.array([[0, 0, 1], [1, 2, 255]])
    pred = np.array([[0, 1, 1], [1, 0, 2]])
    cm = confusion_matrix(pred, target, num_classes=3).numpy()
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]


def test_iou_by_hand_with_a_class_absent_everywhere():
    # 4 classes; class 3 appears in neither truth nor prediction and must not count as 0.
    cm = np.array([[3, 1, 0, 0],
                   [0, 2, 0, 0],
                   [1, 0, 0, 0],
                   [0, 0, 0, 0]])
    iou = iou_per_class(cm)
    assert iou[0] == pytest.approx(3 / (4 + 4 - 3))   # tp 3, row 4, col 4
    assert iou[1] == pytest.approx(2 / (2 + 3 - 2))
    assert iou[2] == 0.0                               # in ground truth, never predicted
    assert math.isnan(iou[3])
    assert mean_iou(cm) == pytest.approx((3 / 5 + 2 / 3 + 0.0) / 3)
    assert pixel_accuracy(cm) == pytest.approx(5 / 7)


def test_class_only_predicted_counts_with_iou_zero():
    cm = np.array([[2, 2], [0, 0]])  # class 1 never in truth but predicted twice
    assert iou_per_class(cm).tolist() == [0.5, 0.0]
    assert mean_iou(cm) == pytest.approx(0.25)


def test_meter_accumulates_one_matrix_over_the_split_not_a_mean_of_images():
    meter = ConfusionMeter(num_classes=2)
    meter.update(torch.tensor([0, 0, 0, 0]), torch.tensor([0, 0, 0, 1]))  # image 1
    meter.update(torch.tensor([1]), torch.tensor([1]))                    # image 2
    summary = meter.summary(["a", "b"])
    # split-level: class a tp 3 / union 4, class b tp 1 / union 2
    assert summary["iou"] == {"a": pytest.approx(0.75), "b": pytest.approx(0.5)}
    assert summary["miou"] == pytest.approx(0.625)
    assert summary["confusion"] == [[3, 0], [1, 1]]


def test_perfect_prediction_and_ss_fs():
    y = torch.randint(0, 5, (2, 16, 16), generator=torch.Generator().manual_seed(0))
    assert mean_iou(confusion_matrix(y, y, 5)) == 1.0
    assert ss_fs(0.45, 0.5) == pytest.approx(90.0)
    with pytest.raises(ValueError):
        ss_fs(0.4, 0.0)


def test_out_of_range_prediction_is_an_error_not_a_silent_miscount():
    with pytest.raises(ValueError, match="predictions must be class ids"):
        confusion_matrix(np.array([3]), np.array([0]), num_classes=3)
