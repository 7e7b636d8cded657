"""Our DeepLab on the golden synthetic checkpoints reproduces the original implementation's outputs
(see the golden folder's README: raw logits atol 1e-3 Xception-65 / 1e-2 MobileNetV2, label maps
with at most 0.1% differing pixels)."""
import json

import numpy as np
import pytest
import tensorflow as tf

from deeplab_load import inference
from deeplab_load.checkpoints import tf1
from deeplab_load.models.deeplab import DeepLabConfig, build_deeplab, checkpoint_variables

LOGITS_ATOL = {"xception_65": 1e-3, "mobilenet_v2": 1e-2}
INTERMEDIATE_ATOL = {"xception_65": 1e-3, "mobilenet_v2": 5e-3}
MAX_LABEL_DIFF_FRACTION = 1e-3
CONFIGS = ["xception65_voc_os16", "xception65_voc_os8", "mobilenetv2_voc_os16",
           "mobilenetv2_voc_os8"]
DIRECT_CASES = ["513x513", "225x321", "129x193", "224x320"]
SLOW = {("xception65_voc_os8", "513x513"), ("xception65_voc_os8", "export_300x400")}


def config_from_flags(flags):
    """DeepLabConfig from the original's flags as recorded in index.json."""
    decoder = flags["decoder_output_stride"]
    return DeepLabConfig(backbone=flags["model_variant"], num_classes=flags["num_classes"],
                         output_stride=flags["output_stride"],
                         atrous_rates=tuple(flags["atrous_rates"] or ()),
                         decoder_output_stride=decoder[0] if decoder else None)


@pytest.fixture(scope="module")
def golden_model(golden, golden_index, make_golden_checkpoint):
    """get(config_name) -> (model, DeepLabConfig), built and loaded once per module."""
    models, checkpoints = {}, {}

    def get(config_name):
        if config_name not in models:
            entry = golden_index["configs"][config_name]
            manifest = json.loads((golden / entry["manifest"]).read_text())
            variables = json.dumps(manifest["variables"])
            if variables not in checkpoints:  # the OS16 and OS8 manifests are identical
                checkpoints[variables] = make_golden_checkpoint(entry["manifest"])
            config = config_from_flags(entry["flags"])
            model = build_deeplab(config)
            tf1.load_checkpoint(model, checkpoints[variables])
            models[config_name] = (model, config)
        return models[config_name]

    return get


def load_array(golden, golden_index, config_name, case, key):
    arrays = golden_index["configs"][config_name]["cases"][case]["arrays"]
    return np.load(golden / arrays[key]["file"])


def load_input(golden, golden_index, config_name, case):
    return np.load(golden / golden_index["configs"][config_name]["cases"][case]["input"])


def label_diff_fraction(labels, expected):
    assert labels.shape == expected.shape
    return float(np.mean(labels != expected))


def params(cases):
    return [pytest.param(c, k, marks=pytest.mark.slow) if (c, k) in SLOW else (c, k)
            for c in CONFIGS for k in cases]


@pytest.mark.parametrize("config_name", CONFIGS)
def test_variables_match_manifest(golden, golden_index, golden_model, config_name):
    model, _ = golden_model(config_name)
    entry = golden_index["configs"][config_name]
    manifest = json.loads((golden / entry["manifest"]).read_text())["variables"]
    table = checkpoint_variables(model)
    assert {v["name"]: tuple(v["shape"]) for v in manifest} == \
        {name: tuple(var.shape) for name, var in table.items()}
    assert model.count_params() == entry["num_parameters"]
    trainable = {name for name, var in table.items() if var.trainable}
    assert trainable == {v["name"] for v in manifest if v["trainable"]}


@pytest.mark.parametrize("config_name,case", params(DIRECT_CASES))
def test_raw_logits_and_labels(golden, golden_index, golden_model, config_name, case):
    model, config = golden_model(config_name)
    image = load_input(golden, golden_index, config_name, case)
    logits = model(image.astype(np.float32), training=False).numpy()
    expected = load_array(golden, golden_index, config_name, case, "raw_logits")
    assert logits.shape == expected.shape
    np.testing.assert_allclose(logits, expected, rtol=0, atol=LOGITS_ATOL[config.backbone])

    labels = inference.predict_labels(model, image).numpy()
    expected_labels = load_array(golden, golden_index, config_name, case, "labels")
    assert label_diff_fraction(labels, expected_labels) <= MAX_LABEL_DIFF_FRACTION


