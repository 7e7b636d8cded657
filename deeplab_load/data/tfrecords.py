"""TFRecord shards of a split: ours (deeplab_load_tools/build_tfrecords.py) and research/deeplab's
(build_voc2012_data.py / build_cityscapes_data.py), read alike.

Both write `{split}-{i:05d}-of-{n:05d}.tfrecord` with tf.train.Examples holding
`image/encoded` (the original encoded image), `image/filename`, `image/format`, `image/height`,
`image/width`, `image/channels`, `image/segmentation/class/encoded` (an 8-bit PNG of train ids,
ignore 255; VOC's are raw palette indices 0..20 / 255, Cityscapes' labelTrainIds) and
`image/segmentation/class/format`. Ours add `id` (the example id; research/deeplab's
`image/filename` is the id) and a manifest `{split}.json` (dataset, num_examples, num_shards, ids,
skipped files); records written by earlier versions keep the label under `label/encoded`.
Nothing else is needed to read a split: no raw data tree, and without a manifest the ids and the
count are read from the records (once per process).

research/deeplab's Cityscapes splits are `train_fine` / `val_fine`: for the cityscapes data set
`train` / `val` fall back to them. Examples are validated while writing, so a shard set of ours
never holds a bad example; the pipeline re-validates on decode all the same.
"""
import glob
import json
import os
import re
import shutil
import threading

import numpy as np
import tensorflow as tf
from absl import logging

from deeplab_load.data.common import BadExampleError, check_example, check_example_id, \
    decode_image, decode_index_png, encode_index_png, read_bytes
from deeplab_load.atomic_files import write_json_atomic
from deeplab_load.errors import DamagedFileError, UserError
from deeplab_load.output_folder import inside

FEATURES = {
    "id": tf.io.FixedLenFeature([], tf.string),
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/filename": tf.io.FixedLenFeature([], tf.string),
    "label/encoded": tf.io.FixedLenFeature([], tf.string, default_value=b""),
}
"""What `parse` returns for either flavour of record."""

_RECORD_FEATURES = {
    "id": tf.io.FixedLenFeature([], tf.string, default_value=b""),
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/filename": tf.io.FixedLenFeature([], tf.string, default_value=b""),
    "label/encoded": tf.io.FixedLenFeature([], tf.string, default_value=b""),
    "image/segmentation/class/encoded": tf.io.FixedLenFeature([], tf.string,
                                                              default_value=b""),
}
INSTANCE_KEY = "image/segmentation/instance/encoded"
_SHARD_NAME = re.compile(r"^(?P<split>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.tfrecord$")
CITYSCAPES_RESEARCH_SUFFIX = "_fine"
_CITYSCAPES_ID = re.compile(r"^[a-z_]+_\d{6}_\d{6}$")


class TFRecordSplitError(UserError, FileNotFoundError):
    """A split's shards are missing or incomplete in a TFRecord folder."""


class TFRecordDatasetMismatch(UserError, ValueError):
    """A TFRecord folder holds another data set's records."""


def shard_path(output_dir, split, index, num_shards):
    return os.path.join(output_dir, f"{split}-{index:05d}-of-{num_shards:05d}.tfrecord")


def metadata_path(output_dir, split):
    return os.path.join(output_dir, f"{split}.json")


def _bytes_feature(value: bytes):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int64_feature(value: int):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))


def serialize_example(example_id: str, image_bytes: bytes, image_path: str,
                      label_png: bytes, image_size=None, instance_png: bytes = b"") -> bytes:
    """One tf.train.Example as bytes (`label_png` empty for unlabelled splits).

    Uses research/deeplab's keys (plus `id`), so its data_generator reads our records too;
    `image_size` = (height, width) fills `image/height` / `image/width`; `instance_png` (a
    Cityscapes `*_gtFine_instanceIds.png`) goes under `image/segmentation/instance/encoded`.
    """
    image_path = os.fspath(image_path)
    extension = os.path.splitext(image_path)[1].lstrip(".").lower()
    feature = {"id": _bytes_feature(example_id.encode()),
               "image/encoded": _bytes_feature(image_bytes),
               "image/filename": _bytes_feature(image_path.encode()),
               "image/format": _bytes_feature({"jpg": b"jpeg"}.get(extension, extension.encode())),
               "image/channels": _int64_feature(3),
               "image/segmentation/class/encoded": _bytes_feature(label_png),
               "image/segmentation/class/format": _bytes_feature(b"png")}
    if instance_png:
        feature[INSTANCE_KEY] = _bytes_feature(instance_png)
    if image_size is not None:
        feature["image/height"] = _int64_feature(image_size[0])
        feature["image/width"] = _int64_feature(image_size[1])
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
        match = _SHARD_NAME.match(name)
        if match and match["split"] == split and path not in keep and os.path.isfile(path):
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
                    image, label = ds.load(ref)
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
                instance_png = getattr(ds, "instance_png", lambda *_: None)(ref, image.shape[:2])
                writers[position % num_shards].write(serialize_example(
                    ref.id, read_bytes(ref.image_path), ref.image_path, label_png,
                    image.shape[:2], instance_png or b""))
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
        write_json_atomic(metadata_file, metadata, sort_keys=False)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    _remove_old_shards(output_dir, split, keep=final_paths)
    if skipped:
        logging.warning("%s %s: %d bad examples skipped (listed in %s)", ds.info.name, split,
                        len(skipped), metadata_path(output_dir, split))
    return metadata


