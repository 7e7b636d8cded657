"""Xception-65 structure: stride/rate schedule, padding, shapes and TF1 names (no golden data)."""
import numpy as np
import pytest
import tensorflow as tf

from deeplab_load.models import xception
from deeplab_load.models.xception import XCEPTION_65_BLOCKS, Xception65Backbone


def schedule_by_scope(output_stride):
    scopes = [f"{b.scope}/unit_{u + 1}" for b in XCEPTION_65_BLOCKS for u in range(b.num_units)]
    return dict(zip(scopes, xception.unit_strides_and_rates(XCEPTION_65_BLOCKS, output_stride)))


def test_output_stride_16_dilates_the_exit_flow():
    schedule = schedule_by_scope(16)
    assert [schedule[f"entry_flow/block{i}/unit_1"] for i in (1, 2, 3)] == [(2, 1)] * 3
    assert schedule["middle_flow/block1/unit_16"] == (1, 1)
    assert schedule["exit_flow/block1/unit_1"] == (1, 1)
    assert schedule["exit_flow/block2/unit_1"] == (1, 2)


def test_output_stride_8_dilates_from_entry_block3():
    schedule = schedule_by_scope(8)
    assert schedule["entry_flow/block2/unit_1"] == (2, 1)
    assert schedule["entry_flow/block3/unit_1"] == (1, 1)
    assert all(schedule[f"middle_flow/block1/unit_{u}"] == (1, 2) for u in range(1, 17))
    assert schedule["exit_flow/block1/unit_1"] == (1, 2)
    assert schedule["exit_flow/block2/unit_1"] == (1, 4)


def test_output_stride_32_has_no_dilation():
    assert all(rate == 1 for _, rate in schedule_by_scope(32).values())
    assert schedule_by_scope(32)["exit_flow/block1/unit_1"] == (2, 1)
    with pytest.raises(ValueError, match="output_stride"):
        Xception65Backbone(output_stride=4)


@pytest.fixture(scope="module")
def backbone():
    layer = Xception65Backbone(output_stride=16)
    layer(tf.zeros([1, 33, 33, 3]))
    rng = np.random.RandomState(0)
    for name, variable in layer.checkpoint_variables().items():
        if name.endswith("depthwise_weights"):
            fan_in = variable.shape[0] * variable.shape[1]
        elif name.endswith("weights"):
            fan_in = int(np.prod(variable.shape[:-1]))
        else:
            continue
        std = 0.5 * np.sqrt(2.0 / fan_in)
        variable.assign(rng.normal(0, std, variable.shape).astype(np.float32))
    return layer


@pytest.mark.parametrize("height,width", [(65, 97), (64, 96), (33, 40)])
def test_feature_shapes_are_ceil_of_the_strides(backbone, height, width):
    x = tf.random.stateless_uniform([1, height, width, 3], seed=(1, 2), minval=-1, maxval=1)
    out = backbone(x)
    assert out["features"].shape == (1, -(-height // 16), -(-width // 16), 2048)
    assert out["low_level"].shape == (1, -(-height // 4), -(-width // 4), 256)
    assert float(tf.reduce_min(out["features"])) >= 0.0  # ReLU-ed
    assert float(tf.reduce_min(out["low_level"])) < 0.0  # BN output, no ReLU


def test_strided_convs_pad_symmetrically_like_tf1(backbone):
    """conv1_1 (3x3, stride 2) on an even size pads 1 before and 1 after, then VALID."""
    x = tf.random.stateless_uniform([1, 8, 10, 3], seed=(3, 4), minval=-1, maxval=1)
    kernel = backbone.conv1_1.conv.kernel
    expected = tf.nn.relu(tf.nn.conv2d(tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]]), kernel, 2,
                                       "VALID") / np.sqrt(1.0 + xception.BATCH_NORM_EPSILON))
    ours = backbone.conv1_1(x)
    np.testing.assert_allclose(ours.numpy(), expected.numpy(), atol=1e-5)
    keras_same = tf.nn.relu(tf.nn.conv2d(x, kernel, 2, "SAME"))
    assert np.abs(keras_same.numpy() - ours.numpy()).max() > 1e-3


def test_checkpoint_names_and_dilations(backbone):
    names = backbone.checkpoint_variables()
    assert all(name.startswith("xception_65/") for name in names)
    units = dict(zip(backbone.unit_scopes, backbone.units))
    assert len(units) == 21
    exit2 = units["exit_flow/block2/unit_1"]
    assert exit2.shortcut is None and exit2.activation_in_separable_conv
    assert all(dw.conv.dilation_rate == (2, 2) for dw, _ in exit2.separable_convs)
    assert "xception_65/exit_flow/block1/unit_1/xception_module/shortcut/weights" in names
    assert not any("middle_flow" in n and "shortcut" in n for n in names)
    assert names["xception_65/entry_flow/block3/unit_1/xception_module/"
                 "separable_conv3_depthwise/depthwise_weights"].shape == (3, 3, 728, 1)
    # 2 root convs + 21 units x 3 separable convs x 2 + 4 shortcuts; 5 variables per BN conv.
    assert len(names) == 5 * (2 + 21 * 6 + 4)


def test_deeplab_training_mode_keeps_batch_norm_frozen_and_drops_out():
    """fine_tune_batch_norm=False: moving statistics stay; dropout (keep 0.9) only in training."""
    from deeplab_load.models.deeplab import DeepLabConfig, build_deeplab, checkpoint_variables

    config = DeepLabConfig("xception_65", 5, 16, (6, 12, 18), 4)
    model = build_deeplab(config, crop_size=(33, 49))
    assert model.input_shape == (None, 33, 49, 3)
    assert model.output_shape == (None, 9, 13, 5)
    pixels = tf.random.stateless_uniform([1, 33, 49, 3], seed=(5, 6), maxval=255)
    table = checkpoint_variables(model)
    moving = table["aspp0/BatchNorm/moving_mean"].numpy().copy()
    tf.random.set_seed(0)
    train_a, train_b = model(pixels, training=True), model(pixels, training=True)
    np.testing.assert_array_equal(table["aspp0/BatchNorm/moving_mean"].numpy(), moving)
    assert np.abs(train_a.numpy() - train_b.numpy()).max() > 0
    np.testing.assert_array_equal(model(pixels).numpy(), model(pixels, training=False).numpy())
    assert model.get_layer("aspp").dropout.rate == pytest.approx(0.1)


def test_grappler_remapper_does_not_fail_on_the_xception_graph(tmp_path):
    """A unit input feeding both a Relu and a shortcut made grappler's remapper fail and drop
    every conv fusion (logged by TF's C++ runtime, hence a subprocess with its log on)."""
    import os
    import subprocess
    import sys
    script = tmp_path / "forward.py"
    script.write_text(
        "import tensorflow as tf\n"
        "from deeplab_load.models.deeplab import DeepLabConfig, build_deeplab\n"
        "m = build_deeplab(DeepLabConfig(backbone='xception_65', num_classes=3,"
        " output_stride=16))\n"
        "x = tf.zeros([1, 65, 65, 3])\n"
        "print(tf.function(lambda x: m(x, training=False))(x).shape)\n")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="0", TF_CPP_VMODULE="meta_optimizer=1",
               PYTHONPATH=repo)
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "remapper: Graph size after" in done.stderr     # the remapper ran and was logged
    failures = [line for line in done.stderr.splitlines() if "remapper failed" in line]
    assert not failures, failures[0]
