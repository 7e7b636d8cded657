"""Losses of both training stages.

Stage 1: pixel-wise softmax cross entropy ignoring label 255, optionally with the paper's
per-image class weights. Stage 2: the discriminator's weighted binary CE (ground truth = real,
buffer sets = fake) and the generator's non-saturating loss -log D(G(x)).

Every loss comes as a *sum* plus the count it should be divided by, so that distributed steps can
divide by the count summed over all replicas and get the single-device gradient; the plain-mean
variants are for single-device use and tests.
"""
import tensorflow as tf

from deeplab_load.models.ops import IGNORE_LABEL


def cross_entropy_sum_and_count(labels, logits, pixel_weights=None, ignore_label=IGNORE_LABEL):
    """Summed softmax CE over the pixels that are not `ignore_label`.

    labels: int [B,H,W] class ids, `ignore_label` for unlabeled pixels.
    logits: float [B,H,W,K] at the labels' resolution.
    pixel_weights: optional float [B,H,W] multiplying each pixel's CE.
    Returns (sum of (weighted) CE over valid pixels, number of valid pixels), float32 scalars.
    """
    labels = tf.cast(labels, tf.int32)
    logits = tf.cast(logits, tf.float32)
    valid = tf.not_equal(labels, ignore_label)
    safe_labels = tf.where(valid, labels, tf.zeros_like(labels))
    per_pixel = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=safe_labels, logits=logits)
    weights = tf.cast(valid, tf.float32)
    if pixel_weights is not None:
        weights = weights * tf.cast(pixel_weights, tf.float32)
    total = tf.reduce_sum(per_pixel * weights)
    count = tf.reduce_sum(tf.cast(valid, tf.float32))
    return total, count


def cross_entropy(labels, logits, pixel_weights=None, ignore_label=IGNORE_LABEL):
    """Mean (weighted) softmax CE over the valid pixels of the batch; 0 when none is valid."""
    total, count = cross_entropy_sum_and_count(labels, logits, pixel_weights, ignore_label)
    return total / tf.maximum(count, 1.0)


def class_balanced_pixel_weights(labels, num_classes, mean_class_fraction, min_weight, max_weight,
                                 ignore_label=IGNORE_LABEL):
    """The paper's weighted-CE pixel weights, computed per image of the batch.

    Weight of a pixel of class c in image b = clip(m_b / n_bc, min_weight, max_weight), where
    n_bc = pixels of class c in image b and m_b = the training set's mean number of pixels per
    (present) class, expressed for this image: `mean_class_fraction` * valid pixels of image b.
    `mean_class_fraction` comes from `training.class_weights.ClassPixelStats`; stating it as a
    fraction makes the weights independent of crop and image size.

    labels: int [B,H,W]. Returns float32 [B,H,W]; ignore pixels get weight 0.
    """
    labels = tf.cast(labels, tf.int32)
    valid = tf.not_equal(labels, ignore_label)
    one_hot = tf.one_hot(tf.where(valid, labels, -1), num_classes, dtype=tf.float32)  # -1 -> zeros
    class_pixels = tf.reduce_sum(one_hot, axis=[1, 2])                       # [B,K]
    valid_pixels = tf.reduce_sum(class_pixels, axis=1, keepdims=True)        # [B,1]
    reference = tf.cast(mean_class_fraction, tf.float32) * valid_pixels      # [B,1]
    class_weights = tf.clip_by_value(reference / tf.maximum(class_pixels, 1.0),
                                     float(min_weight), float(max_weight))    # [B,K]
    return tf.einsum("bhwk,bk->bhw", one_hot, class_weights)


def balanced_example_weights(is_real, num_fake_sets):
    """Per-example discriminator weights making real and fake sides weigh the same.

    An epoch of discriminator data holds the M ground-truth maps (real) and `num_fake_sets` sets
    of M generated maps (fake). Real examples get (1 + S) / 2 and fake ones (1 + S) / (2 S), with
    S = num_fake_sets: both sides then total M (1 + S) / 2 per epoch, whatever S is, and the mean
    weight over the epoch is 1, so the loss scale does not change with the buffer size.

    is_real: float/bool [N]. Returns float32 [N].
    """
    if num_fake_sets < 1:
        raise ValueError(f"num_fake_sets must be >= 1, got {num_fake_sets}")
    is_real = tf.cast(is_real, tf.float32)
    sets = float(num_fake_sets)
    return is_real * (1.0 + sets) / 2.0 + (1.0 - is_real) * (1.0 + sets) / (2.0 * sets)


def discriminator_bce_per_example(logits, is_real):
    """Binary CE from logits of D; real (ground truth) has target 1. Returns float32 [N]."""
    logits = tf.reshape(tf.cast(logits, tf.float32), [-1])
    targets = tf.reshape(tf.cast(is_real, tf.float32), [-1])
    return tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits)


def discriminator_loss(logits, is_real, example_weights=None):
    """Mean over the batch of the (weighted) binary CE of D's logits [N] or [N,1]."""
    per_example = discriminator_bce_per_example(logits, is_real)
    if example_weights is not None:
        per_example = per_example * tf.reshape(tf.cast(example_weights, tf.float32), [-1])
    return tf.reduce_mean(per_example)


def generator_adversarial_per_example(logits):
    """Non-saturating generator loss -log D(G(x)) = softplus(-logit). Returns float32 [N]."""
    return tf.nn.softplus(-tf.reshape(tf.cast(logits, tf.float32), [-1]))


def generator_adversarial_loss(logits):
    """Mean over the batch of -log D(G(x)) for D's logits [N] or [N,1]."""
    return tf.reduce_mean(generator_adversarial_per_example(logits))