def split_shards(tfrecord_dir) -> dict:
    """{split name: [shard paths in index order]} of every `*-NNNNN-of-NNNNN.tfrecord`."""
    found = {}
    for path in glob.glob(os.path.join(glob.escape(os.fspath(tfrecord_dir)), "*.tfrecord")):
        match = _SHARD_NAME.match(os.path.basename(path))
        if match:
            found.setdefault(match["split"], []).append(path)
    return {split: sorted(paths) for split, paths in found.items()}


def _describe_splits(found):
    return ", ".join(sorted(found)) if found else "none"


def resolve_split(tfrecord_dir, split, dataset_name=None) -> str:
    """The shard-name split holding `split`: itself, or for Cityscapes research/deeplab's
    `{split}_fine` (and `train` for `train_fine`). TFRecordSplitError names the folder and the
    splits it has."""
    tfrecord_dir = os.fspath(tfrecord_dir)
    if not os.path.isdir(tfrecord_dir):
        raise TFRecordSplitError(f"--tfrecord_dir {tfrecord_dir} is not a folder")
    found = split_shards(tfrecord_dir)
    candidates = [split]
    if dataset_name == "cityscapes":
        if split.endswith(CITYSCAPES_RESEARCH_SUFFIX):
            candidates.append(split[:-len(CITYSCAPES_RESEARCH_SUFFIX)])
        else:
            candidates.append(split + CITYSCAPES_RESEARCH_SUFFIX)
    for candidate in candidates:
        if candidate in found:
            return candidate
    raise TFRecordSplitError(
        f"{tfrecord_dir} has no TFRecords of split {split!r} (found splits: "
        f"{_describe_splits(found)}); write them with `python -m "
        f"deeplab_load_tools.build_tfrecords` or research/deeplab's build_*_data.py, or pick "
        f"another --split")


_SCANS = {}
_SCANS_LOCK = threading.Lock()


def _scan_records(paths):
    """(ids, has our `id` key) read from the records themselves; cached per shard set."""
    key = tuple((p, os.path.getsize(p), os.path.getmtime(p)) for p in paths)
    with _SCANS_LOCK:
        if key in _SCANS:
            return _SCANS[key]
    spec = {"id": _RECORD_FEATURES["id"], "image/filename": _RECORD_FEATURES["image/filename"]}
    ids, ours = [], False
    for record in tf.data.TFRecordDataset(list(paths)):
        fields = tf.io.parse_single_example(record, spec)
        example_id = fields["id"].numpy().decode()
        ours = ours or bool(example_id)
        ids.append(example_id or fields["image/filename"].numpy().decode())
    with _SCANS_LOCK:
        _SCANS[key] = (ids, ours)
    return ids, ours


def _check_dataset(tfrecord_dir, split, dataset_name, recorded_name, ids):
    """TFRecordDatasetMismatch when the records are evidently another data set's."""
    if dataset_name is None:
        return
    if recorded_name is None and ids:  # research/deeplab records: tell by the example ids
        cityscapes_like = bool(_CITYSCAPES_ID.match(ids[0]))
        if split.endswith(CITYSCAPES_RESEARCH_SUFFIX) or cityscapes_like:
            recorded_name = "cityscapes"
        elif dataset_name == "cityscapes":
            recorded_name = f"not Cityscapes (example id {ids[0]!r})"
    if recorded_name is not None and recorded_name != dataset_name and not (
            recorded_name == "voc" and dataset_name == "demo"):
        raise TFRecordDatasetMismatch(
            f"{tfrecord_dir}: split {split!r} holds {recorded_name} records, not {dataset_name}; "
            f"pass the matching --dataset or another --tfrecord_dir")


