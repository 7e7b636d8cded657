import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplab_load import metrics


def _random_maps(seed, shape=(3, 17, 23), num_classes=5, ignore_fraction=0.2):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, shape)
    labels[rng.random(shape) < ignore_fraction] = 255
    predictions = rng.integers(0, num_classes, shape)
    return labels.astype(np.uint8), predictions.astype(np.int32)


def test_hand_computed_example():
    labels = np.array([[0, 0, 1], [1, 255, 2]])
    predictions = np.array([[0, 1, 1], [1, 2, 0]])
    matrix = metrics.confusion_matrix_numpy(labels, predictions, num_classes=4)
    expected = np.zeros((4, 4), np.int64)
    expected[0, 0] = 1
    expected[0, 1] = 1
    expected[1, 1] = 2
    expected[2, 0] = 1
    np.testing.assert_array_equal(matrix, expected)
    ious = metrics.per_class_iou(matrix)
    # class 0: TP 1, FP 1 (gt 2), FN 1 -> 1/3; class 1: TP 2, FP 1 -> 2/3; class 2: TP 0 -> 0;
    # class 3: absent everywhere -> NaN, left out of the mean.
    np.testing.assert_allclose(ious[:3], [1 / 3, 2 / 3, 0.0])
    assert np.isnan(ious[3])
    assert metrics.mean_iou(matrix) == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)
    assert metrics.pixel_accuracy(matrix) == pytest.approx(3 / 5)


def test_prediction_in_ignore_region_is_not_counted():
    labels = np.full((4, 4), 255, np.uint8)
    labels[0, 0] = 1
    predictions = np.full((4, 4), 2)
    predictions[0, 0] = 1
    matrix = metrics.confusion_matrix_numpy(labels, predictions, num_classes=3)
    assert matrix.sum() == 1
    assert metrics.mean_iou(matrix) == 1.0


def test_tf_batch_matches_numpy_and_streams():
    stream = metrics.StreamingConfusionMatrix(5)
    tf_total = np.zeros((5, 5), np.int64)
    batch_fn = tf.function(lambda l, p: metrics.confusion_matrix_batch(l, p, 5))
    for seed in range(3):
        labels, predictions = _random_maps(seed)
        stream.update(labels, predictions)
        tf_total += batch_fn(tf.constant(labels), tf.constant(predictions)).numpy()
    np.testing.assert_array_equal(stream.matrix, tf_total)
    assert stream.matrix.sum() > 0


def test_mean_iou_matches_keras_mean_iou():
    labels, predictions = _random_maps(7, num_classes=6)
    predictions[predictions == 5] = 4  # class 5 only in the ground truth: IoU 0, counted
    labels[labels == 3] = 255
    predictions[predictions == 3] = 2  # class 3 absent from both: excluded
    keras_metric = keras.metrics.MeanIoU(num_classes=6, ignore_class=255)
    keras_metric.update_state(labels.astype(np.int32), predictions)
    matrix = metrics.confusion_matrix_numpy(labels, predictions, 6)
    assert metrics.mean_iou(matrix) == pytest.approx(float(keras_metric.result()), abs=1e-6)
    assert np.isnan(metrics.per_class_iou(matrix)[3])
    assert metrics.per_class_iou(matrix)[5] == 0.0


def test_out_of_range_values_raise():
    with pytest.raises(ValueError, match="label values \\[7\\]"):
        metrics.confusion_matrix_numpy(np.array([7, 0]), np.array([0, 0]), 3)
    with pytest.raises(ValueError, match="prediction values"):
        metrics.confusion_matrix_numpy(np.array([1, 0]), np.array([3, 0]), 3)
    with pytest.raises(tf.errors.InvalidArgumentError):
        metrics.confusion_matrix_batch(tf.constant([7, 0]), tf.constant([0, 0]), 3)


def test_results_dict_and_tables(tmp_path):
    labels, predictions = _random_maps(3, num_classes=3)
    predictions[predictions == 2] = 1
    labels[labels == 2] = 0  # class "c" absent everywhere
    matrix = metrics.confusion_matrix_numpy(labels, predictions, 3)
    results = metrics.results_dict(matrix, ["a", "b", "c"], dataset="toy", split="val")
    assert results["per_class_iou"]["c"] is None
    assert results["dataset"] == "toy"
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    loaded = metrics.load_results(str(path))
    assert loaded["miou"] == pytest.approx(metrics.mean_iou(matrix))
    text = metrics.format_text_table(results)
    assert "n/a" in text and f"{100 * results['miou']:.2f}" in text
    markdown = metrics.format_markdown_table(results)
    assert markdown.startswith("| class | IoU (%) |") and "| c | n/a |" in markdown


def test_load_results_rejects_other_json(tmp_path):
    path = tmp_path / "other.json"
    path.write_text('{"foo": 1}')
    with pytest.raises(ValueError, match="other.json"):
        metrics.load_results(str(path))


def test_mean_ious_of_many_matrices_equal_mean_iou_of_each():
    rng = np.random.default_rng(0)
    matrices = rng.integers(0, 20, size=(4, 3, 5, 5))
    matrices[0, 0, 4, :] = matrices[0, 0, :, 4] = 0   # a class absent: left out of the mean
    matrices[1, 2] = 0                                 # an empty matrix: NaN
    values = metrics.mean_ious(matrices)
    assert values.shape == (4, 3) and np.isnan(values[1, 2])
    for index in np.ndindex(4, 3):
        if index != (1, 2):
            assert values[index] == pytest.approx(metrics.mean_iou(matrices[index]), abs=1e-12)
    np.testing.assert_array_equal(metrics.per_class_iou(matrices)[2, 1],
                                  metrics.per_class_iou(matrices[2, 1]))
