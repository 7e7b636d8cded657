"""SavedModel export for inference.

The SavedModel's ``serving_default`` signature takes ``images``: uint8 ``[B, H, W, 3]`` of any
size and returns ``labels``: int32 ``[B, H, W]`` (and ``probabilities``: float32 ``[B, H, W, K]``
softmax with ``with_probabilities``). The numbers are those of
``inference.predict_labels(model, images, eval_crop_size)``: with an eval crop size the images are
padded with 127.5 to it first (an image larger than it fails), the logits are resized with
align_corners to the padded size and cropped back. Using it needs only TensorFlow:

    serving = tf.saved_model.load(export_dir).signatures["serving_default"]
    labels = serving(images=tf.constant(batch_uint8))["labels"]

``deeplab_export.json`` next to ``saved_model.pb`` records the signature, the model
configuration, the eval crop size and the class names; ``model.json`` is the model spec.
"""
import dataclasses
import json
import os
import shutil
import tempfile

import tensorflow as tf
from absl import logging

from deeplab_load import multi_scale
from deeplab_load.checkpoints.model_loading import eval_crop_size, find_spec, load_model
from deeplab_load.checkpoints.model_spec import ModelSpec, write_model_spec
from deeplab_load.data import dataset_info
from deeplab_load.errors import FlagError, UserError
from deeplab_load.models.ops import padded_pixels, resize_bilinear_align_corners
from deeplab_load.models.precision import compute_dtype, inference_model

METADATA_FILE = "deeplab_export.json"


class _Serving(tf.Module):
    """Holds the model and its variables so tf.saved_model.save finds every one of them."""

    def __init__(self, model, eval_crop_size, with_probabilities, eval_scales=(1.0,),
                 add_flipped_images=False):
        super().__init__(name="deeplab_serving")
        self.eval_scales = multi_scale.normalize_scales(eval_scales)
        self.add_flipped_images = bool(add_flipped_images)
        self.model = model
        # Keras layers kept in Python lists are invisible to TF's object tracking; listing the
        # variables here makes the SavedModel own all of them.
        self.model_variables = [getattr(v, "value", v) for v in model.weights]
        self.eval_crop_size = (None if eval_crop_size is None
                               else tuple(int(s) for s in eval_crop_size))
        self.with_probabilities = with_probabilities

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
    def serve(self, images):
        height, width = tf.shape(images)[1], tf.shape(images)[2]
        if self.eval_crop_size is None:
            padded_size = tf.stack([height, width])
        else:
            padded_size = tf.constant(self.eval_crop_size, tf.int32)
            tf.debugging.assert_less_equal(
                tf.stack([height, width]), padded_size,
                message="image larger than the eval crop size of this export")
        pixels, _, _ = padded_pixels(images, padded_size)
        if not multi_scale.is_single_scale(self.eval_scales, self.add_flipped_images):
            probabilities = multi_scale.multi_scale_probabilities(
                self.model, pixels, self.eval_scales, self.add_flipped_images)
            probabilities = probabilities[:, :height, :width, :]
            outputs = {"labels": tf.argmax(probabilities, axis=-1, output_type=tf.int32)}
            if self.with_probabilities:
                outputs["probabilities"] = probabilities
            return outputs
        logits = self.model(pixels, training=False)
        logits = resize_bilinear_align_corners(logits, padded_size)[:, :height, :width, :]
        outputs = {"labels": tf.argmax(logits, axis=-1, output_type=tf.int32)}
        if self.with_probabilities:
            outputs["probabilities"] = tf.nn.softmax(logits, axis=-1)
        return outputs


def _metadata(model, eval_crop_size, with_probabilities, class_names, eval_scales=(1.0,),
              add_flipped_images=False):
    config = getattr(model, "deeplab_config", None)
    return {
        "compute_dtype": compute_dtype(model),
        "eval_scales": [float(s) for s in eval_scales],
        "add_flipped_images": bool(add_flipped_images),
        "config": dataclasses.asdict(config) if config is not None else None,
        "eval_crop_size": None if eval_crop_size is None else list(eval_crop_size),
        "with_probabilities": bool(with_probabilities),
        "class_names": None if class_names is None else list(class_names),
        "signature": "serving_default: images uint8 [B,H,W,3] -> labels int32 [B,H,W]"
                     + (", probabilities float32 [B,H,W,K]" if with_probabilities else ""),
    }


