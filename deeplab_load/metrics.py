"""Segmentation metrics from a streaming confusion matrix.

The confusion matrix is int64 ``[K, K]``: rows are ground-truth classes, columns predicted
classes. Pixels whose ground truth is the ignore label (255) are not counted at all, so a
prediction there is neither right nor wrong (as in DeepLab's eval.py, which gives them weight 0).

Convention for classes that never occur: a class with ``TP + FP + FN == 0`` (absent from both the
ground truth and the predictions of the whole evaluated set) has no IoU (NaN in arrays, ``null``
in JSON) and is left out of the mean. This is what TF1's ``tf.metrics.mean_iou`` does (DeepLab's
eval metric: it divides the IoU sum by the number of classes with a non-zero denominator) and
what the Cityscapes evaluator does (NaN scores are skipped in its average). A class that appears
only in the predictions has IoU 0 and counts.
"""
import json

import numpy as np
import tensorflow as tf

IGNORE_LABEL = 255


def confusion_matrix_numpy(labels, predictions, num_classes, ignore_label=IGNORE_LABEL):
    """int64 ``[K, K]`` confusion matrix of integer arrays of equal shape (any rank).

    Raises ValueError if a non-ignored label or any counted prediction is outside ``[0, K)``.
    """
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    predictions = np.asarray(predictions).reshape(-1).astype(np.int64)
    if labels.shape != predictions.shape:
        raise ValueError(f"labels and predictions differ in size: {labels.size} vs "
                         f"{predictions.size}")
    counted = labels != ignore_label
    labels, predictions = labels[counted], predictions[counted]
    for name, values in (("label", labels), ("prediction", predictions)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            bad = np.unique(values[(values < 0) | (values >= num_classes)])
            raise ValueError(f"{name} values {bad[:10].tolist()} are outside [0, {num_classes}) "
                             f"and not the ignore label {ignore_label}")
    flat = np.bincount(labels * num_classes + predictions, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes).astype(np.int64)


def confusion_matrix_batch(labels, predictions, num_classes, ignore_label=IGNORE_LABEL):
    """TF version of :func:`confusion_matrix_numpy` for use inside ``tf.function``.

    ``labels`` and ``predictions``: integer tensors of the same shape, e.g. ``[B, H, W]``.
    Returns an int64 tensor ``[K, K]``. Out-of-range values raise InvalidArgumentError.
    """
    labels = tf.cast(tf.reshape(labels, [-1]), tf.int64)
    predictions = tf.cast(tf.reshape(predictions, [-1]), tf.int64)
    counted = tf.not_equal(labels, ignore_label)
    # Ignored pixels go to one extra bin (K*K) instead of being gathered out: same counts,
    # without the two boolean-mask copies of every batch.
    labels = tf.where(counted, labels, 0)
    predictions = tf.where(counted, predictions, 0)
    num_classes = tf.cast(num_classes, tf.int64)
    checks = [
        tf.debugging.assert_non_negative(labels, message="negative label"),
        tf.debugging.assert_less(labels, num_classes,
                                 message="label >= num_classes and not the ignore label"),
        tf.debugging.assert_non_negative(predictions, message="negative prediction"),
        tf.debugging.assert_less(predictions, num_classes, message="prediction >= num_classes"),
    ]
    bins = num_classes * num_classes
    with tf.control_dependencies(checks):
        index = tf.where(counted, labels * num_classes + predictions, bins)
        flat = tf.math.bincount(tf.cast(index, tf.int32), minlength=tf.cast(bins + 1, tf.int32),
                                maxlength=tf.cast(bins + 1, tf.int32), dtype=tf.int64)
    flat = flat[:bins]
    return tf.reshape(flat, tf.stack([num_classes, num_classes]))


class StreamingConfusionMatrix:
    """Accumulates an int64 ``[K, K]`` confusion matrix over batches."""

    def __init__(self, num_classes, ignore_label=IGNORE_LABEL):
        self.num_classes = int(num_classes)
        self.ignore_label = ignore_label
        self.matrix = np.zeros((self.num_classes, self.num_classes), np.int64)

    def update(self, labels, predictions):
        """Adds integer label/prediction arrays of equal shape."""
        self.matrix += confusion_matrix_numpy(labels, predictions, self.num_classes,
                                              self.ignore_label)

    def add_matrix(self, matrix):
        """Adds an already computed ``[K, K]`` matrix (e.g. from :func:`confusion_matrix_batch`)."""
        matrix = np.asarray(matrix, np.int64)
        if matrix.shape != self.matrix.shape:
            raise ValueError(f"confusion matrix shape {matrix.shape} != {self.matrix.shape}")
        self.matrix += matrix

    def reset(self):
        self.matrix[...] = 0

    def mean_iou(self):
        return mean_iou(self.matrix)


def per_class_iou(matrix):
    """float64 ``[..., K]`` of matrices ``[..., K, K]``: TP / (TP + FP + FN); NaN where the
    denominator is 0."""
    matrix = np.asarray(matrix, np.float64)
    true_positives = np.diagonal(matrix, axis1=-2, axis2=-1)
    denominator = matrix.sum(axis=-2) + matrix.sum(axis=-1) - true_positives
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, true_positives / np.maximum(denominator, 1), np.nan)


