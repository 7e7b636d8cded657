"""Label maps for a data-set split or a folder of images, as PNGs for people or test servers.

    python -m deeplab_load.predict --dataset=voc --dataset_dir=/data --split=test \
        --zoo_name=xception65_coco_voc_trainaug --checkpoint=... --output_dir=out \
        --format=voc_submission
    python -m deeplab_load.predict --input_dir=photos --dataset=cityscapes --checkpoint=... \
        --output_dir=out --format=overlay

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
import glob
import os
import re

import numpy as np
from absl import app, flags, logging

from deeplab_load import visualize

FLAGS = flags.FLAGS
FORMATS = ("raw", "color", "overlay", "voc_submission", "cityscapes_submission")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
VOC_SUBMISSION_DIR = os.path.join("results", "VOC2012", "Segmentation", "comp6_test_cls")
_CITYSCAPES_ID = re.compile(r"^([a-z_]+)_(\d{6})_(\d{6})")


def cityscapes_frame(example_id):
    """'aachen_000000_000019[_leftImg8bit]' -> ('aachen', '000000', '000019'), else ValueError."""
    match = _CITYSCAPES_ID.match(example_id)
    if not match:
        raise ValueError(f"{example_id!r} is not a Cityscapes <city>_<seq>_<frame> name")
    return match.groups()


def output_path(fmt, output_dir, example_id):
    """Where :func:`write_prediction` puts the PNG of ``example_id`` in format ``fmt``."""
    if fmt in ("raw", "color", "overlay"):
        return os.path.join(output_dir, example_id + ".png")
    if fmt == "voc_submission":
        return os.path.join(output_dir, VOC_SUBMISSION_DIR, example_id + ".png")
    if fmt == "cityscapes_submission":
        city, sequence, frame = cityscapes_frame(example_id)
        return os.path.join(output_dir, city, f"{city}_{sequence}_{frame}_pred_labelIds.png")
    raise ValueError(f"unknown format {fmt!r}; expected one of {list(FORMATS)}")


def check_format(fmt, info):
    """ValueError if ``fmt`` cannot be written for a model/data set with ``info``'s classes."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {list(FORMATS)}")
    if fmt == "voc_submission" and info.num_classes != 21:
        raise ValueError(f"voc_submission needs the 21 VOC classes, {info.name} has "
                         f"{info.num_classes}")
    if fmt == "cityscapes_submission" and info.num_classes != 19:
        raise ValueError(f"cityscapes_submission needs the 19 Cityscapes train ids, {info.name} "
                         f"has {info.num_classes}")


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
        from deeplab_load.data.cityscapes import TRAIN_ID_TO_LABEL_ID
        visualize.save_label_png(path, np.asarray(TRAIN_ID_TO_LABEL_ID)[labels])
    return path


def image_folder_examples(input_dir):
    """[(id, path)] of the images directly in ``input_dir``, sorted; error if there are none."""
    paths = sorted(p for p in glob.glob(os.path.join(input_dir, "*"))
                   if p.lower().endswith(IMAGE_EXTENSIONS))
    if not paths:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in --input_dir "
                                f"{input_dir}")
    ids = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValueError(f"{input_dir}: several images share the names {duplicates}")
    return list(zip(ids, paths))


def predict_examples(model, examples, info, output_dir, fmt, eval_crop_size=None,
                     progress_interval=10.0, log=logging.info, eval_scales=(1.0,),
                     add_flipped_images=False):
    """Predicts and writes every example; returns the written paths.

    examples: iterable of ``(example_id, load)`` where ``load()`` returns uint8 ``[H, W, 3]``.
    eval_crop_size: (H, W) padding size or None (see ``inference.predict_labels``).
    eval_scales, add_flipped_images: multi-scale / flipped inference (``multi_scale.py``).
    """
    from deeplab_load import multi_scale
    from deeplab_load.training.progress import Progress
    check_format(fmt, info)
    examples = list(examples)
    progress = Progress(f"predict {fmt}", total=len(examples), interval=progress_interval, log=log)
    paths = []
    for index, (example_id, load) in enumerate(examples):
        image = load()
        size = eval_crop_size
        if size is not None and (image.shape[0] > size[0] or image.shape[1] > size[1]):
            raise ValueError(f"{example_id}: image {image.shape[0]}x{image.shape[1]} is larger "
                             f"than the eval crop size {size[0]}x{size[1]}")
        labels = multi_scale.predict_labels(model, image[None], eval_crop_size, eval_scales,
                                            add_flipped_images).numpy()[0]
        paths.append(write_prediction(fmt, output_dir, example_id, image, labels, info))
        progress.update(index + 1, force=index + 1 == len(examples))
    return paths


