import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from deeplab_load import evaluation, inference, metrics
from deeplab_load.checkpoints.restore import restore_checkpoint
from deeplab_load.checkpoints.store import variable_table
from deeplab_load.data import get_dataset
from deeplab_load.models.deeplab import DeepLabConfig, build_deeplab
from fake_datasets import make_fake_voc

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MNV2_VOC = DeepLabConfig("mobilenet_v2", 21, 16, (), None)


@pytest.fixture(scope="module")
def tf1_checkpoint(make_golden_checkpoint):
    return make_golden_checkpoint("manifest_mobilenetv2_voc_os16.json")


@pytest.fixture(scope="module")
def model(tf1_checkpoint):
    model = build_deeplab(MNV2_VOC)
    restore_checkpoint(model, tf1_checkpoint)
    return model


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc")
    make_fake_voc(root, num_train=1, num_val=3, size=(65, 97), seed=1)
    return get_dataset("voc", str(root))


class CroppedSizes:
    """Wraps a data set so its examples come in several sizes, odd and even."""

    SIZES = [(65, 97), (64, 80), (51, 96)]

    def __init__(self, dataset):
        self.dataset = dataset
        self.info = dataset.info

    def examples(self, split):
        return self.dataset.examples(split)

    def load(self, ref):
        index = [r.id for r in self.examples("val")].index(ref.id)
        height, width = self.SIZES[index % len(self.SIZES)]
        image, label = self.dataset.load(ref)
        return image[:height, :width], label[:height, :width]


def _reference_matrix(model, dataset, eval_crop_size):
    matrix = np.zeros((21, 21), np.int64)
    for ref in dataset.examples("val"):
        image, label = dataset.load(ref)
        predictions = inference.predict_labels(model, image[None], eval_crop_size).numpy()[0]
        matrix += metrics.confusion_matrix_numpy(label, predictions, 21)
    return matrix


def _matrix(results):
    return np.array(results["confusion_matrix"])


def test_padded_eval_equals_predict_labels_then_crop(model, voc):
    dataset = CroppedSizes(voc)
    expected = _reference_matrix(model, dataset, (81, 113))
    assert (expected.sum(axis=0) > 0).sum() >= 3  # the model predicts several classes
    for batch_size in (1, 2):
        results = evaluation.evaluate(model, dataset, "val", batch_size=batch_size,
                                    eval_crop_size=(81, 113))
        np.testing.assert_array_equal(_matrix(results), expected)
    assert results["num_images"] == 3
    assert results["miou"] == pytest.approx(metrics.mean_iou(expected))


def test_evaluating_a_model_again_traces_nothing(model, voc):
    """A training run evaluates its model many times: the confusion function is kept per model,
    so the second evaluation of the same shapes reuses its trace (a bfloat16 copy is not kept)."""
    first = evaluation.evaluate(model, voc, "val", batch_size=3, eval_crop_size=(81, 113))
    function = evaluation._CONFUSION_FUNCTIONS.kept(model)[(21, (1.0,), False)]
    traces = function.experimental_get_tracing_count()
    assert traces >= 1
    second = evaluation.evaluate(model, voc, "val", batch_size=3, eval_crop_size=(81, 113))
    assert function.experimental_get_tracing_count() == traces
    assert second["confusion_matrix"] == first["confusion_matrix"]
    kept = len(evaluation._CONFUSION_FUNCTIONS)
    evaluation.evaluate(model, voc, "val", batch_size=3, eval_crop_size=(81, 113),
                        dtype="bfloat16")
    assert len(evaluation._CONFUSION_FUNCTIONS) == kept


def test_unpadded_eval_uses_each_image_size(model, voc):
    dataset = CroppedSizes(voc)
    expected = _reference_matrix(model, dataset, None)
    results = evaluation.evaluate(model, dataset, "val", batch_size=2, eval_crop_size=None)
    np.testing.assert_array_equal(_matrix(results), expected)
    # the padding changes the image-pooling and resize results, so the two evaluations differ
    assert not np.array_equal(expected, _reference_matrix(model, dataset, (81, 113)))


