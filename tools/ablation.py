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

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from deeplab_load import train as train_command  # noqa: E402  (defines the train flags)

FLAGS = flags.FLAGS
flags.DEFINE_string("ablation_dir", None, "Where the arms' runs and the report go "
                    "(default: runs/ablation_<dataset>).")
flags.DEFINE_integer("num_seeds", 3, "Seeds --seed, --seed + 1, ... (each runs every arm).")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if FLAGS.num_seeds < 1:
        raise app.UsageError(f"--num_seeds must be >= 1, got {FLAGS.num_seeds}")
    if FLAGS.run_dir:
        raise app.UsageError("--run_dir is not used by the ablation; pass --ablation_dir")
    from deeplab_load.training.ablation import run_ablation
    applied = train_command.apply_demo_profile()
    ablation_dir = FLAGS.ablation_dir or os.path.join("runs", f"ablation_{FLAGS.dataset}")
    run_ablation(FLAGS, ablation_dir, FLAGS.num_seeds, demo_profile=applied)
    print(f"ablation report: {os.path.join(os.path.abspath(ablation_dir), 'ablation.md')}")


if __name__ == "__main__":
    app.run(main)