def dataset_examples(dataset, split):
    """``(id, load)`` pairs of a data-set split (labels are not read)."""
    from deeplab_load.data.common import decode_image, read_bytes

    def loader(ref):
        return lambda: decode_image(read_bytes(ref.image_path), ref.image_path)

    return [(ref.id, loader(ref)) for ref in dataset.examples(split)]


def folder_examples(input_dir):
    """``(id, load)`` pairs of the images in a folder."""
    from deeplab_load.data.common import decode_image, read_bytes
    return [(example_id, (lambda p=path: decode_image(read_bytes(p), p)))
            for example_id, path in image_folder_examples(input_dir)]


def define_flags():
    from deeplab_load.evaluate import define_flags as define_evaluate_flags
    define_evaluate_flags()  # model flags, --dataset, --dataset_dir, --split, --eval_crop_size
    if "format" in FLAGS:
        return
    flags.DEFINE_enum("format", "color", list(FORMATS), "What to write (see the module doc).")
    flags.DEFINE_string("input_dir", None, "Predict the images in this folder instead of a "
                        "data-set split (--dataset, if given, only names the classes and "
                        "palette; no padding unless --eval_crop_size).")


def folder_info(dataset_name=None, num_classes=None):
    """DatasetInfo for images outside a data set: the named data set's classes and palette
    (nothing is read from disk), or ``num_classes`` generic classes with the VOC palette."""
    import importlib
    from deeplab_load.data import DATASET_NAMES, DatasetInfo
    if dataset_name:
        if dataset_name not in DATASET_NAMES:
            raise ValueError(f"--dataset must be one of {list(DATASET_NAMES)}, "
                             f"got {dataset_name!r}")
        if dataset_name == "demo":
            from deeplab_load.data import demo
            names = demo.CLASS_NAMES
            return DatasetInfo("demo", len(names), names, demo.DEFAULT_IMAGE_SIZE,
                               demo.DEFAULT_IMAGE_SIZE, palette=demo.PALETTE_256[:len(names)])
        return importlib.import_module(f"deeplab_load.data.{dataset_name}").INFO
    if not num_classes:
        raise ValueError("images without a data set need --dataset (for its classes) or "
                         "--num_classes / --zoo_name")
    names = tuple(f"class_{i}" for i in range(num_classes))
    return DatasetInfo("images", num_classes, names, (0, 0), (0, 0),
                       palette=visualize.voc_palette()[:num_classes])


def main(argv):
    del argv
    from deeplab_load.evaluate import build_model_from_flags, eval_crop_size_from_flags
    if not FLAGS.output_dir:
        raise app.UsageError("--output_dir is required")
    if FLAGS.input_dir:
        num_classes = FLAGS.num_classes
        if FLAGS.zoo_name and not num_classes:
            from deeplab_load import zoo
            num_classes = zoo.get_entry(FLAGS.zoo_name).config.num_classes
        try:
            info = folder_info(FLAGS.dataset if FLAGS["dataset"].present else None, num_classes)
        except ValueError as err:
            raise app.UsageError(str(err)) from err
        examples = folder_examples(FLAGS.input_dir)
        eval_crop_size = eval_crop_size_from_flags(info) if FLAGS.eval_crop_size else None
    else:
        from deeplab_load.data import get_dataset
        dataset = get_dataset(FLAGS.dataset, FLAGS.dataset_dir)
        info = dataset.info
        examples = dataset_examples(dataset, FLAGS.split)
        eval_crop_size = eval_crop_size_from_flags(info)
    check_format(FLAGS.format, info)
    model, _, description = build_model_from_flags(info.num_classes)
    from deeplab_load.evaluate import multi_scale_from_flags
    eval_scales, add_flipped_images = multi_scale_from_flags()
    paths = predict_examples(model, examples, info, FLAGS.output_dir, FLAGS.format,
                             eval_crop_size, eval_scales=eval_scales,
                             add_flipped_images=add_flipped_images)
    print(f"wrote {len(paths)} {FLAGS.format} PNGs under {FLAGS.output_dir} ({description})")


if __name__ == "__main__":
    define_flags()
    app.run(main)
