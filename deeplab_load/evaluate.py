"""mIoU and per-class IoU of a model on a data-set split, as the original eval.py computes them.

    python -m deeplab_load.evaluate --dataset=voc --dataset_dir=/data/VOCdevkit/.. --split=val \
        --zoo_name=xception65_coco_voc_trainaug --checkpoint=checkpoints/.../model.ckpt \
        --output_dir=runs/eval

Every image is padded at the bottom/right to the eval crop size (pixels 127.5, labels 255), the
logits are upsampled to the padded size with align_corners bilinear resizing, and the argmax is
compared with the padded label, so the padding (label 255) is never counted. This gives the
numbers of ``inference.predict_labels`` followed by a crop. Writes results.json (see
``metrics.results_dict``) and results.md, and prints the table.

This module also holds what evaluate, export and predict share: the model flags and
:func:`restore_checkpoint` (our tf.train checkpoints, Keras ``.weights.h5`` files, or official
TF1 zoo checkpoints detected by their variable names).
"""
import dataclasses
import glob
import json
import os
import time

import tensorflow as tf
from absl import app, flags, logging

from deeplab_load import inference, metrics

FLAGS = flags.FLAGS
IGNORE_LABEL = 255
DEFAULT_CHECKPOINT_TAGS = ("final", "g_best", "g_s", "g_end", "stage1")


# ----------------------------------------------------------------------------------------------
# Model construction and checkpoints (shared with export.py and predict.py)

def define_model_flags():
    """Defines the model / checkpoint flags once (idempotent: several commands share them)."""
    if "checkpoint" in FLAGS:
        return
    flags.DEFINE_string("checkpoint", None, "Our checkpoint (tf.train prefix, a run's checkpoint "
                        "folder with tags.json, or a .weights.h5 file) or an official TF1 zoo "
                        "checkpoint (prefix or folder), told apart by variable names.")
    flags.DEFINE_string("checkpoint_tag", None, "Tag to read from a folder with tags.json "
                        f"(default: the first of {', '.join(DEFAULT_CHECKPOINT_TAGS)} present).")
    flags.DEFINE_string("zoo_name", None, "Official zoo entry whose configuration gives the model "
                        "flags' defaults (e.g. xception65_coco_voc_trainaug).")
    flags.DEFINE_enum("model_variant", None, ["xception_65", "mobilenet_v2"],
                      "Backbone (default: from --zoo_name, else xception_65).")
    flags.DEFINE_integer("num_classes", None, "Classes (default: the data set's / the zoo's).")
    flags.DEFINE_integer("output_stride", None, "Output stride 8/16/32 (default: 16).")
    flags.DEFINE_list("atrous_rates", None, "ASPP atrous rates; empty for none (default: from "
                      "--zoo_name, else 6,12,18 scaled to the output stride).")
    flags.DEFINE_integer("decoder_output_stride", None, "4 for the decoder, 0 for none (default: "
                         "from --zoo_name, else 4).")


def model_config_from_flags(num_classes=None):
    """DeepLabConfig from the model flags: explicit flags > --zoo_name > DeepLab's defaults.

    ``num_classes`` (e.g. the data set's) is used when --num_classes is not given.
    """
    from deeplab_load.models.deeplab import DeepLabConfig
    if FLAGS.zoo_name:
        from deeplab_load import zoo
        base = zoo.get_entry(FLAGS.zoo_name).config
    else:
        base = DeepLabConfig()
    changes = {}
    if FLAGS.model_variant:
        changes["backbone"] = FLAGS.model_variant
    if FLAGS.num_classes or num_classes:
        changes["num_classes"] = FLAGS.num_classes or num_classes
    if FLAGS.output_stride and FLAGS.output_stride != base.output_stride:
        changes["output_stride"] = FLAGS.output_stride
        changes["atrous_rates"] = tuple(r * base.output_stride // FLAGS.output_stride
                                        for r in base.atrous_rates)
    if FLAGS.atrous_rates is not None:
        try:
            changes["atrous_rates"] = tuple(int(r) for r in FLAGS.atrous_rates if r.strip())
        except ValueError as err:
            raise app.UsageError(f"--atrous_rates must be integers: {FLAGS.atrous_rates}") from err
    if FLAGS.decoder_output_stride is not None:
        changes["decoder_output_stride"] = FLAGS.decoder_output_stride or None
    return dataclasses.replace(base, **changes)


def _tagged_prefix(folder, tag):
    from deeplab_load.training.checkpoint_store import read_tags
    tags = read_tags(os.path.join(folder, "tags.json"))
    if tag is None:
        tag = next((t for t in DEFAULT_CHECKPOINT_TAGS if t in tags), None)
        if tag is None:
            raise ValueError(f"{folder}/tags.json has none of the tags {DEFAULT_CHECKPOINT_TAGS}; "
                             f"pass --checkpoint_tag (have {sorted(tags)})")
    if tag not in tags:
        raise ValueError(f"{folder}/tags.json has no tag {tag!r} (have {sorted(tags)})")
    return os.path.join(folder, tags[tag], "ckpt")


