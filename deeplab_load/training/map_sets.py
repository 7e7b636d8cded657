"""Label-map sets for the discriminator: written by a generator, streamed back from disk.

A set is one folder with `<example id>.png` (uint8 label map at the image's own size) for every
training image. Sets are written batch by batch (memory does not grow with the data set); the
buffer (`lookahead.buffer`) makes a whole set appear atomically.

The discriminator sees every example as the generator's adversarial batches show it
(`discriminator_view`): a training crop (scale, pad, crop, flip of `pipeline.augment`) of the
image with its ground truth or its generated map; docs/DISCRIMINATOR.md states the choice.

Beside its PNGs a set keeps `holdout_maps.npz`: the same generator's maps of the hold-out images
and the snapshot they came from, so D's early stopping can score the newest set's generator on
the hold-out too (`write_holdout_maps`, `read_holdout_maps`).
"""
import json
import os

import numpy as np
import tensorflow as tf

from deeplab_load.data import pipeline
from deeplab_load.data.batches import Batches, assert_no_error, reports_errors_with
from deeplab_load.data.common import IGNORE_LABEL, BadExampleError, as_size, decode_index_png, \
    encode_index_png, read_bytes
from deeplab_load.inference import label_map_function
from deeplab_load.errors import DamagedFileError
from deeplab_load.lookahead.buffer import RESTART_LOAD_FIX
from deeplab_load.output_folder import inside
from deeplab_load.overlap import WriteBehind, overlap_enabled
from deeplab_load.replicated import groups, is_replicated, replicated_inference
from deeplab_load.training.safety import kill_points


HOLDOUT_MAPS_FILE = "holdout_maps.npz"


def write_holdout_maps(set_dir, maps, tag, snapshot):
    """Stores the maps (uint8 [h,w] per hold-out image, in the evaluator's order) of the
    generator `tag` whose checkpoint is `snapshot` (its name in the generator store) into
    `set_dir`."""
    arrays = {f"map_{i:05d}": np.asarray(m, np.uint8) for i, m in enumerate(maps)}
    arrays["source"] = np.array(json.dumps({"tag": tag, "snapshot": snapshot,
                                            "count": len(maps)}))
    path = os.path.join(set_dir, HOLDOUT_MAPS_FILE)
    with open(path + ".tmp", "wb") as f:
        np.savez(f, **arrays)
    os.replace(path + ".tmp", path)


def read_holdout_maps(set_dir):
    """({"tag", "snapshot", "count"}, [map uint8 [h,w]]) written by `write_holdout_maps`, or
    None for a set without them (written before they existed); DamagedFileError naming the
    file when unreadable."""
    path = os.path.join(set_dir, HOLDOUT_MAPS_FILE)
    if not os.path.exists(path):
        return None
    fix = RESTART_LOAD_FIX.format(root=os.path.dirname(os.path.abspath(set_dir)))
    try:
        with np.load(path, allow_pickle=False) as data:
            source = json.loads(str(data["source"]))
            maps = [data[f"map_{i:05d}"] for i in range(source["count"])]
    except (OSError, ValueError, KeyError, EOFError) as err:
        raise DamagedFileError(f"{path}: damaged ({type(err).__name__}: {err}); {fix}") from err
    return source, maps


def map_path(set_dir, example_id):
    """`set_dir/<example_id>.png`, refused if the id would leave `set_dir`."""
    return inside(set_dir, f"{example_id}.png")


def write_label_map_set(model, ds, refs, set_dir, batch_size, eval_crop_size, strategy=None,
                        overlap=None):
    """Writes `model`'s label maps of `refs` as PNGs into `set_dir`; returns the image count.

    With `overlap` (default: when a GPU is visible, `overlap.overlap_enabled`) a batch's PNGs are
    encoded and written in a background thread while the next batch is computed
    (`overlap.WriteBehind`); every file is written when this returns, the same bytes. Under a
    `strategy` with several replicas each replica computes one of every R consecutive batches (`replicated`)
    and every worker writes the whole set into its `set_dir` (the maps are gathered): the same
    bytes as one device writes."""
    dataset = pipeline.eval_dataset(ds, refs, batch_size, eval_crop_size)
    count = 0
    os.makedirs(set_dir, exist_ok=True)
    with Batches(dataset) as batches, WriteBehind(enabled=overlap_enabled(overlap)) as writer:
        for batch, maps in _batches_with_maps(model, ds.info.num_classes, batches, strategy):
            ids = [example_id.decode() for example_id in batch["ids"].numpy()]
            writer.submit(_write_maps, set_dir, maps.astype(np.uint8), batch["sizes"].numpy(),
                          ids)
            count += len(ids)
            for _ in range(writer.finished()):
                kill_points.kill_if_reached("map_batch")
        for _ in range(writer.wait()):
            kill_points.kill_if_reached("map_batch")
    return count


def _write_maps(set_dir, maps, sizes, ids):
    """One batch's PNGs: maps uint8 [B,H,W] cropped to sizes [B,2], named by ids."""
    for label_map, (height, width), example_id in zip(maps, sizes, ids):
        with open(map_path(set_dir, example_id), "wb") as f:
            f.write(encode_index_png(label_map[:height, :width]))


