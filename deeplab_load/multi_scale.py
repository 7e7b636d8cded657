"""Multi-scale and left-right flipped inference with research/deeplab's semantics.

The original (``model.predict_labels_multi_scale`` with ``eval_scales`` and
``add_flipped_images``) runs one branch per (scale, flip) on the image the model sees (padded to
the eval crop size in eval/vis/export):

1. flipped branches reverse the image along the width;
2. for scale s != 1 the float pixels (0..255) are resized with align_corners bilinear
   interpolation to ``scale_dimension(H, s) x scale_dimension(W, s)``, ``int((d - 1) * s + 1)``;
3. the raw logits are resized (align_corners) to the grid ``scale_dimension(H, max(1, s) / S)``
   (S = the logits' stride: 4 with the decoder, else the output stride; for s < 1 this is the
   scale-1 grid and is not an identity), and flipped branches are reversed back;
4. logits are resized (align_corners) to ``H x W`` and turned into softmax probabilities;
5. the probabilities (not the logits) are averaged over all branches; labels are their argmax.

With ``eval_scales=(1.0,)`` and no flip, everything here defers to ``inference`` so the numbers
are bit-identical to single-scale prediction (argmax of the upsampled logits).
"""
import tensorflow as tf

from deeplab_load import inference
from deeplab_load.inference_configs import parse_scales  # noqa: F401  (its home is the configs)
from deeplab_load.models.ops import padded_pixels, resize_bilinear_align_corners
from deeplab_load.traced import PerModel, compiled

SINGLE_SCALE = (1.0,)


def normalize_scales(eval_scales):
    """``eval_scales`` as a tuple of positive floats; ValueError for empty or non-positive."""
    scales = tuple(float(s) for s in (SINGLE_SCALE if eval_scales is None else eval_scales))
    if not scales or min(scales) <= 0:
        raise ValueError(f"eval_scales must be positive numbers, got {eval_scales}")
    return scales


def is_single_scale(eval_scales, add_flipped_images):
    """True when (scales, flip) is plain single-scale prediction."""
    return normalize_scales(eval_scales) == SINGLE_SCALE and not add_flipped_images


def scale_dimension(dim, scale):
    """research/deeplab's ``int((dim - 1) * scale + 1)`` on an int32 tensor, in float64."""
    value = (tf.cast(dim, tf.float64) - 1.0) * float(scale) + 1.0
    return tf.cast(value, tf.int32)


def logits_stride(model):
    """Stride of the model's raw logits: the decoder's output stride, else the output stride."""
    config = model.deeplab_config
    return config.decoder_output_stride or config.output_stride


def multi_scale_probabilities(model, pixels, eval_scales, add_flipped_images):
    """Averaged softmax probabilities float32 ``[B,H,W,K]`` of float pixels ``[B,H,W,3]``.

    ``pixels`` are 0..255 and already padded (the model sees exactly them at scale 1). One model
    call per branch: ``len(eval_scales) * (2 if add_flipped_images else 1)``.
    """
    scales = normalize_scales(eval_scales)
    stride = logits_stride(model)
    size = tf.shape(pixels)[1:3]
    probabilities = []
    for scale in scales:
        grid = scale_dimension(size, max(1.0, scale) / stride)
        for flipped in ((False, True) if add_flipped_images else (False,)):
            images = tf.reverse(pixels, [2]) if flipped else pixels
            if scale != 1.0:
                images = resize_bilinear_align_corners(
                    images, scale_dimension(size, scale))
            logits = tf.cast(model(images, training=False), tf.float32)
            logits = resize_bilinear_align_corners(logits, grid)
            if flipped:
                logits = tf.reverse(logits, [2])
            logits = resize_bilinear_align_corners(logits, size)
            probabilities.append(tf.nn.softmax(logits, axis=-1))
    return tf.reduce_mean(tf.stack(probabilities, axis=-1), axis=-1)


