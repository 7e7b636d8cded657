import numpy as np
import pytest
import tensorflow as tf

from deeplab_load import metrics
from deeplab_load.data import get_dataset
from deeplab_load.data.common import decode_index_png, read_bytes
from deeplab_load.inference import predict_labels
from deeplab_load.models.deeplab import DeepLabConfig, build_deeplab
from deeplab_load.training import map_sets
from deeplab_load.training.holdout import HoldoutEvaluator


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return get_dataset("demo", str(tmp_path_factory.mktemp("demo") / "demo"), num_train=5,
                       num_val=4, image_size=(41, 57), seed=3)


@pytest.fixture(scope="module")
def model(demo):
    tf.keras.utils.set_random_seed(0)
    return build_deeplab(DeepLabConfig(backbone="mobilenet_v2", num_classes=demo.info.num_classes,
                                       output_stride=16, atrous_rates=(),
                                       decoder_output_stride=None))


def reference_maps(model, demo, refs, crop):
    out = []
    for ref in refs:
        image, label = demo.load(ref)
        out.append((label, predict_labels(model, image[None], crop)[0].numpy()))
    return out


@pytest.mark.parametrize("overlap", [True, False])
def test_holdout_miou_equals_per_image_eval(demo, model, overlap, monkeypatch):
    from deeplab_load.training import holdout
    asked = []
    original = holdout.read_ahead
    monkeypatch.setattr(holdout, "read_ahead", lambda items, enabled=True: (
        asked.append(enabled), original(items, enabled=enabled))[1])
    refs = demo.examples("val")
    crop = (48, 64)
    evaluator = HoldoutEvaluator(model, demo, refs, batch_size=3, eval_crop_size=crop,
                                 overlap=overlap)
    expected = sum(metrics.confusion_matrix_numpy(label, pred, demo.info.num_classes)
                   for label, pred in reference_maps(model, demo, refs, crop))
    np.testing.assert_array_equal(evaluator.confusion_matrix(), expected)
    assert evaluator.mean_iou() == pytest.approx(metrics.mean_iou(expected))
    triples = list(evaluator.examples_with_maps())
    assert len(triples) == len(refs)
    for (image, label, label_map), (ref_label, ref_map) in zip(
            triples, reference_maps(model, demo, refs, crop)):
        np.testing.assert_array_equal(label, ref_label)
        np.testing.assert_array_equal(label_map, ref_map)
    assert asked and set(asked) == {overlap}


def test_holdout_reads_its_images_once_and_evaluates_without_tf_data(demo, model, monkeypatch):
    """After the first evaluation no tf.data pipeline runs (its threads would compete with the
    evaluation for the cores); later evaluations and label maps are unchanged."""
    from deeplab_load.training import holdout
    refs = demo.examples("val")
    evaluator = HoldoutEvaluator(model, demo, refs, batch_size=3, eval_crop_size=(48, 64))
    first = evaluator.confusion_matrix()
    images = [(image, label) for image, label, _ in evaluator.examples_with_maps()]

    def no_pipeline(*args, **kwargs):
        raise AssertionError("the hold-out set was read through tf.data again")
    monkeypatch.setattr(holdout, "Batches", no_pipeline)
    for _ in range(2):
        np.testing.assert_array_equal(evaluator.confusion_matrix(), first)
    again = list(evaluator.examples_with_maps())
    for (image, label), (image_again, label_again, _) in zip(images, again):
        np.testing.assert_array_equal(image_again, image)
        np.testing.assert_array_equal(label_again, label)
    for (image, label), ref in zip(images, refs):
        np.testing.assert_array_equal(image, demo.load(ref)[0])
        np.testing.assert_array_equal(label, demo.load(ref)[1])


@pytest.mark.parametrize("overlap", [True, False])
def test_written_set_matches_predictions_and_streams_back(demo, model, tmp_path, overlap,
                                                          monkeypatch):
    """With the PNGs written behind the next batch's compute (overlap) and inline: the same maps
    (5 images at batch 2: three batches, the last one short)."""
    writers = []
    original = map_sets.WriteBehind
    monkeypatch.setattr(map_sets, "WriteBehind", lambda enabled=True: (
        writers.append(enabled), original(enabled=enabled))[1])
    refs = demo.examples("train")
    crop = (48, 64)
    assert map_sets.write_label_map_set(model, demo, refs, str(tmp_path), 2, crop,
                                        overlap=overlap) == len(refs)
    for ref, (label, pred) in zip(refs, reference_maps(model, demo, refs, crop)):
        path = map_sets.map_path(str(tmp_path), ref.id)
        np.testing.assert_array_equal(decode_index_png(read_bytes(path), path), pred)
    assert writers == [overlap]
    fakes = list(map_sets.fake_examples(demo, refs, str(tmp_path), 32, seed=1))
    reals = list(map_sets.real_examples(demo, refs, 32, seed=1))
    assert len(fakes) == len(reals) == len(refs)
    pixels, label_map, ignore = fakes[0]
    assert pixels.shape == (32, 32, 3) and label_map.shape == (32, 32) and ignore.shape == (32, 32)
    assert label_map.dtype == tf.int32 and ignore.dtype == tf.bool
    # Same seed -> same order on both sides, so the ignore mask is the ground truth's.
    for (_, labels), (_, _, mask) in zip(reals, fakes):
        np.testing.assert_array_equal(labels.numpy() == 255, mask.numpy())


def test_missing_map_names_the_file(demo, tmp_path):
    refs = demo.examples("train")[:1]
    with pytest.raises(Exception, match=refs[0].id):
        list(map_sets.fake_examples(demo, refs, str(tmp_path), 16, seed=0))
