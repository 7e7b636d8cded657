"""DeepLabv3+ head (image pooling, ASPP, decoder, logits) and the model builder.

``build_deeplab(config)`` returns a functional ``keras.Model`` from raw pixels ``[B,H,W,3]`` in
[0, 255] to raw logits ``[B, ceil(H/s), ceil(W/s), num_classes]`` with
``s = decoder_output_stride or output_stride``. Every weight carries its TF1 name, see
:func:`checkpoint_variables`.
"""
import dataclasses
import importlib

import keras
import tensorflow as tf

from deeplab_load.models.ops import resize_bilinear_align_corners
from deeplab_load.models.layers import ConvBN, collect_checkpoint_variables

HEAD_BATCH_NORM_EPSILON = 1e-5
ASPP_FILTERS = 256
DECODER_FILTERS = 256
LOW_LEVEL_PROJECTION_FILTERS = 48
CONCAT_PROJECTION_KEEP_PROB = 0.9
LOGITS_SCOPE = "logits/semantic"

# backbone name -> (module, class); imported lazily so each backbone's file is optional.
BACKBONES = {
    "xception_65": ("deeplab_load.models.xception", "Xception65Backbone"),
    "mobilenet_v2": ("deeplab_load.models.mobilenet_v2", "MobileNetV2Backbone"),
}
BACKBONE_SCOPES = {"xception_65": "xception_65", "mobilenet_v2": "MobilenetV2"}


@dataclasses.dataclass(frozen=True)
class DeepLabConfig:
    """What the original's flags ``model_variant``, ``output_stride``, ``atrous_rates``,
    ``decoder_output_stride`` and ``fine_tune_batch_norm`` describe."""
    backbone: str = "xception_65"
    num_classes: int = 21
    output_stride: int = 16
    atrous_rates: tuple = (6, 12, 18)
    decoder_output_stride: int | None = 4
    fine_tune_batch_norm: bool = False

    def __post_init__(self):
        if self.backbone not in BACKBONES:
            raise ValueError(f"DeepLabConfig.backbone must be one of {sorted(BACKBONES)}, "
                             f"got {self.backbone!r}")
        if not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise ValueError(f"DeepLabConfig.num_classes must be a positive int, "
                             f"got {self.num_classes!r}")
        if self.output_stride not in (8, 16, 32):
            raise ValueError(f"DeepLabConfig.output_stride must be 8, 16 or 32, "
                             f"got {self.output_stride!r}")
        rates = tuple(self.atrous_rates or ())
        if any(not isinstance(r, int) or r < 1 for r in rates):
            raise ValueError(f"DeepLabConfig.atrous_rates must be positive ints, got {rates!r}")
        object.__setattr__(self, "atrous_rates", rates)
        if self.decoder_output_stride not in (None, 4):
            raise ValueError(f"DeepLabConfig.decoder_output_stride must be 4 or None, "
                             f"got {self.decoder_output_stride!r}")
        if self.decoder_output_stride is not None and \
                self.decoder_output_stride >= self.output_stride:
            raise ValueError("DeepLabConfig.decoder_output_stride must be smaller than "
                             "output_stride")

    @property
    def logits_stride(self):
        return self.decoder_output_stride or self.output_stride


class Normalize(keras.layers.Layer):
    """Pixels [0, 255] -> ``(2/255) * x - 1`` in float32, as DeepLab's preprocessing."""

    def call(self, pixels):
        return (2.0 / 255.0) * tf.cast(pixels, tf.float32) - 1.0


class SplitSeparableConv(keras.layers.Layer):
    """``depthwise 3x3 (rate) -> BN -> ReLU -> pointwise 1x1 -> BN -> ReLU`` (scopes
    ``<scope>_depthwise`` / ``<scope>_pointwise``), TF 'SAME' padding, stride 1."""

    def __init__(self, scope, filters, rate=1, fine_tune_batch_norm=False, **kwargs):
        super().__init__(**kwargs)
        common = dict(batch_norm_epsilon=HEAD_BATCH_NORM_EPSILON, activation="relu",
                      fine_tune_batch_norm=fine_tune_batch_norm)
        self.depthwise = ConvBN(f"{scope}_depthwise", kernel_size=3, depthwise=True,
                                dilation_rate=rate, **common)
        self.pointwise = ConvBN(f"{scope}_pointwise", filters=filters, kernel_size=1, **common)

    def call(self, x, training=False):
        return self.pointwise(self.depthwise(x, training=training), training=training)

    def checkpoint_variables(self):
        return collect_checkpoint_variables([self.depthwise, self.pointwise])


def _conv_bn_relu(scope, filters, fine_tune_batch_norm):
    return ConvBN(scope, filters=filters, kernel_size=1, batch_norm_epsilon=HEAD_BATCH_NORM_EPSILON,
                  activation="relu", fine_tune_batch_norm=fine_tune_batch_norm)


class ImagePooling(keras.layers.Layer):
    """Image-level feature: spatial mean -> 1x1 conv + BN + ReLU -> broadcast to the input size.

    [B,h,w,C] -> [B,h,w,256]. The mean covers every position, padding included.
    """

    def __init__(self, filters=ASPP_FILTERS, fine_tune_batch_norm=False, **kwargs):
        super().__init__(**kwargs)
        self.conv = _conv_bn_relu("image_pooling", filters, fine_tune_batch_norm)

    def pooled(self, features, training=False):
        """The 1x1 branch output [B,1,1,256] before the broadcast (the mean taken in float32)."""
        mean = tf.reduce_mean(tf.cast(features, tf.float32), axis=[1, 2], keepdims=True)
        return self.conv(tf.cast(mean, features.dtype), training=training)

    def call(self, features, training=False):
        return resize_bilinear_align_corners(self.pooled(features, training),
                                             tf.shape(features)[1:3])

    def checkpoint_variables(self):
        return self.conv.checkpoint_variables()


