"""Losses: CE with ignore, the paper's class weights, D's balanced BCE, the generator loss."""
import json

import numpy as np
import pytest
import tensorflow as tf

from deeplab_load import losses
from deeplab_load.training import class_weights


def numpy_softmax_ce(labels, logits):
    shifted = logits - logits.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    return -np.take_along_axis(log_probs, labels[..., None], -1)[..., 0]


def test_cross_entropy_is_mean_over_valid_pixels_and_ignores_255():
    rng = np.random.RandomState(0)
    logits = rng.randn(2, 5, 6, 4).astype(np.float32)
    labels = rng.randint(0, 4, (2, 5, 6)).astype(np.int32)
    labels[0, :2] = 255
    labels[1, :, 0] = 255
    valid = labels != 255
    expected = numpy_softmax_ce(np.where(valid, labels, 0), logits)[valid].mean()
    np.testing.assert_allclose(losses.cross_entropy(labels, logits).numpy(), expected, rtol=1e-5)

    changed = logits.copy()
    changed[~valid] = rng.randn(int((~valid).sum()), 4) * 100
    np.testing.assert_allclose(losses.cross_entropy(labels, changed).numpy(), expected, rtol=1e-5)

    total, count = losses.cross_entropy_sum_and_count(labels, logits)
    assert count.numpy() == valid.sum()
    np.testing.assert_allclose(total.numpy(), expected * valid.sum(), rtol=1e-5)


def test_cross_entropy_of_all_ignore_batch_is_zero():
    labels = np.full((1, 3, 3), 255, np.int32)
    logits = np.ones((1, 3, 3, 2), np.float32)
    assert losses.cross_entropy(labels, logits).numpy() == 0.0


def test_class_balanced_pixel_weights_hand_example():
    # image 0: 3 pixels of class 0, 4 of class 1, 1 ignore; image 1: 1 pixel of class 2, 7 of 0.
    labels = np.array([[[0, 0, 0, 1], [1, 1, 1, 255]],
                       [[2, 0, 0, 0], [0, 0, 0, 0]]], np.int32)
    weights = losses.class_balanced_pixel_weights(labels, num_classes=3, mean_class_fraction=0.5,
                                                  min_weight=0.1, max_weight=3.0).numpy()
    # image 0: reference = 0.5 * 7 valid = 3.5 -> class 0: 3.5/3, class 1: 3.5/4, ignore: 0
    np.testing.assert_allclose(weights[0], [[3.5 / 3] * 3 + [0.875], [0.875] * 3 + [0.0]], rtol=1e-6)
    # image 1: reference = 0.5 * 8 = 4 -> class 2: 4/1 clipped to 3, class 0: 4/7
    np.testing.assert_allclose(weights[1], [[3.0] + [4 / 7] * 3, [4 / 7] * 4], rtol=1e-6)
    low = losses.class_balanced_pixel_weights(labels, 3, 0.5, min_weight=0.9, max_weight=3.0).numpy()
    assert low[0, 1, 0] == pytest.approx(0.9)


def test_weighted_cross_entropy_applies_pixel_weights():
    rng = np.random.RandomState(1)
    logits = rng.randn(1, 2, 2, 3).astype(np.float32)
    labels = np.array([[[0, 1], [2, 255]]], np.int32)
    pixel_weights = np.array([[[2.0, 1.0], [0.5, 9.0]]], np.float32)
    per_pixel = numpy_softmax_ce(np.where(labels == 255, 0, labels), logits)
    expected = (2.0 * per_pixel[0, 0, 0] + per_pixel[0, 0, 1] + 0.5 * per_pixel[0, 1, 0]) / 3
    np.testing.assert_allclose(losses.cross_entropy(labels, logits, pixel_weights).numpy(), expected,
                               rtol=1e-5)


