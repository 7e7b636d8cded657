"""tf.data input pipelines: training (scale, pad, crop, flip), evaluation, the hold-out split.

Determinism and resume: training example number `p = step * global_batch_size + i` is
example `perm_e[p % N]` of the split, where `perm_e` is a permutation drawn from
(seed, epoch e = p // N) with stateless ops, and its augmentation uses stateless random ops
seeded by (seed, p). So the batch of step t is a pure function of (seed, t): a run started at
`start_step=t` sees exactly what an uninterrupted run saw at step t.

Distribution: pass `input_context` from
`strategy.distribute_datasets_from_function(lambda ctx: train_dataset(..., input_context=ctx))`.
Each input pipeline keeps the examples of its `1/num_input_pipelines` slice of every global
batch and batches them per replica (`ctx.get_per_replica_batch_size`), so the union over
replicas of step t is the same global batch for any number of replicas or workers.

Decoding goes through `ds.load` (Pillow) in `tf.numpy_function`, or through TFRecord shards
when the data set has a `tfrecord_dir` (see tfrecords.py). A bad example stops the pipeline
with an error whose message names the file: iterate through `batches.Batches`, which re-raises
it as the BadExampleError and deletes the iterator first (plain iteration gives a
tf.errors.OpError carrying its text, and may hang at exit: see batches.py). With
`skip_bad_examples` it is skipped and counted instead (`usable_refs`, `BadExampleLog`).
"""
import concurrent.futures
import os
import threading
from typing import Sequence, Union

import numpy as np
import tensorflow as tf
from absl import logging

from deeplab_load.data import tfrecords
from deeplab_load.data.batches import assert_no_error, reports_errors_with
from deeplab_load.data.common import IGNORE_LABEL, BadExampleError, ExampleRef, as_size, \
    read_id_list, write_id_list_atomic
from deeplab_load.models.ops import PAD_PIXEL_VALUE

HOLDOUT_FILE = "holdout_ids.txt"
_FOREVER = 2 ** 62
_SHUFFLE_BUFFER = 256  # TFRecord examples held for shuffling