@pytest.mark.parametrize("config_name", CONFIGS)
def test_upsampled_logits(golden, golden_index, golden_model, config_name):
    model, config = golden_model(config_name)
    image = load_input(golden, golden_index, config_name, "129x193")
    logits = inference.predict_logits(model, image).numpy()
    expected = load_array(golden, golden_index, config_name, "129x193", "upsampled_logits")
    assert logits.shape == expected.shape
    np.testing.assert_allclose(logits, expected, rtol=0, atol=LOGITS_ATOL[config.backbone])


@pytest.mark.parametrize("config_name,case", params(["export_300x400"]))
def test_export_labels_end_to_end(golden, golden_index, golden_model, config_name, case):
    """uint8 300x400 image -> pad to 513x513 with 127.5 -> labels cropped back."""
    model, _ = golden_model(config_name)
    image = load_input(golden, golden_index, config_name, case)
    assert image.dtype == np.uint8
    labels = inference.predict_labels(model, image, eval_crop_size=(513, 513)).numpy()
    expected = load_array(golden, golden_index, config_name, case, "labels")
    assert label_diff_fraction(labels, expected) <= MAX_LABEL_DIFF_FRACTION
    unpadded = inference.predict_labels(model, image).numpy()
    assert label_diff_fraction(unpadded, expected) > 0, "padding must change the prediction"


def xception_intermediates(model, image):
    """Our tensors under the golden debug keys (Xception configs)."""
    pixels = tf.constant(image, tf.float32)
    ends = model.get_layer("xception_65").endpoints(model.get_layer("normalize")(pixels))
    aspp, decoder = model.get_layer("aspp"), model.get_layer("decoder")
    branches = aspp.branches(ends["features"])
    concat_projection = aspp(ends["features"])
    projection = decoder.feature_projection(ends["low_level"])
    decoder_conv0 = decoder.convs[0](tf.concat(
        [inference.resize_bilinear_align_corners(concat_projection, tf.shape(projection)[1:3]),
         projection], axis=3))
    ours = {"entry_flow_conv1_1": ends["entry_flow/conv1_1"],
            "entry_flow_conv1_2": ends["entry_flow/conv1_2"],
            "entry_flow_block1": ends["entry_flow/block1/unit_1"],
            "entry_flow_block2": ends["entry_flow/block2/unit_1"],
            "entry_flow_block3": ends["entry_flow/block3/unit_1"],
            "decoder_low_level_endpoint": ends["low_level"],
            "middle_flow_unit_1": ends["middle_flow/block1/unit_1"],
            "middle_flow_unit_16": ends["middle_flow/block1/unit_16"],
            "exit_flow_block1": ends["exit_flow/block1/unit_1"],
            "backbone_features": ends["features"],
            "image_pooling_conv": aspp.image_pooling.pooled(ends["features"]),
            "aspp0": branches[1],
            "concat_projection": concat_projection,
            "decoder_feature_projection0": projection,
            "decoder_conv0": decoder_conv0,
            "decoder_conv1": decoder.convs[1](decoder_conv0),
            "raw_logits": model(pixels)}
    ours.update({f"aspp{i}": branches[1 + i] for i in range(1, len(branches) - 1)})
    return ours


def mobilenet_intermediates(model, image):
    pixels = tf.constant(image, tf.float32)
    features = model.get_layer("MobilenetV2")(model.get_layer("normalize")(pixels))["features"]
    aspp = model.get_layer("aspp")
    return {"backbone_features": features,
            "image_pooling_conv": aspp.image_pooling.pooled(features),
            "aspp0": aspp.branches(features)[1],
            "concat_projection": aspp(features),
            "raw_logits": model(pixels)}


