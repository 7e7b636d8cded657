"""Evaluation of a model on a data-set split, as the original eval.py computes it.

Every image is padded at the bottom/right to the eval crop size (pixels 127.5, labels 255), the
logits are upsampled to the padded size with align_corners bilinear resizing, and the argmax is
compared with the padded label, so the padding (label 255) is never counted. This gives the
numbers of ``inference.predict_labels`` followed by a crop.
"""
import contextlib
import os
import time

from absl import logging

from deeplab_load import cityscapes_metrics, metrics, multi_scale
from deeplab_load.atomic_files import write_json_atomic, write_text_atomic
from deeplab_load.checkpoints.model_loading import (eval_crop_size, find_spec, load_model,
                                                 open_dataset)
from deeplab_load.data import pipeline
from deeplab_load.data.batches import Batches
from deeplab_load.data.common import SplitError
from deeplab_load.errors import UserError
from deeplab_load.models.precision import inference_model
from deeplab_load.progress import Progress
from deeplab_load.replicated import ReplicatedInference, groups, is_replicated, \
    replicated_inference
from deeplab_load.traced import PerModel, compiled


def confusion_matrix_function(model, num_classes, eval_scales=(1.0,), add_flipped_images=False):
    """tf.function (pixels [B,H,W,3], labels [B,H,W]) -> int64 [K,K] for the model's argmax.

    The logits are upsampled to the (padded) input size with align_corners; padded label
    pixels are 255 and therefore not counted, which equals cropping the label map first.
    ``eval_scales`` / ``add_flipped_images``: research/deeplab's multi-scale and flipped
    inference (see ``multi_scale.py``); the defaults are single-scale prediction.
    """
    @compiled
    def batch_confusion(pixels, labels):
        predictions = multi_scale.padded_label_maps(model, pixels, eval_scales,
                                                    add_flipped_images)
        return metrics.confusion_matrix_batch(labels, predictions, num_classes)

    return batch_confusion


_CONFUSION_FUNCTIONS = PerModel()


def shared_confusion_matrix_function(model, num_classes, eval_scales=(1.0,),
                                     add_flipped_images=False):
    """`confusion_matrix_function` kept per (model, classes, scales, flip) (`traced.PerModel`):
    a training run that evaluates its model again and again (evaluate, the hold-out) traces
    it once."""
    key = (num_classes, multi_scale.normalize_scales(eval_scales), bool(add_flipped_images))
    return _CONFUSION_FUNCTIONS.get(model, key, lambda: confusion_matrix_function(model, *key))


def labelled_examples(dataset, split, max_images):
    """The split's ExampleRefs (ids with TFRecords), the first ``max_images``; unlabelled: error."""
    if getattr(dataset, "tfrecord_dir", None) is not None:
        examples = pipeline.split_ids(dataset, split)
    else:
        examples = dataset.examples(split)
        unlabelled = [ref.image_path for ref in examples if ref.label_path is None]
        if unlabelled:
            raise SplitError(f"{dataset.info.name} split {split!r} has images without labels "
                             f"(e.g. {unlabelled[0]}); cannot evaluate it")
    if max_images is not None:
        examples = examples[:max_images]
    if not examples:
        raise SplitError(f"{dataset.info.name} split {split!r} has no examples")
    return examples


