"""Cityscapes instance-level IoU (nIoU) and category IoU / nIoU, as the official evaluator
(``cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling``) computes them.

The official command fails on numpy >= 2.4 (it calls the removed ``np.in1d``); this module
stands in for it on our predictions, with the same definitions:

- nIoU of a class with instances (person, rider, car, truck, bus, train, motorcycle, bicycle):
  every ground-truth instance (``gtFine_instanceIds.png`` value ``label_id * 1000 + k`` > 1000)
  adds its true-positive / false-negative pixel counts weighted by
  ``AVERAGE_INSTANCE_SIZE[class] / instance size``; false positives are the class's usual ones
  (pixels of other evaluated classes predicted as it). nIoU = TPw / (TPw + FP + FNw). Other
  classes have no nIoU (None, left out of the mean).
- category IoU: IoU of the 7 categories (flat, construction, object, nature, sky, human, vehicle)
  from the train-id confusion matrix with the classes of a category merged;
- category nIoU: as the class nIoU for the categories made of instance classes only (human,
  vehicle), a pixel of an instance counting as a hit when it is predicted as any class of the
  instance's category.

Predictions are train ids (0..18). The official vehicle category also holds caravan and trailer,
which are ignored in the ground truth and never predicted by a 19-class model, so the results are
the same. Means are over the classes / categories that have a score (the official
``getScoreAverage`` skips NaN).
"""
import os

import numpy as np

from deeplab_load.data import tfrecords
from deeplab_load.data.cityscapes import (CLASS_NAMES, LABEL_ID_TO_TRAIN_ID, LABEL_IDS_SUFFIX,
                                         decode_instance_ids, instance_ids_path,
                                         read_instance_ids)
from deeplab_load.data.common import BadExampleError

NUM_CLASSES = len(CLASS_NAMES)
CATEGORIES = (
    ("flat", (0, 1)),
    ("construction", (2, 3, 4)),
    ("object", (5, 6, 7)),
    ("nature", (8, 9)),
    ("sky", (10,)),
    ("human", (11, 12)),
    ("vehicle", (13, 14, 15, 16, 17, 18)),
)
"""(category name, train ids) of the evaluated classes."""
INSTANCE_CATEGORIES = ("human", "vehicle")

AVERAGE_INSTANCE_SIZE = {
    "person": 3462.4756337644, "rider": 3930.4788056518, "car": 12794.0202738185,
    "truck": 27855.1264367816, "bus": 35732.1511111111, "train": 67583.7075812274,
    "motorcycle": 6298.7200839748, "bicycle": 4672.3249222261,
}
"""Average instance size in pixels per class with instances (the official evaluator's
``avgClassSize``, measured on the Cityscapes training set); the nIoU weights."""

INSTANCE_TRAIN_IDS = tuple(CLASS_NAMES.index(name) for name in AVERAGE_INSTANCE_SIZE)
CATEGORY_OF_TRAIN_ID = np.full(256, -1, np.int64)
"""int64 [256]: train id -> category index (-1 for ignore)."""
for _index, (_, _train_ids) in enumerate(CATEGORIES):
    CATEGORY_OF_TRAIN_ID[list(_train_ids)] = _index