def _batches_with_maps(model, num_classes, batches, strategy):
    """(batch, label maps numpy [B,H,W]) of `pipeline.eval_dataset` batches: on one device, or
    on every replica of `strategy` (one batch each, maps gathered)."""
    if not is_replicated(strategy):
        predict = label_map_function(model)
        for batch in batches:
            yield batch, predict(batch["pixels"]).numpy()
        return
    runner = replicated_inference(strategy, model, num_classes)
    for group in groups(batches, runner.replicas):
        _, maps = runner.run([(batch["pixels"].numpy(), batch["labels"].numpy())
                              for batch in group], with_maps=True)
        yield from zip(group, maps)


def _load_triple(ds, refs, set_dir):
    """numpy function: index -> (image uint8 [H,W,3], [ground truth, map] int32 [H,W,2]).

    Without `set_dir` the map channel repeats the ground truth (the real side); a bad file gives
    an error for `batches.assert_no_error` (see `batches.reports_errors`)."""
    @reports_errors_with(lambda: (np.zeros((1, 1, 3), np.uint8), np.zeros((1, 1, 2), np.int32)))
    def load(index):
        ref = refs[int(index)]
        image, label = ds.load(ref)
        label_map = label
        if set_dir is not None:
            path = map_path(set_dir, ref.id)
            fix = RESTART_LOAD_FIX.format(root=os.path.dirname(os.path.abspath(set_dir)))
            try:
                label_map = decode_index_png(read_bytes(path), path)
            except BadExampleError as err:
                raise BadExampleError(err.path, f"{err.reason}; the buffer set {set_dir} is "
                                                f"damaged: {fix}") from err
            if label_map.shape != label.shape:
                raise BadExampleError(path, f"map size {label_map.shape} differs from the label "
                                      f"size {label.shape}; the buffer set {set_dir} is "
                                      f"damaged: {fix}")
        return image, np.stack([label, label_map], axis=-1).astype(np.int32)
    return load


def discriminator_view(image, label, label_map, position, seed, crop_size,
                       random_scale=(1.0, 1.0), flip=True):
    """The one geometry of D's data: the generator's training crop of an image and its maps.

    image uint8 [H,W,3], label (ground truth) and label_map int [H,W] -> (pixels float32
    [ch,cw,3], label_map int32 [ch,cw], ignore_mask bool [ch,cw] = ground truth is ignore,
    padding included). Crop, scale and flip are `pipeline.augment`'s for (seed, position), as in
    the generator's adversarial batches; `discriminator.discriminator_inputs` then resizes the
    crop to D's input size for every input of D alike.
    """
    maps = tf.stack([tf.cast(label, tf.int32), tf.cast(label_map, tf.int32)], axis=-1)
    pixels, maps = pipeline.augment_with_maps(image, maps, position, seed, crop_size,
                                              random_scale, flip)
    return pixels, maps[..., 1], tf.equal(maps[..., 0], IGNORE_LABEL)


def _example_stream(ds, refs, crop_size, seed, set_dir=None, random_scale=(1.0, 1.0)):
    """tf.data over refs in a seeded order: `discriminator_view` of each example."""
    load = _load_triple(ds, refs, set_dir)
    crop_size = as_size(crop_size)

    def load_and_crop(position, index):
        image, maps, error = tf.numpy_function(load, [index], [tf.uint8, tf.int32, tf.string])
        with tf.control_dependencies([assert_no_error(error)]):
            image, maps = tf.identity(image), tf.identity(maps)
        image.set_shape([None, None, 3])
        maps.set_shape([None, None, 2])
        return discriminator_view(image, maps[..., 0], maps[..., 1], position, seed, crop_size,
                                  random_scale)

    order = tf.data.Dataset.range(len(refs)).shuffle(len(refs), seed=seed,
                                                     reshuffle_each_iteration=False)
    return order.enumerate().map(load_and_crop, num_parallel_calls=tf.data.AUTOTUNE,
                                 deterministic=True)


def real_examples(ds, refs, crop_size, seed, random_scale=(1.0, 1.0)):
    """Ground truth (real side of D): (pixels float32 [ch,cw,3], labels int32 [ch,cw], 255 =
    ignore) in `discriminator_view` geometry."""
    def to_real(pixels, labels, ignore):
        return pixels, tf.where(ignore, IGNORE_LABEL, labels)
    return _example_stream(ds, refs, crop_size, seed, random_scale=random_scale).map(to_real)


def fake_examples(ds, refs, set_dir, crop_size, seed, random_scale=(1.0, 1.0)):
    """One buffer set (fake side of D): (pixels, label_map int32 [ch,cw], ground-truth ignore
    mask bool [ch,cw]) in `discriminator_view` geometry."""
    return _example_stream(ds, refs, crop_size, seed, set_dir=set_dir, random_scale=random_scale)


def in_memory_examples(triples, crop_size, real, seed=0):
    """Hold-out data for D from (image uint8, labels uint8, map uint8) triples at their own size:
    one seeded `discriminator_view` crop per image (the same crop for real and fake).

    real=True gives (pixels, labels) with the ground truth; False gives (pixels, map, ignore).
    """
    crop_size = as_size(crop_size)
    images, maps, masks = [], [], []
    for position, (image, label, label_map) in enumerate(triples):
        pixels, cropped, ignore = discriminator_view(image, label, label if real else label_map,
                                                     position, seed, crop_size)
        images.append(pixels.numpy())
        maps.append(tf.where(ignore, IGNORE_LABEL, cropped).numpy() if real else cropped.numpy())
        masks.append(ignore.numpy())
    if real:
        return tf.data.Dataset.from_tensor_slices((np.stack(images), np.stack(maps)))
    return tf.data.Dataset.from_tensor_slices((np.stack(images), np.stack(maps), np.stack(masks)))
