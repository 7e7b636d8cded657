"""Prediction with the original DeepLab eval/export semantics.

Images are uint8 ``[B,H,W,3]``. With ``eval_crop_size=(Hc, Wc)`` every image is padded at the
bottom/right with the mean pixel 127.5 to ``Hc x Wc`` (as eval.py / vis.py / export_model.py do, so
the image-pooling branch averages over the padding too), the logits are resized to the padded size
with ``align_corners=True`` bilinear interpolation, and the result is cropped back to ``H x W``.
"""
import numpy as np
import tensorflow as tf

from deeplab_load.models.ops import padded_pixels, resize_bilinear_align_corners
from deeplab_load.traced import PerModel, compiled


def upsample_logits(logits, size):
    """Raw logits ``[B,h,w,K]`` -> ``[B,H,W,K]`` (bilinear, align_corners), ``size=(H, W)``."""
    return resize_bilinear_align_corners(logits, size)


def _check_images(images):
    images = np.asarray(images) if not tf.is_tensor(images) else images
    if images.dtype != np.uint8 and images.dtype != tf.uint8:
        raise ValueError(f"images must be uint8 [B,H,W,3], got dtype {images.dtype}")
    if len(images.shape) != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be uint8 [B,H,W,3], got shape {tuple(images.shape)}")
    return images


def _padded_size(image_size, eval_crop_size):
    height, width = int(image_size[0]), int(image_size[1])
    if eval_crop_size is None:
        return height, width
    crop_height, crop_width = (int(v) for v in eval_crop_size)
    if height > crop_height or width > crop_width:
        raise ValueError(f"image {height}x{width} is larger than eval_crop_size "
                         f"{crop_height}x{crop_width}; resize it first or raise the crop size")
    return crop_height, crop_width


_PREDICT_FUNCTIONS = PerModel()


def _predict_function(model):
    """One traced function per model: uint8 images + padded size -> logits at the image size."""
    return _PREDICT_FUNCTIONS.get(model, None, lambda: _new_predict_function(model))


def _new_predict_function(model):
    @compiled
    def function(images, padded_size):
        pixels, height, width = padded_pixels(images, padded_size)
        logits = tf.cast(model(pixels, training=False), tf.float32)
        logits = upsample_logits(logits, padded_size)
        return logits[:, :height, :width, :]

    return function


def predict_logits(model, images_uint8, eval_crop_size=None):
    """Logits ``[B,H,W,K]`` float32 at the input size (tf.Tensor).

    ``eval_crop_size=(Hc, Wc)`` pads with 127.5 to that size first (the original eval/export
    behaviour, e.g. 513x513 for VOC, 1025x2049 for Cityscapes); an image larger than it is an error.
    """
    images = _check_images(images_uint8)
    padded = _padded_size(images.shape[1:3], eval_crop_size)
    return _predict_function(model)(tf.convert_to_tensor(images, tf.uint8),
                                    tf.constant(padded, tf.int32))


def predict_labels(model, images_uint8, eval_crop_size=None):
    """Label map int32 ``[B,H,W]``: argmax of :func:`predict_logits`."""
    logits = predict_logits(model, images_uint8, eval_crop_size)
    return tf.argmax(logits, axis=-1, output_type=tf.int32)


def padded_label_maps(model, pixels):
    """Label maps int32 [B,H,W] of padded pixels [B,H,W,3]: logits upsampled with align_corners."""
    logits = tf.cast(model(pixels, training=False), tf.float32)
    logits = resize_bilinear_align_corners(logits, tf.shape(pixels)[1:3])
    return tf.argmax(logits, axis=-1, output_type=tf.int32)


_LABEL_MAP_FUNCTIONS = PerModel()


def label_map_function(model):
    """The compiled `padded_label_maps` of `model`, traced once per model and input shape."""
    return _LABEL_MAP_FUNCTIONS.get(
        model, None, lambda: compiled(lambda pixels: padded_label_maps(model, pixels)))
