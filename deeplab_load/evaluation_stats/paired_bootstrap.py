"""Bootstrap intervals of data-set mIoU and of paired mIoU differences between two arms.

Inputs are per-image confusion matrices, integer ``[seeds, images, K, K]`` (rows = ground
truth), the images in the same order for every seed and arm. The data-set mIoU of a seed is
computed from the matrices summed over images, with ``metrics.py``'s rules (a class absent from
both ground truth and predictions of the summed matrix has no IoU and is left out of the mean).

One bootstrap replicate draws seeds with replacement, then test images with replacement; the
image draw is one multiset of image indices shared by every seed and by both arms (the test
images are crossed with the seeds: each is evaluated under every seed), so the difference is
paired. A replicate's statistic is the mean over the drawn seeds of the statistic of each seed
recomputed on the drawn images. The interval is the percentile interval of the replicates.
"""
import numpy as np

from deeplab_load import metrics

# Bootstrap replicates whose summed matrices are held in memory at once (each K*K float64s per
# seed): bounds memory for many classes, e.g. 21 classes, 5 seeds: ~18 MB per 1000.
_CHUNK_BYTES = 64 * 1024 * 1024


def _as_confusions(confusions, name):
    """int64 [S, N, K, K] (a [N, K, K] array is one seed); ValueError naming `name`."""
    array = np.asarray(confusions)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] != array.shape[-2]:
        raise ValueError(f"{name}: expected per-image confusion matrices [seeds, images, K, K], "
                         f"got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name}: confusion matrices must be integer counts, got {array.dtype}")
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"{name}: needs at least one seed and one image, got shape "
                         f"{array.shape}")
    if (array < 0).any():
        raise ValueError(f"{name}: negative counts in the confusion matrices")
    return array.astype(np.int64)


def _check_arguments(num_resamples, confidence):
    if int(num_resamples) < 1:
        raise ValueError(f"num_resamples must be >= 1, got {num_resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def _seed_mious(confusions):
    """float64 [S]: each seed's data-set mIoU from its matrices summed over images."""
    return metrics.mean_ious(confusions.sum(axis=1))


def _image_weights(rng, num_resamples, num_images):
    """int64 [R, N]: how often each image is drawn in each replicate (multinomial counts)."""
    return rng.multinomial(num_images, np.full(num_images, 1.0 / num_images), size=num_resamples)


def _replicate_mious(confusions, weights):
    """float64 [S, R]: mIoU of each seed on each replicate's image draw ([R, N] counts)."""
    seeds, images, classes, _ = confusions.shape
    flat = confusions.reshape(seeds, images, classes * classes).astype(np.float64)
    chunk = max(1, _CHUNK_BYTES // (8 * seeds * classes * classes))
    out = np.empty((seeds, weights.shape[0]))
    for start in range(0, weights.shape[0], chunk):
        part = weights[start:start + chunk].astype(np.float64)
        summed = np.einsum("rn,snk->srk", part, flat, optimize=True)  # exact: integer counts
        out[:, start:start + chunk] = metrics.mean_ious(
            summed.reshape(seeds, part.shape[0], classes, classes))
    return out


def _seed_resampled_means(per_seed, rng):
    """float64 [R]: per replicate, the mean over seeds drawn with replacement of [S, R]."""
    seeds, resamples = per_seed.shape
    counts = rng.multinomial(seeds, np.full(seeds, 1.0 / seeds), size=resamples)  # [R, S]
    return (counts * per_seed.T).sum(axis=1) / seeds


def _interval(replicates, confidence):
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(replicates, [tail, 1.0 - tail])
    return float(low), float(high)


def paired_miou_difference(confusions_a, confusions_b, num_resamples=10000, seed=0,
                           confidence=0.95):
    """Paired bootstrap of data-set mIoU(a) - mIoU(b) (fractions, not percent).

    confusions_a, confusions_b: integer [seeds, images, K, K] per-image confusion matrices of
      the same test images in the same order; seed i of a is paired with seed i of b. An arm
      with one seed (e.g. the baseline every seed starts from) is paired with every seed of
      the other.
    Returns {difference (mean over seeds of mIoU_a - mIoU_b), low, high (the `confidence`
    percentile interval), miou_a, miou_b (means over seeds), num_resamples, num_seeds,
    num_images, confidence}.
    """
    _check_arguments(num_resamples, confidence)
    a = _as_confusions(confusions_a, "confusions_a")
    b = _as_confusions(confusions_b, "confusions_b")
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"confusions_a {a.shape} and confusions_b {b.shape} differ in images "
                         "or classes; they must hold the same test images in the same order")
    if a.shape[0] != b.shape[0] and 1 not in (a.shape[0], b.shape[0]):
        raise ValueError(f"confusions_a has {a.shape[0]} seeds, confusions_b {b.shape[0]}: "
                         "they must have as many seeds, or one of them exactly one")
    num_seeds, num_images = max(a.shape[0], b.shape[0]), a.shape[1]
    miou_a, miou_b = _seed_mious(a), _seed_mious(b)
    difference = float(np.mean(np.broadcast_to(miou_a - miou_b, (num_seeds,))))
    rng = np.random.default_rng(seed)
    weights = _image_weights(rng, int(num_resamples), num_images)
    per_seed = _replicate_mious(a, weights) - _replicate_mious(b, weights)  # broadcasts seeds
    per_seed = np.broadcast_to(per_seed, (num_seeds, int(num_resamples)))
    low, high = _interval(_seed_resampled_means(per_seed, rng), confidence)
    return {"difference": difference, "low": low, "high": high,
            "miou_a": float(miou_a.mean()), "miou_b": float(miou_b.mean()),
            "num_resamples": int(num_resamples), "num_seeds": int(num_seeds),
            "num_images": int(num_images), "confidence": float(confidence)}


def miou_interval(confusions, num_resamples=10000, seed=0, confidence=0.95):
    """Bootstrap interval of one arm's data-set mIoU (seeds, then images, resampled).

    confusions: integer [seeds, images, K, K]. Returns {miou (mean over seeds), low, high,
    num_resamples, num_seeds, num_images, confidence}.
    """
    _check_arguments(num_resamples, confidence)
    array = _as_confusions(confusions, "confusions")
    rng = np.random.default_rng(seed)
    weights = _image_weights(rng, int(num_resamples), array.shape[1])
    low, high = _interval(_seed_resampled_means(_replicate_mious(array, weights), rng),
                          confidence)
    return {"miou": float(_seed_mious(array).mean()), "low": low, "high": high,
            "num_resamples": int(num_resamples), "num_seeds": int(array.shape[0]),
            "num_images": int(array.shape[1]), "confidence": float(confidence)}