def _export_spec(model, spec, eval_crop_size, class_names):
    crop = None if eval_crop_size is None else tuple(int(s) for s in eval_crop_size)
    if spec is not None:
        return dataclasses.replace(spec, eval_crop_size=crop)
    return ModelSpec(config=model.deeplab_config, eval_crop_size=crop,
                     class_names=None if class_names is None else tuple(class_names))


class ExportExistsError(UserError, FileExistsError):
    """The export folder exists and overwriting was not asked for."""


def export_saved_model(model, export_dir, eval_crop_size=None, with_probabilities=False,
                       class_names=None, overwrite=True, spec=None, eval_scales=(1.0,),
                       add_flipped_images=False, dtype="float32"):
    """Writes a SavedModel of ``model`` (raw pixels -> logits) to ``export_dir``; returns the path.

    The export is written into a temporary sibling folder and renamed into place, so
    ``export_dir`` never holds half an export. An existing ``export_dir`` is replaced only once
    the new export is complete (the old one is moved aside, the new one renamed in, then the old
    one deleted); with ``overwrite=False`` it is an error instead. ``spec``: the ModelSpec
    written as ``model.json`` (default: the model's config, ``class_names``, the eval crop size).
    ``eval_scales`` / ``add_flipped_images``: the export computes research/deeplab's multi-scale
    / flipped prediction (``multi_scale.py``; probabilities are then the averaged softmax).
    ``dtype``: "float32" or "bfloat16", the compute dtype of the exported graph
    (``models.precision.inference_model``; logits and outputs stay float32).
    """
    model = inference_model(model, dtype)
    export_dir = os.path.abspath(os.fspath(export_dir))
    if os.path.exists(export_dir) and not overwrite:
        raise ExportExistsError(f"--export_dir {export_dir} exists; pass --overwrite to "
                                f"replace it")
    parent = os.path.dirname(export_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(export_dir)}.tmp_", dir=parent)
    try:
        serving = _Serving(model, eval_crop_size, with_probabilities, eval_scales,
                           add_flipped_images)
        tf.saved_model.save(serving, tmp, signatures={"serving_default": serving.serve})
        with open(os.path.join(tmp, METADATA_FILE), "w", encoding="utf-8") as f:
            json.dump(_metadata(model, eval_crop_size, with_probabilities, class_names,
                                serving.eval_scales, add_flipped_images), f, indent=1)
        write_model_spec(tmp, _export_spec(model, spec, eval_crop_size, class_names))
        if os.path.exists(export_dir):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(export_dir)}.old_", dir=parent)
            os.rename(export_dir, os.path.join(old, "export"))
            os.rename(tmp, export_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, export_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logging.info("exported SavedModel to %s", export_dir)
    return export_dir


def run_export(config, log=logging.info):
    """Loads the model of ``config`` and exports it; returns (path, eval crop size, description)."""
    if not config.export_dir:
        raise FlagError("--export_dir is required")
    if os.path.exists(config.export_dir) and not config.overwrite:
        raise ExportExistsError(f"--export_dir {config.export_dir} exists; pass --overwrite to "
                                f"replace it")
    spec, _ = find_spec(config.model)
    info = dataset_info(config.dataset or (spec.dataset if spec is not None else None))
    loaded = load_model(config.model, info.num_classes if info else None, log=log)
    crop = eval_crop_size(config.eval_crop_size, spec, info)
    class_names = (spec.class_names if spec is not None and spec.class_names
                   else info.class_names if info else None)
    path = export_saved_model(loaded.model, config.export_dir, crop, config.with_probabilities,
                              class_names, config.overwrite, spec=spec,
                              eval_scales=config.eval_scales,
                              add_flipped_images=config.add_flipped_images, dtype=config.dtype)
    return path, crop, loaded.description