def test_image_larger_than_crop_is_an_error_naming_the_file(model, voc):
    with pytest.raises(Exception, match="2008_000000.jpg: image 65x97 is larger"):
        evaluation.evaluate(model, voc, "val", eval_crop_size=(64, 97))
    with pytest.raises(ValueError, match="images without labels .*2009_000000.jpg"):
        evaluation.evaluate(model, voc, "test", eval_crop_size=(81, 113))


def _weights_equal(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights()))


def test_restore_our_checkpoint_formats(model, tmp_path):
    fresh = build_deeplab(MNV2_VOC)
    assert not _weights_equal(model, fresh)
    prefix = tf.train.Checkpoint(generator=variable_table(model)).write(
        str(tmp_path / "plain" / "ckpt"))
    assert "checkpoint" in restore_checkpoint(fresh, prefix)
    assert _weights_equal(model, fresh)

    # a CheckpointStore-style folder: tags.json -> ckpt_<n>/ckpt
    store = tmp_path / "store"
    tf.train.Checkpoint(model=variable_table(model)).write(str(store / "ckpt_000003" / "ckpt"))
    (store / "tags.json").write_text(json.dumps({"g_best": "ckpt_000003"}))
    fresh = build_deeplab(MNV2_VOC)
    assert "ckpt_000003" in restore_checkpoint(fresh, str(store))
    assert _weights_equal(model, fresh)
    with pytest.raises(ValueError, match="no tag 'g_end'"):
        restore_checkpoint(fresh, str(store), tag="g_end")



def test_restore_from_a_checkpoint_store_folder(model, tmp_path):
    import keras
    from deeplab_load.checkpoints.store import CheckpointStore
    optimizer = keras.optimizers.SGD(momentum=0.9)
    optimizer.build(model.trainable_variables)
    store = CheckpointStore(str(tmp_path / "checkpoints"), model=model, optimizer=optimizer)
    store.save("g_s")
    store.save("g_best")
    fresh = build_deeplab(MNV2_VOC)
    description = restore_checkpoint(fresh, str(tmp_path / "checkpoints"))
    assert store.tags["g_best"] in description  # g_best is preferred over g_s
    assert _weights_equal(model, fresh)


def test_restore_keras_weights_file(model, tmp_path):
    h5 = str(tmp_path / "model.weights.h5")
    model.save_weights(h5)
    fresh = build_deeplab(MNV2_VOC)
    restore_checkpoint(fresh, h5)
    assert _weights_equal(model, fresh)
    fresh = build_deeplab(MNV2_VOC)
    assert "model.weights.h5" in restore_checkpoint(fresh, str(tmp_path))  # its folder
    assert _weights_equal(model, fresh)


def test_restore_rejects_checkpoint_of_another_model(model, tmp_path):
    other = build_deeplab(DeepLabConfig("mobilenet_v2", 5, 16, (), None))
    prefix = tf.train.Checkpoint(model=variable_table(other)).write(
        str(tmp_path / "other" / "ckpt"))
    with pytest.raises(Exception, match="ckpt"):
        restore_checkpoint(build_deeplab(MNV2_VOC), prefix)
    with pytest.raises(FileNotFoundError, match="missing_dir"):
        restore_checkpoint(model, str(tmp_path / "missing_dir"))


@pytest.mark.slow
def test_command_writes_results(model, voc, tf1_checkpoint, tmp_path):
    out = tmp_path / "eval"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO)
    proc = subprocess.run(
        [sys.executable, "-m", "deeplab_load.evaluate", "--dataset=voc",
         f"--dataset_dir={voc.data_dir}", "--split=val", f"--checkpoint={tf1_checkpoint}",
         "--zoo_name=mobilenetv2_coco_voc_trainaug", "--eval_crop_size=81,113",
         "--eval_batch_size=2", f"--output_dir={out}"],
        capture_output=True, text=True, env=env, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = metrics.load_results(str(out / "results.json"))
    expected = evaluation.evaluate(model, voc, "val", batch_size=1, eval_crop_size=(81, 113))
    np.testing.assert_array_equal(_matrix(results), _matrix(expected))
    assert f"{100 * expected['miou']:.2f}" in proc.stdout
    assert "running_miou" in proc.stderr and "3/3" in proc.stderr
    assert "| **mIoU** |" in (out / "results.md").read_text()
    assert results["checkpoint"].startswith("TF1 checkpoint")
