"""MobileNetV2 as DeepLab's model zoo uses it, as a Keras layer with TF1 variable names.

The architecture is data: a stem conv followed by the table of inverted-residual stages
(expansion t, channels c, repeats n, stride s) of the MobileNetV2 paper. The backbone stops after
``expanded_conv_16`` (slim endpoint ``layer_18``), as DeepLab's ``feature_extractor`` does, so there
is no ``Conv_1``. Every conv uses TF 'SAME' padding, BatchNorm (epsilon 1e-3) and ReLU6, except the
linear ``project`` convs. The output stride is reached as in slim's ``mobilenet_base``: once the
accumulated stride equals the target, later strides become 1 and only the depthwise 3x3 convs are
dilated.

Layer numbering follows slim's endpoints: ``layer_1`` is ``Conv``, ``layer_{j+2}`` is
``expanded_conv_j`` (``expanded_conv`` for j = 0).
"""
import dataclasses

import keras

from deeplab_load.models.layers import ConvBN, collect_checkpoint_variables, keras_name

BATCH_NORM_EPSILON = 1e-3
STEM_CHANNELS = 32
# The decoder's stride-4 low-level feature ('layer_4/depthwise_output' in the original): the
# depthwise output (after BN and ReLU6) of this block.
LOW_LEVEL_BLOCK = "expanded_conv_2"


@dataclasses.dataclass(frozen=True)
class InvertedResidualStage:
    """``num_blocks`` inverted residuals; the first has ``stride``, the others stride 1.

    expansion: inner channels = make_divisible(expansion * input channels, 8); expansion 1 means
      no ``expand`` conv.
    channels: output channels at depth multiplier 1.0.
    """
    expansion: int
    channels: int
    num_blocks: int
    stride: int


MOBILENET_V2_STAGES = (
    InvertedResidualStage(1, 16, 1, 1),
    InvertedResidualStage(6, 24, 2, 2),
    InvertedResidualStage(6, 32, 3, 2),
    InvertedResidualStage(6, 64, 4, 2),
    InvertedResidualStage(6, 96, 3, 1),
    InvertedResidualStage(6, 160, 3, 2),
    InvertedResidualStage(6, 320, 1, 1),
)


def make_divisible(value, divisor, min_value=None):
    """Rounds ``value`` to the nearest multiple of ``divisor`` (at least ``min_value``, default
    ``divisor``), going up one step if rounding lost more than 10% (slim's ``_make_divisible``)."""
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return int(rounded)


def block_scopes(stages=MOBILENET_V2_STAGES):
    """TF1 scope names of the inverted residuals: expanded_conv, expanded_conv_1, ..."""
    count = sum(stage.num_blocks for stage in stages)
    return ["expanded_conv"] + [f"expanded_conv_{j}" for j in range(1, count)]


def layer_strides_and_rates(layer_strides, output_stride):
    """[(stride, rate)] per layer (stem included), as slim's ``mobilenet_base`` assigns them.

    Once the accumulated stride equals ``output_stride``, each further layer gets stride 1; the
    layer whose stride is removed keeps the current rate and the rate is multiplied by that
    stride for the layers after it.
    """
    current_stride, rate = 1, 1
    schedule = []
    for stride in layer_strides:
        if current_stride == output_stride:
            schedule.append((1, rate))
            rate *= stride
        else:
            schedule.append((stride, 1))
            current_stride *= stride
    if current_stride != output_stride:
        raise ValueError(f"output_stride {output_stride} is larger than the network's "
                         f"{current_stride}")
    return schedule


class InvertedResidual(keras.layers.Layer):
    """expand 1x1 (ReLU6, only if it widens) -> depthwise 3x3 (ReLU6) -> project 1x1 (linear),
    plus the input when stride is 1 and the channels match.

    ``call`` returns (output [B,h,w,out_channels], depthwise output [B,h,w,inner_channels]).
    """

    def __init__(self, scope, in_channels, inner_channels, out_channels, stride=1, rate=1,
                 fine_tune_batch_norm=False, **kwargs):
        kwargs.setdefault("name", keras_name(scope))
        super().__init__(**kwargs)
        self.scope = scope
        self.in_channels = in_channels
        self.residual = stride == 1 and in_channels == out_channels
        common = dict(batch_norm_epsilon=BATCH_NORM_EPSILON, padding="same",
                      fine_tune_batch_norm=fine_tune_batch_norm)
        self.expand = (ConvBN(f"{scope}/expand", filters=inner_channels, kernel_size=1,
                              activation="relu6", **common)
                       if inner_channels > in_channels else None)
        self.depthwise = ConvBN(f"{scope}/depthwise", kernel_size=3, strides=stride,
                                dilation_rate=rate, depthwise=True, activation="relu6", **common)
        self.project = ConvBN(f"{scope}/project", filters=out_channels, kernel_size=1, **common)

    def build(self, input_shape):
        if input_shape[-1] != self.in_channels:
            raise ValueError(f"{self.scope} expects {self.in_channels} input channels, "
                             f"got shape {input_shape}")
        shape = tuple(input_shape)
        if self.expand is not None:
            self.expand.build(shape)
            shape = self.expand.conv.compute_output_shape(shape)
        self.depthwise.build(shape)
        self.project.build(self.depthwise.conv.compute_output_shape(shape))

    def call(self, inputs, training=False):
        net = inputs
        if self.expand is not None:
            net = self.expand(net, training=training)
        depthwise_output = self.depthwise(net, training=training)
        net = self.project(depthwise_output, training=training)
        if self.residual:
            net = net + inputs
        return net, depthwise_output

    def convs(self):
        return [conv for conv in (self.expand, self.depthwise, self.project) if conv is not None]

    def checkpoint_variables(self):
        return collect_checkpoint_variables(self.convs())


