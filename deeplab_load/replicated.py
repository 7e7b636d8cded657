"""Label maps and confusion matrices computed on every replica of a tf.distribute strategy.

The images are cut into batches exactly as on one device (`pipeline.eval_dataset` with batch B,
or the hold-out evaluator's batches). R consecutive batches form a *group*; replica r (its id in
the sync group, counted over all workers) computes batch r of the group. Every replica therefore
runs a batch the single-device code runs too -- the same images in the same order on the same
padded canvas -- so its label maps are the single-device ones, and the confusion matrices
(integer counts) summed over the replicas equal the single-device sum exactly.

Uneven shares: the last group may hold fewer than R batches (and its last batch fewer than B
images). A replica without a batch runs one dummy image (a copy of the group's first image with
every label ignore), whose confusion is zero and whose map is dropped: DeepLab's convolutions
refuse an empty batch, and every replica must take part in the collective ops.

Maps are gathered over the replicas (`all_gather`, each batch padded to the group's largest
batch and canvas), so every worker of a MultiWorkerMirroredStrategy holds the whole group's maps
and can write the same files as the chief. Under MultiWorkerMirroredStrategy every worker must
call `run` with the same groups (every worker reads the same stream of batches, as
`training.strategy.distribute_dataset` does for training).

    runner = replicated_inference(strategy, model, num_classes)
    for group in groups(batches, runner.replicas):          # batches: (pixels, labels) numpy
        confusion, maps = runner.run(group, with_maps=True)

`run_images` does the same for `predict`: one uint8 image per replica, padded inside the graph
with the ops of `multi_scale.predict_labels` (in bfloat16 the numpy-padded route of `run`
differed from one device's predict on a near-tie pixel).
"""
import itertools

import numpy as np
import tensorflow as tf

from deeplab_load import metrics, multi_scale
from deeplab_load.models.ops import IGNORE_LABEL
from deeplab_load.traced import PerModel, compiled


def is_replicated(strategy):
    """True when `strategy` has more than one replica (the single-device code runs otherwise)."""
    return strategy is not None and strategy.num_replicas_in_sync > 1


def groups(batches, size):
    """Lists of `size` consecutive items of the iterable `batches` (the last may be shorter)."""
    iterator = iter(batches)
    while True:
        group = list(itertools.islice(iterator, size))
        if not group:
            return
        yield group


