"""TFRecords with research/deeplab's keys and shard names (build_voc2012_data.py,
build_cityscapes_data.py) and our own records, read without the raw data tree."""
import io
import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from deeplab_load import evaluation, inference, metrics
from deeplab_load.data import get_dataset, pipeline, tfrecords
from deeplab_load.errors import UserError
from fake_datasets import make_fake_voc

SIZE = (33, 49)


def _bytes(value):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int(value):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


def _encode(array, fmt):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def write_research_split(out_dir, split, examples, num_shards, image_format):
    """Shards `{split}-%05d-of-%05d.tfrecord`, consecutive examples per shard, each a
    tf.train.Example with exactly research/deeplab's build_data keys."""
    os.makedirs(out_dir, exist_ok=True)
    per_shard = -(-len(examples) // num_shards)
    for shard in range(num_shards):
        path = os.path.join(out_dir, "%s-%05d-of-%05d.tfrecord" % (split, shard, num_shards))
        with tf.io.TFRecordWriter(path) as writer:
            for name, image, label in examples[shard * per_shard:(shard + 1) * per_shard]:
                feature = {
                    "image/encoded": _bytes(_encode(image, image_format.upper())),
                    "image/filename": _bytes(name.encode()),
                    "image/format": _bytes(image_format.lower().encode()),
                    "image/height": _int(image.shape[0]),
                    "image/width": _int(image.shape[1]),
                    "image/channels": _int(3),
                    "image/segmentation/class/encoded": _bytes(_encode(label, "PNG")),
                    "image/segmentation/class/format": _bytes(b"png"),
                }
                writer.write(tf.train.Example(
                    features=tf.train.Features(feature=feature)).SerializeToString())


def make_examples(rng, names, num_classes, void_fraction=0.1):
    examples = []
    for name in names:
        image = rng.integers(0, 256, SIZE + (3,), dtype=np.uint8)
        label = np.kron(rng.integers(0, num_classes, (5, 7)), np.ones((8, 8), np.int64))
        label = label[:SIZE[0], :SIZE[1]].astype(np.uint8)
        label[rng.random(SIZE) < void_fraction] = 255
        examples.append((name, image, label))
    return examples


@pytest.fixture(scope="module")
def research_records(tmp_path_factory):
    """VOC (JPEG, raw indices 0..20/255: train, val) and Cityscapes (PNG, train ids:
    train_fine, val_fine) folders as research/deeplab's builders lay them out."""
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("research")
    voc = {"train": make_examples(rng, [f"2007_{i:06d}" for i in range(4)], 21),
           "val": make_examples(rng, [f"2008_{i:06d}" for i in range(3)], 21)}
    cityscapes = {
        "train_fine": make_examples(rng, [f"aachen_{i:06d}_000019" for i in range(4)], 19),
        "val_fine": make_examples(rng, [f"frankfurt_{i:06d}_000294" for i in range(3)], 19)}
    for split, examples in voc.items():
        write_research_split(str(root / "voc"), split, examples, 2, "jpeg")
    for split, examples in cityscapes.items():
        write_research_split(str(root / "cityscapes"), split, examples, 2, "png")
    return root, voc, cityscapes


@pytest.fixture(scope="module")
def tiny_model():
    def build(num_classes):
        keras.utils.set_random_seed(5)
        inputs = keras.Input((None, None, 3))
        hidden = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(
            keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inputs))
        return keras.Model(inputs, keras.layers.Conv2D(num_classes, 3, padding="same")(hidden))
    return build