def mean_ious(matrices):
    """float64 ``[...]``: :func:`mean_iou` of each matrix of ``[..., K, K]`` (NaN where a
    matrix is empty)."""
    ious = per_class_iou(matrices)
    valid = ~np.isnan(ious)
    count = valid.sum(axis=-1)
    total = np.where(valid, ious, 0.0).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def mean_iou(matrix):
    """Mean of :func:`per_class_iou` over classes that have one; NaN for an empty matrix."""
    ious = per_class_iou(matrix)
    valid = ~np.isnan(ious)
    return float(ious[valid].mean()) if valid.any() else float("nan")


def pixel_accuracy(matrix):
    """Correct / counted pixels; NaN for an empty matrix."""
    matrix = np.asarray(matrix, np.float64)
    total = matrix.sum()
    return float(np.trace(matrix) / total) if total > 0 else float("nan")


def _json_number(value):
    return None if value is None or np.isnan(value) else float(value)


def results_dict(matrix, class_names, **metadata):
    """JSON-serialisable results: mIoU, pixel accuracy, per-class IoU keyed by class name.

    ``metadata`` (e.g. dataset, split, num_images, checkpoint) is copied in. IoU values are
    fractions in [0, 1]; classes without an IoU have ``null``.
    """
    matrix = np.asarray(matrix, np.int64)
    if len(class_names) != matrix.shape[0]:
        raise ValueError(f"{len(class_names)} class names for a {matrix.shape[0]}-class matrix")
    ious = per_class_iou(matrix)
    results = dict(metadata)
    results.update({
        "miou": _json_number(mean_iou(matrix)),
        "pixel_accuracy": _json_number(pixel_accuracy(matrix)),
        "num_pixels": int(matrix.sum()),
        "class_names": list(class_names),
        "per_class_iou": {name: _json_number(iou) for name, iou in zip(class_names, ious)},
        "gt_pixels_per_class": {name: int(n) for name, n in zip(class_names, matrix.sum(axis=1))},
        "confusion_matrix": matrix.tolist(),
    })
    return results


def _percent(value):
    return "n/a" if value is None else f"{100.0 * value:.2f}"


def format_text_table(results):
    """Console table of per-class IoU and mIoU (in percent)."""
    names = results["class_names"]
    width = max(len("mIoU"), max(len(name) for name in names))
    lines = [f"{'class':<{width}}  IoU (%)", "-" * (width + 9)]
    for name in names:
        lines.append(f"{name:<{width}}  {_percent(results['per_class_iou'][name]):>7}")
    lines.append("-" * (width + 9))
    lines.append(f"{'mIoU':<{width}}  {_percent(results['miou']):>7}")
    lines.append(f"{'pixel acc.':<{width}}  {_percent(results['pixel_accuracy']):>7}")
    return "\n".join(lines)


def format_markdown_table(results):
    """Markdown table of per-class IoU and mIoU (in percent)."""
    lines = ["| class | IoU (%) |", "|---|---:|"]
    for name in results["class_names"]:
        lines.append(f"| {name} | {_percent(results['per_class_iou'][name])} |")
    lines.append(f"| **mIoU** | **{_percent(results['miou'])}** |")
    lines.append(f"| pixel accuracy | {_percent(results['pixel_accuracy'])} |")
    return "\n".join(lines) + "\n"


def load_results(path):
    """Reads a results.json written by evaluate; ValueError naming the file if malformed."""
    with open(path, encoding="utf-8") as f:
        try:
            results = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from err
    for key in ("miou", "class_names", "per_class_iou"):
        if key not in results:
            raise ValueError(f"{path}: missing key {key!r}; is this an evaluate results.json?")
    return results