class InstanceStats:
    """Weighted true-positive / false-negative pixel sums over ground-truth instances.

    ``class_tp`` / ``class_fn``: float64 [19] (zero for classes without instances);
    ``category_tp`` / ``category_fn``: float64 [7] (zero except human and vehicle).
    Instances are added one at a time in increasing id order, image by image, as the official
    evaluator sums them (so the float sums agree to the last bit).
    """

    def __init__(self):
        self.class_tp = np.zeros(NUM_CLASSES)
        self.class_fn = np.zeros(NUM_CLASSES)
        self.category_tp = np.zeros(len(CATEGORIES))
        self.category_fn = np.zeros(len(CATEGORIES))
        self.num_instances = 0

    def add(self, predictions, instance_ids):
        """predictions: train ids [H, W]; instance_ids: int [H, W] from gtFine_instanceIds."""
        predictions = np.asarray(predictions)
        instance_ids = np.asarray(instance_ids, np.int64)
        if predictions.shape != instance_ids.shape:
            raise ValueError(f"predictions {predictions.shape} and instance ids "
                             f"{instance_ids.shape} differ in size")
        inside = instance_ids > 1000
        instances, inverse = np.unique(instance_ids[inside], return_inverse=True)
        if not instances.size:
            return
        predicted = predictions[inside].astype(np.int64)
        label_ids = instances // 1000
        train_ids = np.where(label_ids < 256, LABEL_ID_TO_TRAIN_ID[np.minimum(label_ids, 255)],
                             255).astype(np.int64)
        sizes = np.bincount(inverse, minlength=instances.size)
        hits = np.bincount(inverse[predicted == train_ids[inverse]], minlength=instances.size)
        category_hits = np.bincount(
            inverse[CATEGORY_OF_TRAIN_ID[predicted] == CATEGORY_OF_TRAIN_ID[train_ids[inverse]]],
            minlength=instances.size)
        for index, train_id in enumerate(train_ids):
            if train_id not in INSTANCE_TRAIN_IDS:
                continue  # ignored classes (caravan, trailer, ...) and classes without instances
            size, tp, category_tp = int(sizes[index]), int(hits[index]), int(category_hits[index])
            weight = AVERAGE_INSTANCE_SIZE[CLASS_NAMES[train_id]] / float(size)
            self.class_tp[train_id] += float(tp) * weight
            self.class_fn[train_id] += float(size - tp) * weight
            category = int(CATEGORY_OF_TRAIN_ID[train_id])
            self.category_tp[category] += float(category_tp) * weight
            self.category_fn[category] += float(size - category_tp) * weight
            self.num_instances += 1


def _ratio(tp, fp, fn):
    denominator = tp + fp + fn
    return None if denominator == 0 else float(tp) / float(denominator)


def _mean(values):
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def category_confusion(matrix):
    """int64 [7, 7] category confusion matrix from the train-id one [19, 19]."""
    matrix = np.asarray(matrix, np.int64)
    merged = np.zeros((len(CATEGORIES), len(CATEGORIES)), np.int64)
    category = CATEGORY_OF_TRAIN_ID[:NUM_CLASSES]
    np.add.at(merged, (category[:, None], category[None, :]), matrix)
    return merged


def instance_scores(matrix, stats=None):
    """Scores in [0, 1] (None where undefined) from the train-id confusion matrix [19, 19]
    (rows ground truth, columns predictions, ignore pixels not counted) and InstanceStats.

    Returns ``category_iou`` {category: IoU}, ``mean_category_iou`` and, with ``stats``,
    ``per_class_niou`` {class: nIoU or None}, ``mean_niou``, ``category_niou``,
    ``mean_category_niou``, ``num_instances``.
    """
    matrix = np.asarray(matrix, np.int64)
    if matrix.shape != (NUM_CLASSES, NUM_CLASSES):
        raise ValueError(f"need a {NUM_CLASSES}x{NUM_CLASSES} Cityscapes confusion matrix, got "
                         f"{matrix.shape}")
    merged = category_confusion(matrix)
    category_tp = np.diag(merged)
    category_fp = merged.sum(axis=0) - category_tp
    category_fn = merged.sum(axis=1) - category_tp
    names = [name for name, _ in CATEGORIES]
    results = {"category_iou": {name: _ratio(category_tp[i], category_fp[i], category_fn[i])
                                for i, name in enumerate(names)}}
    results["mean_category_iou"] = _mean(results["category_iou"].values())
    if stats is None:
        return results
    class_fp = matrix.sum(axis=0) - np.diag(matrix)
    results["per_class_niou"] = {
        name: (_ratio(stats.class_tp[c], class_fp[c], stats.class_fn[c])
               if c in INSTANCE_TRAIN_IDS else None)
        for c, name in enumerate(CLASS_NAMES)}
    results["mean_niou"] = _mean(results["per_class_niou"].values())
    results["category_niou"] = {
        name: (_ratio(stats.category_tp[i], category_fp[i], stats.category_fn[i])
               if name in INSTANCE_CATEGORIES else None)
        for i, name in enumerate(names)}
    results["mean_category_niou"] = _mean(results["category_niou"].values())
    results["num_instances"] = stats.num_instances
    return results