def expected_matrix(model, examples, num_classes, crop, decode_jpeg):
    """Confusion of the model on the examples' images (decoded as stored) and labels."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    for _, image, label in examples:
        if decode_jpeg:
            image = np.asarray(Image.open(io.BytesIO(_encode(image, "JPEG"))).convert("RGB"))
        predictions = inference.predict_labels(model, image[None], crop).numpy()[0]
        matrix += metrics.confusion_matrix_numpy(label, predictions, num_classes)
    return matrix


@pytest.mark.parametrize("name,split,num_classes", [("voc", "val", 21),
                                                    ("cityscapes", "val", 19)])
def test_evaluate_research_records(research_records, tiny_model, name, split, num_classes):
    root, voc, cityscapes = research_records
    dataset = get_dataset(name, None, tfrecord_dir=str(root / name))
    model = tiny_model(num_classes)
    results = evaluation.evaluate(model, dataset, split, batch_size=2, eval_crop_size=(41, 57))
    examples = voc["val"] if name == "voc" else cityscapes["val_fine"]
    assert results["num_images"] == 3
    np.testing.assert_array_equal(results["confusion_matrix"], expected_matrix(
        model, examples, num_classes, (41, 57), decode_jpeg=name == "voc"))
    assert results["num_pixels"] == sum(int(np.sum(label != 255)) for _, _, label in examples)


def test_train_pipeline_reads_research_records(research_records):
    root, voc, cityscapes = research_records
    for name, split, originals in (("voc", "train", voc["train"]),
                                   ("cityscapes", "train", cityscapes["train_fine"])):
        dataset = get_dataset(name, None, tfrecord_dir=str(root / name))
        assert "train" in dataset.splits
        batches = pipeline.train_dataset(dataset, split, 2, SIZE, seed=0, flip=False,
                                         repeat=False)
        labels = [y for _, batch in batches for y in batch.numpy()]
        assert len(labels) == 4
        got = sorted(label.tobytes() for label in labels)
        assert got == sorted(label.astype(np.int32).tobytes() for _, _, label in originals)
        assert pipeline.split_ids(dataset, split) == [n for n, _, _ in originals]


def test_records_dataset_loads_examples_in_order(research_records):
    root, _, cityscapes = research_records
    dataset = get_dataset("cityscapes", None, tfrecord_dir=str(root / "cityscapes"))
    refs = dataset.examples("val")
    assert [ref.id for ref in refs] == [n for n, _, _ in cityscapes["val_fine"]]
    order = [2, 0, 1, 2]  # out of order (rescans) and in order
    for index in order:
        got_image, got_label = dataset.load(refs[index])
        _, image, label = cityscapes["val_fine"][index]
        np.testing.assert_array_equal(got_image, image)
        np.testing.assert_array_equal(got_label, label)


def test_mismatches_name_the_folder_and_splits(research_records):
    root, _, _ = research_records
    voc_on_cityscapes = get_dataset("voc", None, tfrecord_dir=str(root / "cityscapes"))
    with pytest.raises(UserError, match=r"no TFRecords of split 'val' \(found splits: "
                                        r"train_fine, val_fine\)") as err:
        pipeline.split_ids(voc_on_cityscapes, "val")
    assert str(root / "cityscapes") in str(err.value)
    with pytest.raises(UserError, match="holds cityscapes records, not voc"):
        pipeline.split_ids(voc_on_cityscapes, "val_fine")
    cityscapes_on_voc = get_dataset("cityscapes", None, tfrecord_dir=str(root / "voc"))
    with pytest.raises(UserError, match=r"not Cityscapes .*pass the matching --dataset"):
        pipeline.split_ids(cityscapes_on_voc, "val")
    with pytest.raises(UserError, match=r"found splits: train, val"):
        evaluation.evaluate(None, get_dataset("voc", None, tfrecord_dir=str(root / "voc")),
                          "trainval")


def test_own_records_without_raw_tree_or_manifest(tmp_path, tiny_model):
    tree = make_fake_voc(tmp_path / "voc", num_train=2, num_val=3, size=SIZE)
    files = get_dataset("voc", tree.data_dir)
    out = str(tmp_path / "records")
    tfrecords.write_split(files, "val", out, num_shards=2)
    model = tiny_model(21)
    expected = evaluation.evaluate(model, files, "val", eval_crop_size=(41, 57))
    with_manifest = get_dataset("voc", None, tfrecord_dir=out)
    assert tfrecords.read_metadata(out, "val", "voc")["dataset"] == "voc"
    shutil.rmtree(tree.data_dir)
    os.remove(os.path.join(out, "val.json"))
    records_only = get_dataset("voc", None, tfrecord_dir=out)
    metadata = tfrecords.read_metadata(out, "val", "voc")
    assert metadata["flavour"] == "deeplab_load"
    assert sorted(metadata["ids"]) == tree.ids("val")  # in record order: round-robin shards
    for dataset in (with_manifest, records_only):
        got = evaluation.evaluate(model, dataset, "val", eval_crop_size=(41, 57))
        assert got["confusion_matrix"] == expected["confusion_matrix"]
    tfrecords.write_split(files_for_manifest(tmp_path), "val", out, num_shards=2)
    with pytest.raises(UserError, match="holds voc records, not cityscapes"):
        tfrecords.read_metadata(out, "val", "cityscapes")


def files_for_manifest(tmp_path):
    tree = make_fake_voc(tmp_path / "voc2", num_train=1, num_val=2, size=SIZE)
    return get_dataset("voc", tree.data_dir)
