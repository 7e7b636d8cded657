"""--skip_bad_examples means the same in every pipeline of a run, with one count (issue 11).

One bad training image and one bad validation image: stage 1's class statistics and batches,
the map set, the discriminator's data, the hold-out choice and the baseline evaluation all skip
the same files, and the run's BadExampleLog counts each file once.
"""
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from deeplab_load import evaluation as evaluate
from deeplab_load.data import get_dataset, pipeline
from deeplab_load.data.batches import Batches
from deeplab_load.training import map_sets, reporting
from deeplab_load.training.stage1 import training_class_stats
from fake_datasets import make_fake_voc

SIZE = (33, 33)


@pytest.fixture(scope="module")
def bad_voc(tmp_path_factory):
    tree = make_fake_voc(tmp_path_factory.mktemp("voc"), num_train=5, num_val=4, size=SIZE)
    ds = get_dataset("voc", tree.data_dir)
    bad_train, bad_val = ds.examples("train")[2], ds.examples("val")[1]
    Image.fromarray(np.full(SIZE, 66, np.uint8), mode="L").save(bad_train.label_path)
    with open(bad_val.image_path, "wb") as f:
        f.write(b"not a JPEG")
    return ds, bad_train, bad_val


def test_every_pipeline_skips_the_same_files_and_counts_them_once(bad_voc, tmp_path):
    ds, bad_train, bad_val = bad_voc
    tf.keras.utils.set_random_seed(0)
    inputs = tf.keras.Input((None, None, 3))  # a 1x1 convolution is model enough here
    model = tf.keras.Model(inputs, tf.keras.layers.Conv2D(ds.info.num_classes, 1)(inputs))
    log = pipeline.BadExampleLog()
    train_refs = pipeline.usable_refs(ds, "train", True, log)
    assert [r.id for r in train_refs] == [r.id for r in ds.examples("train") if r != bad_train]

    stats = training_class_stats(ds, "train", str(tmp_path / "stats.json"), True, log)
    assert stats.num_classes == ds.info.num_classes
    batches = list(Batches(pipeline.train_dataset(ds, "train", 2, SIZE, seed=0, repeat=False,
                                                  skip_bad_examples=True, bad_example_log=log)))
    assert len(batches) == 2  # 4 usable examples

    set_dir = str(tmp_path / "set")
    assert map_sets.write_label_map_set(model, ds, train_refs, set_dir, 2, SIZE) == 4
    assert len(list(Batches(map_sets.fake_examples(ds, train_refs, set_dir, 17, seed=0)))) == 4
    assert len(list(Batches(map_sets.real_examples(ds, train_refs, 17, seed=0)))) == 4

    val_usable = [r.id for r in pipeline.usable_refs(ds, "val", True, log)]
    holdout = pipeline.holdout_ids(ds, str(tmp_path / "run"), 1.0, 0, "val", available=val_usable)
    assert sorted(holdout) == sorted(val_usable) and bad_val.id not in holdout

    parts = reporting.evaluate_parts(model, ds, "val", pipeline.select_refs(ds, "val", holdout[:2]),
                                     2, SIZE, "baseline", True, log)
    assert parts["val"]["num_images"] == 3 and parts["val"]["skipped_examples"] == 1
    assert parts["unselected_val"]["num_images"] == 1
    assert parts["unselected_val"]["skipped_examples"] == 1
    results = evaluate.evaluate(model, ds, "val", 2, SIZE, skip_bad_examples=True,
                                bad_example_log=log)
    assert results["num_images"] == 3 and results["skipped_examples"] == 1

    assert log.count == 2
    assert sorted(m.split(":")[0] for m in log.messages) == sorted(
        [bad_train.label_path, bad_val.image_path])
    assert log.summary()["count"] == 2


def test_without_skip_the_first_consumer_names_the_file(bad_voc, tmp_path):
    ds, bad_train, _ = bad_voc
    from deeplab_load.data import BadExampleError
    with pytest.raises(BadExampleError, match=bad_train.label_path):
        training_class_stats(ds, "train", str(tmp_path / "stats.json"))
    assert pipeline.usable_refs(ds, "train") == ds.examples("train")
