"""Label maps of images as PNGs for people or test servers (the formats below).

Formats (``<id>`` is the example id, or an input image's file name without extension):
  raw                    ``<out>/<id>.png``: 8-bit grayscale, pixel = train id.
  color                  ``<out>/<id>.png``: RGB, the data set's palette.
  overlay                ``<out>/<id>.png``: RGB, colours blended over the image.
  voc_submission         ``<out>/results/VOC2012/Segmentation/comp6_test_cls/<id>.png``: indexed
                         PNG with the VOC palette (what the VOC evaluation server reads).
  cityscapes_submission  ``<out>/<city>/<city>_<seq>_<frame>_pred_labelIds.png``: 8-bit label IDS
                         (train id -> label id), found by ``csEvalPixelLevelSemanticLabeling``
                         with ``CITYSCAPES_RESULTS=<out>`` (one file per ground truth).
Images are predicted one at a time with ``inference.predict_labels`` (the original's padding to
the eval crop size when one is set).
"""
import contextlib
import glob
import os
import re

import numpy as np
from absl import logging

from deeplab_load import multi_scale, visualize
from deeplab_load.checkpoints import zoo
from deeplab_load.checkpoints.model_loading import (eval_crop_size, find_spec, load_model,
                                                 open_dataset)
from deeplab_load.data import DatasetInfo, dataset_info
from deeplab_load.data.cityscapes import TRAIN_ID_TO_LABEL_ID
from deeplab_load.data.common import BadExampleError, decode_image, read_bytes
from deeplab_load.data.pipeline import BadExampleLog
from deeplab_load.errors import FlagError, UserError
from deeplab_load.inference_configs import FORMATS
from deeplab_load.models.precision import inference_model
from deeplab_load.output_folder import IncompleteMarker, inside
from deeplab_load.progress import Progress
from deeplab_load.replicated import ReplicatedInference, groups, is_replicated, \
    replicated_inference

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
VOC_SUBMISSION_DIR = os.path.join("results", "VOC2012", "Segmentation", "comp6_test_cls")
_CITYSCAPES_ID = re.compile(r"^([a-z_]+)_(\d{6})_(\d{6})")


class FormatError(UserError, ValueError):
    """An image or id that the requested output cannot be made of."""


def cityscapes_frame(example_id):
    """'aachen_000000_000019[_leftImg8bit]' -> ('aachen', '000000', '000019'), else ValueError."""
    match = _CITYSCAPES_ID.match(example_id)
    if not match:
        raise FormatError(f"{example_id!r} is not a Cityscapes <city>_<seq>_<frame> name "
                          f"(needed by --format=cityscapes_submission)")
    return match.groups()


def output_path(fmt, output_dir, example_id):
    """Where :func:`write_prediction` puts the PNG of ``example_id`` in format ``fmt``; always
    inside ``output_dir`` (``OutsideOutputFolderError`` for an id that would leave it)."""
    if fmt in ("raw", "color", "overlay"):
        return inside(output_dir, example_id + ".png")
    if fmt == "voc_submission":
        return inside(output_dir, os.path.join(VOC_SUBMISSION_DIR, example_id + ".png"))
    if fmt == "cityscapes_submission":
        city, sequence, frame = cityscapes_frame(example_id)
        return inside(output_dir,
                      os.path.join(city, f"{city}_{sequence}_{frame}_pred_labelIds.png"))
    raise ValueError(f"unknown format {fmt!r}; expected one of {list(FORMATS)}")


def check_format(fmt, info):
    """ValueError if ``fmt`` cannot be written for a model/data set with ``info``'s classes."""
    if fmt not in FORMATS:
        raise FlagError(f"--format={fmt} is unknown; expected one of {', '.join(FORMATS)}")
    if fmt == "voc_submission" and info.num_classes != 21:
        raise FlagError(f"--format=voc_submission needs the 21 VOC classes, {info.name} has "
                        f"{info.num_classes}")
    if fmt == "cityscapes_submission" and info.num_classes != 19:
        raise FlagError(f"--format=cityscapes_submission needs the 19 Cityscapes train ids, "
                        f"{info.name} has {info.num_classes}")


