"""Structural metric: numpy 4-connected components, object purity, component counts."""
import numpy as np
import pytest

from deeplab_load.evaluation_stats.structure import StructureStats, components_per_class, \
    connected_components, ground_truth_objects, image_structure

HAND = np.array([
    [1, 1, 0, 2, 2],
    [0, 1, 0, 2, 0],
    [1, 0, 1, 0, 0],
    [1, 1, 1, 0, 2],
])


def test_components_of_a_hand_example():
    components, count = connected_components(HAND)
    # 4-connectivity: diagonal touches do not join; numbered in raster order of first pixels
    expected = np.array([
        [0, 0, 1, 2, 2],
        [3, 0, 1, 2, 4],
        [5, 6, 5, 4, 4],
        [5, 5, 5, 4, 7],
    ])
    assert count == 8
    np.testing.assert_array_equal(components, expected)
    np.testing.assert_array_equal(components_per_class(HAND, 3), [4, 2, 2])


def test_invalid_pixels_belong_to_no_component_and_separate():
    labels = np.ones((3, 5), int)
    valid = np.ones((3, 5), bool)
    valid[:, 2] = False
    components, count = connected_components(labels, valid)
    assert count == 2 and (components[:, 2] == -1).all()
    assert set(np.unique(components[:, :2])) == {0} and set(np.unique(components[:, 3:])) == {1}


def test_a_long_snake_is_one_component():
    snake = np.zeros((21, 21), int)
    snake[::2] = 1
    snake[1::4, -1] = 1
    snake[3::4, 0] = 1
    assert components_per_class(snake, 2)[1] == 1


def test_agrees_with_scipy_on_random_maps():
    ndimage = pytest.importorskip("scipy.ndimage")
    rng = np.random.default_rng(0)
    for _ in range(50):
        labels = rng.integers(0, 3, size=(int(rng.integers(1, 25)), int(rng.integers(1, 25))))
        counts = components_per_class(labels, 3)
        for cls in range(3):
            assert counts[cls] == ndimage.label(labels == cls)[1]


def test_purity_of_objects_from_instances_and_from_components():
    label = np.zeros((6, 10), np.uint8)
    label[1:5, 1:4] = 1      # object A: 12 px
    label[1:5, 5:9] = 2      # object B: 16 px
    instances = np.zeros_like(label)
    instances[1:5, 1:4] = 1
    instances[1:5, 5:7] = 2  # B is two instances side by side
    instances[1:5, 7:9] = 3
    prediction = label.astype(np.int64).copy()
    prediction[1, 1] = 2         # A: 11/12 = 0.917 of class 1: pure and correct
    prediction[1:5, 7:9] = 1     # third instance: wholly class 1: pure, wrong
    result = image_structure(label, prediction, 3, instances)
    assert (result.num_objects, result.num_pure, result.num_correct_pure) == (3, 3, 2)
    # without instances: the two GT components; B is half 2, half 1: impure
    result = image_structure(label, prediction, 3)
    assert (result.num_objects, result.num_pure, result.num_correct_pure) == (2, 1, 1)
    np.testing.assert_array_equal(result.gt_components, [1, 1, 1])
    # predicted: class 1 = A (with the hole at (1,1) still connected) and B's right half
    np.testing.assert_array_equal(result.predicted_components, [1, 2, 2])


def test_purity_threshold_is_ninety_percent():
    label = np.zeros((1, 10), np.uint8)
    label[0, :] = 1
    prediction = np.ones((1, 10), int)
    prediction[0, 0] = 2
    assert image_structure(label, prediction, 3).num_pure == 1       # 90%
    prediction[0, 1] = 2
    assert image_structure(label, prediction, 3).num_pure == 0       # 80%


def test_ignored_pixels_are_not_object_pixels():
    label = np.full((3, 4), 1, np.uint8)
    label[:, 2] = 255
    objects, classes = ground_truth_objects(label)
    assert list(classes) == [1, 1] and (objects[:, 2] == -1).all()


def test_stats_summary_counts():
    label = np.zeros((4, 4), np.uint8)
    label[:2, :2] = 1
    good = image_structure(label, label.astype(int), 2)
    split_prediction = label.astype(int)
    split_prediction[0, 1] = split_prediction[1, 0] = 0
    bad = image_structure(label, split_prediction, 2)
    stats = StructureStats.from_images([good, bad], 2)
    summary = stats.summary(("background", "thing"))
    assert summary["num_objects"] == 2 and summary["pure_share"] == 0.5
    assert summary["per_class"]["thing"] == {"gt_components": 2, "predicted_components": 3,
                                             "ratio": 1.5}
