"""Label maps of a data-set split or a folder of images as PNGs, incl. test-server formats.

    python -m deeplab_load.predict --run_dir=runs/demo_mobilenet_v2 --output_dir=out
    python -m deeplab_load.predict --dataset=voc --dataset_dir=/data/pascal_voc_seg --split=test \
        --zoo_name=xception65_coco_voc_trainaug \
        --checkpoint=checkpoints/xception65_coco_voc_trainaug --output_dir=out \
        --format=voc_submission
    python -m deeplab_load.predict --input_dir=photos --run_dir=runs/cityscapes_mobilenet_v2 \
        --output_dir=out --format=overlay

Formats: raw (train ids), color (palette), overlay (over the image), voc_submission
(results/VOC2012/Segmentation/comp6_test_cls/<id>.png, indexed), cityscapes_submission
(<city>/<city>_<seq>_<frame>_pred_labelIds.png, label ids); see ``deeplab_load.prediction``.
Every image is padded to the eval crop size first, as in evaluation, so the labels equal those
behind the mIoU.
"""
from deeplab_load import cli  # first: quiets TensorFlow's start-up

from absl import flags

from deeplab_load.inference_configs import PredictConfig

FLAGS = flags.FLAGS

cli.define_flags(PredictConfig)
flags.adopt_module_key_flags(cli)  # --help lists the shared flags too


def config_from_flags():
    return cli.config_from_flags(PredictConfig)[0]


def main(argv):
    del argv
    from deeplab_load.prediction import run_prediction
    from deeplab_load.training.strategy import is_chief, make_strategy
    config = config_from_flags()
    strategy = make_strategy(config.strategy)
    paths, description = run_prediction(config, strategy=strategy, write=is_chief(strategy))
    print(f"wrote {len(paths)} {config.fmt} PNGs under {config.output_dir} ({description})")


if __name__ == "__main__":
    cli.run(main)
