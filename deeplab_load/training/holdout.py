"""Hold-out mIoU of the working generator, evaluated after every LoAd propagation.

The hold-out images are decoded once and kept in memory (uint8, `eval_dataset(cache=True)`);
each evaluation is one batched pass of a compiled function that returns the confusion matrix.
Padding pixels carry the ignore label, so predictions are compared on the padded canvas without
cropping, which equals the original eval (logits upsampled to the padded crop, then cropped).
"""
import numpy as np
import tensorflow as tf

from deeplab_load import metrics
from deeplab_load.data import pipeline
from deeplab_load.data.batches import Batches
from deeplab_load.evaluation import shared_confusion_matrix_function
from deeplab_load.inference import label_map_function


class HoldoutEvaluator:
    """mIoU (and label maps) of `model` on fixed hold-out examples.

    Args:
      model: the generator (raw pixels in, raw logits out).
      ds: data set; refs: list of ExampleRef of the hold-out images.
      batch_size: evaluation batch; eval_crop_size: padding canvas (H, W) or None.
    """

    def __init__(self, model, ds, refs, batch_size, eval_crop_size):
        self.model = model
        self.num_classes = ds.info.num_classes
        self.dataset = pipeline.eval_dataset(ds, refs, batch_size, eval_crop_size, cache=True)
        self._confusion = shared_confusion_matrix_function(model, self.num_classes)
        self._maps = label_map_function(model)

    def confusion_matrix(self):
        """int64 [K, K] confusion matrix (rows ground truth) over the hold-out set."""
        total = tf.zeros([self.num_classes, self.num_classes], tf.int64)
        with Batches(self.dataset) as batches:
            for batch in batches:
                total += self._confusion(batch["pixels"], batch["labels"])
        return total.numpy()

    def mean_iou(self):
        return metrics.mean_iou(self.confusion_matrix())

    def examples_with_maps(self):
        """Yields (pixels uint8 [h,w,3], labels uint8 [h,w], predicted map uint8 [h,w]) per image."""
        with Batches(self.dataset) as batches:
            batches = list(batches)
        for batch in batches:
            maps = self._maps(batch["pixels"]).numpy()
            pixels = batch["pixels"].numpy()
            labels = batch["labels"].numpy()
            for i, (height, width) in enumerate(batch["sizes"].numpy()):
                yield (pixels[i, :height, :width].astype(np.uint8),
                       labels[i, :height, :width].astype(np.uint8),
                       maps[i, :height, :width].astype(np.uint8))