def write_prediction(fmt, output_dir, example_id, image, labels, info):
    """Writes one label map (int ``[H, W]`` train ids) of ``image`` (uint8 ``[H, W, 3]``).

    ``info``: a DatasetInfo (palette, class count). Returns the path written.
    """
    path = output_path(fmt, output_dir, example_id)
    labels = np.asarray(labels)
    if fmt == "raw":
        visualize.save_label_png(path, labels)
    elif fmt == "color":
        visualize.save_rgb_png(path, visualize.colorize(labels, visualize.palette_for(info)))
    elif fmt == "overlay":
        visualize.save_rgb_png(path, visualize.overlay(image, labels, visualize.palette_for(info)))
    elif fmt == "voc_submission":
        visualize.save_label_png(path, labels, palette=visualize.voc_palette())
    elif fmt == "cityscapes_submission":
        visualize.save_label_png(path, np.asarray(TRAIN_ID_TO_LABEL_ID)[labels])
    return path


def image_folder_examples(input_dir):
    """[(id, path)] of the images directly in ``input_dir``, sorted; error if there are none."""
    paths = sorted(p for p in glob.glob(os.path.join(input_dir, "*"))
                   if p.lower().endswith(IMAGE_EXTENSIONS))
    if not paths:
        raise UserError(f"--input_dir {input_dir} holds no images "
                        f"({', '.join(IMAGE_EXTENSIONS)})")
    ids = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise UserError(f"--input_dir {input_dir}: several images share the names {duplicates}")
    return list(zip(ids, paths))


def predict_examples(model, examples, info, output_dir, fmt, eval_crop_size=None,
                     progress_interval=10.0, log=logging.info, eval_scales=(1.0,),
                     add_flipped_images=False, skip_bad_examples=False, bad_example_log=None,
                     dtype="float32", strategy=None, write=True):
    """Predicts and writes every example; returns the written paths.

    examples: iterable of ``(example_id, load)`` where ``load()`` returns uint8 ``[H, W, 3]``
      (raising ``BadExampleError`` for an unreadable image).
    eval_crop_size: (H, W) padding size or None (see ``inference.predict_labels``).
    eval_scales, add_flipped_images: multi-scale / flipped inference (``multi_scale.py``).
    skip_bad_examples: skip an image that does not load (added to ``bad_example_log``, a
      ``pipeline.BadExampleLog``) instead of stopping.
    Outputs: every file goes inside ``output_dir`` (ids that would leave it are refused before
    anything is written); a file of an earlier run with the same id and format is replaced
    (atomically), nothing else there is touched. While the run writes, ``output_dir/INCOMPLETE``
    says so; if the run stops with an error it names the error and stays.
    dtype: compute dtype, "float32" or "bfloat16" (``models.precision.inference_model``).
    strategy: a tf.distribute strategy whose scope built ``model``: with several replicas each
      replica predicts one of every R consecutive images (``replicated``; the labels of one
      device) and the maps are gathered. ``write=False`` (a MultiWorkerMirroredStrategy worker
      other than the chief) computes its share and writes nothing; the chief writes every file.
    """
    replicated = is_replicated(strategy)
    with strategy.scope() if replicated else contextlib.nullcontext():
        computing = inference_model(model, dtype)
    # a bfloat16 copy is made for this call only: its runner is not kept
    copied, model = computing is not model, computing
    check_format(fmt, info)
    examples = list(examples)
    for example_id, _ in examples:
        output_path(fmt, output_dir, example_id)
    bad = bad_example_log if bad_example_log is not None else BadExampleLog()
    progress = Progress(f"predict {fmt}", total=len(examples), interval=progress_interval, log=log)
    paths = []
    runner = ((ReplicatedInference if copied else replicated_inference)(
        strategy, model, info.num_classes, eval_scales, add_flipped_images)
        if replicated else None)
    with IncompleteMarker(output_dir, f"predict --format={fmt}") if write \
            else contextlib.nullcontext():
        done = 0
        for group in groups(examples, runner.replicas if replicated else 1):
            loaded = []
            for example_id, load in group:
                try:
                    image = load()
                except BadExampleError as err:
                    if not skip_bad_examples:
                        raise
                    bad.add(err)
                    continue
                _check_fits(example_id, image, eval_crop_size)
                loaded.append((example_id, image))
            if replicated and loaded:
                labels = runner.run_images(
                    [(image, eval_crop_size or image.shape[:2]) for _, image in loaded])
            else:
                labels = [multi_scale.predict_labels(model, image[None], eval_crop_size,
                                                     eval_scales, add_flipped_images).numpy()[0]
                          for _, image in loaded]
            for (example_id, image), label_map in zip(loaded, labels):
                if write:
                    paths.append(write_prediction(fmt, output_dir, example_id, image, label_map,
                                                  info))
            done += len(group)
            progress.update(done, force=done == len(examples))
    if bad.count:
        log(f"predict: {bad.count} bad images skipped")
    return paths


