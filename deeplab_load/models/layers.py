"""Building blocks shared by the backbones and the DeepLab head.

Every block is created with its TF1 variable scope (e.g. ``"xception_65/entry_flow/conv1_1"``) and
reports its weights as ``{tf1_variable_name: keras_variable}`` through ``checkpoint_variables()``, so
loading an official checkpoint is a table lookup (see ``deeplab_load.checkpoints.tf1``).
"""
import keras
import tensorflow as tf


def keras_name(scope):
    """Keras layer names may not contain '/': ``a/b/c`` -> ``a__b__c``."""
    return scope.replace("/", "__")


def fixed_padding(kernel_size, rate=1):
    """(pad_beg, pad_end) of TF1 ``conv2d_same`` / ``xception.fixed_padding`` for one axis."""
    effective = kernel_size + (kernel_size - 1) * (rate - 1)
    pad_beg = (effective - 1) // 2
    return pad_beg, effective - 1 - pad_beg


def _float32(variable):
    """A Keras variable's value (autocast where Keras autocasts it) as float32."""
    return tf.cast(variable.value, tf.float32)


def depthwise_conv2d(x, kernel, strides, padding, dilations):
    """Depthwise conv of x [B,H,W,C] (float32 or bfloat16) with a float32 kernel [h,w,C,1].

    A strided conv of a bfloat16 x runs forward in bfloat16 but computes its gradients in float32
    (from x and the incoming gradient cast up): oneDNN's bfloat16 backward passes of strided
    depthwise convs are 2-3x slower than its float32 ones on CPU (MobileNetV2's expanded_conv_1:
    92 vs about 30 ms at 513, batch 5); with the casts, a mixed_bfloat16 generator step takes
    515 instead of 570 ms. Stride-1 depthwise convs gained nothing from it and keep bfloat16.
    """
    strides = [1, *strides, 1]
    if x.dtype != tf.bfloat16 or max(strides) == 1:
        return tf.nn.depthwise_conv2d(x, tf.cast(kernel, x.dtype), strides, padding,
                                      dilations=dilations)

    @tf.custom_gradient
    def convolve(x, kernel):
        def gradients(dy):    # strided, hence undilated: the native backward ops apply as they are
            dy = tf.cast(dy, tf.float32)
            dx = tf.nn.depthwise_conv2d_backprop_input(tf.shape(x), kernel, dy, strides, padding)
            dkernel = tf.nn.depthwise_conv2d_backprop_filter(tf.cast(x, tf.float32),
                                                             tf.shape(kernel), dy, strides, padding)
            return tf.cast(dx, x.dtype), dkernel
        y = tf.nn.depthwise_conv2d(x, tf.cast(kernel, x.dtype), strides, padding,
                                   dilations=dilations)
        return y, gradients

    return convolve(x, kernel)


