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

from deeplab_load.inference_configs import ExportConfig

FLAGS = flags.FLAGS

cli.define_flags(ExportConfig)

flags.adopt_module_key_flags(cli)  # --help lists the shared flags too


def config_from_flags():
    return cli.config_from_flags(ExportConfig)[0]


def main(argv):
    del argv
    from deeplab_load.serving import run_export
    config = config_from_flags()
    path, crop, description = run_export(config)
    print(f"exported {description} to {path} (eval crop size "
          f"{'none' if crop is None else 'x'.join(map(str, crop))})")


if __name__ == "__main__":
    cli.run(main)