def _check_fits(example_id, image, size):
    if size is not None and (image.shape[0] > size[0] or image.shape[1] > size[1]):
        raise FormatError(f"{example_id}: image {image.shape[0]}x{image.shape[1]} is "
                          f"larger than the eval crop size {size[0]}x{size[1]}; pass a "
                          f"larger --eval_crop_size or --eval_crop_size=none")


def dataset_examples(dataset, split):
    """``(id, load)`` pairs of a data-set split (labels are not read)."""
    def loader(ref):
        return lambda: decode_image(read_bytes(ref.image_path), ref.image_path)

    return [(ref.id, loader(ref)) for ref in dataset.examples(split)]


def folder_examples(input_dir):
    """``(id, load)`` pairs of the images in a folder."""
    return [(example_id, (lambda p=path: decode_image(read_bytes(p), p)))
            for example_id, path in image_folder_examples(input_dir)]


def folder_info(dataset_name=None, num_classes=None):
    """DatasetInfo for images outside a data set: the named data set's classes and palette
    (nothing is read from disk), or ``num_classes`` generic classes with the VOC palette."""
    if dataset_name:
        return dataset_info(dataset_name)
    if not num_classes:
        raise FlagError("images without a data set need --dataset (for its classes), "
                        "--run_dir, or --num_classes / --zoo_name")
    names = tuple(f"class_{i}" for i in range(num_classes))
    return DatasetInfo("images", num_classes, names, (0, 0), (0, 0),
                       palette=visualize.voc_palette()[:num_classes])


def _folder_classes(source, spec):
    if source.num_classes:
        return source.num_classes
    if spec is not None:
        return spec.config.num_classes
    if source.zoo_name:
        return zoo.get_entry(source.zoo_name).config.num_classes
    return None


def run_prediction(config, log=logging.info, strategy=None, write=True):
    """Loads the model and images of ``config`` and writes the label maps; returns
    (paths written, model description). strategy / write: see ``predict_examples`` (the model
    is built in the strategy's scope)."""
    if not config.output_dir:
        raise FlagError("--output_dir is required")
    spec, _ = find_spec(config.model)
    if config.input_dir:
        name = config.dataset or (spec.dataset if spec is not None else None)
        info = folder_info(name, _folder_classes(config.model, spec))
        examples = folder_examples(config.input_dir)
        crop = eval_crop_size(config.eval_crop_size, spec, info if name else None)
    else:
        dataset = open_dataset(spec, config.dataset, config.dataset_dir)
        info = dataset.info
        split = config.split or ((spec.data or {}).get("eval_split") if spec is not None
                                 else None) or "val"
        examples = dataset_examples(dataset, split)
        crop = eval_crop_size(config.eval_crop_size, spec, info)
    check_format(config.fmt, info)
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        loaded = load_model(config.model, info.num_classes, log=log)
    paths = predict_examples(loaded.model, examples, info, config.output_dir, config.fmt, crop,
                             log=log, eval_scales=config.eval_scales,
                             add_flipped_images=config.add_flipped_images, dtype=config.dtype,
                             skip_bad_examples=config.skip_bad_examples, strategy=strategy,
                             write=write)
    return paths, loaded.description