def restore_checkpoint(model, path, tag=None):
    """Loads weights into a model from ``build_deeplab``; returns a one-line description.

    ``path``: a ``.weights.h5`` file (or a folder holding just one); a folder with
    ``tags.json`` (our tagged checkpoint store, ``tag`` picks the snapshot); or a checkpoint
    prefix / folder. A checkpoint whose variable names carry ``.ATTRIBUTES`` is a TF2 checkpoint
    of ours (written by ``CheckpointStore``: the model's weights by variable path under the key
    ``model`` or the only other top-level key); otherwise it is read as an official TF1 DeepLab
    checkpoint by ``zoo.load_checkpoint``. Errors name the path.
    """
    from deeplab_load import zoo
    path = os.fspath(path)
    if path.endswith(".weights.h5"):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"checkpoint not found: {path}")
        model.load_weights(path)
        return f"Keras weights {path}"
    if os.path.isdir(path) and os.path.exists(os.path.join(path, "tags.json")):
        path = _tagged_prefix(path, tag)
    elif os.path.isdir(path) and not tf.train.latest_checkpoint(path):
        weight_files = glob.glob(os.path.join(path, "*.weights.h5"))
        if len(weight_files) == 1 and not glob.glob(os.path.join(path, "**", "*.index"),
                                                    recursive=True):
            return restore_checkpoint(model, weight_files[0])
    prefix = zoo.resolve_checkpoint_prefix(path)
    names = [name for name, _ in tf.train.list_variables(prefix)]
    if not any(".ATTRIBUTES" in name for name in names):
        report = zoo.load_checkpoint(model, prefix)
        skipped = f", skipped {len(report.skipped)}" if report.skipped else ""
        return f"TF1 checkpoint {prefix}: {report.loaded} tensors{skipped}"
    roots = {name.split("/")[0] for name in names if ".ATTRIBUTES" in name}
    roots -= {"save_counter", "optimizer", "_CHECKPOINTABLE_OBJECT_GRAPH"}
    key = "model" if "model" in roots else (roots.pop() if len(roots) == 1 else None)
    if key is None:
        raise ValueError(f"{prefix}: cannot tell which object holds the model among "
                         f"{sorted(roots)}")
    from deeplab_load.training.checkpoint_store import read_model_weights
    read_model_weights(model, prefix, key)
    return f"checkpoint {prefix} ({key})"


def build_model_from_flags(num_classes=None):
    """(model, config, description) from the model flags and --checkpoint."""
    from deeplab_load.models.deeplab import build_deeplab
    if not FLAGS.checkpoint:
        raise app.UsageError("--checkpoint is required")
    config = model_config_from_flags(num_classes)
    model = build_deeplab(config)
    description = restore_checkpoint(model, FLAGS.checkpoint, FLAGS.checkpoint_tag)
    logging.info("model %s, weights from %s", config, description)
    return model, config, description


# ----------------------------------------------------------------------------------------------
# Evaluation

def confusion_matrix_function(model, num_classes):
    """tf.function (pixels [B,H,W,3], labels [B,H,W]) -> int64 [K,K] for the model's argmax.

    The logits are upsampled to the (padded) input size with align_corners; padded label
    pixels are 255 and therefore not counted, which equals cropping the label map first.
    """

    @tf.function(reduce_retracing=True)
    def batch_confusion(pixels, labels):
        predictions = inference.padded_label_maps(model, pixels)
        return metrics.confusion_matrix_batch(labels, predictions, num_classes)

    return batch_confusion


def _labelled_examples(dataset, split, max_images):
    """The split's ExampleRefs (ids with TFRecords), the first ``max_images``; unlabelled: error."""
    from deeplab_load.data import pipeline
    if getattr(dataset, "tfrecord_dir", None) is not None:
        examples = pipeline.split_ids(dataset, split)
    else:
        examples = dataset.examples(split)
        unlabelled = [ref.image_path for ref in examples if ref.label_path is None]
        if unlabelled:
            raise ValueError(f"{dataset.info.name} split {split!r} has images without labels "
                             f"(e.g. {unlabelled[0]}); cannot evaluate it")
    if max_images is not None:
        examples = examples[:max_images]
    if not examples:
        raise ValueError(f"{dataset.info.name} split {split!r} has no examples")
    return examples