class BadExampleLog:
    """Thread-safe record of the examples skipped under `skip_bad_examples`.

    One log serves a whole run (stage 1, map sets, D data, hold-out, evaluation): an example
    found bad by several pipelines counts once (told apart by the file, `BadExampleError.path`),
    so `count` is the number of bad files skipped.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self.messages = []
        self.errors = []
        self._keys = set()

    def add(self, error):
        """Records a BadExampleError (or its message); a file already recorded is ignored."""
        message = str(error)
        key = getattr(error, "path", None) or message
        with self._lock:
            if key in self._keys:
                return
            self._keys.add(key)
            self.messages.append(message)
            self.errors.append(error)
        logging.warning("skipping bad example: %s", message)

    @property
    def count(self):
        with self._lock:
            return len(self.messages)

    def summary(self) -> dict:
        """{"count": number of bad files skipped, "messages": their errors} for results files."""
        with self._lock:
            return {"count": len(self.messages), "messages": list(self.messages)}


def _uses_tfrecords(ds):
    return getattr(ds, "tfrecord_dir", None) is not None


def split_ids(ds, split) -> list:
    """Example ids of a split, from the TFRecord metadata or the file listing."""
    if _uses_tfrecords(ds):
        return list(tfrecords.read_metadata(ds.tfrecord_dir, split, ds.info.name)["ids"])
    return [ref.id for ref in ds.examples(split)]


def select_refs(ds, split, ids: Sequence[str]) -> list:
    """The ExampleRefs of `ids` (in that order) within `split`; KeyError names unknown ids."""
    by_id = {ref.id: ref for ref in ds.examples(split)}
    unknown = [i for i in ids if i not in by_id]
    if unknown:
        raise KeyError(f"ids not in {ds.info.name} split {split!r}: {unknown[:5]}")
    return [by_id[i] for i in ids]


def find_bad_examples(ds, refs, num_threads=4):
    """Loads every example once: (good refs in order, list of BadExampleError)."""
    def check(ref):
        try:
            ds.load(ref)
            return None
        except BadExampleError as err:
            return err

    with concurrent.futures.ThreadPoolExecutor(num_threads) as pool:
        errors = list(pool.map(check, refs))
    good = [ref for ref, err in zip(refs, errors) if err is None]
    return good, [err for err in errors if err is not None]


def _scan_split_once(ds, split, refs):
    """find_bad_examples over a split, remembered on `ds` so rebuilding a pipeline (e.g. when
    a run resumes at another step) does not decode the whole split again."""
    scans = ds.__dict__.setdefault("_bad_example_scans", {})
    if split not in scans:
        scans[split] = find_bad_examples(ds, refs)
    return scans[split]


def usable_refs(ds, split, skip_bad_examples=False, bad_example_log=None) -> list:
    """The ExampleRefs of `split` (a name, or a list of ExampleRefs) that a pipeline may read.

    Without `skip_bad_examples`: all of them (a bad one stops the pipeline that reads it). With
    it: the examples that load, found by one scan per split name (or per list) remembered on
    `ds`; the bad ones go to `bad_example_log`. Stage 1, map sets, D data, the hold-out set and
    the evaluations all select their examples here, so they skip the same files.
    """
    if isinstance(split, str):
        refs, key = ds.examples(split), split
    else:
        refs = list(split)
        key = ("refs",) + tuple(ref.id for ref in refs)
    if not skip_bad_examples:
        return refs
    good, errors = _scan_split_once(ds, key, refs)
    if bad_example_log is not None:
        for error in errors:
            bad_example_log.add(error)
    return list(good)


def _no_example():
    """Placeholder loader outputs of an example that is skipped or failed."""
    return np.zeros((1, 1, 3), np.uint8), np.zeros((1, 1), np.uint8), False


def _file_loader(ds, refs, skip, log, max_size=None):
    """numpy function: example index -> (image uint8 [H,W,3], label uint8 [H,W], ok bool,
    error bytes: empty, or a user error for `batches.assert_no_error`)."""
    @reports_errors_with(_no_example)
    def load(index):
        ref = refs[int(index)]
        try:
            image, label = ds.load(ref)
        except BadExampleError as err:
            if not skip:
                raise
            log.add(err)
            return _no_example()
        if label is None:
            label = np.full(image.shape[:2], IGNORE_LABEL, np.uint8)
        _check_fits(image, max_size, ref.image_path)
        return image, label, True
    return load


def _record_loader(num_classes, skip, log, max_size=None):
    """numpy function: parsed record fields -> (image, label, ok) as in _file_loader."""
    @reports_errors_with(_no_example)
    def load(example_id, image_bytes, filename, label_png):
        try:
            image, label = tfrecords.decode_record(example_id, image_bytes, filename,
                                                   label_png, num_classes)
        except BadExampleError as err:
            if not skip:
                raise
            log.add(err)
            return _no_example()
        _check_fits(image, max_size, filename.decode())
        return image, label, True
    return load


def _check_fits(image, max_size, name):
    if max_size is not None and (image.shape[0] > max_size[0] or image.shape[1] > max_size[1]):
        raise BadExampleError(name, f"image {image.shape[0]}x{image.shape[1]} is larger than "
                              f"eval_crop_size {max_size[0]}x{max_size[1]}; pass a larger "
                              "--eval_crop_size")


def _numpy_decode(fn, args):
    image, label, ok, error = tf.numpy_function(fn, args, [tf.uint8, tf.uint8, tf.bool, tf.string],
                                                stateful=False)
    with tf.control_dependencies([assert_no_error(error)]):
        image, label, ok = tf.identity(image), tf.identity(label), tf.identity(ok)
    image.set_shape([None, None, 3])
    label.set_shape([None, None])
    ok.set_shape([])
    return image, label, ok


def _example_index(position, num_examples, seed, shuffle):
    """Index into the split of training example number `position` (see module docstring)."""
    if not shuffle:
        return position % num_examples
    epoch = position // num_examples
    keys = tf.random.stateless_uniform(
        [num_examples], seed=tf.stack([tf.constant(seed, tf.int64), -1 - epoch]))
    return tf.gather(tf.argsort(keys), position % num_examples)


def augment(image, label, position, seed, crop_size, random_scale=(1.0, 1.0), flip=True):
    """Random scale, pad (127.5 / 255) to >= crop, random crop and flip of one example.

    image uint8 [H,W,3], label uint8 [H,W] -> (pixels float32 [ch,cw,3], labels int32 [ch,cw]).
    The randomness is a function of (seed, position) only.
    """
    pixels, maps = augment_with_maps(image, label[..., None], position, seed, crop_size,
                                     random_scale, flip)
    return pixels, maps[..., 0]


def augment_with_maps(image, maps, position, seed, crop_size, random_scale=(1.0, 1.0),
                      flip=True):
    """`augment` of an image and C label-like maps with one crop: maps int [H,W,C] ->
    (pixels float32 [ch,cw,3], maps int32 [ch,cw,C]); maps are scaled by nearest neighbour
    and padded with the ignore label. Same random draws as `augment` for (seed, position)."""
    crop_h, crop_w = crop_size
    seeds = tf.random.experimental.stateless_split(
        tf.stack([tf.constant(seed, tf.int64), tf.cast(position, tf.int64)]), num=4)
    pixels = tf.cast(image, tf.float32)
    label = tf.cast(maps, tf.int32)
    min_scale, max_scale = random_scale
    if (min_scale, max_scale) != (1.0, 1.0):
        scale = tf.random.stateless_uniform([], seeds[0], min_scale, max_scale)
        new_size = tf.cast(tf.cast(tf.shape(pixels)[:2], tf.float32) * scale, tf.int32)
        # DeepLab's TF1 resize_bilinear / resize_nearest_neighbor with align_corners=True.
        pixels = tf.raw_ops.ResizeBilinear(images=pixels[None], size=new_size,
                                           align_corners=True)[0]
        label = tf.raw_ops.ResizeNearestNeighbor(images=label[None], size=new_size,
                                                 align_corners=True)[0]
    height, width = tf.shape(pixels)[0], tf.shape(pixels)[1]
    pad_h = tf.maximum(crop_h - height, 0)
    pad_w = tf.maximum(crop_w - width, 0)
    pixels = tf.pad(pixels, [[0, pad_h], [0, pad_w], [0, 0]], constant_values=PAD_PIXEL_VALUE)
    label = tf.pad(label, [[0, pad_h], [0, pad_w], [0, 0]], constant_values=IGNORE_LABEL)
    top = tf.random.stateless_uniform([], seeds[1], 0, height + pad_h - crop_h + 1, tf.int32)
    left = tf.random.stateless_uniform([], seeds[2], 0, width + pad_w - crop_w + 1, tf.int32)
    pixels = pixels[top:top + crop_h, left:left + crop_w]
    label = label[top:top + crop_h, left:left + crop_w]
    if flip:
        mirror = tf.random.stateless_uniform([], seeds[3]) < 0.5
        pixels = tf.where(mirror, tf.reverse(pixels, [1]), pixels)
        label = tf.where(mirror, tf.reverse(label, [1]), label)
    pixels.set_shape([crop_h, crop_w, 3])
    label.set_shape([crop_h, crop_w, maps.shape[-1]])
    return pixels, label


def _tfrecord_stream(paths, seed, shuffle):
    """One epoch of serialized records; shuffled (shard order + buffer) with fixed seeds."""
    files = tf.data.Dataset.from_tensor_slices(paths)
    if shuffle:
        files = files.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    records = files.flat_map(tf.data.TFRecordDataset)
    if shuffle:
        records = records.shuffle(_SHUFFLE_BUFFER, seed=seed + 1, reshuffle_each_iteration=True)
    return records


def train_dataset(ds, split, global_batch_size, crop_size, seed, random_scale=(1.0, 1.0),
                  flip=True, skip_bad_examples=False, shuffle=True, repeat=True, start_step=0,
                  input_context=None, bad_example_log=None):
    """Training batches (pixels float32 [b,ch,cw,3] in [0,255], labels int32 [b,ch,cw]).

    b = global_batch_size, or the per-replica batch size with `input_context`. `crop_size` is
    an int or (height, width); None means `ds.info.crop_size`. `random_scale` = (min, max) scale factor. Without `repeat`,
    one epoch of whole global batches. Batches of step `start_step` come first. With
    `skip_bad_examples`, file data sets are scanned once up front (so resume stays exact) and
    bad examples go to `bad_example_log` (a BadExampleLog) and the log.
    """
    crop = as_size(ds.info.crop_size if crop_size is None else crop_size)
    global_batch_size = int(global_batch_size)
    num_pipelines, pipeline_id, batch_size = 1, 0, global_batch_size
    if input_context is not None:
        num_pipelines = input_context.num_input_pipelines
        pipeline_id = input_context.input_pipeline_id
        batch_size = input_context.get_per_replica_batch_size(global_batch_size)
    if global_batch_size % num_pipelines or (global_batch_size // num_pipelines) % batch_size:
        raise ValueError(f"global batch size {global_batch_size} does not split into "
                         f"{num_pipelines} input pipelines of per-replica batches {batch_size}")
    log = bad_example_log if bad_example_log is not None else BadExampleLog()
    num_classes = ds.info.num_classes
    first = int(start_step) * global_batch_size

    if _uses_tfrecords(ds):
        num_examples = tfrecords.read_metadata(ds.tfrecord_dir, split,
                                               ds.info.name)["num_examples"]
        records = _tfrecord_stream(tfrecords.shard_paths(ds.tfrecord_dir, split, ds.info.name),
                                   seed, shuffle)
        if repeat:
            records = records.repeat()
        else:
            records = records.take(num_examples // global_batch_size * global_batch_size)
        stream = records.enumerate().skip(first)
        loader = _record_loader(num_classes, skip_bad_examples, log)

        def decode(position, record):
            fields = tfrecords.parse(record)
            return (position,) + _numpy_decode(loader, [
                fields["id"], fields["image/encoded"], fields["image/filename"],
                fields["label/encoded"]])
    else:
        refs = usable_refs(ds, split, skip_bad_examples, log)
        if skip_bad_examples:
            logging.info("%s %s: %d usable examples (bad ones skipped)", ds.info.name, split,
                         len(refs))
        num_examples = len(refs)
        if num_examples == 0:
            raise ValueError(f"{ds.info.name} split {split!r} has no usable examples")
        end = _FOREVER if repeat else num_examples // global_batch_size * global_batch_size
        stream = tf.data.Dataset.range(first, max(first, end))
        loader = _file_loader(ds, refs, False, log)

        def decode(position):
            index = _example_index(position, num_examples, seed, shuffle)
            return (position,) + _numpy_decode(loader, [index])

    if not repeat and num_examples < global_batch_size:
        raise ValueError(f"{ds.info.name} split {split!r} has {num_examples} examples, fewer "
                         f"than one global batch of {global_batch_size}")
    if num_pipelines > 1:
        share = global_batch_size // num_pipelines
        stream = stream.filter(lambda position, *_: tf.equal(
            position % global_batch_size // share, pipeline_id))
    examples = stream.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if skip_bad_examples and _uses_tfrecords(ds):
        examples = examples.filter(lambda position, image, label, ok: ok)

    def augment_one(position, image, label, ok):
        del ok
        return augment(image, label, position, seed, crop, random_scale, flip)

    examples = examples.map(augment_one, num_parallel_calls=tf.data.AUTOTUNE,
                            deterministic=True)
    return examples.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def eval_dataset(ds, split: Union[str, Sequence], batch_size, eval_crop_size=None,
                 skip_bad_examples=False, cache=False, bad_example_log=None):
    """Evaluation batches, no augmentation, in split (or given) order.

    `split` is a split name or a list of ExampleRefs / ids (e.g. the hold-out set). Yields dicts:
    pixels float32 [B,H,W,3] and labels int32 [B,H,W] padded bottom/right to
    `eval_crop_size` (int or (H, W); None: the largest in the batch) with 127.5 / 255,
    sizes int32 [B,2] = original (height, width), ids string [B]. Unlabelled splits give
    all-255 labels. `cache=True` keeps the decoded uint8 examples in memory after the first
    pass (for the hold-out set evaluated after every step). The last batch may be smaller.
    """
    max_size = None if eval_crop_size is None else as_size(eval_crop_size)
    log = bad_example_log if bad_example_log is not None else BadExampleLog()
    num_classes = ds.info.num_classes
    if _uses_tfrecords(ds):
        if isinstance(split, str):
            split_name, wanted = split, None
        else:
            items = list(split)
            wanted = [item.id if isinstance(item, ExampleRef) else str(item) for item in items]
            split_name = _split_holding(ds, wanted)
        records = tf.data.TFRecordDataset(tfrecords.shard_paths(ds.tfrecord_dir, split_name,
                                                                ds.info.name))
        fields = records.map(tfrecords.parse)
        if wanted is not None:
            wanted_ids = tf.constant(wanted)
            fields = fields.filter(lambda f: tf.reduce_any(tf.equal(f["id"], wanted_ids)))
        loader = _record_loader(num_classes, skip_bad_examples, log, max_size)

        def decode(f):
            image, label, ok = _numpy_decode(loader, [f["id"], f["image/encoded"],
                                                      f["image/filename"], f["label/encoded"]])
            return image, label, f["id"], ok
        examples = fields.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    else:
        refs = ds.examples(split) if isinstance(split, str) else list(split)
        if refs and not isinstance(refs[0], ExampleRef):
            raise TypeError("eval_dataset on files takes a split name or a list of ExampleRef "
                            "(see select_refs)")
        loader = _file_loader(ds, refs, skip_bad_examples, log, max_size)
        ids = tf.constant([ref.id for ref in refs], tf.string)

        def decode(index):
            image, label, ok = _numpy_decode(loader, [index])
            return image, label, tf.gather(ids, index), ok
        examples = tf.data.Dataset.range(len(refs)).map(
            decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if skip_bad_examples:
        examples = examples.filter(lambda image, label, example_id, ok: ok)
    if cache:
        examples = examples.cache()

    def to_model_input(image, label, example_id, ok):
        del ok
        return {"pixels": tf.cast(image, tf.float32), "labels": tf.cast(label, tf.int32),
                "sizes": tf.shape(label)[:2], "ids": example_id}

    examples = examples.map(to_model_input, num_parallel_calls=tf.data.AUTOTUNE)
    height, width = max_size if max_size is not None else (None, None)
    batches = examples.padded_batch(
        int(batch_size),
        padded_shapes={"pixels": [height, width, 3], "labels": [height, width], "sizes": [2],
                       "ids": []},
        padding_values={"pixels": PAD_PIXEL_VALUE, "labels": IGNORE_LABEL, "sizes": 0, "ids": ""})
    return batches.prefetch(tf.data.AUTOTUNE)


def _split_holding(ds, ids):
    """The TFRecord split whose ids include all of `ids` (val first)."""
    for split in ("val",) + tuple(s for s in ds.splits if s != "val"):
        try:
            have = set(split_ids(ds, split))
        except FileNotFoundError:
            continue
        if have.issuperset(ids):
            return split
    raise KeyError(f"no TFRecord split in {ds.tfrecord_dir} holds all ids {list(ids)[:5]}...")


def holdout_ids(ds, run_dir, fraction=0.3, seed=0, split="val", available=None) -> list:
    """The hold-out ids: a seeded `fraction` of `split` (of its ids in `available` when
    given, e.g. the usable ones under `skip_bad_examples`), written once to
    run_dir/holdout_ids.txt and read back by every later call."""
    path = os.path.join(run_dir, HOLDOUT_FILE)
    in_split = split_ids(ds, split)
    available = in_split if available is None else list(available)
    if os.path.isfile(path):
        ids = read_id_list(path)
        unknown = sorted(set(ids) - set(in_split))
        if unknown or not ids:
            raise ValueError(f"{path}: lists ids not in {ds.info.name} split {split!r}: "
                             f"{unknown[:5]}" if unknown else f"{path}: is empty")
        return ids
    if not 0 < fraction <= 1:
        raise ValueError(f"hold-out fraction must be in (0, 1], got {fraction}")
    if not available:
        raise ValueError(f"{ds.info.name} split {split!r} is empty")
    count = max(1, int(round(fraction * len(available))))
    chosen = np.random.default_rng(seed).permutation(len(available))[:count]
    ids = [available[i] for i in sorted(chosen)]
    os.makedirs(run_dir, exist_ok=True)
    write_id_list_atomic(path, ids)
    return ids
