"""TFRecord shards of a split: the original encoded image, the label as an 8-bit PNG of train
ids (ignore 255), the example id and the source file name.

Layout in `output_dir`: `{split}-{i:05d}-of-{n:05d}.tfrecord` plus `{split}.json`
(dataset, num_examples, num_shards, ids, skipped files). Examples are validated while writing, so a
shard set never holds a bad example; the pipeline re-validates on decode all the same.
"""
import json
import os

import numpy as np
import tensorflow as tf
from absl import logging

from deeplab_load.data.common import BadExampleError, check_example, decode_image, \
    decode_index_png, encode_index_png, read_bytes

FEATURES = {
    "id": tf.io.FixedLenFeature([], tf.string),
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/filename": tf.io.FixedLenFeature([], tf.string),
    "label/encoded": tf.io.FixedLenFeature([], tf.string, default_value=b""),
}


def shard_path(output_dir, split, index, num_shards):
    return os.path.join(output_dir, f"{split}-{index:05d}-of-{num_shards:05d}.tfrecord")


def metadata_path(output_dir, split):
    return os.path.join(output_dir, f"{split}.json")


def _bytes_feature(value: bytes):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def serialize_example(example_id: str, image_bytes: bytes, image_path: str,
                      label_png: bytes) -> bytes:
    """One tf.train.Example as bytes (`label_png` empty for unlabelled splits)."""
    feature = {"id": _bytes_feature(example_id.encode()),
               "image/encoded": _bytes_feature(image_bytes),
               "image/filename": _bytes_feature(os.fspath(image_path).encode()),
               "label/encoded": _bytes_feature(label_png)}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_split(ds, split, output_dir, num_shards, skip_bad_examples=False) -> dict:
    """Writes a split's shards; returns the metadata (also written as `{split}.json`).

    Each example is fully decoded and validated first: a bad one raises BadExampleError naming
    its file, or is left out and listed under "skipped" with `skip_bad_examples`.
    """
    refs = ds.examples(split)
    num_shards = max(1, min(int(num_shards), len(refs)))
    os.makedirs(output_dir, exist_ok=True)
    skipped, ids = [], []
    tmp_paths = [shard_path(output_dir, split, i, num_shards) + ".tmp" for i in range(num_shards)]
    writers = [tf.io.TFRecordWriter(p) for p in tmp_paths]
    try:
        for position, ref in enumerate(refs):
            try:
                _, label = ds.load(ref)
            except BadExampleError as err:
                if not skip_bad_examples:
                    raise
                logging.warning("skipping bad example: %s", err)
                skipped.append(str(err))
                continue
            label_png = b"" if label is None else encode_index_png(label)
            writers[position % num_shards].write(serialize_example(
                ref.id, read_bytes(ref.image_path), ref.image_path, label_png))
            ids.append(ref.id)
    finally:
        for writer in writers:
            writer.close()
    for i, tmp in enumerate(tmp_paths):
        os.replace(tmp, shard_path(output_dir, split, i, num_shards))
    metadata = {"dataset": ds.info.name, "split": split, "num_examples": len(ids),
                "num_shards": num_shards, "ids": ids, "skipped": skipped}
    with open(metadata_path(output_dir, split), "w") as f:
        json.dump(metadata, f, indent=1)
    return metadata


def read_metadata(tfrecord_dir, split) -> dict:
    path = metadata_path(tfrecord_dir, split)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no TFRecords for split {split!r}: {path} is missing "
                                "(write them with tools/build_tfrecords.py)")
    with open(path) as f:
        return json.load(f)


def shard_paths(tfrecord_dir, split):
    """The split's shard files in index order; checks they are all there."""
    metadata = read_metadata(tfrecord_dir, split)
    paths = [shard_path(tfrecord_dir, split, i, metadata["num_shards"])
             for i in range(metadata["num_shards"])]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(f"missing TFRecord shards: {missing[:3]}")
    return paths


def parse(serialized):
    """Serialized tf.train.Example -> dict of string tensors (see FEATURES)."""
    return tf.io.parse_single_example(serialized, FEATURES)


def decode_record(example_id: bytes, image_bytes: bytes, filename: bytes, label_png: bytes,
                  num_classes: int):
    """Numpy decode of one parsed record: (image uint8 [H,W,3], label uint8 [H,W]).

    Errors name the record's id and its source file.
    """
    name = f"TFRecord example {example_id.decode()} (from {filename.decode()})"
    image = decode_image(image_bytes, name)
    if not label_png:
        return image, np.full(image.shape[:2], 255, np.uint8)
    label = decode_index_png(label_png, name)
    check_example(image, label, num_classes, name, name)
    return image, label
