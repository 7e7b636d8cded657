"""Train with LoAd: stage 1 (pixel-wise CE, when needed), then lookahead adversarial stage 2.

    python -m deeplab_load.train                                   # the demo data set, CPU, minutes
    python -m deeplab_load.train --flagfile=flags/voc_xception65.cfg \
        --dataset_dir=/data/pascal_voc_seg

Every flag is a field of ``deeplab_load.training.config.TrainConfig`` (grouped: model, data,
run, stage1, load, generator, discriminator; its defaults are the paper's) and is checked before
any work. With ``--dataset=demo`` (the default) and no flagfile,
``DEMO_PROFILE`` replaces the defaults of flags not given on the command line, so the whole job
(stage 1, LoAd cycles, evaluation, export) runs on a CPU in minutes; ``flags/demo.cfg`` spells
them out. A run directory that already holds a run is resumed (``--resume``, default on); its
``flags.txt`` is a flagfile of the run's settings, and ``evaluate`` / ``export`` / ``predict``
take ``--run_dir`` alone.
"""
from deeplab_load import cli  # first: quiets TensorFlow's start-up

from absl import flags

from deeplab_load.training.config import TrainConfig

FLAGS = flags.FLAGS

cli.define_flags(TrainConfig)

flags.adopt_module_key_flags(cli)  # --help lists the shared flags too


def config_from_flags():
    """(TrainConfig with the demo profile applied where it applies, {name: value applied})."""
    config, given = cli.config_from_flags(TrainConfig)
    config, applied = config.with_demo_profile(given)
    return config.validate(), applied


def main(argv):
    del argv
    from deeplab_load.training.run import run_training
    config, applied = config_from_flags()
    run_training(config, demo_profile=applied)


if __name__ == "__main__":
    cli.run(main)
