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

from deeplab_load.prediction import FORMATS

FLAGS = flags.FLAGS

cli.define_model_flags("predicts")
flags.DEFINE_string("output_dir", None, "Where the PNGs go (required).")
flags.DEFINE_enum("format", "color", list(FORMATS), "raw, color, overlay, voc_submission or "
                  "cityscapes_submission (see the module doc).")
flags.DEFINE_string("dataset", None, "voc, cityscapes, stanford or demo (default: the run's "
                    "model.json, else demo); with --input_dir it names the classes, palette and "
                    "eval crop size only.")
flags.DEFINE_string("dataset_dir", None, "Data set root (as for train/evaluate); not needed "
                    "for demo, with --run_dir, or with --input_dir.")
flags.DEFINE_string("split", None, "Split whose images are predicted (default: the run's eval "
                    "split, else val; test for submissions).")
flags.DEFINE_string("input_dir", None, "Predict the images (.jpg, .png, .bmp) in this folder "
                    "instead of a data-set split.")
flags.DEFINE_list("eval_crop_size", None, "Pad every image to H,W before the model; 'none' "
                  "disables padding (default: model.json's, else the data set's; none for "
                  "--input_dir without a data set).")
flags.DEFINE_bool("skip_bad_examples", False, "Skip (and count) images that do not load "
                  "instead of stopping at the first.")
cli.define_multi_scale_flags()
cli.define_strategy_flag()
flags.adopt_module_key_flags(cli)  # --help lists the shared flags too


def config_from_flags():
    from deeplab_load.prediction import PredictConfig
    eval_scales, add_flipped_images = cli.multi_scale_from_flags()
    return PredictConfig(model=cli.model_source_from_flags(), output_dir=FLAGS.output_dir,
                         fmt=FLAGS.format, dataset=FLAGS.dataset, dataset_dir=FLAGS.dataset_dir,
                         split=FLAGS.split, input_dir=FLAGS.input_dir,
                         eval_crop_size=cli.size_flag("eval_crop_size"),
                         eval_scales=eval_scales, add_flipped_images=add_flipped_images,
                         dtype=FLAGS.dtype,
                         skip_bad_examples=FLAGS.skip_bad_examples)


def main(argv):
    del argv
    from deeplab_load.prediction import run_prediction
    config = config_from_flags()
    strategy, chief = cli.strategy_from_flags()
    paths, description = run_prediction(config, strategy=strategy, write=chief)
    print(f"wrote {len(paths)} {config.fmt} PNGs under {config.output_dir} ({description})")


if __name__ == "__main__":
    cli.run(main)
