"""Per-image evaluation: its matrices sum to evaluate's, structure uses the instance maps,
results round-trip through .npz + .json."""
import json

import numpy as np
import pytest

from deeplab_load import evaluation
from deeplab_load.data import get_dataset
from deeplab_load.evaluation_stats.per_image import PerImageResults, evaluate_per_image, \
    stacked_confusions
from deeplab_load.models.deeplab import DeepLabConfig, build_deeplab


@pytest.fixture(scope="module")
def bench_small(tmp_path_factory):
    return get_dataset("bench", str(tmp_path_factory.mktemp("bench") / "b"), num_train=2,
                       num_val=3, num_test=7, image_size=(49, 49))


@pytest.fixture(scope="module")
def model():
    """A random MobileNetV2 OS8 whose logits weights are scaled up, so its argmax varies over
    the image (several classes predicted, right and wrong)."""
    import keras
    keras.utils.set_random_seed(3)
    net = build_deeplab(DeepLabConfig("mobilenet_v2", 6, 8, (), None))
    logits = net.get_layer("logits")
    logits.set_weights([w * 50 for w in logits.get_weights()])
    return net


def test_per_image_matrices_sum_to_evaluate_and_structure_uses_instances(bench_small, model):
    results = evaluate_per_image(model, bench_small, "test", batch_size=3,
                                 eval_crop_size=(49, 49))
    expected = evaluation.evaluate(model, bench_small, "test", batch_size=3,
                                   eval_crop_size=(49, 49))
    refs = bench_small.examples("test")
    assert results.ids == [ref.id for ref in refs]
    assert results.confusions.shape == (7, 6, 6) and results.confusions.dtype == np.int64
    np.testing.assert_array_equal(results.matrix(), expected["confusion_matrix"])
    assert (results.confusions.sum(axis=(1, 2)) == 49 * 49).all()  # no ignore in the bench
    assert (np.count_nonzero(results.matrix().sum(axis=0)) >= 2)   # the model is not constant
    instances = [len(np.unique(bench_small.load_instances(r))) - 1 for r in refs]
    np.testing.assert_array_equal(results.structure.num_objects, instances)
    for n, ref in enumerate(refs):
        _, label = bench_small.load(ref)
        assert results.confusions[n].sum(axis=1).tolist() == np.bincount(
            label.ravel(), minlength=6).tolist()


def test_given_refs_and_no_padding(bench_small, model):
    refs = bench_small.examples("val")[1:]
    results = evaluate_per_image(model, bench_small, "val", batch_size=4, eval_crop_size=None,
                                 refs=refs)
    assert results.ids == [ref.id for ref in refs]
    expected = evaluation.evaluate(model, bench_small, refs, eval_crop_size=None)
    np.testing.assert_array_equal(results.matrix(), expected["confusion_matrix"])


def test_save_load_round_trip_without_pickle(bench_small, model, tmp_path):
    results = evaluate_per_image(model, bench_small, "val", batch_size=2,
                                 eval_crop_size=(49, 49))
    npz, ids_json = results.save(str(tmp_path / "arm_seed0.npz"))
    assert json.load(open(ids_json))["ids"] == results.ids
    loaded = PerImageResults.load(npz)
    assert loaded.ids == results.ids and loaded.split == "val"
    assert tuple(loaded.class_names) == tuple(results.class_names)
    np.testing.assert_array_equal(loaded.confusions, results.confusions)
    for name, array in results.structure.arrays().items():
        np.testing.assert_array_equal(getattr(loaded.structure, name), array)
    with np.load(npz, allow_pickle=False) as arrays:  # plain arrays only
        assert all(arrays[name].dtype != object for name in arrays.files)
    stacked = stacked_confusions([results, loaded])
    assert stacked.shape == (2, 3, 6, 6)
    loaded.ids = list(reversed(loaded.ids))
    with pytest.raises(ValueError, match="same split"):
        stacked_confusions([results, loaded])
    with pytest.raises(ValueError, match=".npz"):
        results.save(str(tmp_path / "arm.txt"))