@pytest.mark.parametrize("config_name", CONFIGS)
def test_debug_intermediates(golden, golden_index, golden_model, config_name):
    """Layer-by-layer agreement on the 65x97 debug input (keys the golden file stores)."""
    model, config = golden_model(config_name)
    image = load_input(golden, golden_index, config_name, "debug_65x97")
    expected = np.load(golden / f"{config_name}__debug_65x97.npz")
    ours = (xception_intermediates if config.backbone == "xception_65"
            else mobilenet_intermediates)(model, image)
    compared = [key for key in expected.files if key in ours]
    assert len(compared) >= min(5, len(expected.files))
    for key in compared:
        np.testing.assert_allclose(np.asarray(ours[key]), expected[key], rtol=0,
                                   atol=INTERMEDIATE_ATOL[config.backbone], err_msg=key)


PROBABILITY_ATOL = {"xception_65": 5e-4, "mobilenet_v2": 5e-3}
# The multi-scale code is the same for every backbone; MobileNetV2 keeps the suite fast (the
# Xception-65 case passes too: max probability difference 2.9e-6, no label differs).
MS_FLIP_CONFIGS = ["mobilenetv2_voc_os16"]


@pytest.mark.parametrize("config_name", MS_FLIP_CONFIGS)
def test_multi_scale_flip(golden, golden_index, golden_model, config_name):
    """eval_scales 0.5..1.75 + flips: averaged softmax and labels equal the original's
    (predict_labels_multi_scale), within the golden README's ms_flip tolerances. Run eagerly
    (tracing 10 branches costs 20-80 s); the traced callers run this same function
    (test_multi_scale.py checks they agree with it)."""
    from deeplab_load import multi_scale
    case = golden_index["configs"][config_name]["cases"]["ms_flip_225x321"]
    model, config = golden_model(config_name)
    image = load_input(golden, golden_index, config_name, "ms_flip_225x321")
    probabilities = multi_scale.multi_scale_probabilities(
        model, tf.cast(image, tf.float32), case["eval_scales"],
        case["add_flipped_images"]).numpy()
    expected = load_array(golden, golden_index, config_name, "ms_flip_225x321", "probabilities")
    assert probabilities.shape == expected.shape
    np.testing.assert_allclose(probabilities, expected, rtol=0,
                               atol=PROBABILITY_ATOL[config.backbone])
    labels = probabilities.argmax(-1)
    expected_labels = load_array(golden, golden_index, config_name, "ms_flip_225x321", "labels")
    assert label_diff_fraction(labels, expected_labels) <= MAX_LABEL_DIFF_FRACTION
    single = inference.predict_labels(model, image).numpy()
    assert label_diff_fraction(single, expected_labels) > 0.1, "the case must need multi-scale"


@pytest.mark.parametrize("config_name", ["mobilenetv2_voc_os16"])
def test_single_scale_without_flip_is_todays_path(golden, golden_index, golden_model,
                                                  config_name):
    """eval_scales=(1.0,), no flip: bit-identical labels and softmax of today's logits, also
    with padding; the unflipped multi-scale branch at 1.0 alone agrees with it too."""
    from deeplab_load import multi_scale
    model, _ = golden_model(config_name)
    image = load_input(golden, golden_index, config_name, "export_300x400")[:, :120, :150]
    for crop in (None, (129, 161)):
        labels = multi_scale.predict_labels(model, image, crop, (1.0,), False).numpy()
        np.testing.assert_array_equal(labels, inference.predict_labels(model, image, crop).numpy())
        probabilities = multi_scale.predict_probabilities(model, image, crop).numpy()
        np.testing.assert_array_equal(probabilities, tf.nn.softmax(
            inference.predict_logits(model, image, crop), -1).numpy())
    pixels = tf.cast(image, tf.float32)
    branch = multi_scale.multi_scale_probabilities(model, pixels, (1.0,), False)
    flipped = multi_scale.multi_scale_probabilities(model, pixels, (1.0,), True)
    np.testing.assert_allclose(branch.numpy(), tf.nn.softmax(
        inference.predict_logits(model, image), -1).numpy(), atol=1e-6)
    assert not np.allclose(flipped.numpy(), branch.numpy(), atol=1e-3)
