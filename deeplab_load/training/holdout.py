"""Hold-out mIoU of the working generator, evaluated after every LoAd propagation.

The hold-out images are decoded once and kept in memory as uint8; each evaluation pads them into
batches (one batch ahead in a background thread when a GPU is visible: `overlap.read_ahead`)
and runs a compiled function that returns the confusion matrix. No tf.data thread runs beside
the evaluation: on 2 cores its prefetching made about one evaluation in three 40% slower
(MobileNetV2, 8 images at 513: 309 instead of 215 ms).
Padding pixels carry the ignore label, so predictions are compared on the padded canvas without
cropping, which equals the original eval (logits upsampled to the padded crop, then cropped).

Under a strategy with several replicas every replica takes one of each R consecutive batches
(`replicated`): confusion matrices are summed over the replicas and the maps gathered, equal to
one device's. `dtype="bfloat16"` evaluates a bfloat16 twin of the model (`models.precision`)
that takes the model's current weights before every evaluation.
"""
import contextlib

import numpy as np
import tensorflow as tf

from deeplab_load import metrics
from deeplab_load.data import pipeline
from deeplab_load.replicated import groups, is_replicated, replicated_inference
from deeplab_load.data.batches import Batches
from deeplab_load.evaluation import shared_confusion_matrix_function
from deeplab_load.inference import label_map_function
from deeplab_load.models.ops import PAD_PIXEL_VALUE
from deeplab_load.models.precision import build_deeplab_in, check_compute_dtype, compute_dtype
from deeplab_load.overlap import overlap_enabled, read_ahead


class HoldoutEvaluator:
    """mIoU (and label maps) of `model` on fixed hold-out examples.

    Args:
      model: the generator (raw pixels in, raw logits out).
      ds: data set; refs: list of ExampleRef of the hold-out images.
      batch_size: evaluation batch (per replica); eval_crop_size: padding canvas (H, W) or None.
      strategy: the run's tf.distribute strategy (the model built in its scope), or None.
      dtype: "float32" or "bfloat16": the compute dtype of the evaluation and of the maps.
      overlap: pad the next batch in a background thread (default: when a GPU is visible).
    """

    def __init__(self, model, ds, refs, batch_size, eval_crop_size, strategy=None,
                 dtype="float32", overlap=None):
        self.model = model
        self.overlap = overlap_enabled(overlap)
        self.num_classes = ds.info.num_classes
        self.dataset = pipeline.eval_dataset(ds, refs, batch_size, eval_crop_size)
        self.strategy = strategy if is_replicated(strategy) else None
        self.dtype = check_compute_dtype(dtype)
        self._twin = None
        if compute_dtype(model) != dtype:
            with strategy.scope() if strategy is not None else contextlib.nullcontext():
                self._twin = build_deeplab_in(model.deeplab_config, dtype)
        computing = self._twin if self._twin is not None else model
        if self.strategy is not None:
            self._replicated = replicated_inference(self.strategy, computing, self.num_classes)
        else:
            self._confusion = shared_confusion_matrix_function(computing, self.num_classes)
            self._maps = label_map_function(computing)
        self._stored = None

    def computing_model(self):
        """The model the evaluation runs: `model`, or its twin in `dtype` holding `model`'s
        current weights."""
        if self._twin is not None:
            for twin, own in zip(self._twin.weights, self.model.weights):
                twin.assign(own)
        return self._twin if self._twin is not None else self.model

    def _batches(self):
        """Yields (pixels float32 [B,H,W,3], labels int32 [B,H,W], sizes int32 [B,2]) as
        `pipeline.eval_dataset` pads them, from the uint8 copies decoded on the first call."""
        if self._stored is None:
            stored = []
            with Batches(self.dataset) as batches:
                for batch in batches:
                    pixels, sizes = batch["pixels"].numpy(), batch["sizes"].numpy()
                    images = [pixels[i, :height, :width].astype(np.uint8)
                              for i, (height, width) in enumerate(sizes)]
                    stored.append((images, batch["labels"].numpy().astype(np.uint8),
                                   pixels.shape, sizes))
            self._stored = stored
        for images, labels, shape, sizes in self._stored:
            pixels = np.full(shape, PAD_PIXEL_VALUE, np.float32)
            for i, image in enumerate(images):
                pixels[i, :image.shape[0], :image.shape[1]] = image
            yield pixels, labels.astype(np.int32), sizes

    def _padded(self):
        return read_ahead(self._batches(), enabled=self.overlap)

    def confusion_matrix(self):
        """int64 [K, K] confusion matrix (rows ground truth) over the hold-out set."""
        self.computing_model()
        if self.strategy is not None:
            total = np.zeros([self.num_classes, self.num_classes], np.int64)
            for group in groups(self._padded(), self._replicated.replicas):
                total += self._replicated.run([(p, l) for p, l, _ in group])[0]
            return total
        total = tf.zeros([self.num_classes, self.num_classes], tf.int64)
        for pixels, labels, _ in self._padded():
            total += self._confusion(pixels, labels)
        return total.numpy()

    def mean_iou(self):
        return metrics.mean_iou(self.confusion_matrix())

    def examples_with_maps(self):
        """Yields (pixels uint8 [h,w,3], labels uint8 [h,w], predicted map uint8 [h,w]) per image."""
        self.computing_model()
        for pixels, labels, sizes, maps in self._batches_with_maps():
            for i, (height, width) in enumerate(sizes):
                yield (pixels[i, :height, :width].astype(np.uint8),
                       labels[i, :height, :width].astype(np.uint8),
                       maps[i, :height, :width].astype(np.uint8))

    def _batches_with_maps(self):
        """(pixels, labels, sizes, maps int [B,H,W]) per batch, on every replica when there are
        several."""
        if self.strategy is None:
            for pixels, labels, sizes in self._padded():
                yield pixels, labels, sizes, self._maps(pixels).numpy()
            return
        for group in groups(self._padded(), self._replicated.replicas):
            _, maps = self._replicated.run([(p, l) for p, l, _ in group], with_maps=True)
            for (pixels, labels, sizes), batch_maps in zip(group, maps):
                yield pixels, labels, sizes, batch_maps
