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

from deeplab_load.inference_configs import EvaluateConfig

FLAGS = flags.FLAGS

cli.define_flags(EvaluateConfig)

flags.adopt_module_key_flags(cli)  # --help lists the shared flags too


def config_from_flags():
    return cli.config_from_flags(EvaluateConfig)[0]


def main(argv):
    del argv
    import dataclasses
    from deeplab_load import metrics
    from deeplab_load.evaluation import run_evaluation
    from deeplab_load.training.strategy import is_chief, make_strategy
    config = config_from_flags()
    strategy = make_strategy(config.strategy)
    if not is_chief(strategy):     # every worker evaluates its share; the chief writes
        config = dataclasses.replace(config, output_dir=None)
    results = run_evaluation(config, strategy=strategy)
    print(metrics.format_text_table(results))
    if config.output_dir:
        print(f"wrote results.json and results.md to {config.output_dir}")


if __name__ == "__main__":
    cli.run(main)
