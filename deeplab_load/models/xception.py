"""DeepLab's modified aligned Xception-65 as a Keras layer with TF1 variable names.

The network is a table of blocks (entry / middle / exit flow). Each unit is an ``xception_module``:
three separable convs (depthwise 3x3 -> BN -> pointwise 1x1 -> BN) plus a skip connection. The
output stride is reached by replacing the stride of later units with dilation, exactly like the
original ``resnet_utils.stack_blocks_dense``.
"""
import dataclasses

import keras
import tensorflow as tf

from deeplab_load.models.layers import ConvBN, collect_checkpoint_variables, keras_name

BATCH_NORM_EPSILON = 1e-3


@dataclasses.dataclass(frozen=True)
class XceptionBlock:
    """One block of identical units.

    scope: TF1 scope below the backbone, e.g. ``"entry_flow/block1"``.
    depths: output channels of separable_conv1..3.
    skip: ``"conv"`` (1x1 conv + BN shortcut), ``"sum"`` (identity) or ``"none"``.
    stride: stride of each unit (on separable_conv3 and the shortcut).
    activation_in_separable_conv: ReLU after each BN inside the separable convs instead of a ReLU
      before each separable conv (only exit_flow/block2).
    """
    scope: str
    depths: tuple
    skip: str
    stride: int
    num_units: int = 1
    activation_in_separable_conv: bool = False


XCEPTION_65_BLOCKS = (
    XceptionBlock("entry_flow/block1", (128, 128, 128), "conv", 2),
    XceptionBlock("entry_flow/block2", (256, 256, 256), "conv", 2),
    XceptionBlock("entry_flow/block3", (728, 728, 728), "conv", 2),
    XceptionBlock("middle_flow/block1", (728, 728, 728), "sum", 1, num_units=16),
    XceptionBlock("exit_flow/block1", (728, 1024, 1024), "conv", 2),
    XceptionBlock("exit_flow/block2", (1536, 1536, 2048), "none", 1,
                  activation_in_separable_conv=True),
)

# The decoder's low-level feature: BN output (no ReLU) of this separable conv, stride 4, 256 ch.
LOW_LEVEL_UNIT = "entry_flow/block2/unit_1"
LOW_LEVEL_SEPARABLE_CONV = 1  # index of separable_conv2


def unit_strides_and_rates(blocks, output_stride):
    """[(stride, rate)] per unit, as the original ``stack_blocks_dense`` assigns them.

    The root convs contribute stride 2. Once the accumulated stride equals ``output_stride``, every
    further unit gets stride 1 and a rate multiplied by the strides it skipped (the unit that
    would have been strided keeps the old rate; the rate changes after it). ``output_stride=None``
    means no dilation (stride 32).
    """
    if output_stride is not None and (output_stride % 2 or output_stride < 2):
        raise ValueError(f"output_stride must be an even number, got {output_stride}")
    current_stride, rate = 2, 1
    schedule = []
    for block in blocks:
        for _ in range(block.num_units):
            if output_stride is not None and current_stride == output_stride:
                schedule.append((1, rate))
                rate *= block.stride
            else:
                schedule.append((block.stride, 1))
                current_stride *= block.stride
    if output_stride is not None and current_stride < output_stride:
        raise ValueError(f"output_stride {output_stride} is larger than the network's "
                         f"{current_stride}")
    return schedule


def _unit_input_relu(x):
    """relu(x) of a unit's input, written as max(x, 0): the same values, but grappler's remapper
    fails on the graph when the previous unit's residual Add feeds both a Relu and this unit's
    shortcut ("Mutation::Apply error ... missing node .../add"), and a failed remapper drops all
    of its conv + bias + activation fusions (242 on Xception-65). With them, the bfloat16
    forward pass at 513 takes 184 instead of 211 ms (float32 316 vs 325 ms, outputs and
    gradients unchanged). The gradient differs from relu's only at exactly 0 (it passes)."""
    return tf.maximum(x, tf.zeros([], x.dtype))