def evaluate(model, dataset, split, batch_size=1, eval_crop_size=None, max_images=None,
             skip_bad_examples=False, progress_interval=10.0, log=logging.info,
             eval_scales=(1.0,), add_flipped_images=False, bad_example_log=None,
             dtype="float32", strategy=None):
    """Evaluates ``model`` on a split of ``dataset``; returns ``metrics.results_dict``.

    dataset: a ``deeplab_load.data`` data set; read through ``pipeline.eval_dataset``.
    split: a split name, or a list of ExampleRefs (e.g. a hold-out set).
    eval_crop_size: (H, W) padding size (the original's eval_crop_size). None: no padding,
      every image at its own size (then one image per batch, whatever ``batch_size``).
    max_images: evaluate only the first N examples of a named split.
    eval_scales, add_flipped_images: multi-scale / flipped inference (``multi_scale.py``); the
      results then record them. For Cityscapes the results also hold the category IoU and, with
      instance ids available, the nIoU scores (``cityscapes_metrics.py``).
    skip_bad_examples: skip examples that do not load (added to ``bad_example_log``, a
      ``pipeline.BadExampleLog``); the results say how many under "skipped_examples".
    dtype: compute dtype, "float32" or "bfloat16" (``models.precision.inference_model``).
    strategy: a tf.distribute strategy whose scope built ``model``: with several replicas each
        replica evaluates one of every R consecutive batches (``replicated``; the same numbers
        as one device); ``batch_size`` is then per replica.
    """
    replicated = is_replicated(strategy)
    with strategy.scope() if replicated else contextlib.nullcontext():
        computing = inference_model(model, dtype)
    # a bfloat16 copy is made for this call only: its function is not kept
    copied = computing is not model
    confusion_function = confusion_matrix_function if copied else shared_confusion_matrix_function
    model = computing
    info = dataset.info
    if isinstance(split, str):
        examples, split_name = labelled_examples(dataset, split, max_images), split
    else:
        examples, split_name = list(split), "custom"
    if eval_crop_size is None:
        batch_size = 1
    bad = pipeline.BadExampleLog()
    batches = pipeline.eval_dataset(dataset, examples, batch_size, eval_crop_size,
                                    skip_bad_examples=skip_bad_examples, bad_example_log=bad)
    instance_level = _instance_level_evaluation(model, dataset, examples, split, eval_scales,
                                                add_flipped_images)
    if replicated:
        runner = (ReplicatedInference if copied else replicated_inference)(
            strategy, model, info.num_classes, eval_scales, add_flipped_images)
        batch_confusion = _ReplicatedGroups(runner, instance_level)
    else:
        batch_confusion = confusion_function(model, info.num_classes, eval_scales,
                                             add_flipped_images)
    stream = metrics.StreamingConfusionMatrix(info.num_classes)
    progress = Progress(f"eval {info.name}/{split_name}", total=len(examples),
                        interval=progress_interval, log=log)
    done, start = 0, time.monotonic()
    with Batches(batches) as stream_of_batches:
        steps = (groups(stream_of_batches, batch_confusion.replicas) if replicated
                 else ([batch] for batch in stream_of_batches))
        for step in steps:
            if replicated:
                stream.add_matrix(batch_confusion.add(step))
            elif instance_level is None:
                stream.add_matrix(batch_confusion(step[0]["pixels"], step[0]["labels"]).numpy())
            else:
                stream.add_matrix(instance_level.add(step[0]))
            done += sum(int(batch["pixels"].shape[0]) for batch in step)
            progress.update(done, force=done + bad.count == len(examples), images=done,
                            running_miou=round(100 * stream.mean_iou(), 2))
    if bad_example_log is not None:
        for error in bad.errors:
            bad_example_log.add(error)
    extra = {"skipped_examples": bad.count} if skip_bad_examples else {}
    results = metrics.results_dict(
        stream.matrix, info.class_names, dataset=info.name, split=split_name, num_images=done,
        eval_crop_size=None if eval_crop_size is None else list(eval_crop_size),
        seconds=round(time.monotonic() - start, 2), **extra)
    results.update(_inference_settings(eval_scales, add_flipped_images))
    if dtype != "float32":
        results["dtype"] = dtype
    if info.name == "cityscapes":
        results.update(instance_level.results(stream.matrix) if instance_level is not None
                       else _cityscapes_scores(stream.matrix))
    return results


def _inference_settings(eval_scales, add_flipped_images):
    """Results entries for multi-scale / flipped inference (none for single scale)."""
    if multi_scale.is_single_scale(eval_scales, add_flipped_images):
        return {}
    return {"eval_scales": list(multi_scale.normalize_scales(eval_scales)),
            "add_flipped_images": bool(add_flipped_images)}


