"""SavedModel export for inference (see ``deeplab_load.serving`` for the signature).

    python -m deeplab_load.export --run_dir=runs/demo_mobilenet_v2 --export_dir=exported/demo
    python -m deeplab_load.export --zoo_name=xception65_coco_voc_trainaug \
        --checkpoint=checkpoints/xception65_coco_voc_trainaug --dataset=voc \
        --export_dir=exported/voc

The SavedModel's ``serving_default`` takes uint8 ``images`` [B, H, W, 3] and returns int32
``labels`` [B, H, W] (and softmax ``probabilities`` with ``--with_probabilities``), padding every
image to the eval crop size first as the original's export does. ``model.json`` and
``deeplab_export.json`` beside ``saved_model.pb`` record the model, classes and crop size.
"""
from deeplab_load import cli  # first: quiets TensorFlow's start-up

from absl import flags

FLAGS = flags.FLAGS

cli.define_model_flags("is exported")
flags.DEFINE_string("export_dir", None, "Where the SavedModel goes (required).")
flags.DEFINE_string("dataset", None, "voc, cityscapes, stanford or demo: the class names and "
                    "eval crop size when there is no model.json (no data is read).")
flags.DEFINE_list("eval_crop_size", None, "Pad every image to H,W before the model (the "
                  "original export's crop_size); 'none': no padding (default: model.json's, "
                  "else the --dataset's, else none).")
flags.DEFINE_bool("with_probabilities", False, "Also return softmax probabilities.")
flags.DEFINE_bool("overwrite", False, "Replace an existing --export_dir (atomically).")
cli.define_multi_scale_flags()

flags.adopt_module_key_flags(cli)  # --help lists the shared flags too


def config_from_flags():
    from deeplab_load.serving import ExportConfig
    eval_scales, add_flipped_images = cli.multi_scale_from_flags()
    return ExportConfig(model=cli.model_source_from_flags(), export_dir=FLAGS.export_dir,
                        dataset=FLAGS.dataset, eval_crop_size=cli.size_flag("eval_crop_size"),
                        with_probabilities=FLAGS.with_probabilities, overwrite=FLAGS.overwrite,
                        eval_scales=eval_scales, add_flipped_images=add_flipped_images,
                        dtype=FLAGS.dtype)


def main(argv):
    del argv
    from deeplab_load.serving import run_export
    config = config_from_flags()
    path, crop, description = run_export(config)
    print(f"exported {description} to {path} (eval crop size "
          f"{'none' if crop is None else 'x'.join(map(str, crop))})")


if __name__ == "__main__":
    cli.run(main)
