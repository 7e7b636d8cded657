"""The LoAd discriminator and its class-split inputs.

D is Keras MobileNet (alpha 1, dropout 0.01, random init) on the image split per class: channels
3c..3c+2 of its input hold the image (scaled to [0, 1]) multiplied by the map of class c. Scaling
to [0, 1] (not DeepLab's [-1, 1]) keeps "not this class" at 0 = black, so a masked-out pixel never
looks like a mid-grey one. D returns one logit per example, shape [B, 1] (Keras' MobileNet top:
pooling, dropout, 1x1 conv, reshape); "real" = ground truth.

Generator maps reach D as `generator_class_maps(logits, ...)`: the logits are upsampled to the
crop (bilinear, align_corners, as DeepLab does) and encoded as
- "straight_through" (default): forward = one-hot of the argmax (what the buffer stores and D is
  trained on), backward = the gradient of the softmax;
- "soft": the softmax probabilities.
"""
import warnings

import keras
import tensorflow as tf

from deeplab_load.models.ops import IGNORE_LABEL, resize_bilinear_align_corners
from deeplab_load.models.precision import global_policy

DEFAULT_INPUT_SIZE = 224
MAP_ENCODINGS = ("straight_through", "soft")


def build_discriminator(num_classes, input_size=DEFAULT_INPUT_SIZE, alpha=1.0, dropout=0.01,
                        batch_norm_momentum=None, name="discriminator"):
    """MobileNet on [B, input_size, input_size, 3*num_classes] -> logits [B, 1] (float32).

    `input_size` must be >= 32 (MobileNet downsamples by 32); tests use 32 to stay fast.
    `batch_norm_momentum` overrides Keras' 0.99 for the moving statistics D uses in inference
    mode (hold-out accuracy, generator steps); a lower value suits small data sets.
    D computes in float32 under any global policy: this depthwise-heavy MobileNet, at D's small
    spatial sizes, is slower in bfloat16 on CPU (a mixed_bfloat16 generator step at 513, batch 5:
    646-720 ms with D in bfloat16, 579-614 ms with D in float32, alternated runs).
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if input_size < 32:
        raise ValueError(f"discriminator input_size must be >= 32, got {input_size}")
    with global_policy("float32"), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)   # "expects 1 or 3 input channels": 3K is meant
        mobilenet = keras.applications.MobileNet(
            input_shape=(input_size, input_size, 3 * num_classes), alpha=alpha, dropout=dropout,
            weights=None, include_top=True, classes=1, classifier_activation=None)
        if batch_norm_momentum is not None:
            for layer in mobilenet.layers:
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.momentum = float(batch_norm_momentum)
        inputs = keras.Input((input_size, input_size, 3 * num_classes), name="class_split_image")
        logits = mobilenet(inputs)
        return keras.Model(inputs, logits, name=name)


def batch_norm_probe(discriminator):
    """(BatchNormalization layers of D, a model mapping D's input to the inputs of those layers).

    Run in training mode, the probe gives the activations each BN layer normalises during D's
    training steps; `steps.DiscriminatorTrainer.recompute_batch_norm_statistics` averages their
    moments into the moving statistics D uses in inference mode.
    """
    backbones = [layer for layer in discriminator.layers if isinstance(layer, keras.Model)]
    if len(backbones) != 1:
        raise ValueError(f"{discriminator.name}: expected one MobileNet inside, "
                         f"found {len(backbones)} sub-models")
    backbone = backbones[0]
    layers = [layer for layer in backbone.layers
              if isinstance(layer, keras.layers.BatchNormalization)]
    probe = keras.Model(backbone.inputs, [layer.input for layer in layers],
                        name=f"{discriminator.name}_batch_norm_probe")
    return layers, probe


def discriminator_input_size(discriminator):
    """The spatial size D was built for."""
    return int(discriminator.input_shape[1])


def one_hot_maps(label_map, num_classes):
    """int [B,H,W] label map -> float32 [B,H,W,K]; labels outside 0..K-1 (e.g. 255) -> all zeros."""
    label_map = tf.cast(label_map, tf.int32)
    in_range = (label_map >= 0) & (label_map < num_classes)
    return tf.one_hot(tf.where(in_range, label_map, -1), num_classes, dtype=tf.float32)


def straight_through_one_hot(probabilities, scores=None):
    """Forward: exactly the one-hot of argmax over the last axis of `scores` (default:
    `probabilities`; pass the logits to match the argmax label maps bit for bit, softmax can
    tie); backward: identity onto `probabilities`."""
    scores = probabilities if scores is None else scores
    hard = tf.one_hot(tf.argmax(scores, axis=-1), tf.shape(probabilities)[-1],
                      dtype=probabilities.dtype)
    return _value_with_gradient_to(hard, probabilities)


@tf.custom_gradient
def _value_with_gradient_to(value, source):
    """`value` forward; backward, the incoming gradient goes to `source` unchanged. Equals
    ``value + (source - stop_gradient(source))`` for finite `source`, without the two passes."""
    return tf.identity(value), lambda gradient: (None, gradient)


@tf.custom_gradient
def _class_split(class_maps, image):
    """[B,s,s,K] x [B,s,s,C] -> [B,s,s,K,C], the product of every class map with every channel.

    The maps' gradient sums over the C colours with explicit products: the same sums, in the same
    order, as reducing the broadcast product over its last axis, but twice as fast on CPU.
    """
    def gradients(gradient):
        parts = tf.unstack(gradient, axis=-1)
        colours = [channel[..., tf.newaxis] for channel in tf.unstack(image, axis=-1)]
        d_maps = parts[0] * colours[0]
        for part, colour in zip(parts[1:], colours[1:]):
            d_maps = d_maps + part * colour
        d_image = tf.reduce_sum(gradient * class_maps[..., tf.newaxis], axis=-2)
        return d_maps, d_image
    return class_maps[..., :, tf.newaxis] * image[..., tf.newaxis, :], gradients


def generator_class_maps(logits, output_size, encoding="straight_through"):
    """Generator logits [B,h,w,K] -> class maps [B,H,W,K] float32 for D at `output_size` (H, W).

    encoding: "straight_through" (one-hot forward, softmax gradient) or "soft" (softmax).
    """
    if encoding not in MAP_ENCODINGS:
        raise ValueError(f"map_encoding must be one of {MAP_ENCODINGS}, got {encoding!r}")
    logits = resize_bilinear_align_corners(tf.cast(logits, tf.float32), output_size)
    probabilities = tf.nn.softmax(logits, axis=-1)
    if encoding == "soft":
        return probabilities
    return straight_through_one_hot(probabilities, logits)


def discriminator_inputs(pixels, class_maps, ignore_mask, size=DEFAULT_INPUT_SIZE):
    """Class-split image for D: float32 [B, size, size, 3K].

    pixels: float [B,H,W,3] in [0, 255]. class_maps: float [B,H,W,K] (one-hot, straight-through
    or soft). ignore_mask: bool [B,H,W], True where the GROUND TRUTH is ignore; those pixels are
    zeroed in every class, for real and generated maps alike.

    Image and maps are resized to size x size first (bilinear, half-pixel centres; differentiable
    in the maps) and multiplied afterwards: memory is B*size^2*3K instead of B*H*W*3K, and the
    result equals resize-after-multiply wherever the map is constant around a sample point.
    """
    keep = 1.0 - tf.cast(ignore_mask, tf.float32)
    class_maps = tf.cast(class_maps, tf.float32) * keep[..., tf.newaxis]
    image = tf.cast(pixels, tf.float32) / 255.0
    image = tf.image.resize(image, (size, size), method="bilinear")
    class_maps = tf.image.resize(class_maps, (size, size), method="bilinear")
    num_classes = class_maps.shape[-1]
    if num_classes is None:
        raise ValueError("class_maps need a static number of classes (last axis)")
    split = _class_split(class_maps, image)     # [B,s,s,K,3]
    return tf.reshape(split, [-1, size, size, 3 * num_classes])


def real_discriminator_inputs(pixels, labels, num_classes, size=DEFAULT_INPUT_SIZE,
                              ignore_label=IGNORE_LABEL):
    """D input of ground-truth maps: labels int [B,H,W] with `ignore_label` -> [B,size,size,3K]."""
    ignore_mask = tf.equal(tf.cast(labels, tf.int32), ignore_label)
    return discriminator_inputs(pixels, one_hot_maps(labels, num_classes), ignore_mask, size)
