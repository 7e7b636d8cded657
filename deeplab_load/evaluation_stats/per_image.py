"""Per-image evaluation of a model on a split: one confusion matrix and one structure record
per image, as the bootstrap (`paired_bootstrap`) and the structural metric (`structure`) need.

Predictions are `evaluation.evaluate`'s: every image padded to the eval crop size through
`pipeline.eval_dataset`, the logits upsampled with align_corners (`inference.label_map_function`),
the argmax cropped back to the image. Summed over images, the matrices equal evaluate's.
"""
import dataclasses
import io
import json
import os
from typing import List, Optional, Sequence

import numpy as np

from deeplab_load import inference, metrics
from deeplab_load.data import pipeline
from deeplab_load.data.batches import Batches
from deeplab_load.data.common import ExampleRef
from deeplab_load.evaluation import labelled_examples
from deeplab_load.evaluation_stats.structure import StructureStats, image_structure
from deeplab_load.output_folder import write_file_atomic

FORMAT_VERSION = 1


@dataclasses.dataclass
class PerImageResults:
    """ids: example ids in evaluation order; confusions: int64 [N, K, K] (rows = ground
    truth); structure: StructureStats of the same images; class_names: K names."""
    ids: List[str]
    confusions: np.ndarray
    structure: StructureStats
    class_names: Sequence[str]
    split: Optional[str] = None

    def matrix(self):
        """int64 [K, K]: the split's confusion matrix (sum over images)."""
        return self.confusions.sum(axis=0)

    def save(self, path):
        """Writes `path` (.npz, arrays only) and `<path without .npz>.json` (ids, class names,
        split), each atomically; returns the two paths."""
        json_path = _json_path(path)
        buffer = io.BytesIO()
        np.savez(buffer, confusions=self.confusions, **self.structure.arrays())
        write_file_atomic(path, buffer.getvalue())
        record = {"format_version": FORMAT_VERSION, "split": self.split,
                  "class_names": list(self.class_names), "ids": list(self.ids)}
        write_file_atomic(json_path, json.dumps(record, indent=1).encode("utf-8"))
        return path, json_path

    @classmethod
    def load(cls, path):
        """Reads what `save` wrote; ValueError naming the file when the two files disagree."""
        json_path = _json_path(path)
        with open(json_path, encoding="utf-8") as f:
            record = json.load(f)
        with np.load(path, allow_pickle=False) as arrays:
            confusions = arrays["confusions"].astype(np.int64)
            structure = StructureStats(**{field.name: arrays[field.name].astype(np.int64)
                                          for field in dataclasses.fields(StructureStats)})
        if len(record["ids"]) != confusions.shape[0]:
            raise ValueError(f"{json_path}: {len(record['ids'])} ids for "
                             f"{confusions.shape[0]} confusion matrices in {path}")
        return cls(ids=list(record["ids"]), confusions=confusions, structure=structure,
                   class_names=tuple(record["class_names"]), split=record.get("split"))


def _json_path(path):
    path = os.fspath(path)
    if not path.endswith(".npz"):
        raise ValueError(f"per-image results path must end with .npz, got {path}")
    return path[:-len(".npz")] + ".json"


def stacked_confusions(results: Sequence[PerImageResults]) -> np.ndarray:
    """int64 [S, N, K, K] of several runs (e.g. seeds) of one arm, for the bootstrap;
    ValueError unless all hold the same images in the same order."""
    results = list(results)
    if not results:
        raise ValueError("no per-image results to stack")
    for other in results[1:]:
        if other.ids != results[0].ids:
            raise ValueError("per-image results hold different images or orders; evaluate "
                             "every arm on the same split")
    return np.stack([result.confusions for result in results])


def evaluate_per_image(model, ds, split, batch_size, eval_crop_size, refs=None,
                       exclude_classes=(0,)) -> PerImageResults:
    """Per-image confusion matrices and structure records of `model` on `split` of `ds`.

    refs: the examples to evaluate (ExampleRefs, or ids with TFRecords); None: the whole split.
    eval_crop_size: (H, W) padding size, None for none (then one image per batch).
    exclude_classes: classes that form no ground-truth objects when the data set has no
      instance maps (`structure.ground_truth_objects`); instance maps are read with
      `ds.load_instances(ref)` where the data set has it.
    """
    items = list(refs) if refs is not None else labelled_examples(ds, split, None)
    by_id = {item.id: item for item in items if isinstance(item, ExampleRef)}
    with_instances = hasattr(ds, "load_instances") and len(by_id) == len(items)
    if eval_crop_size is None:
        batch_size = 1
    num_classes = ds.info.num_classes
    label_maps = inference.label_map_function(model)
    ids, confusions, structures = [], [], []
    batches = pipeline.eval_dataset(ds, items, batch_size, eval_crop_size)
    with Batches(batches) as stream:
        for batch in stream:
            predictions = label_maps(batch["pixels"]).numpy()
            labels = batch["labels"].numpy()
            for index, ((height, width), example_id) in enumerate(
                    zip(batch["sizes"].numpy(), batch["ids"].numpy())):
                example_id = example_id.decode("utf-8")
                label = labels[index, :height, :width]
                prediction = predictions[index, :height, :width]
                confusions.append(metrics.confusion_matrix_numpy(label, prediction, num_classes))
                instances = ds.load_instances(by_id[example_id]) if with_instances else None
                structures.append(image_structure(label, prediction, num_classes, instances,
                                                  exclude_classes))
                ids.append(example_id)
    return PerImageResults(
        ids=ids, confusions=np.stack(confusions).astype(np.int64),
        structure=StructureStats.from_images(structures, num_classes),
        class_names=tuple(ds.info.class_names), split=split if isinstance(split, str) else None)
