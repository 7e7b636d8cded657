"""Discriminator model, class-split inputs and the generator-map encodings."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplab_load.models.ops import resize_bilinear_align_corners
from deeplab_load.models import discriminator as disc

K = 3


def test_discriminator_outputs_one_finite_logit_per_example():
    model = disc.build_discriminator(K, input_size=32)
    assert model.input_shape == (None, 32, 32, 3 * K)
    inputs = np.random.RandomState(0).uniform(0, 1, (2, 32, 32, 3 * K)).astype(np.float32)
    for training in (False, True):
        logits = model(inputs, training=training).numpy()
        assert logits.shape == (2, 1)
        assert np.all(np.isfinite(logits))


def test_default_discriminator_is_mobilenet_224_on_3k_channels():
    model = disc.build_discriminator(2)
    assert model.input_shape == (None, 224, 224, 6)
    assert model.output_shape == (None, 1)
    assert disc.discriminator_input_size(model) == 224
    with pytest.raises(ValueError, match="input_size"):
        disc.build_discriminator(2, input_size=16)


def test_batch_norm_momentum_override():
    model = disc.build_discriminator(K, input_size=32, batch_norm_momentum=0.5)
    momenta = {layer.momentum for layer in model.get_layer(index=1).layers
               if isinstance(layer, keras.layers.BatchNormalization)}
    assert momenta == {0.5}


def test_inputs_split_the_image_per_class_in_channel_blocks():
    rng = np.random.RandomState(0)
    pixels = rng.uniform(0, 255, (1, 8, 8, 3)).astype(np.float32)
    labels = rng.randint(0, K, (1, 8, 8)).astype(np.int32)
    inputs = disc.real_discriminator_inputs(pixels, labels, K, size=8).numpy()
    assert inputs.shape == (1, 8, 8, 3 * K)
    for c in range(K):
        expected = pixels[0] / 255.0 * (labels[0] == c)[..., None]
        np.testing.assert_allclose(inputs[0, ..., 3 * c:3 * c + 3], expected, atol=1e-6)


def test_ignore_pixels_are_zero_in_real_and_fake_inputs():
    rng = np.random.RandomState(1)
    pixels = rng.uniform(1, 255, (2, 8, 8, 3)).astype(np.float32)
    labels = rng.randint(0, K, (2, 8, 8)).astype(np.int32)
    labels[:, 2:5, 3:7] = 255
    ignore = labels == 255
    fake_map = rng.randint(0, K, (2, 8, 8))                 # covers the ignore region too
    real = disc.real_discriminator_inputs(pixels, labels, K, size=8).numpy()
    fake = disc.discriminator_inputs(pixels, disc.one_hot_maps(fake_map, K), ignore, size=8).numpy()
    soft = disc.discriminator_inputs(pixels, tf.nn.softmax(rng.randn(2, 8, 8, K)), ignore, 8).numpy()
    for inputs in (real, fake, soft):
        assert np.all(inputs[ignore] == 0)
        assert np.all(inputs[~ignore].sum(-1) > 0)


def test_inputs_are_resized_to_the_discriminator_size():
    pixels = np.full((1, 20, 30, 3), 255.0, np.float32)
    labels = np.zeros((1, 20, 30), np.int32)
    inputs = disc.real_discriminator_inputs(pixels, labels, K, size=32).numpy()
    assert inputs.shape == (1, 32, 32, 3 * K)
    np.testing.assert_allclose(inputs[..., :3], 1.0, atol=1e-6)
    assert np.all(inputs[..., 3:] == 0)


def test_one_hot_maps_give_zeros_for_ignore():
    maps = disc.one_hot_maps(np.array([[[0, 255, 2]]]), K).numpy()
    np.testing.assert_array_equal(maps[0, 0], [[1, 0, 0], [0, 0, 0], [0, 0, 1]])


def test_straight_through_forward_is_one_hot_of_upsampled_argmax():
    logits = tf.constant(np.random.RandomState(2).randn(2, 3, 4, K), tf.float32)
    maps = disc.generator_class_maps(logits, (9, 13)).numpy()
    upsampled = resize_bilinear_align_corners(logits, (9, 13)).numpy()
    expected = np.eye(K, dtype=np.float32)[upsampled.argmax(-1)]
    np.testing.assert_array_equal(maps, expected)
    soft = disc.generator_class_maps(logits, (9, 13), "soft").numpy()
    np.testing.assert_allclose(soft, tf.nn.softmax(upsampled).numpy(), rtol=1e-5, atol=1e-6)


def test_straight_through_gradient_equals_the_softmax_path_gradient():
    rng = np.random.RandomState(3)
    logits = tf.Variable(rng.randn(1, 3, 3, K).astype(np.float32))
    pixels = rng.uniform(0, 255, (1, 9, 9, 3)).astype(np.float32)
    ignore = np.zeros((1, 9, 9), bool)
    ignore[0, 0] = True
    probe = tf.constant(rng.randn(1, 9, 9, 3 * K), tf.float32)

    def gradient(encoding):
        with tf.GradientTape() as tape:
            maps = disc.generator_class_maps(logits, (9, 9), encoding)
            inputs = disc.discriminator_inputs(pixels, maps, ignore, size=9)
            objective = tf.reduce_sum(inputs * probe)
        return tape.gradient(objective, logits).numpy()

    straight_through, soft = gradient("straight_through"), gradient("soft")
    assert np.abs(soft).max() > 1e-3
    np.testing.assert_allclose(straight_through, soft, rtol=1e-5, atol=1e-7)


def test_gradient_reaches_generator_logits_through_the_discriminator():
    model = disc.build_discriminator(K, input_size=32)
    logits = tf.Variable(np.random.RandomState(4).randn(2, 5, 5, K).astype(np.float32))
    pixels = np.random.RandomState(5).uniform(0, 255, (2, 33, 33, 3)).astype(np.float32)
    with tf.GradientTape() as tape:
        maps = disc.generator_class_maps(logits, (33, 33))
        d_logits = model(disc.discriminator_inputs(pixels, maps, np.zeros((2, 33, 33), bool), 32),
                         training=True)
        objective = tf.reduce_sum(d_logits)
    grad = tape.gradient(objective, logits).numpy()
    assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 0


def test_unknown_map_encoding_is_rejected():
    with pytest.raises(ValueError, match="map_encoding"):
        disc.generator_class_maps(tf.zeros((1, 2, 2, K)), (4, 4), "gumbel")


def test_straight_through_and_class_split_gradients_equal_their_plain_formulas_bit_for_bit():
    """The custom gradients (straight-through, class split) only skip work: the forward values
    and the gradients to the logits, the maps and the image equal the plain TF formulas exactly."""
    rng = np.random.RandomState(6)
    logits = tf.constant(rng.randn(2, 5, 5, K).astype(np.float32))
    pixels = tf.constant(rng.uniform(0, 255, (2, 17, 17, 3)).astype(np.float32))
    ignore = tf.constant(rng.uniform(size=(2, 17, 17)) < 0.2)
    probe = tf.constant(rng.randn(2, 9, 9, 3 * K).astype(np.float32))

    def plain_inputs(logits, pixels):
        upsampled = disc.resize_bilinear_align_corners(logits, (17, 17))
        probabilities = tf.nn.softmax(upsampled)
        hard = tf.one_hot(tf.argmax(upsampled, -1), K)
        maps = (hard + (probabilities - tf.stop_gradient(probabilities)))
        maps = maps * (1.0 - tf.cast(ignore, tf.float32))[..., tf.newaxis]
        image = tf.image.resize(pixels / 255.0, (9, 9))
        maps = tf.image.resize(maps, (9, 9))
        return tf.reshape(maps[..., :, tf.newaxis] * image[..., tf.newaxis, :], [2, 9, 9, 3 * K])

    def ours(logits, pixels):
        return disc.discriminator_inputs(pixels, disc.generator_class_maps(logits, (17, 17)),
                                         ignore, size=9)

    results = []
    for build in (plain_inputs, ours):
        with tf.GradientTape() as tape:
            tape.watch([logits, pixels])
            inputs = build(logits, pixels)
            objective = tf.reduce_sum(inputs * probe)
        results.append([inputs.numpy()] + [g.numpy() for g in tape.gradient(objective,
                                                                             [logits, pixels])])
    for plain, custom in zip(*results):
        assert np.abs(plain).max() > 1e-6
        np.testing.assert_array_equal(custom, plain)