class XceptionModule(keras.layers.Layer):
    """One Xception unit. ``call`` returns (output, [separable conv outputs]), shapes NHWC."""

    def __init__(self, scope, depths, skip, stride, rate, activation_in_separable_conv,
                 fine_tune_batch_norm=False, **kwargs):
        kwargs.setdefault("name", keras_name(scope))
        super().__init__(**kwargs)
        if skip not in ("conv", "sum", "none"):
            raise ValueError(f"skip must be 'conv', 'sum' or 'none', got {skip!r}")
        self.scope = scope
        self.skip = skip
        self.activation_in_separable_conv = activation_in_separable_conv
        inner_activation = "relu" if activation_in_separable_conv else None
        self.separable_convs = []
        for i, depth in enumerate(depths):
            unit_stride = stride if i == 2 else 1
            prefix = f"{scope}/separable_conv{i + 1}"
            common = dict(strides=1, batch_norm_epsilon=BATCH_NORM_EPSILON,
                          activation=inner_activation, fine_tune_batch_norm=fine_tune_batch_norm)
            depthwise = ConvBN(f"{prefix}_depthwise", kernel_size=3, depthwise=True,
                               padding="explicit", dilation_rate=rate,
                               **dict(common, strides=unit_stride))
            pointwise = ConvBN(f"{prefix}_pointwise", filters=depth, kernel_size=1, **common)
            self.separable_convs.append((depthwise, pointwise))
        self.shortcut = None
        if skip == "conv":
            self.shortcut = ConvBN(f"{scope}/shortcut", filters=depths[-1], kernel_size=1,
                                   strides=stride, padding="same",
                                   batch_norm_epsilon=BATCH_NORM_EPSILON,
                                   fine_tune_batch_norm=fine_tune_batch_norm)

    def call(self, inputs, training=False):
        residual = inputs
        separable_outputs = []
        for depthwise, pointwise in self.separable_convs:
            if not self.activation_in_separable_conv:
                residual = _unit_input_relu(residual) if residual is inputs else tf.nn.relu(residual)
            residual = pointwise(depthwise(residual, training=training), training=training)
            separable_outputs.append(residual)
        if self.skip == "conv":
            output = residual + self.shortcut(inputs, training=training)
        elif self.skip == "sum":
            output = residual + inputs
        else:
            output = residual
        return output, separable_outputs

    def checkpoint_variables(self):
        convs = [conv for pair in self.separable_convs for conv in pair]
        if self.shortcut is not None:
            convs.append(self.shortcut)
        return collect_checkpoint_variables(convs)


class Xception65Backbone(keras.layers.Layer):
    """Modified aligned Xception-65 (DeepLab), scope ``xception_65``.

    call(x_normalized [B,H,W,3] in [-1, 1], training) returns
      {"features": [B, ceil(H/os), ceil(W/os), 2048] (ReLU-ed),
       "low_level": [B, ceil(H/4), ceil(W/4), 256] (BN output, no ReLU)}.
    """

    def __init__(self, output_stride=16, fine_tune_batch_norm=False, name="xception_65",
                 blocks=XCEPTION_65_BLOCKS, **kwargs):
        super().__init__(name=name, **kwargs)
        if output_stride not in (8, 16, 32):
            raise ValueError(f"Xception-65 output_stride must be 8, 16 or 32, got {output_stride}")
        self.output_stride = output_stride
        self.fine_tune_batch_norm = fine_tune_batch_norm
        bn = dict(batch_norm_epsilon=BATCH_NORM_EPSILON, activation="relu",
                  fine_tune_batch_norm=fine_tune_batch_norm)
        self.conv1_1 = ConvBN(f"{name}/entry_flow/conv1_1", filters=32, kernel_size=3, strides=2,
                              padding="explicit", **bn)
        self.conv1_2 = ConvBN(f"{name}/entry_flow/conv1_2", filters=64, kernel_size=3, **bn)
        schedule = iter(unit_strides_and_rates(blocks, output_stride))
        self.units = []
        self.unit_scopes = []
        for block in blocks:
            for u in range(block.num_units):
                stride, rate = next(schedule)
                self.unit_scopes.append(f"{block.scope}/unit_{u + 1}")
                self.units.append(XceptionModule(
                    f"{name}/{self.unit_scopes[-1]}/xception_module", block.depths, block.skip,
                    stride, rate, block.activation_in_separable_conv,
                    fine_tune_batch_norm=fine_tune_batch_norm))

    def endpoints(self, inputs, training=False):
        """Every intermediate output, keyed by scope below the backbone.

        Keys: ``entry_flow/conv1_1``, ``entry_flow/conv1_2`` (after ReLU), ``<block>/unit_<n>``
        (unit outputs), ``low_level`` and ``features`` (see the class docstring).
        """
        net = self.conv1_1(inputs, training=training)
        outputs = {"entry_flow/conv1_1": net}
        net = self.conv1_2(net, training=training)
        outputs["entry_flow/conv1_2"] = net
        for scope, unit in zip(self.unit_scopes, self.units):
            net, separable_outputs = unit(net, training=training)
            outputs[scope] = net
            if scope == LOW_LEVEL_UNIT:
                outputs["low_level"] = separable_outputs[LOW_LEVEL_SEPARABLE_CONV]
        outputs["features"] = net
        return outputs

    def call(self, inputs, training=False):
        outputs = self.endpoints(inputs, training=training)
        return {"features": outputs["features"], "low_level": outputs["low_level"]}

    def checkpoint_variables(self):
        """{TF1 variable name: Keras variable} of the whole backbone."""
        return collect_checkpoint_variables([self.conv1_1, self.conv1_2] + self.units)

    def get_config(self):
        config = super().get_config()
        config.update(output_stride=self.output_stride,
                      fine_tune_batch_norm=self.fine_tune_batch_norm)
        return config
