"""SavedModel export for inference.

    python -m deeplab_load.export --zoo_name=xception65_coco_voc_trainaug \
        --checkpoint=checkpoints/.../model.ckpt --export_dir=exported/voc [--eval_crop_size=513,513]

The SavedModel's ``serving_default`` signature takes ``images``: uint8 ``[B, H, W, 3]`` of any
size and returns ``labels``: int32 ``[B, H, W]`` (and ``probabilities``: float32 ``[B, H, W, K]``
softmax with ``--with_probabilities``). The numbers are those of
``inference.predict_labels(model, images, eval_crop_size)``: with an eval crop size the images are
padded with 127.5 to it first (an image larger than it fails), the logits are resized with
align_corners to the padded size and cropped back. Using it needs only TensorFlow:

    serving = tf.saved_model.load(export_dir).signatures["serving_default"]
    labels = serving(images=tf.constant(batch_uint8))["labels"]

A ``deeplab_export.json`` next to ``saved_model.pb`` records the model configuration, the eval
crop size and the class names.
"""
import dataclasses
import json
import os
import shutil
import tempfile

import tensorflow as tf
from absl import app, flags, logging

from deeplab_load.inference import PAD_PIXEL_VALUE, resize_bilinear_align_corners

FLAGS = flags.FLAGS
METADATA_FILE = "deeplab_export.json"


class _Serving(tf.Module):
    """Holds the model and its variables so tf.saved_model.save finds every one of them."""

    def __init__(self, model, eval_crop_size, with_probabilities, eval_scales=(1.0,),
                 add_flipped_images=False):
        super().__init__(name="deeplab_serving")
        from deeplab_load import multi_scale
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
        pixels = tf.pad(tf.cast(images, tf.float32),
                        [[0, 0], [0, padded_size[0] - height], [0, padded_size[1] - width], [0, 0]],
                        constant_values=PAD_PIXEL_VALUE)
        from deeplab_load import multi_scale
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
        "eval_scales": [float(s) for s in eval_scales],
        "add_flipped_images": bool(add_flipped_images),
        "config": dataclasses.asdict(config) if config is not None else None,
        "eval_crop_size": None if eval_crop_size is None else list(eval_crop_size),
        "with_probabilities": bool(with_probabilities),
        "class_names": None if class_names is None else list(class_names),
        "signature": "serving_default: images uint8 [B,H,W,3] -> labels int32 [B,H,W]"
                     + (", probabilities float32 [B,H,W,K]" if with_probabilities else ""),
    }


def export_saved_model(model, export_dir, eval_crop_size=None, with_probabilities=False,
                       class_names=None, overwrite=True, eval_scales=(1.0,),
                       add_flipped_images=False):
    """Writes a SavedModel of ``model`` (raw pixels -> logits) to ``export_dir``; returns the path.

    ``eval_scales`` / ``add_flipped_images``: the export computes research/deeplab's multi-scale
    / flipped prediction (``multi_scale.py``; probabilities are then the averaged softmax).

    The export is written into a temporary sibling folder and renamed into place, so
    ``export_dir`` never holds half an export. An existing ``export_dir`` is replaced only once
    the new export is complete (the old one is moved aside, the new one renamed in, then the old
    one deleted); with ``overwrite=False`` it is an error instead.
    """
    export_dir = os.path.abspath(os.fspath(export_dir))
    if os.path.exists(export_dir) and not overwrite:
        raise FileExistsError(f"export dir {export_dir} exists; pass overwrite=True "
                              f"(--overwrite) to replace it")
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


def define_flags():
    from deeplab_load.evaluate import define_model_flags, define_multi_scale_flags
    define_model_flags()
    define_multi_scale_flags()
    if "export_dir" in FLAGS:
        return
    flags.DEFINE_string("export_dir", None, "Where the SavedModel goes.")
    flags.DEFINE_string("dataset", None, "Data set whose class count, names and eval crop size "
                        "are the defaults (voc, cityscapes, stanford, demo); the data is not read.")
    flags.DEFINE_list("eval_crop_size", None, "Pad every image to H,W before the model (the "
                      "original export's crop_size); default: the --dataset's, else none.")
    flags.DEFINE_bool("with_probabilities", False, "Also return softmax probabilities.")
    flags.DEFINE_bool("overwrite", False, "Replace an existing export dir.")


def _dataset_info(name):
    import importlib
    modules = {"voc": "voc", "cityscapes": "cityscapes", "stanford": "stanford"}
    if name not in modules:
        raise app.UsageError(f"--dataset must be one of {sorted(modules)} for export, got {name!r}")
    return importlib.import_module(f"deeplab_load.data.{modules[name]}").INFO


def main(argv):
    del argv
    from deeplab_load.evaluate import build_model_from_flags
    if not FLAGS.export_dir:
        raise app.UsageError("--export_dir is required")
    if os.path.exists(FLAGS.export_dir) and not FLAGS.overwrite:
        raise app.UsageError(f"--export_dir {FLAGS.export_dir} exists; pass --overwrite to "
                             f"replace it")
    info = _dataset_info(FLAGS.dataset) if FLAGS.dataset else None
    eval_crop_size = tuple(info.eval_crop_size) if info else None
    if FLAGS.eval_crop_size:
        if [v.lower() for v in FLAGS.eval_crop_size] == ["none"]:
            eval_crop_size = None
        else:
            try:
                eval_crop_size = tuple(int(v) for v in FLAGS.eval_crop_size)
            except ValueError as err:
                raise app.UsageError(
                    f"--eval_crop_size must be H,W: {FLAGS.eval_crop_size}") from err
            if len(eval_crop_size) != 2:
                raise app.UsageError(f"--eval_crop_size must be H,W: {FLAGS.eval_crop_size}")
    model, _, description = build_model_from_flags(info.num_classes if info else None)
    from deeplab_load.evaluate import multi_scale_from_flags
    eval_scales, add_flipped_images = multi_scale_from_flags()
    path = export_saved_model(model, FLAGS.export_dir, eval_crop_size, FLAGS.with_probabilities,
                              info.class_names if info else None, FLAGS.overwrite,
                              eval_scales=eval_scales, add_flipped_images=add_flipped_images)
    print(f"exported {description} to {path} (eval crop size {eval_crop_size})")


if __name__ == "__main__":
    define_flags()
    app.run(main)
