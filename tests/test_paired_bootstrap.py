"""Paired bootstrap of mIoU differences over seeds and test images."""
import numpy as np
import pytest

from deeplab_load import metrics
from deeplab_load.evaluation_stats.paired_bootstrap import miou_interval, \
    paired_miou_difference

K = 3


def _confusions(rng, seeds, images, accuracy, pixels=400):
    """int64 [seeds, images, K, K]: each image's ground truth split over K classes, each
    pixel predicted right with probability `accuracy` ([seeds] or scalar), else uniformly
    wrong."""
    accuracy = np.broadcast_to(np.asarray(accuracy, float), (seeds,))
    out = np.zeros((seeds, images, K, K), np.int64)
    truth = rng.multinomial(pixels, np.full(K, 1 / K), size=images)  # [N, K]
    for s in range(seeds):
        for n in range(images):
            for k in range(K):
                right = rng.binomial(truth[n, k], accuracy[s])
                out[s, n, k, k] = right
                wrong = rng.multinomial(truth[n, k] - right, np.full(K - 1, 1 / (K - 1)))
                out[s, n, k, [c for c in range(K) if c != k]] = wrong
    return out


def test_model_against_itself_is_exactly_zero():
    a = _confusions(np.random.default_rng(0), 3, 40, 0.7)
    result = paired_miou_difference(a, a, num_resamples=2000)
    assert (result["difference"], result["low"], result["high"]) == (0.0, 0.0, 0.0)
    assert (result["num_seeds"], result["num_images"], result["num_resamples"]) == (3, 40, 2000)


def test_point_estimate_is_the_mean_over_seeds_of_summed_matrix_mious():
    rng = np.random.default_rng(1)
    a, b = _confusions(rng, 2, 30, 0.8), _confusions(rng, 1, 30, 0.6)
    # class 2 absent from ground truth and prediction everywhere: excluded as metrics does
    a[..., 2, :] = a[..., :, 2] = 0
    b[..., 2, :] = b[..., :, 2] = 0
    result = paired_miou_difference(a, b, num_resamples=100)
    expected = np.mean([metrics.mean_iou(a[s].sum(axis=0)) - metrics.mean_iou(b[0].sum(axis=0))
                        for s in range(2)])
    assert result["difference"] == pytest.approx(expected, abs=1e-12)
    assert result["miou_b"] == pytest.approx(metrics.mean_iou(b[0].sum(axis=0)), abs=1e-12)


def test_known_difference_is_covered_and_swapping_negates():
    rng = np.random.default_rng(2)
    a, b = _confusions(rng, 5, 200, 0.75), _confusions(rng, 5, 200, 0.70)
    result = paired_miou_difference(a, b, num_resamples=3000, seed=5)
    assert result["low"] < result["difference"] < result["high"]
    # the population difference of IoU at these accuracies: acc / (2 - acc) per class
    truth = 0.75 / 1.25 - 0.70 / 1.30
    assert result["low"] < truth < result["high"]
    assert result["low"] > 0  # a clear effect: the interval excludes 0
    swapped = paired_miou_difference(b, a, num_resamples=3000, seed=5)
    assert swapped["difference"] == pytest.approx(-result["difference"], abs=1e-12)
    assert swapped["low"] == pytest.approx(-result["high"], abs=1e-12)
    assert swapped["high"] == pytest.approx(-result["low"], abs=1e-12)


def test_pure_noise_interval_includes_zero():
    rng = np.random.default_rng(3)
    a, b = _confusions(rng, 5, 200, 0.7), _confusions(rng, 5, 200, 0.7)
    result = paired_miou_difference(a, b, num_resamples=3000)
    assert result["low"] < 0 < result["high"]


def test_pairing_narrows_the_interval():
    """b = a with a few pixels moved: paired, the interval is tight around the small effect."""
    rng = np.random.default_rng(4)
    a = _confusions(rng, 1, 100, 0.7)
    b = a.copy()
    moved = np.minimum(b[..., 0, 0], 3)
    b[..., 0, 0] -= moved
    b[..., 0, 1] += moved
    result = paired_miou_difference(a, b, num_resamples=2000)
    assert 0 < result["low"] <= result["difference"] <= result["high"]
    one = miou_interval(a, num_resamples=2000)
    assert result["high"] - result["low"] < 0.2 * (one["high"] - one["low"])


def test_between_seed_variance_widens_the_interval():
    rng = np.random.default_rng(5)
    base = _confusions(rng, 1, 150, 0.7)
    steady = _confusions(rng, 5, 150, 0.72)
    spread = _confusions(rng, 5, 150, [0.62, 0.67, 0.72, 0.77, 0.82])
    narrow = paired_miou_difference(steady, base, num_resamples=3000)
    wide = paired_miou_difference(spread, base, num_resamples=3000)
    assert (wide["high"] - wide["low"]) > 2 * (narrow["high"] - narrow["low"])
    assert wide["num_seeds"] == 5


def test_one_arm_interval_covers_its_miou():
    a = _confusions(np.random.default_rng(6), 4, 80, 0.8)
    result = miou_interval(a, num_resamples=2000)
    assert result["low"] < result["miou"] < result["high"]
    assert result["miou"] == pytest.approx(
        np.mean([metrics.mean_iou(a[s].sum(axis=0)) for s in range(4)]), abs=1e-12)
    assert miou_interval(a, num_resamples=2000) == result  # seeded: deterministic


def test_chunking_does_not_change_results(monkeypatch):
    from deeplab_load.evaluation_stats import paired_bootstrap
    rng = np.random.default_rng(7)
    a, b = _confusions(rng, 2, 50, 0.8), _confusions(rng, 2, 50, 0.7)
    whole = paired_miou_difference(a, b, num_resamples=500)
    monkeypatch.setattr(paired_bootstrap, "_CHUNK_BYTES", 8 * 2 * K * K * 7)  # 7 per chunk
    assert paired_miou_difference(a, b, num_resamples=500) == whole


def test_bad_inputs_are_named():
    a = np.zeros((2, 5, K, K), np.int64)
    with pytest.raises(ValueError, match="seeds"):
        paired_miou_difference(a, np.zeros((3, 5, K, K), np.int64))
    with pytest.raises(ValueError, match="same test images"):
        paired_miou_difference(a, np.zeros((2, 4, K, K), np.int64))
    with pytest.raises(ValueError, match="integer"):
        miou_interval(a.astype(float))
    with pytest.raises(ValueError, match="num_resamples"):
        miou_interval(a, num_resamples=0)
