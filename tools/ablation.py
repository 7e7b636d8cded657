"""Does LoAd beat its controls? Five arms from one stage-1 model, for several seeds.

    python tools/ablation.py --ablation_dir=runs/ablation_demo --num_seeds=3
    python tools/ablation.py --flagfile=flags/stanford_xception65.cfg --dataset_dir=/data
        --ablation_dir=runs/ablation_stanford      (one command line)

Arms: (a) the stage-1 baseline, (b) continued pixel-wise CE, (c) plain adversarial training
without lookahead (last model), (d) the same with the best hold-out model selected, (e) LoAd.
(b)-(d) take as many generator steps as the LoAd run of the same seed took propagations.
Every train flag applies (the demo profile too); results are mIoU on the unselected val
images (val minus the hold-out). Writes ablation.md / .json / .png into --ablation_dir and
resumes there when run again. See deeplab_load/training/ablation.py.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from deeplab_load import cli  # noqa: E402  (first: quiets TensorFlow's start-up)
from absl import flags  # noqa: E402

from deeplab_load.errors import FlagError  # noqa: E402
from deeplab_load.training.config import TrainConfig  # noqa: E402

FLAGS = flags.FLAGS
cli.define_dataclass_flags(TrainConfig)
flags.DEFINE_string("ablation_dir", None, "Where the arms' runs and the report go "
                    "(default: runs/ablation_<dataset>).")
flags.DEFINE_integer("num_seeds", 3, "Seeds --seed, --seed + 1, ... (each runs every arm).")

flags.adopt_module_key_flags(cli)  # --help lists the shared flags too


def main(argv):
    del argv
    if FLAGS.num_seeds < 1:
        raise FlagError(f"--num_seeds must be >= 1, got {FLAGS.num_seeds}")
    if FLAGS.run_dir:
        raise FlagError("--run_dir is not used by the ablation; pass --ablation_dir")
    from deeplab_load.training.ablation import run_ablation
    config, given = cli.dataclass_from_flags(TrainConfig)
    config, applied = config.with_demo_profile(given)
    ablation_dir = FLAGS.ablation_dir or os.path.join("runs", f"ablation_{config.dataset}")
    run_ablation(config.validate(), ablation_dir, FLAGS.num_seeds, demo_profile=applied)
    print(f"ablation report: {os.path.join(os.path.abspath(ablation_dir), 'ablation.md')}")


if __name__ == "__main__":
    cli.run(main)