def evaluate(model, dataset, split, batch_size=1, eval_crop_size=None, max_images=None,
             skip_bad_examples=False, progress_interval=10.0, log=logging.info):
    """Evaluates ``model`` on a split of ``dataset``; returns ``metrics.results_dict``.

    dataset: a ``deeplab_load.data`` data set; read through ``pipeline.eval_dataset``.
    split: a split name, or a list of ExampleRefs (e.g. a hold-out set).
    eval_crop_size: (H, W) padding size (the original's eval_crop_size). None: no padding,
      every image at its own size (then one image per batch, whatever ``batch_size``).
    max_images: evaluate only the first N examples of a named split.
    """
    from deeplab_load.data import pipeline
    from deeplab_load.training.progress import Progress
    info = dataset.info
    if isinstance(split, str):
        examples, split_name = _labelled_examples(dataset, split, max_images), split
    else:
        examples, split_name = list(split), "custom"
    if eval_crop_size is None:
        batch_size = 1
    batches = pipeline.eval_dataset(dataset, examples, batch_size, eval_crop_size,
                                    skip_bad_examples=skip_bad_examples)
    batch_confusion = confusion_matrix_function(model, info.num_classes)
    stream = metrics.StreamingConfusionMatrix(info.num_classes)
    progress = Progress(f"eval {info.name}/{split_name}", total=len(examples),
                        interval=progress_interval, log=log)
    done, start = 0, time.monotonic()
    for batch in batches:
        stream.add_matrix(batch_confusion(batch["pixels"], batch["labels"]).numpy())
        done += int(batch["pixels"].shape[0])
        progress.update(done, force=done == len(examples), images=done,
                        running_miou=round(100 * stream.mean_iou(), 2))
    return metrics.results_dict(
        stream.matrix, info.class_names, dataset=info.name, split=split_name, num_images=done,
        eval_crop_size=None if eval_crop_size is None else list(eval_crop_size),
        seconds=round(time.monotonic() - start, 2))


def write_results(results, output_dir):
    """Writes results.json and results.md into ``output_dir``; returns their paths."""
    os.makedirs(output_dir, exist_ok=True)
    json_path = os.path.join(output_dir, "results.json")
    markdown_path = os.path.join(output_dir, "results.md")
    tmp = json_path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)
    os.replace(tmp, json_path)
    title = f"# {results.get('dataset', '')} {results.get('split', '')}: mIoU\n\n"
    if results.get("checkpoint"):
        title += f"Checkpoint: `{results['checkpoint']}`, {results.get('num_images')} images.\n\n"
    with open(markdown_path, "w", encoding="utf-8") as f:
        f.write(title + metrics.format_markdown_table(results))
    return json_path, markdown_path


def define_flags():
    define_model_flags()
    if "split" in FLAGS:
        return
    flags.DEFINE_string("dataset", "demo", "voc, cityscapes, stanford or demo.")
    flags.DEFINE_string("dataset_dir", None, "Data set root (not needed for demo).")
    flags.DEFINE_string("split", "val", "Split to evaluate.")
    flags.DEFINE_list("eval_crop_size", None, "Padding size H,W (default: the data set's, e.g. "
                      "513,513 VOC, 1025,2049 Cityscapes); 'none' disables padding.")
    flags.DEFINE_integer("eval_batch_size", 1, "Images per batch.")
    flags.DEFINE_integer("max_images", None, "Evaluate only the first N images.")
    flags.DEFINE_bool("skip_bad_examples", False, "Skip (and count) corrupt examples instead of "
                      "stopping at the first.")
    flags.DEFINE_string("tfrecord_dir", None, "Read the split from TFRecords written by "
                        "tools/build_tfrecords.py instead of the files.")
    flags.DEFINE_string("output_dir", None, "Where results.json and results.md go.")


def eval_crop_size_from_flags(info):
    """The --eval_crop_size flag as (H, W), None for 'none', the data set's when unset."""
    value = FLAGS.eval_crop_size
    if value is None:
        return tuple(info.eval_crop_size)
    if [v.lower() for v in value] == ["none"]:
        return None
    try:
        size = tuple(int(v) for v in value)
    except ValueError as err:
        raise app.UsageError(f"--eval_crop_size must be H,W or none, got {value}") from err
    if len(size) == 1:
        size = size * 2
    if len(size) != 2 or min(size) < 1:
        raise app.UsageError(f"--eval_crop_size must be H,W or none, got {value}")
    return size


def main(argv):
    del argv
    from deeplab_load.data import get_dataset
    dataset = get_dataset(FLAGS.dataset, FLAGS.dataset_dir, tfrecord_dir=FLAGS.tfrecord_dir)
    model, _, description = build_model_from_flags(dataset.info.num_classes)
    eval_crop_size = eval_crop_size_from_flags(dataset.info)
    results = evaluate(model, dataset, FLAGS.split, FLAGS.eval_batch_size, eval_crop_size,
                       FLAGS.max_images, FLAGS.skip_bad_examples)
    results["checkpoint"] = description
    print(metrics.format_text_table(results))
    if FLAGS.output_dir:
        for path in write_results(results, FLAGS.output_dir):
            print(f"wrote {path}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