def padded_label_maps(model, pixels, eval_scales=SINGLE_SCALE, add_flipped_images=False):
    """Label maps int32 ``[B,H,W]`` of padded float pixels ``[B,H,W,3]``.

    Single scale without flip: ``inference.padded_label_maps`` (argmax of upsampled logits).
    """
    if is_single_scale(eval_scales, add_flipped_images):
        return inference.padded_label_maps(model, pixels)
    probabilities = multi_scale_probabilities(model, pixels, eval_scales, add_flipped_images)
    return tf.argmax(probabilities, axis=-1, output_type=tf.int32)


_LABEL_MAP_FUNCTIONS = PerModel()


def label_map_function(model, eval_scales=SINGLE_SCALE, add_flipped_images=False):
    """The compiled :func:`padded_label_maps` of `model`, traced once per model, (scales, flip)
    and input shape; single scale without flip is ``inference.label_map_function``."""
    if is_single_scale(eval_scales, add_flipped_images):
        return inference.label_map_function(model)
    scales = normalize_scales(eval_scales)
    return _LABEL_MAP_FUNCTIONS.get(
        model, (scales, bool(add_flipped_images)),
        lambda: compiled(lambda pixels: padded_label_maps(model, pixels, scales,
                                                          bool(add_flipped_images))))


_PREDICT_FUNCTIONS = PerModel()


def _probabilities_function(model, scales, add_flipped_images):
    """One traced function per (model, scales, flip): uint8 images + padded size ->
    probabilities at the image size."""
    def make():
        @compiled
        def function(images, padded_size):
            pixels, height, width = padded_pixels(images, padded_size)
            probabilities = multi_scale_probabilities(model, pixels, scales, add_flipped_images)
            return probabilities[:, :height, :width, :]
        return function
    return _PREDICT_FUNCTIONS.get(model, (scales, bool(add_flipped_images)), make)


def image_scores_function(model, eval_scales=SINGLE_SCALE, add_flipped_images=False):
    """The compiled function behind :func:`predict_labels`: (uint8 images [B,h,w,3], padded size)
    -> scores [B,h,w,K] whose argmax are the labels (logits for a single scale without flip,
    probabilities otherwise). Its ``python_function`` builds the same ops in another graph."""
    if is_single_scale(eval_scales, add_flipped_images):
        return inference._predict_function(model)
    return _probabilities_function(model, normalize_scales(eval_scales), add_flipped_images)


def predict_probabilities(model, images_uint8, eval_crop_size=None, eval_scales=SINGLE_SCALE,
                          add_flipped_images=False):
    """Multi-scale / flipped probabilities float32 ``[B,H,W,K]`` at the input size.

    Images are padded with 127.5 to ``eval_crop_size`` first (as ``inference.predict_logits``).
    With a single scale and no flip this is ``softmax(inference.predict_logits(...))``.
    """
    if is_single_scale(eval_scales, add_flipped_images):
        return tf.nn.softmax(inference.predict_logits(model, images_uint8, eval_crop_size), -1)
    images = inference._check_images(images_uint8)
    padded = inference._padded_size(images.shape[1:3], eval_crop_size)
    function = _probabilities_function(model, normalize_scales(eval_scales), add_flipped_images)
    return function(tf.convert_to_tensor(images, tf.uint8), tf.constant(padded, tf.int32))


def predict_labels(model, images_uint8, eval_crop_size=None, eval_scales=SINGLE_SCALE,
                   add_flipped_images=False):
    """Label map int32 ``[B,H,W]``; single scale without flip is ``inference.predict_labels``."""
    if is_single_scale(eval_scales, add_flipped_images):
        return inference.predict_labels(model, images_uint8, eval_crop_size)
    probabilities = predict_probabilities(model, images_uint8, eval_crop_size, eval_scales,
                                          add_flipped_images)
    return tf.argmax(probabilities, axis=-1, output_type=tf.int32)
