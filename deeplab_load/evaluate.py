"""mIoU and per-class IoU of a model on a data-set split, as the original eval.py computes them.

    python -m deeplab_load.evaluate --run_dir=runs/demo_mobilenet_v2
    python -m deeplab_load.evaluate --dataset=voc --dataset_dir=/data/pascal_voc_seg --split=val \
        --zoo_name=xception65_coco_voc_trainaug \
        --checkpoint=checkpoints/xception65_coco_voc_trainaug --output_dir=runs/eval

With ``--run_dir`` (or a checkpoint folder of a run) the model, data set, eval split and eval
crop size come from the run's ``model.json``; flags given explicitly override them. Every image
is padded at the bottom/right to the eval crop size (pixels 127.5, labels 255), the logits are
upsampled with align_corners and the padding is never counted. Prints the table; with
``--output_dir`` also writes results.json and results.md.
"""
from deeplab_load import cli  # first: quiets TensorFlow's start-up

from absl import flags

FLAGS = flags.FLAGS

cli.define_model_flags("is evaluated")
flags.DEFINE_string("dataset", None, "voc, cityscapes, stanford or demo (default: the run's "
                    "model.json, else demo).")
flags.DEFINE_string("dataset_dir", None, "Data set root: the folder holding VOCdevkit, the "
                    "Cityscapes root, the folder holding iccv09Data; not needed for demo or with "
                    "--run_dir.")
flags.DEFINE_string("tfrecord_dir", None, "Read the split from TFRecords (ours, or "
                    "research/deeplab's build_*_data.py output) instead of the image files.")
flags.DEFINE_string("split", None, "Split to evaluate (default: the run's eval split, else val).")
flags.DEFINE_list("eval_crop_size", None, "Pad every image to H,W (the original's "
                  "eval_crop_size); 'none' disables padding (default: model.json's, else the "
                  "data set's: 513,513 VOC, 1025,2049 Cityscapes).")
flags.DEFINE_integer("eval_batch_size", 1, "Images per batch (does not change the numbers).",
                     lower_bound=1)
flags.DEFINE_integer("max_images", None, "Evaluate only the first N images of the split.",
                     lower_bound=1)
flags.DEFINE_bool("skip_bad_examples", False, "Skip (and count) corrupt examples instead of "
                  "stopping at the first.")
flags.DEFINE_string("output_dir", None, "Where results.json and results.md go (default: only "
                    "print the table).")
cli.define_multi_scale_flags()
cli.define_strategy_flag()

flags.adopt_module_key_flags(cli)  # --help lists the shared flags too


def config_from_flags():
    from deeplab_load.evaluation import EvaluateConfig
    eval_scales, add_flipped_images = cli.multi_scale_from_flags()
    return EvaluateConfig(
        eval_scales=eval_scales, add_flipped_images=add_flipped_images, dtype=FLAGS.dtype,
        model=cli.model_source_from_flags(), dataset=FLAGS.dataset,
        dataset_dir=FLAGS.dataset_dir, tfrecord_dir=FLAGS.tfrecord_dir, split=FLAGS.split,
        eval_crop_size=cli.size_flag("eval_crop_size"), batch_size=FLAGS.eval_batch_size,
        max_images=FLAGS.max_images, skip_bad_examples=FLAGS.skip_bad_examples,
        output_dir=FLAGS.output_dir)


def main(argv):
    del argv
    import dataclasses
    from deeplab_load import metrics
    from deeplab_load.evaluation import run_evaluation
    config = config_from_flags()
    strategy, chief = cli.strategy_from_flags()
    if not chief:                 # every worker evaluates its share; the chief writes
        config = dataclasses.replace(config, output_dir=None)
    results = run_evaluation(config, strategy=strategy)
    print(metrics.format_text_table(results))
    if config.output_dir:
        print(f"wrote results.json and results.md to {config.output_dir}")


if __name__ == "__main__":
    cli.run(main)