class _ReplicatedGroups:
    """Groups of batches on every replica (`replicated.ReplicatedInference`) -> confusion
    matrix; with Cityscapes instance statistics, the gathered maps feed them too."""

    def __init__(self, runner, instance_level):
        self.runner = runner
        self.replicas = runner.replicas
        self.instance_level = instance_level

    def add(self, group):
        confusion, maps = self.runner.run(
            [(batch["pixels"].numpy(), batch["labels"].numpy()) for batch in group],
            with_maps=self.instance_level is not None)
        if self.instance_level is not None:
            for batch, batch_maps in zip(group, maps):
                self.instance_level.evaluation.add_batch(batch_maps, batch["sizes"].numpy(),
                                                         batch["ids"].numpy())
        return confusion


def _cityscapes_scores(matrix):
    return cityscapes_metrics.instance_scores(matrix)


class _InstanceLevelBatches:
    """Label maps of a batch -> confusion matrix, feeding Cityscapes instance statistics."""

    def __init__(self, model, num_classes, evaluation, eval_scales, add_flipped_images):
        self.evaluation = evaluation
        self.num_classes = num_classes
        self.label_maps = multi_scale.label_map_function(model, eval_scales, add_flipped_images)

    def add(self, batch):
        predictions = self.label_maps(batch["pixels"])
        self.evaluation.add_batch(predictions.numpy(), batch["sizes"].numpy(),
                                  batch["ids"].numpy())
        return metrics.confusion_matrix_batch(batch["labels"], predictions,
                                              self.num_classes).numpy()

    def results(self, matrix):
        return self.evaluation.results(matrix)


def _instance_level_evaluation(model, dataset, examples, split, eval_scales, add_flipped_images):
    """Cityscapes with instance ids for every example (gtFine_instanceIds.png beside the labels,
    or in our TFRecords): nIoU is computed too."""
    evaluation = cityscapes_metrics.InstanceLevelEvaluation.for_examples(dataset, examples, split)
    if evaluation is None:
        return None
    return _InstanceLevelBatches(model, dataset.info.num_classes, evaluation, eval_scales,
                                 add_flipped_images)


def write_results(results, output_dir):
    """Writes results.json and results.md into ``output_dir``; returns their paths."""
    os.makedirs(output_dir, exist_ok=True)
    json_path = os.path.join(output_dir, "results.json")
    markdown_path = os.path.join(output_dir, "results.md")
    write_json_atomic(json_path, results, sort_keys=False)
    title = f"# {results.get('dataset', '')} {results.get('split', '')}: mIoU\n\n"
    if results.get("checkpoint"):
        title += f"Checkpoint: `{results['checkpoint']}`, {results.get('num_images')} images.\n\n"
    write_text_atomic(markdown_path, title + metrics.format_markdown_table(results)
                      + cityscapes_metrics.format_markdown(results))
    return json_path, markdown_path


def run_evaluation(config, log=logging.info, strategy=None):
    """Loads the model and data of ``config``, evaluates, writes results; returns the results.

    strategy: a tf.distribute strategy (``training.strategy.make_strategy``): the model is built
    in its scope and its replicas share the images; None: one device."""
    spec, _ = find_spec(config.model)
    dataset = open_dataset(spec, config.dataset, config.dataset_dir, config.tfrecord_dir)
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        loaded = load_model(config.model, dataset.info.num_classes, log=log)
    if loaded.config.num_classes != dataset.info.num_classes:
        raise UserError(f"the model has {loaded.config.num_classes} classes, data set "
                        f"{dataset.info.name} has {dataset.info.num_classes}: pass the data set "
                        f"the model was trained for (--dataset)")
    split = config.split or ((spec.data or {}).get("eval_split") if spec is not None else None) \
        or "val"
    crop = eval_crop_size(config.eval_crop_size, spec, dataset.info)
    results = evaluate(loaded.model, dataset, split, config.batch_size, crop, config.max_images,
                       config.skip_bad_examples, log=log, eval_scales=config.eval_scales,
                       add_flipped_images=config.add_flipped_images, dtype=config.dtype,
                       strategy=strategy)
    results["checkpoint"] = loaded.description
    if strategy is not None and strategy.num_replicas_in_sync > 1:
        results["replicas"] = strategy.num_replicas_in_sync
    if config.output_dir:
        write_results(results, config.output_dir)
    return results