def _read_manifest(path) -> dict:
    """Our `{split}.json`; DamagedFileError if unreadable, BadIdListError for an id that is a
    path (ids become output file names)."""
    try:
        with open(path) as f:
            metadata = json.load(f)
        ids = metadata["ids"]
        int(metadata["num_shards"])
    except (ValueError, KeyError, TypeError) as err:
        raise DamagedFileError(f"{path}: not a TFRecord metadata file ({err!r}); rewrite the "
                               "split with `python -m deeplab_load_tools.build_tfrecords`") from err
    for number, example_id in enumerate(ids):
        check_example_id(str(example_id), f"{path}: ids[{number}]")
    return metadata


def read_metadata(tfrecord_dir, split, dataset_name=None) -> dict:
    """The split's manifest: dataset (None for research/deeplab records), split (the shard
    name), num_examples, num_shards, ids, skipped. From `{split}.json` when present, else read
    from the records. Errors (UserError) name the folder, the splits found and the fix."""
    tfrecord_dir = os.fspath(tfrecord_dir)
    shard_split = resolve_split(tfrecord_dir, split, dataset_name)
    path = metadata_path(tfrecord_dir, shard_split)
    paths = _complete_shards(tfrecord_dir, shard_split)
    if os.path.isfile(path):
        metadata = _read_manifest(path)
    else:
        ids, ours = _scan_records(paths)
        metadata = {"dataset": None, "split": shard_split, "num_examples": len(ids),
                    "num_shards": len(paths), "ids": ids, "skipped": [],
                    "flavour": "deeplab_load" if ours else "research/deeplab"}
    _check_dataset(tfrecord_dir, shard_split, dataset_name, metadata.get("dataset"),
                   metadata["ids"])
    metadata["split"] = shard_split
    return metadata


def _complete_shards(tfrecord_dir, shard_split):
    paths = split_shards(tfrecord_dir)[shard_split]
    counts = {int(_SHARD_NAME.match(os.path.basename(p))["count"]) for p in paths}
    expected = [shard_path(tfrecord_dir, shard_split, i, max(counts)) for i in range(max(counts))]
    missing = sorted(set(expected) - set(paths))
    if len(counts) != 1 or missing:
        raise TFRecordSplitError(f"{tfrecord_dir}: split {shard_split!r} is incomplete "
                                 f"(missing {[os.path.basename(p) for p in missing[:3]]}, "
                                 f"shard counts {sorted(counts)}); rewrite it")
    return expected


def shard_paths(tfrecord_dir, split, dataset_name=None):
    """The split's shard files in index order; checks they are all there."""
    metadata = read_metadata(tfrecord_dir, split, dataset_name)
    return _complete_shards(os.fspath(tfrecord_dir), metadata["split"])


def instance_pngs(tfrecord_dir, split, dataset_name=None) -> dict:
    """{example id: instance-id PNG bytes} of the split's records that carry one (ours, for
    Cityscapes trees with `*_gtFine_instanceIds.png`); empty for research/deeplab records."""
    spec = {key: _RECORD_FEATURES[key] for key in ("id", "image/filename")}
    spec[INSTANCE_KEY] = tf.io.FixedLenFeature([], tf.string, default_value=b"")
    pngs = {}
    for record in tf.data.TFRecordDataset(shard_paths(tfrecord_dir, split, dataset_name)):
        fields = tf.io.parse_single_example(record, spec)
        png = fields[INSTANCE_KEY].numpy()
        if png:
            example_id = fields["id"].numpy() or fields["image/filename"].numpy()
            pngs[example_id.decode()] = png
    return pngs


def parse(serialized):
    """Serialized tf.train.Example of either flavour -> dict of string tensors (see FEATURES):
    `id` falls back to `image/filename`, `label/encoded` to `image/segmentation/class/encoded`."""
    fields = tf.io.parse_single_example(serialized, _RECORD_FEATURES)
    example_id = tf.where(tf.equal(fields["id"], b""), fields["image/filename"], fields["id"])
    label = tf.where(tf.equal(fields["label/encoded"], b""),
                     fields["image/segmentation/class/encoded"], fields["label/encoded"])
    return {"id": example_id, "image/encoded": fields["image/encoded"],
            "image/filename": fields["image/filename"], "label/encoded": label}


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