class ASPP(keras.layers.Layer):
    """Atrous spatial pyramid pooling with concat projection.

    [B,h,w,C] -> concat[image_pooling, aspp0, aspp1..N] -> concat_projection (256) -> dropout
    (keep 0.9, training only) -> [B,h,w,256].
    """

    def __init__(self, atrous_rates=(), filters=ASPP_FILTERS, fine_tune_batch_norm=False,
                 **kwargs):
        super().__init__(**kwargs)
        self.image_pooling = ImagePooling(filters, fine_tune_batch_norm, name="image_pooling")
        self.aspp0 = _conv_bn_relu("aspp0", filters, fine_tune_batch_norm)
        self.atrous_branches = [
            SplitSeparableConv(f"aspp{i + 1}", filters, rate, fine_tune_batch_norm,
                               name=f"aspp{i + 1}")
            for i, rate in enumerate(atrous_rates)]
        self.concat_projection = _conv_bn_relu("concat_projection", filters, fine_tune_batch_norm)
        self.dropout = keras.layers.Dropout(1.0 - CONCAT_PROJECTION_KEEP_PROB)

    def branches(self, features, training=False):
        """The list of branch outputs in concat order."""
        outputs = [self.image_pooling(features, training=training),
                   self.aspp0(features, training=training)]
        outputs += [branch(features, training=training) for branch in self.atrous_branches]
        return outputs

    def call(self, features, training=False):
        net = tf.concat(self.branches(features, training), axis=3)
        net = self.concat_projection(net, training=training)
        return self.dropout(net, training=training)

    def checkpoint_variables(self):
        return collect_checkpoint_variables(
            [self.image_pooling, self.aspp0, *self.atrous_branches, self.concat_projection])


class Decoder(keras.layers.Layer):
    """DeepLabv3+ decoder at the low-level feature's stride (4).

    inputs [aspp [B,h,w,256], low_level [B,H4,W4,C]] -> [B,H4,W4,256]: low_level projected to 48
    channels, ASPP output resized (align_corners) to H4 x W4, concat (ASPP first), two separable
    convs.
    """

    def __init__(self, filters=DECODER_FILTERS, fine_tune_batch_norm=False, **kwargs):
        super().__init__(**kwargs)
        self.feature_projection = _conv_bn_relu(
            "decoder/feature_projection0", LOW_LEVEL_PROJECTION_FILTERS, fine_tune_batch_norm)
        self.convs = [SplitSeparableConv(f"decoder/decoder_conv{i}", filters,
                                         fine_tune_batch_norm=fine_tune_batch_norm,
                                         name=f"decoder_conv{i}")
                      for i in range(2)]

    def call(self, inputs, training=False):
        aspp, low_level = inputs
        projection = self.feature_projection(low_level, training=training)
        aspp = resize_bilinear_align_corners(aspp, tf.shape(low_level)[1:3])
        net = tf.concat([aspp, projection], axis=3)
        for conv in self.convs:
            net = conv(net, training=training)
        return net

    def checkpoint_variables(self):
        return collect_checkpoint_variables([self.feature_projection, *self.convs])


def make_backbone(config):
    """The backbone layer named by ``config.backbone`` (imported on demand)."""
    module_name, class_name = BACKBONES[config.backbone]
    backbone_class = getattr(importlib.import_module(module_name), class_name)
    return backbone_class(output_stride=config.output_stride,
                          fine_tune_batch_norm=config.fine_tune_batch_norm,
                          name=BACKBONE_SCOPES[config.backbone])


def build_deeplab(config, crop_size=None):
    """DeepLabv3(+) as a functional keras.Model (raw pixels -> raw logits, see module doc).

    crop_size: optional (H, W) fixing the input shape (training on a fixed crop); by default the
      model accepts any H x W.
    """
    if not isinstance(config, DeepLabConfig):
        raise TypeError(f"config must be a DeepLabConfig, got {type(config).__name__}")
    height, width = (None, None) if crop_size is None else (int(s) for s in crop_size)
    pixels = keras.Input((height, width, 3), name="pixels")
    normalized = Normalize(name="normalize")(pixels)
    endpoints = make_backbone(config)(normalized)
    net = ASPP(config.atrous_rates, fine_tune_batch_norm=config.fine_tune_batch_norm,
               name="aspp")(endpoints["features"])
    if config.decoder_output_stride is not None:
        net = Decoder(fine_tune_batch_norm=config.fine_tune_batch_norm,
                      name="decoder")([net, endpoints["low_level"]])
    # float32 under any policy: logits, their resize, softmax and the loss keep full precision
    logits = ConvBN(LOGITS_SCOPE, filters=config.num_classes, kernel_size=1,
                    use_batch_norm=False, name="logits", dtype="float32")(net)
    model = keras.Model(pixels, logits, name=f"deeplab_{config.backbone}")
    model.deeplab_config = config
    return model


def checkpoint_variables(model):
    """{TF1 variable name: Keras variable} for every weight of a model from build_deeplab."""
    return collect_checkpoint_variables(
        [layer for layer in model.layers if hasattr(layer, "checkpoint_variables")])


def backbone_layer(model):
    """The backbone layer of a model from build_deeplab."""
    return model.get_layer(BACKBONE_SCOPES[model.deeplab_config.backbone])