class ConvBN(keras.layers.Layer):
    """Conv (regular or depthwise) -> optional BatchNorm -> optional activation.

    Args:
      scope: TF1 variable scope of this conv, e.g. ``"aspp1_depthwise"``.
      filters: output channels of a regular conv; ignored for ``depthwise=True`` (multiplier 1).
      padding: ``"same"`` (TF 'SAME'), or ``"explicit"`` (symmetric TF1 fixed padding then 'VALID',
        as the original uses for strided Xception convs).
      use_batch_norm: BatchNorm without conv bias; otherwise the conv has ``biases``.
      activation: None, "relu" or "relu6", applied after the BatchNorm.
      fine_tune_batch_norm: False (DeepLab's default) makes BatchNorm use its moving statistics in
        training too; gamma and beta stay trainable.
    """

    def __init__(self, scope, filters=None, kernel_size=1, strides=1, dilation_rate=1,
                 depthwise=False, padding="same", use_batch_norm=True, batch_norm_epsilon=1e-3,
                 batch_norm_decay=0.9997, activation=None, fine_tune_batch_norm=False,
                 **kwargs):
        kwargs.setdefault("name", keras_name(scope))
        super().__init__(**kwargs)
        if padding not in ("same", "explicit"):
            raise ValueError(f"padding must be 'same' or 'explicit', got {padding!r}")
        if activation not in (None, "relu", "relu6"):
            raise ValueError(f"activation must be None, 'relu' or 'relu6', got {activation!r}")
        self.scope = scope
        self.depthwise = depthwise
        self.activation = activation
        self.fine_tune_batch_norm = fine_tune_batch_norm
        self.use_batch_norm = use_batch_norm
        self.pad = None
        conv_padding = "same"
        if padding == "explicit" and strides > 1:
            beg, end = fixed_padding(kernel_size, dilation_rate)
            self.pad = [[0, 0], [beg, end], [beg, end], [0, 0]]
            conv_padding = "valid"
        common = dict(kernel_size=kernel_size, strides=strides, dilation_rate=dilation_rate,
                      padding=conv_padding, use_bias=not use_batch_norm, dtype=self.dtype_policy)
        if depthwise:
            self.conv = keras.layers.DepthwiseConv2D(depth_multiplier=1, name="depthwise", **common)
        else:
            self.conv = keras.layers.Conv2D(filters, name="conv", **common)
        self.bn = (keras.layers.BatchNormalization(epsilon=batch_norm_epsilon,
                                                   momentum=batch_norm_decay, name="BatchNorm",
                                                   dtype=self.dtype_policy)
                   if use_batch_norm else None)

    def build(self, input_shape):
        shape = list(input_shape)
        if self.pad is not None:
            shape = [shape[0]] + [None if s is None else s + sum(p) for s, p in
                                  zip(shape[1:3], self.pad[1:3])] + [shape[3]]
        self.conv.build(tuple(shape))
        if self.bn is not None:
            self.bn.build(self.conv.compute_output_shape(tuple(shape)))

    def call(self, x, training=False):
        if self.pad is not None:
            x = tf.pad(x, self.pad)
        if self.bn is not None and bool(training) and self.fine_tune_batch_norm:
            x = self.bn(self.conv(x), training=True)
        elif self.bn is not None:
            x = self._conv_with_folded_batch_norm(x)
        else:
            x = self.conv(x)
        if self.activation == "relu":
            x = tf.nn.relu(x)
        elif self.activation == "relu6":
            x = tf.nn.relu6(x)
        return x

    def _conv_with_folded_batch_norm(self, x):
        """conv(x, kernel * s) + (beta - mean * s), s = gamma / sqrt(var + eps): the same as conv
        then BatchNorm with moving statistics, as one conv + bias that oneDNN fuses with the
        activation (Keras' BatchNorm would add two passes over the activation). Gradients reach
        kernel, gamma and beta through the fold."""
        # TF ops on float32 reads of the variables (autocast bfloat16 values promoted as Keras'
        # arithmetic promotes them): Keras ops' graph without their per-op Python dispatch.
        bn, conv = self.bn, self.conv
        scale = _float32(bn.gamma) * tf.math.rsqrt(_float32(bn.moving_variance) + bn.epsilon)
        bias = _float32(bn.beta) - _float32(bn.moving_mean) * scale
        strides = conv.strides
        dilations = conv.dilation_rate
        padding = conv.padding.upper()
        if self.depthwise:
            kernel = _float32(conv.kernel) * scale[tf.newaxis, tf.newaxis, :, tf.newaxis]
            y = depthwise_conv2d(x, kernel, strides, padding, dilations)
        else:
            kernel = _float32(conv.kernel) * scale
            y = tf.nn.conv2d(x, tf.cast(kernel, x.dtype), strides, padding, dilations=dilations)
        return tf.nn.bias_add(y, tf.cast(bias, x.dtype))

    def checkpoint_variables(self):
        """{TF1 variable name: Keras variable} for this conv (and its BatchNorm)."""
        kernel_name = "depthwise_weights" if self.depthwise else "weights"
        table = {f"{self.scope}/{kernel_name}": self.conv.kernel}
        if self.bn is not None:
            for leaf in ("gamma", "beta", "moving_mean", "moving_variance"):
                table[f"{self.scope}/BatchNorm/{leaf}"] = getattr(self.bn, leaf)
        else:
            table[f"{self.scope}/biases"] = self.conv.bias
        return table


def collect_checkpoint_variables(layers):
    """Merges ``checkpoint_variables()`` of several blocks, refusing duplicate TF1 names."""
    table = {}
    for layer in layers:
        for name, variable in layer.checkpoint_variables().items():
            if name in table:
                raise ValueError(f"two weights claim the TF1 name {name!r}")
            table[name] = variable
    return table


def set_batch_norm_decay(model, decay):
    """Sets the moving-average decay (Keras `momentum`) of every BatchNorm in `model`.

    DeepLab uses 0.9997, right for fine-tuning long runs; training from scratch for a few hundred
    steps (the demo) needs a faster decay so the moving statistics follow the weights. Call it
    before the first traced step. Returns the number of layers changed.
    """
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"batch norm decay must be in [0, 1), got {decay}")
    changed = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = decay
            changed += 1
    return changed