class ReplicatedInference:
    """Groups of batches -> (confusion int64 [K,K] summed over the group, label maps).

    Args:
      strategy: tf.distribute strategy; `model` must have been built in its scope.
      model: raw pixels in, logits out (`build_deeplab`).
      eval_scales / add_flipped_images: `multi_scale.padded_label_maps`'s.
    """

    def __init__(self, strategy, model, num_classes, eval_scales=(1.0,),
                 add_flipped_images=False):
        self.strategy = strategy
        self.model = model
        self.num_classes = num_classes
        self.replicas = strategy.num_replicas_in_sync
        self.eval_scales = eval_scales
        self.add_flipped_images = add_flipped_images
        self._confusion = compiled(lambda pixels, labels: self._step(pixels, labels, None))
        self._confusion_and_maps = compiled(self._step)
        self._image_labels = compiled(self._images_step)

    def _replica(self, pixels, labels, gathered_shape):
        maps = multi_scale.padded_label_maps(self.model, pixels, self.eval_scales,
                                             self.add_flipped_images)
        confusion = metrics.confusion_matrix_batch(labels, maps, self.num_classes)
        if gathered_shape is None:
            return confusion
        return confusion, self._gather(maps, gathered_shape)

    def _step(self, pixels, labels, gathered_shape):
        out = self.strategy.run(self._replica, (pixels, labels, gathered_shape))
        if gathered_shape is None:
            return self.strategy.reduce(tf.distribute.ReduceOp.SUM, out, axis=None)
        confusion, maps = out
        return (self.strategy.reduce(tf.distribute.ReduceOp.SUM, confusion, axis=None),
                self.strategy.experimental_local_results(maps)[0])

    def _replica_images(self, images, canvas, gathered_shape):
        scores = multi_scale.image_scores_function(
            self.model, self.eval_scales, self.add_flipped_images).python_function(images, canvas)
        labels = tf.argmax(scores, axis=-1, output_type=tf.int32)
        return self._gather(labels, gathered_shape)

    def _images_step(self, images, canvas, gathered_shape):
        gathered = self.strategy.run(self._replica_images, (images, canvas, gathered_shape))
        return self.strategy.experimental_local_results(gathered)[0]

    @staticmethod
    def _gather(maps, gathered_shape):
        shape = tf.shape(maps)
        padded = tf.pad(maps, [[0, gathered_shape[0] - shape[0]],
                               [0, gathered_shape[1] - shape[1]],
                               [0, gathered_shape[2] - shape[2]]])
        return tf.distribute.get_replica_context().all_gather(padded, axis=0)

    def _distribute(self, values):
        return self.strategy.experimental_distribute_values_from_function(
            lambda context: values[context.replica_id_in_sync_group])

    def run(self, group, with_maps=False):
        """group: up to R batches (pixels float32 [b,H,W,3], labels int [b,H,W]) as numpy.

        Returns (confusion int64 numpy [K,K] of the whole group, maps): maps is None without
        `with_maps`, else one int32 numpy [b,H,W] per batch of the group, in order."""
        if not 0 < len(group) <= self.replicas:
            raise ValueError(f"a group holds 1 to {self.replicas} batches, got {len(group)}")
        pixels = [np.asarray(p, np.float32) for p, _ in group]
        labels = [np.asarray(l, np.int32) for _, l in group]
        dummy_labels = np.full((1,) + labels[0].shape[1:], IGNORE_LABEL, np.int32)
        while len(pixels) < self.replicas:
            pixels.append(pixels[0][:1])
            labels.append(dummy_labels)
        if not with_maps:
            confusion = self._confusion(self._distribute(pixels), self._distribute(labels))
            return confusion.numpy(), None
        shape = np.max([p.shape[:3] for p in pixels], axis=0).astype(np.int32)
        confusion, gathered = self._confusion_and_maps(
            self._distribute(pixels), self._distribute(labels), tf.constant(shape))
        gathered = gathered.numpy()
        maps = []
        for index, (batch_pixels, _) in enumerate(group):
            count, height, width = batch_pixels.shape[:3]
            start = index * shape[0]
            maps.append(gathered[start:start + count, :height, :width])
        return confusion.numpy(), maps

    def run_images(self, group):
        """group: up to R (uint8 image [h,w,3], padded size (H, W)) -> one label map int32 [h,w]
        per image: `multi_scale.predict_labels(model, image[None], size, ...)`'s, the same ops
        (the image padded with PAD_PIXEL_VALUE inside the graph, scores cropped, argmax)."""
        if not 0 < len(group) <= self.replicas:
            raise ValueError(f"a group holds 1 to {self.replicas} images, got {len(group)}")
        images = [np.asarray(image, np.uint8)[None] for image, _ in group]
        sizes = [np.asarray(size, np.int32) for _, size in group]
        while len(images) < self.replicas:
            images.append(images[0])
            sizes.append(sizes[0])
        shape = np.max([i.shape[:3] for i in images], axis=0).astype(np.int32)
        gathered = self._image_labels(self._distribute(images), self._distribute(sizes),
                                      tf.constant(shape)).numpy()
        return [gathered[index, :image.shape[0], :image.shape[1]]
                for index, (image, _) in enumerate(group)]


_RUNNERS = PerModel()


def replicated_inference(strategy, model, num_classes, eval_scales=(1.0,),
                         add_flipped_images=False):
    """The `ReplicatedInference` of (strategy, model, ...), kept per model (`traced.PerModel`)
    so repeated evaluations of a run's generator trace once."""
    key = (id(strategy), num_classes, multi_scale.normalize_scales(eval_scales),
           bool(add_flipped_images))
    return _RUNNERS.get(model, key, lambda: ReplicatedInference(
        strategy, model, num_classes, eval_scales, add_flipped_images))

