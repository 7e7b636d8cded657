"""MobileNetV2 backbone: TF1 variable table, output-stride schedule, and layer-by-layer agreement
with the original graph on the golden seed-0 checkpoint."""
import json
import math

import numpy as np
import pytest
import tensorflow as tf

from deeplab_load.models.mobilenet_v2 import (MobileNetV2Backbone, layer_strides_and_rates,
                                              make_divisible)

MANIFEST = "manifest_mobilenetv2_voc_os16.json"
# oneDNN vs plain kernels already differ by up to 5.5e-4 on these tensors (golden README).
ATOL = 5e-3


def built_backbone(**kwargs):
    backbone = MobileNetV2Backbone(**kwargs)
    backbone.build((None, None, None, 3))
    return backbone


def normalized_input(golden, size="65x97"):
    pixels = np.load(golden / f"input_{size}.npy").astype(np.float32)
    return tf.constant((2.0 / 255.0) * pixels - 1.0)


def golden_backbone_arrays(golden, golden_index, config):
    """{debug key: array} of the backbone tensors, resolving arrays the _os8 file omits."""
    arrays = golden_index["configs"][config]["cases"]["debug_65x97"]["arrays"]
    stored = np.load(golden / f"{config}__debug_65x97.npz")
    result = {}
    for key, info in arrays.items():
        if not (key.startswith("layer_") or key == "backbone_features"):
            continue
        if info.get("omitted"):
            filename, other_key = info["identical_to"].split(":")
            result[key] = np.load(golden / filename)[other_key]
        else:
            result[key] = stored[key]
    return result


@pytest.fixture(scope="module")
def manifest_backbone_variables(golden):
    variables = json.loads((golden / MANIFEST).read_text())["variables"]
    return {v["name"]: v for v in variables if v["name"].startswith("MobilenetV2/")}


@pytest.fixture(scope="module")
def loaded_backbones(make_golden_checkpoint):
    """{output_stride: backbone with the golden seed-0 weights}."""
    reader = tf.train.load_checkpoint(make_golden_checkpoint(MANIFEST))
    backbones = {}
    for output_stride in (16, 8):
        backbone = built_backbone(output_stride=output_stride)
        for name, variable in backbone.checkpoint_variables().items():
            variable.assign(reader.get_tensor(name))
        backbones[output_stride] = backbone
    return backbones


@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_checkpoint_table_equals_manifest(manifest_backbone_variables, output_stride):
    table = built_backbone(output_stride=output_stride).checkpoint_variables()
    assert sorted(table) == sorted(manifest_backbone_variables)
    for name, variable in table.items():
        expected = manifest_backbone_variables[name]
        assert list(variable.shape) == expected["shape"], name
        assert variable.trainable == expected["trainable"], name


@pytest.mark.parametrize("output_stride", [16, 8])
def test_layers_match_original_graph(golden, golden_index, loaded_backbones, output_stride):
    config = f"mobilenetv2_voc_os{output_stride}"
    expected = golden_backbone_arrays(golden, golden_index, config)
    backbone = loaded_backbones[output_stride]
    x = normalized_input(golden)
    endpoints = backbone.endpoints(x)
    features = backbone(x)["features"].numpy()
    assert len(expected) == 10
    for key, want in expected.items():
        got = features if key == "backbone_features" else endpoints[key].numpy()
        assert got.shape == want.shape, key
        np.testing.assert_allclose(got, want, rtol=0, atol=ATOL, err_msg=f"{config}:{key}")


def test_low_level_is_depthwise_output_of_expanded_conv_2(golden, golden_index, loaded_backbones):
    """The golden files hold expanded_conv_2's output = project(low_level) + its input."""
    expected = golden_backbone_arrays(golden, golden_index, "mobilenetv2_voc_os16")
    backbone = loaded_backbones[16]
    x = normalized_input(golden)
    low_level = backbone(x)["low_level"]
    assert low_level.shape == (1, 17, 25, 144)
    assert float(tf.reduce_min(low_level)) >= 0.0 and float(tf.reduce_max(low_level)) <= 6.0
    block = next(b for b in backbone.blocks if b.scope == "MobilenetV2/expanded_conv_2")
    rebuilt = block.project(low_level) + expected["layer_3_expanded_conv_1"]
    np.testing.assert_allclose(rebuilt.numpy(), expected["layer_4_expanded_conv_2"],
                               rtol=0, atol=ATOL)


def test_frozen_batch_norm_ignores_training_flag(golden, loaded_backbones):
    backbone = loaded_backbones[16]
    x = normalized_input(golden)
    inference = backbone(x, training=False)["features"]
    training = backbone(x, training=True)["features"]
    np.testing.assert_array_equal(inference.numpy(), training.numpy())


