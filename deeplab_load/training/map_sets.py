"""Label-map sets for the discriminator: written by a generator, streamed back from disk.

A set is one folder with `<example id>.png` (uint8 label map at the image's own size) for every
training image. Sets are written batch by batch (memory does not grow with the data set); the
buffer (`lookahead.buffer`) makes a whole set appear atomically.

The discriminator sees every example at one fixed size (`size` x `size`): images are resized
bilinearly, label maps and the ground-truth ignore mask by nearest neighbour.
"""
import os

import numpy as np
import tensorflow as tf

from deeplab_load.data import pipeline
from deeplab_load.data.common import IGNORE_LABEL, decode_index_png, encode_index_png, read_bytes
from deeplab_load.inference import label_map_function


def map_path(set_dir, example_id):
    return os.path.join(set_dir, f"{example_id}.png")


def write_label_map_set(model, ds, refs, set_dir, batch_size, eval_crop_size):
    """Writes `model`'s label maps of `refs` as PNGs into `set_dir`; returns the image count."""
    dataset = pipeline.eval_dataset(ds, refs, batch_size, eval_crop_size)
    predict = label_map_function(model)
    count = 0
    for batch in dataset:
        maps = predict(batch["pixels"]).numpy().astype(np.uint8)
        for label_map, (height, width), example_id in zip(maps, batch["sizes"].numpy(),
                                                          batch["ids"].numpy()):
            path = map_path(set_dir, example_id.decode())
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(encode_index_png(label_map[:height, :width]))
            count += 1
    return count


def _resize_example(image, label_map, ignore_mask, size):
    image = tf.image.resize(tf.cast(image, tf.float32), (size, size), method="bilinear")
    nearest = lambda x: tf.image.resize(x[..., tf.newaxis], (size, size), method="nearest")[..., 0]
    return image, nearest(tf.cast(label_map, tf.int32)), nearest(tf.cast(ignore_mask, tf.int32)) > 0


def _example_stream(ds, refs, size, seed, set_dir=None):
    """tf.data over refs in a seeded order: (pixels [s,s,3], map [s,s], gt ignore mask [s,s])."""
    def load(index):
        ref = refs[int(index)]
        image, label = ds.load(ref)
        if set_dir is None:
            return image, label.astype(np.int32), label == IGNORE_LABEL
        path = map_path(set_dir, ref.id)
        label_map = decode_index_png(read_bytes(path), path)
        if label_map.shape != label.shape:
            raise ValueError(f"{path}: map size {label_map.shape} != label size {label.shape}")
        return image, label_map.astype(np.int32), label == IGNORE_LABEL

    def load_and_resize(index):
        image, label_map, ignore = tf.numpy_function(load, [index], [tf.uint8, tf.int32, tf.bool])
        image.set_shape([None, None, 3])
        label_map.set_shape([None, None])
        ignore.set_shape([None, None])
        return _resize_example(image, label_map, ignore, size)

    order = tf.data.Dataset.range(len(refs)).shuffle(len(refs), seed=seed,
                                                     reshuffle_each_iteration=False)
    return order.map(load_and_resize, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def real_examples(ds, refs, size, seed):
    """Ground truth (real side of D): (pixels float32 [s,s,3], labels int32 [s,s] with 255)."""
    def to_real(image, labels, ignore):
        del ignore
        return image, labels
    return _example_stream(ds, refs, size, seed).map(to_real)


def fake_examples(ds, refs, set_dir, size, seed):
    """One buffer set (fake side of D): (pixels, label_map int32 [s,s], gt ignore mask bool)."""
    return _example_stream(ds, refs, size, seed, set_dir=set_dir)


def in_memory_examples(triples, size, real):
    """Hold-out data for D from (image uint8, labels uint8, map uint8) triples at their own size.

    real=True gives (pixels, labels) with the ground truth; False gives (pixels, map, ignore).
    """
    images, maps, masks = [], [], []
    for image, label, label_map in triples:
        resized = _resize_example(image, label if real else label_map, label == IGNORE_LABEL, size)
        for store, value in zip((images, maps, masks), resized):
            store.append(value.numpy())
    if real:
        return tf.data.Dataset.from_tensor_slices((np.stack(images), np.stack(maps)))
    return tf.data.Dataset.from_tensor_slices((np.stack(images), np.stack(maps), np.stack(masks)))
