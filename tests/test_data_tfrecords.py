"""TFRecord shards: writing, validation while writing, and the pipeline reading them."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from deeplab_load.data import BadExampleError, get_dataset, pipeline, tfrecords
from fake_datasets import make_fake_cityscapes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = (33, 49)


@pytest.fixture(scope="module")
def cityscapes_records(tmp_path_factory):
    tree = make_fake_cityscapes(tmp_path_factory.mktemp("cs"), num_train=5, num_val=3,
                                size=SIZE)
    out = str(tmp_path_factory.mktemp("records"))
    files = get_dataset("cityscapes", tree.data_dir)
    for split in ("train", "val"):
        tfrecords.write_split(files, split, out, num_shards=2)
    return tree, files, get_dataset("cityscapes", tree.data_dir, tfrecord_dir=out)


def _by_id(batches):
    out = {}
    for batch in batches:
        for i, example_id in enumerate(batch["ids"].numpy()):
            out[example_id.decode()] = {k: batch[k][i].numpy() for k in ("pixels", "labels",
                                                                          "sizes")}
    return out


def test_eval_round_trip_equals_files(cityscapes_records):
    tree, files, records = cityscapes_records
    from_files = _by_id(pipeline.eval_dataset(files, "val", 2, (41, 57)))
    from_records = _by_id(pipeline.eval_dataset(records, "val", 2, (41, 57)))
    assert sorted(from_records) == sorted(from_files) == tree.ids("val")
    for example_id, expected in from_files.items():
        for key in expected:
            np.testing.assert_array_equal(from_records[example_id][key], expected[key])
        np.testing.assert_array_equal(from_records[example_id]["labels"][:33, :49],
                                      tree.labels["val"][example_id])


def test_metadata_and_shards(cityscapes_records):
    tree, _, records = cityscapes_records
    metadata = tfrecords.read_metadata(records.tfrecord_dir, "train")
    assert metadata["num_examples"] == 5 and metadata["num_shards"] == 2
    assert sorted(metadata["ids"]) == tree.ids("train") and metadata["skipped"] == []
    assert len(tfrecords.shard_paths(records.tfrecord_dir, "train")) == 2
    with pytest.raises(FileNotFoundError, match="build_tfrecords"):
        tfrecords.read_metadata(records.tfrecord_dir, "test")


def test_train_from_records_is_deterministic_and_resumable(cityscapes_records):
    _, _, records = cityscapes_records

    def make(start, seed=3):
        return pipeline.train_dataset(records, "train", 2, 25, seed=seed,
                                      random_scale=(0.75, 1.25), start_step=start)
    full = [(x.numpy(), y.numpy()) for x, y in make(0).take(6)]
    again = [(x.numpy(), y.numpy()) for x, y in make(0).take(6)]
    resumed = [(x.numpy(), y.numpy()) for x, y in make(4).take(2)]
    for (xa, ya), (xb, yb) in zip(full, again):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    for (xa, ya), (xb, yb) in zip(full[4:], resumed):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert full[0][0].shape == (2, 25, 25, 3) and full[0][1].dtype == np.int32
    one_epoch = pipeline.train_dataset(records, "train", 2, 25, seed=0, repeat=False)
    assert len(list(one_epoch)) == 2


def test_holdout_and_eval_by_ids_from_records(cityscapes_records, tmp_path):
    tree, _, records = cityscapes_records
    ids = pipeline.holdout_ids(records, tmp_path, fraction=0.5, seed=1)
    assert len(ids) == 2 and set(ids) <= set(tree.ids("val"))
    got = _by_id(pipeline.eval_dataset(records, ids, 4, (33, 49)))
    assert sorted(got) == sorted(ids)


def test_bad_example_fails_build_or_is_skipped_and_listed(tmp_path):
    tree = make_fake_cityscapes(tmp_path / "cs", num_train=3, num_val=0, num_test=0, size=SIZE)
    files = get_dataset("cityscapes", tree.data_dir)
    bad = files.examples("train")[2]
    Image.fromarray(np.zeros((10, 10), np.uint8), mode="L").save(bad.label_path)
    with pytest.raises(BadExampleError, match=bad.label_path):
        tfrecords.write_split(files, "train", str(tmp_path / "r1"), num_shards=1)
    metadata = tfrecords.write_split(files, "train", str(tmp_path / "r2"), num_shards=1,
                                     skip_bad_examples=True)
    assert metadata["num_examples"] == 2 and bad.label_path in metadata["skipped"][0]


def test_corrupt_record_names_example(tmp_path):
    tree = make_fake_cityscapes(tmp_path / "cs", num_train=2, num_val=0, num_test=0, size=SIZE)
    ref = get_dataset("cityscapes", tree.data_dir).examples("train")[0]
    out = tmp_path / "r"
    out.mkdir()
    with tf.io.TFRecordWriter(tfrecords.shard_path(str(out), "train", 0, 1)) as writer:
        writer.write(tfrecords.serialize_example(ref.id, b"not an image", ref.image_path, b""))
    (out / "train.json").write_text(json.dumps(
        {"dataset": "cityscapes", "split": "train", "num_examples": 1, "num_shards": 1,
         "ids": [ref.id], "skipped": []}))
    records = get_dataset("cityscapes", tree.data_dir, tfrecord_dir=str(out))
    with pytest.raises(tf.errors.OpError, match=f"TFRecord example {ref.id}"):
        next(iter(pipeline.train_dataset(records, "train", 1, 25, seed=0)))


def test_build_tfrecords_command(tmp_path):
    tree = make_fake_cityscapes(tmp_path / "cs", num_train=2, num_val=1, size=SIZE)
    out = tmp_path / "records"
    result = subprocess.run(
        [sys.executable, "-m", "deeplab_load_tools.build_tfrecords",
         "--dataset=cityscapes", f"--data_dir={tree.data_dir}", "--split=train,val",
         f"--output_dir={out}", "--num_shards=3"],
        capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "cityscapes train: 2 examples in 2 shards, 0 skipped" in result.stdout
    assert sorted(os.listdir(out)) == [
        "train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord", "train.json",
        "val-00000-of-00001.tfrecord", "val.json"]