@pytest.mark.parametrize("output_stride", [8, 16, 32])
@pytest.mark.parametrize("height,width", [(64, 96), (66, 98), (33, 47)])
def test_output_shapes_are_ceil(output_stride, height, width):
    backbone = MobileNetV2Backbone(output_stride=output_stride)
    x = tf.random.stateless_uniform((2, height, width, 3), seed=(1, 2), minval=-1, maxval=1)
    outputs = backbone(x)
    assert outputs["features"].shape == (2, math.ceil(height / output_stride),
                                         math.ceil(width / output_stride), 320)
    assert outputs["low_level"].shape == (2, math.ceil(height / 4), math.ceil(width / 4), 144)


def test_stride_two_pads_bottom_right_on_even_sizes():
    """TF 'SAME': for a 3x3 stride-2 conv on an even size the pad row is after the image."""
    backbone = built_backbone()
    kernel = np.zeros((3, 3, 3, 32), np.float32)
    kernel[0, 0, 0, :] = 1.0  # each output reads the top-left tap of its window
    backbone.stem.conv.kernel.assign(kernel)
    x = np.arange(4 * 4, dtype=np.float32).reshape(1, 4, 4, 1) / 16.0
    x = tf.constant(np.repeat(x, 3, axis=-1))
    got = backbone.stem.conv(x).numpy()[0, :, :, 0]
    np.testing.assert_array_equal(got, x.numpy()[0, ::2, ::2, 0])


def test_dilation_schedule_per_output_stride():
    def rates_and_strides(output_stride):
        backbone = MobileNetV2Backbone(output_stride=output_stride)
        return {b.scope.rsplit("/", 1)[-1]: (b.depthwise.conv.strides[0],
                                             b.depthwise.conv.dilation_rate[0])
                for b in backbone.blocks}

    os16 = rates_and_strides(16)
    assert os16["expanded_conv_12"] == (1, 1)
    assert os16["expanded_conv_13"] == (1, 1)
    assert [os16[f"expanded_conv_{j}"] for j in (14, 15, 16)] == [(1, 2)] * 3
    os8 = rates_and_strides(8)
    assert os8["expanded_conv_6"] == (1, 1)
    assert [os8[f"expanded_conv_{j}"] for j in range(7, 14)] == [(1, 2)] * 7
    assert [os8[f"expanded_conv_{j}"] for j in (14, 15, 16)] == [(1, 4)] * 3
    os32 = rates_and_strides(32)
    assert [os32[f"expanded_conv_{j}"][0] for j in (1, 3, 6, 13)] == [2, 2, 2, 2]
    assert all(rate == 1 for _, rate in os32.values())


def test_residual_only_for_stride_one_same_channels():
    backbone = MobileNetV2Backbone(output_stride=16)
    with_residual = [b.scope.rsplit("/", 1)[-1] for b in backbone.blocks if b.residual]
    assert with_residual == [f"expanded_conv_{j}" for j in (2, 4, 5, 7, 8, 9, 11, 12, 14, 15)]
    assert backbone.blocks[0].expand is None
    assert all(b.expand is not None for b in backbone.blocks[1:])


def test_layer_schedule_rejects_unreachable_output_stride():
    with pytest.raises(ValueError, match="output_stride 64"):
        layer_strides_and_rates([2, 2, 2, 2, 2], 64)


@pytest.mark.parametrize("bad", [dict(output_stride=4), dict(output_stride=None),
                                 dict(depth_multiplier=0), dict(depth_multiplier=-0.5)])
def test_bad_arguments_raise(bad):
    with pytest.raises(ValueError, match="MobileNetV2"):
        MobileNetV2Backbone(**bad)


def test_make_divisible():
    assert make_divisible(6 * 16, 8) == 96
    assert make_divisible(6 * 12, 8) == 72
    assert make_divisible(3, 8) == 8
    assert make_divisible(20, 16) == 32  # 16 would lose more than 10%
    assert make_divisible(15.5, 1, 1) == 16


def test_half_depth_multiplier_channels():
    """DeepLab's _mobilenet_v2 at depth multiplier 0.5: channels rounded to integers (min 1),
    expansions to multiples of 8."""
    backbone = built_backbone(depth_multiplier=0.5)
    table = backbone.checkpoint_variables()
    assert table["MobilenetV2/Conv/weights"].shape == (3, 3, 3, 16)
    assert table["MobilenetV2/expanded_conv/project/weights"].shape == (1, 1, 16, 8)
    assert table["MobilenetV2/expanded_conv_1/expand/weights"].shape == (1, 1, 8, 48)
    assert table["MobilenetV2/expanded_conv_2/depthwise/depthwise_weights"].shape == (3, 3, 72, 1)
    assert table["MobilenetV2/expanded_conv_16/project/weights"].shape == (1, 1, 480, 160)
    outputs = backbone(tf.zeros((1, 65, 97, 3)))
    assert outputs["features"].shape == (1, 5, 7, 160)
    assert outputs["low_level"].shape == (1, 17, 25, 72)
