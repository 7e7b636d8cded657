"""Multi-scale / flipped inference reaches evaluate, predict and export (the numbers themselves
are checked against the original in test_golden.py::test_multi_scale_flip)."""
import dataclasses
from typing import Optional

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from deeplab_load import evaluation, inference, metrics, multi_scale, prediction, serving
from deeplab_load.data import get_dataset
from fake_datasets import make_fake_voc

SCALES = (0.75, 1.25)
CROP = (49, 65)


@dataclasses.dataclass
class StrideConfig:
    """What multi_scale reads of a DeepLabConfig: the stride of the raw logits."""
    output_stride: int = 2
    decoder_output_stride: Optional[int] = None


@pytest.fixture(scope="module")
def tiny_model():
    """3x3 stride-2 conv -> 21 logits at stride 2 (random, seeded): neither flip- nor
    scale-invariant, and cheap to run at several scales."""
    keras.utils.set_random_seed(4)
    inputs = keras.Input((None, None, 3))
    scaled = keras.layers.Rescaling(2.0 / 255.0, offset=-1.0)(inputs)
    hidden = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(scaled)
    model = keras.Model(inputs, keras.layers.Conv2D(21, 3, padding="same")(hidden))
    model.deeplab_config = StrideConfig()
    return model


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    tree = make_fake_voc(tmp_path_factory.mktemp("voc"), num_train=1, num_val=3, size=(41, 57))
    return get_dataset("voc", tree.data_dir)


def test_evaluate_uses_multi_scale_labels(tiny_model, voc):
    stream = metrics.StreamingConfusionMatrix(21)
    single = metrics.StreamingConfusionMatrix(21)
    for ref in voc.examples("val"):
        image, label = voc.load(ref)
        stream.update(label, multi_scale.predict_labels(tiny_model, image[None], CROP, SCALES,
                                                        True).numpy()[0])
        single.update(label, inference.predict_labels(tiny_model, image[None], CROP).numpy()[0])
    assert not np.array_equal(stream.matrix, single.matrix)
    results = evaluation.evaluate(tiny_model, voc, "val", batch_size=2, eval_crop_size=CROP,
                                eval_scales=SCALES, add_flipped_images=True)
    np.testing.assert_array_equal(results["confusion_matrix"], stream.matrix)
    assert results["eval_scales"] == list(SCALES) and results["add_flipped_images"] is True
    default = evaluation.evaluate(tiny_model, voc, "val", batch_size=2, eval_crop_size=CROP)
    np.testing.assert_array_equal(default["confusion_matrix"], single.matrix)
    assert "eval_scales" not in default


def test_predict_examples_uses_multi_scale(tiny_model, voc, tmp_path):
    ref = voc.examples("val")[0]
    image, _ = voc.load(ref)
    paths = prediction.predict_examples(tiny_model, [(ref.id, lambda: image)], voc.info,
                                     str(tmp_path), "raw", CROP, eval_scales=SCALES,
                                     add_flipped_images=True)
    written = np.array(Image.open(paths[0]))
    expected = multi_scale.predict_labels(tiny_model, image[None], CROP, SCALES, True).numpy()[0]
    np.testing.assert_array_equal(written, expected)
    single = inference.predict_labels(tiny_model, image[None], CROP).numpy()[0]
    assert np.mean(written != single) > 0.01


def test_export_serves_multi_scale(tiny_model, voc, tmp_path):
    image, _ = voc.load(voc.examples("val")[1])
    serving.export_saved_model(tiny_model, tmp_path / "ms", eval_crop_size=CROP,
                              with_probabilities=True, eval_scales=SCALES,
                              add_flipped_images=True)
    loaded = tf.saved_model.load(str(tmp_path / "ms"))
    outputs = loaded.signatures["serving_default"](images=tf.constant(image[None]))
    probabilities = multi_scale.predict_probabilities(tiny_model, image[None], CROP, SCALES, True)
    np.testing.assert_allclose(outputs["probabilities"].numpy(), probabilities.numpy(), atol=1e-6)
    pixels = np.full((1,) + CROP + (3,), 127.5, np.float32)
    pixels[0, :image.shape[0], :image.shape[1]] = image
    eager = multi_scale.multi_scale_probabilities(tiny_model, tf.constant(pixels), SCALES, True)
    np.testing.assert_allclose(probabilities.numpy(),
                               eager.numpy()[:, :image.shape[0], :image.shape[1]], atol=1e-6)
    np.testing.assert_array_equal(outputs["labels"].numpy(), tf.argmax(
        probabilities, -1, output_type=tf.int32).numpy())
    assert '"add_flipped_images": true' in (tmp_path / "ms" / serving.METADATA_FILE).read_text()


def test_scale_dimension_and_parse():
    sizes = multi_scale.scale_dimension(tf.constant([225, 321]), 0.75).numpy().tolist()
    assert sizes == [169, 241]  # int((d - 1) * s + 1), as the golden README lists
    assert multi_scale.scale_dimension(tf.constant([225]), 1.75 / 4).numpy().tolist() == [99]
    assert multi_scale.parse_scales("0.5, 1.0,1.75") == (0.5, 1.0, 1.75)
    assert multi_scale.parse_scales(["0.5", "1"]) == (0.5, 1.0)
    for bad in ("", "0.5,x", "0,1"):
        with pytest.raises(ValueError, match="--eval_scales"):
            multi_scale.parse_scales(bad)


@pytest.mark.slow
def test_evaluate_command_flags(voc, tmp_path):
    """--eval_scales / --add_flipped_images reach the evaluation of the evaluate command."""
    import json
    import os
    import subprocess
    import sys
    from deeplab_load.models.deeplab import DeepLabConfig, build_deeplab
    keras.utils.set_random_seed(6)
    model = build_deeplab(DeepLabConfig("mobilenet_v2", 21, 16, (), None))
    weights = str(tmp_path / "model.weights.h5")
    model.save_weights(weights)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    command = [sys.executable, "-m", "deeplab_load.evaluate", "--dataset=voc",
               f"--dataset_dir={voc.data_dir}", "--split=val", f"--checkpoint={weights}",
               "--model_variant=mobilenet_v2", "--atrous_rates=", "--decoder_output_stride=0",
               "--eval_crop_size=49,65", "--max_images=2", f"--output_dir={tmp_path / 'out'}"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=repo)
    proc = subprocess.run(command + ["--eval_scales=0.75,1.0", "--add_flipped_images"],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["eval_scales"] == [0.75, 1.0] and results["add_flipped_images"] is True
    expected = np.zeros((21, 21), np.int64)
    for ref in voc.examples("val")[:2]:
        image, label = voc.load(ref)
        pixels = np.full((1, 49, 65, 3), 127.5, np.float32)
        pixels[0, :image.shape[0], :image.shape[1]] = image
        labels = multi_scale.padded_label_maps(model, tf.constant(pixels), (0.75, 1.0), True)
        expected += metrics.confusion_matrix_numpy(
            label, labels.numpy()[0, :image.shape[0], :image.shape[1]], 21)
    np.testing.assert_array_equal(results["confusion_matrix"], expected)
    with pytest.raises(ValueError, match="--eval_scales must be"):
        multi_scale.parse_scales(["0.5", "x"])
