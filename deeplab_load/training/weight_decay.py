"""L2 weight decay as research/deeplab applies it.

The original regularises the weights of every regular convolution -- backbone convs, Xception
shortcuts, the pointwise halves of separable convs, ASPP, decoder and logits -- with
``slim.l2_regularizer(weight_decay)``, i.e. ``weight_decay * sum(w**2) / 2`` per kernel
(``tf.nn.l2_loss``), and leaves depthwise kernels (``regularize_depthwise=False``), biases and
BatchNorm parameters alone. train.py's default is ``weight_decay=4e-5``.
"""
import tensorflow as tf

from deeplab_load.models.layers import ConvBN

DEFAULT_WEIGHT_DECAY = 4e-5


def decayed_kernels(model):
    """The kernels the original regularises: those of the model's non-depthwise ConvBN layers."""
    return [layer.conv.kernel
            for layer in model._flatten_layers(include_self=False, recursive=True)
            if isinstance(layer, ConvBN) and not layer.depthwise]


def weight_decay_loss(kernels, weight_decay):
    """``weight_decay * sum_k sum(k**2) / 2`` over `kernels` (float32 scalar tensor)."""
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    if not weight_decay or not kernels:
        return tf.constant(0.0)
    return weight_decay * tf.add_n([tf.nn.l2_loss(tf.cast(k, tf.float32)) for k in kernels])
