"""Eval/export prediction semantics: align-corners resizing, 127.5 padding, cropping, argmax."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplab_load import inference
from deeplab_load.models.deeplab import Normalize
from deeplab_load.models.ops import resize_bilinear_align_corners


def numpy_resize_align_corners(images, height, width):
    """Reference: bilinear sampling at src = dst * (in - 1) / (out - 1)."""
    _, in_h, in_w, _ = images.shape

    def coords(out_size, in_size):
        scale = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
        src = np.arange(out_size) * scale
        low = np.floor(src).astype(int)
        high = np.minimum(low + 1, in_size - 1)
        return low, high, src - low

    y0, y1, fy = coords(height, in_h)
    x0, x1, fx = coords(width, in_w)
    top = images[:, y0][:, :, x0] * (1 - fx)[None, None, :, None] + \
        images[:, y0][:, :, x1] * fx[None, None, :, None]
    bottom = images[:, y1][:, :, x0] * (1 - fx)[None, None, :, None] + \
        images[:, y1][:, :, x1] * fx[None, None, :, None]
    return top * (1 - fy)[None, :, None, None] + bottom * fy[None, :, None, None]


class GlobalMean(keras.layers.Layer):
    """Broadcasts the spatial mean of its input over a stride-4 grid: [B,H,W,C] ->
    [B,ceil(H/4),ceil(W/4),C]; used to see what the model receives after padding."""

    def call(self, x):
        mean = tf.reduce_mean(x, axis=[1, 2], keepdims=True)
        shape = tf.shape(x)
        size = (shape[1] + 3) // 4, (shape[2] + 3) // 4
        return mean * tf.ones([shape[0], size[0], size[1], 1])


def make_model(head):
    pixels = keras.Input((None, None, 3))
    return keras.Model(pixels, head(Normalize()(pixels)))


@pytest.fixture(scope="module")
def images():
    return np.random.RandomState(0).randint(0, 256, size=(2, 13, 18, 3)).astype(np.uint8)


def test_resize_matches_align_corners_reference():
    x = np.random.RandomState(1).randn(1, 3, 5, 2).astype(np.float32)
    ours = resize_bilinear_align_corners(x, (7, 13)).numpy()
    np.testing.assert_allclose(ours, numpy_resize_align_corners(x, 7, 13), atol=1e-5)
    half_pixel = tf.image.resize(x, (7, 13), method="bilinear").numpy()
    assert np.abs(half_pixel - ours).max() > 1e-2
    np.testing.assert_allclose(inference.upsample_logits(x, (3, 5)).numpy(), x)


def test_identity_model_returns_normalized_pixels(images):
    model = make_model(keras.layers.Identity())
    expected = (2.0 / 255.0) * images.astype(np.float32) - 1.0
    np.testing.assert_allclose(inference.predict_logits(model, images).numpy(), expected, atol=1e-6)
    padded = inference.predict_logits(model, images, eval_crop_size=(17, 20)).numpy()
    np.testing.assert_allclose(padded, expected, atol=1e-6)
    labels = inference.predict_labels(model, images).numpy()
    assert labels.dtype == np.int32 and labels.shape == (2, 13, 18)
    np.testing.assert_array_equal(labels, np.argmax(expected, axis=-1))


def test_padding_is_the_mean_pixel_and_is_seen_by_the_model(images):
    model = make_model(GlobalMean())
    normalized = (2.0 / 255.0) * images.astype(np.float32) - 1.0
    padded = inference.predict_logits(model, images, eval_crop_size=(21, 25)).numpy()
    assert padded.shape == (2, 13, 18, 3)
    # 127.5 normalises to 0: the mean over the padded image is the image sum / padded area.
    expected = normalized.sum(axis=(1, 2), keepdims=True) / (21 * 25)
    np.testing.assert_allclose(padded, np.broadcast_to(expected, padded.shape), atol=1e-5)
    unpadded = inference.predict_logits(model, images).numpy()
    np.testing.assert_allclose(unpadded[:, :1, :1], normalized.mean(axis=(1, 2), keepdims=True),
                               atol=1e-5)


def test_bad_inputs_are_rejected(images):
    model = make_model(keras.layers.Identity())
    with pytest.raises(ValueError, match="larger than eval_crop_size 12x18"):
        inference.predict_labels(model, images, eval_crop_size=(12, 18))
    with pytest.raises(ValueError, match="uint8"):
        inference.predict_labels(model, images.astype(np.float32))
    with pytest.raises(ValueError, match=r"\[B,H,W,3\]"):
        inference.predict_labels(model, images[0])


def test_new_sizes_do_not_retrace_every_call():
    model = make_model(GlobalMean())
    rng = np.random.RandomState(2)
    for height, width in [(9, 11), (10, 15), (17, 8), (6, 6)]:
        inference.predict_labels(model, rng.randint(0, 256, (1, height, width, 3)).astype(np.uint8))
    assert inference._predict_function(model).experimental_get_tracing_count() <= 2