class InstanceLevelEvaluation:
    """Adds instance statistics batch by batch during an evaluation of Cityscapes.

    ``instance_sources``: example id -> its ``*_gtFine_instanceIds.png`` path, or the PNG bytes
    (from TFRecords written by deeplab_load_tools/build_tfrecords.py).
    """

    def __init__(self, instance_sources):
        self.instance_sources = dict(instance_sources)
        self.stats = InstanceStats()

    @classmethod
    def for_examples(cls, dataset, examples, split=None):
        """An evaluation of these examples (ExampleRefs, or ids of TFRecords of the named
        ``split``) of the Cityscapes data set when every one has instance ids: files beside
        the labels, or PNGs in our TFRecords. None otherwise (other data sets, research/deeplab
        records, missing files)."""
        if dataset.info.name != "cityscapes":
            return None
        tfrecord_dir = getattr(dataset, "tfrecord_dir", None)
        if tfrecord_dir is not None:
            if not isinstance(split, str):
                return None
            pngs = tfrecords.instance_pngs(tfrecord_dir, split, dataset.info.name)
            ids = [getattr(item, "id", item) for item in examples]
            if not ids or any(i not in pngs for i in ids):
                return None
            return cls({i: pngs[i] for i in ids})
        paths = {}
        for ref in examples:
            label_path = getattr(ref, "label_path", None)
            if label_path is None or not label_path.endswith(LABEL_IDS_SUFFIX):
                return None
            paths[ref.id] = instance_ids_path(label_path)
            if not os.path.isfile(paths[ref.id]):
                return None
        return cls(paths) if paths else None

    def _instance_ids(self, example_id):
        source = self.instance_sources[example_id]
        if isinstance(source, bytes):
            return decode_instance_ids(source, f"instance ids of TFRecord example {example_id}")
        return read_instance_ids(source)

    def add_batch(self, predictions, sizes, ids):
        """predictions int [B, H, W] (padded), sizes int [B, 2], ids bytes/str [B]."""
        for prediction, (height, width), example_id in zip(predictions, sizes, ids):
            if isinstance(example_id, bytes):
                example_id = example_id.decode()
            instance_ids = self._instance_ids(example_id)
            if instance_ids.shape != (height, width):
                raise BadExampleError(
                    f"instance ids of {example_id}", f"{instance_ids.shape[0]}x"
                    f"{instance_ids.shape[1]} differ from the image size {height}x{width}")
            self.stats.add(prediction[:height, :width], instance_ids)

    def results(self, matrix):
        return instance_scores(matrix, self.stats)


def _percent(value):
    return "n/a" if value is None else f"{100.0 * value:.2f}"


def format_markdown(results):
    """Markdown tables of the Cityscapes nIoU and category scores in ``results`` ('' if none)."""
    if "category_iou" not in results:
        return ""
    lines = []
    if "per_class_niou" in results:
        lines += ["", "| class | IoU (%) | nIoU (%) |", "|---|---:|---:|"]
        for name in CLASS_NAMES:
            lines.append(f"| {name} | {_percent(results['per_class_iou'][name])} | "
                         f"{_percent(results['per_class_niou'][name])} |")
        lines.append(f"| **mean** | **{_percent(results['miou'])}** | "
                     f"**{_percent(results['mean_niou'])}** |")
    has_niou = "category_niou" in results
    lines += ["", "| category | IoU (%) |" + (" nIoU (%) |" if has_niou else ""),
              "|---|---:|" + ("---:|" if has_niou else "")]
    for name, _ in CATEGORIES:
        row = f"| {name} | {_percent(results['category_iou'][name])} |"
        if has_niou:
            row += f" {_percent(results['category_niou'][name])} |"
        lines.append(row)
    mean = f"| **mean** | **{_percent(results['mean_category_iou'])}** |"
    if has_niou:
        mean += f" **{_percent(results['mean_category_niou'])}** |"
    lines.append(mean)
    return "\n".join(lines) + "\n"