def test_class_pixel_stats_counts_and_json_round_trip(tmp_path):
    maps = [np.array([[0, 0], [1, 255]], np.uint8), np.array([[2, 2], [2, 2]], np.uint8),
            np.full((2, 2), 255, np.uint8)]
    stats = class_weights.compute_class_pixel_stats(maps, num_classes=3)
    assert stats.num_images == 2
    assert stats.class_pixels == [2, 1, 4]
    assert stats.class_images == [1, 1, 1]
    assert stats.mean_class_fraction == pytest.approx(2 / 3)
    assert stats.mean_pixels_per_class == pytest.approx(7 / 3)
    path = tmp_path / "class_stats.json"
    class_weights.save_class_pixel_stats(stats, str(path))
    assert class_weights.load_class_pixel_stats(str(path), num_classes=3) == stats
    assert json.loads(path.read_text())["class_pixels"] == [2, 1, 4]


def test_class_pixel_stats_errors_name_the_source(tmp_path):
    with pytest.raises(ValueError, match="label map #1"):
        class_weights.compute_class_pixel_stats([np.zeros((2, 2)), np.full((2, 2), 7)], 3)
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        class_weights.load_class_pixel_stats(str(path))
    good = tmp_path / "good.json"
    class_weights.save_class_pixel_stats(
        class_weights.compute_class_pixel_stats([np.zeros((2, 2))], 3), str(good))
    with pytest.raises(ValueError, match="good.json.*3 classes"):
        class_weights.load_class_pixel_stats(str(good), num_classes=5)


@pytest.mark.parametrize("num_fake_sets", [1, 2, 3, 4, 6])
def test_balanced_weights_make_real_and_fake_sides_equal(num_fake_sets):
    examples_per_set = 10
    is_real = np.array([1.0] * examples_per_set + [0.0] * examples_per_set * num_fake_sets)
    weights = losses.balanced_example_weights(is_real, num_fake_sets).numpy()
    real_total = weights[is_real == 1].sum()
    fake_total = weights[is_real == 0].sum()
    assert real_total == pytest.approx(fake_total)
    assert weights.mean() == pytest.approx(1.0)


def test_doubling_fake_sets_keeps_the_balance():
    def side_ratio(sets):
        is_real = np.array([1.0] * 5 + [0.0] * 5 * sets)
        weights = losses.balanced_example_weights(is_real, sets).numpy()
        return weights[is_real == 1].sum() / weights[is_real == 0].sum()
    assert side_ratio(2) == pytest.approx(side_ratio(4)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="num_fake_sets"):
        losses.balanced_example_weights([1.0], 0)


def test_discriminator_loss_matches_weighted_binary_ce():
    logits = np.array([[2.0], [-1.0], [0.5]], np.float32)
    is_real = np.array([1.0, 0.0, 0.0], np.float32)
    weights = np.array([1.5, 0.75, 0.75], np.float32)
    sigmoid = 1 / (1 + np.exp(-logits[:, 0]))
    bce = -(is_real * np.log(sigmoid) + (1 - is_real) * np.log(1 - sigmoid))
    np.testing.assert_allclose(losses.discriminator_loss(logits, is_real, weights).numpy(),
                               np.mean(weights * bce), rtol=1e-5)
    np.testing.assert_allclose(losses.discriminator_loss(logits[:, 0], is_real).numpy(),
                               np.mean(bce), rtol=1e-5)


def test_generator_loss_is_minus_log_d():
    logits = np.array([[-30.0], [0.0], [3.0]], np.float32)
    expected = -np.log(1 / (1 + np.exp(-logits[:, 0].astype(np.float64))))
    np.testing.assert_allclose(losses.generator_adversarial_per_example(logits).numpy(), expected,
                               rtol=1e-5)
    np.testing.assert_allclose(losses.generator_adversarial_loss(logits).numpy(), expected.mean(),
                               rtol=1e-5)
    logits_var = tf.Variable([0.0, 1.0])
    with tf.GradientTape() as tape:
        loss = losses.generator_adversarial_loss(logits_var)
    assert np.all(tape.gradient(loss, logits_var).numpy() < 0)  # raising D's logit lowers the loss