class MobileNetV2Backbone(keras.layers.Layer):
    """MobileNetV2 up to ``expanded_conv_16`` (DeepLab's ``mobilenet_v2``), scope ``MobilenetV2``.

    call(x_normalized [B,H,W,3] in [-1, 1], training) returns
      {"features": [B, ceil(H/os), ceil(W/os), 320] (linear output of expanded_conv_16),
       "low_level": [B, ceil(H/4), ceil(W/4), 144] (depthwise output of expanded_conv_2, ReLU6-ed)}
    (channels at depth multiplier 1.0).

    Channel counts follow DeepLab's ``_mobilenet_v2``: at depth multiplier 1.0 channels are
    rounded to multiples of 8 (at least 8), otherwise to integers (at least 1); expansions are
    always rounded to multiples of 8.
    """

    def __init__(self, output_stride=16, depth_multiplier=1.0, fine_tune_batch_norm=False,
                 name="MobilenetV2", stages=MOBILENET_V2_STAGES, **kwargs):
        super().__init__(name=name, **kwargs)
        if output_stride not in (8, 16, 32):
            raise ValueError(f"MobileNetV2 output_stride must be 8, 16 or 32, got {output_stride!r}")
        if not isinstance(depth_multiplier, (int, float)) or depth_multiplier <= 0:
            raise ValueError(f"MobileNetV2 depth_multiplier must be a positive number, "
                             f"got {depth_multiplier!r}")
        self.output_stride = output_stride
        self.depth_multiplier = float(depth_multiplier)
        self.fine_tune_batch_norm = fine_tune_batch_norm
        round_to = 8 if self.depth_multiplier == 1.0 else 1

        def scaled(channels):
            return make_divisible(channels * self.depth_multiplier, round_to, round_to)

        layer_strides = [2] + [stage.stride if i == 0 else 1
                               for stage in stages for i in range(stage.num_blocks)]
        schedule = layer_strides_and_rates(layer_strides, output_stride)
        stem_stride, _ = schedule[0]
        bn = dict(batch_norm_epsilon=BATCH_NORM_EPSILON, padding="same",
                  fine_tune_batch_norm=fine_tune_batch_norm)
        self.stem = ConvBN(f"{name}/Conv", filters=scaled(STEM_CHANNELS), kernel_size=3,
                           strides=stem_stride, activation="relu6", **bn)
        self.blocks = []
        in_channels = scaled(STEM_CHANNELS)
        scopes = iter(block_scopes(stages))
        strides_and_rates = iter(schedule[1:])
        for stage in stages:
            for _ in range(stage.num_blocks):
                stride, rate = next(strides_and_rates)
                out_channels = scaled(stage.channels)
                inner_channels = make_divisible(in_channels * stage.expansion,
                                                8 if stage.expansion > 1 else 1)
                self.blocks.append(InvertedResidual(
                    f"{name}/{next(scopes)}", in_channels, inner_channels, out_channels,
                    stride=stride, rate=rate, fine_tune_batch_norm=fine_tune_batch_norm))
                in_channels = out_channels
        self.out_channels = in_channels

    def build(self, input_shape):
        shape = tuple(input_shape)
        self.stem.build(shape)
        shape = self.stem.conv.compute_output_shape(shape)
        for block in self.blocks:
            block.build(shape)
            shape = shape[:-1] + (block.project.conv.filters,)

    def endpoints(self, inputs, training=False):
        """Every layer's output, keyed like the golden debug files: ``layer_1_Conv``,
        ``layer_{j+2}_expanded_conv_j``, plus ``low_level`` (see the class docstring)."""
        net = self.stem(inputs, training=training)
        outputs = {"layer_1_Conv": net}
        for k, block in enumerate(self.blocks, start=2):
            net, depthwise_output = block(net, training=training)
            block_name = block.scope.rsplit("/", 1)[-1]
            outputs[f"layer_{k}_{block_name}"] = net
            if block_name == LOW_LEVEL_BLOCK:
                outputs["low_level"] = depthwise_output
        return outputs

    def call(self, inputs, training=False):
        outputs = self.endpoints(inputs, training=training)
        last = f"layer_{len(self.blocks) + 1}_{self.blocks[-1].scope.rsplit('/', 1)[-1]}"
        return {"features": outputs[last], "low_level": outputs["low_level"]}

    def checkpoint_variables(self):
        """{TF1 variable name: Keras variable} of the whole backbone."""
        return collect_checkpoint_variables([self.stem] + self.blocks)

    def get_config(self):
        config = super().get_config()
        config.update(output_stride=self.output_stride, depth_multiplier=self.depth_multiplier,
                      fine_tune_batch_norm=self.fine_tune_batch_norm)
        return config
