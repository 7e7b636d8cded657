"""TFRecord shards of a split: the original encoded image, the label as an 8-bit PNG of train
ids (ignore 255), the example id and the source file name.

Layout in `output_dir`: `{split}-{i:05d}-of-{n:05d}.tfrecord` plus `{split}.json`
(dataset, num_examples, num_shards, ids, skipped files). Examples are validated while writing, so a
shard set never holds a bad example; the pipeline re-validates on decode all the same.
"""
import json
import os
import re
import shutil

import numpy as np
import tensorflow as tf
from absl import logging

from deeplab_load.data.common import BadExampleError, check_example, check_example_id, \
    decode_image, decode_index_png, encode_index_png, read_bytes
from deeplab_load.errors import DamagedFileError
from deeplab_load.output_folder import inside, write_file_atomic

FEATURES = {
    "id": tf.io.FixedLenFeature([], tf.string),
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/filename": tf.io.FixedLenFeature([], tf.string),
    "label/encoded": tf.io.FixedLenFeature([], tf.string, default_value=b""),
}


_SHARD_NAME = re.compile(r"^-\d{5}-of-\d{5}\.tfrecord$")  # after the split name


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


def _remove_stale_tmp(output_dir, split):
    """Deletes the temporary folders of earlier conversions of `split` that were stopped."""
    for name in os.listdir(output_dir):
        path = os.path.join(output_dir, name)
        if name.startswith(f".tmp_{split}_") and os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)


def _remove_old_shards(output_dir, split, keep):
    """Deletes `split`'s shard files not in `keep` (from a conversion with another count)."""
    for name in os.listdir(output_dir):
        path = os.path.join(output_dir, name)
        if (name.startswith(f"{split}-") and _SHARD_NAME.match(name[len(split):])
                and path not in keep and os.path.isfile(path)):
            os.remove(path)


def write_split(ds, split, output_dir, num_shards, skip_bad_examples=False,
                bad_example_log=None) -> dict:
    """Writes a split's shards; returns the metadata (also written as `{split}.json`).

    Each example is fully decoded and validated first: a bad one raises BadExampleError naming
    its file, or is left out and listed under "skipped" with `skip_bad_examples` (and added to
    `bad_example_log`, a `pipeline.BadExampleLog`, when given). The shards are written into a
    temporary folder `output_dir/.tmp_<split>_<pid>` and moved into place only when the whole
    split is done, the metadata last; a failed conversion removes that folder and leaves the
    split's earlier shards (if any) as they were.
    """
    refs = ds.examples(split)
    num_shards = max(1, min(int(num_shards), len(refs)))
    os.makedirs(output_dir, exist_ok=True)
    _remove_stale_tmp(output_dir, split)
    skipped, ids = [], []
    tmp_dir = inside(output_dir, f".tmp_{split}_{os.getpid()}")
    os.makedirs(tmp_dir)
    try:
        tmp_paths = [shard_path(tmp_dir, split, i, num_shards) for i in range(num_shards)]
        writers = [tf.io.TFRecordWriter(p) for p in tmp_paths]
        try:
            for position, ref in enumerate(refs):
                try:
                    _, label = ds.load(ref)
                except BadExampleError as err:
                    if not skip_bad_examples:
                        raise
                    if bad_example_log is not None:
                        bad_example_log.add(err)
                    else:
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
        final_paths = [inside(output_dir, os.path.basename(p)) for p in tmp_paths]
        metadata_file = inside(output_dir, os.path.basename(metadata_path(output_dir, split)))
        if os.path.exists(metadata_file):
            os.remove(metadata_file)  # a stop while moving leaves no split, never a mixed one
        for tmp, final in zip(tmp_paths, final_paths):
            os.replace(tmp, final)
        metadata = {"dataset": ds.info.name, "split": split, "num_examples": len(ids),
                    "num_shards": num_shards, "ids": ids, "skipped": skipped}
        write_file_atomic(metadata_file, json.dumps(metadata, indent=1).encode())
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    _remove_old_shards(output_dir, split, keep=final_paths)
    if skipped:
        logging.warning("%s %s: %d bad examples skipped (listed in %s)", ds.info.name, split,
                        len(skipped), metadata_path(output_dir, split))
    return metadata


def read_metadata(tfrecord_dir, split) -> dict:
    path = metadata_path(tfrecord_dir, split)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no TFRecords for split {split!r}: {path} is missing "
                                "(write them with tools/build_tfrecords.py)")
    try:
        with open(path) as f:
            metadata = json.load(f)
        ids = metadata["ids"]
        int(metadata["num_shards"])
    except (ValueError, KeyError, TypeError) as err:
        raise DamagedFileError(f"{path}: not a TFRecord metadata file ({err!r}); rewrite the "
                               "split with tools/build_tfrecords.py") from err
    for number, example_id in enumerate(ids):
        check_example_id(str(example_id), f"{path}: ids[{number}]")
    return metadata


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
