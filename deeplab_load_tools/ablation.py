"""Does LoAd beat its controls? The arms of the ablation from one stage-1 model, for several seeds.

    python -m deeplab_load_tools.ablation --ablation_dir=runs/ablation_demo --num_seeds=3
    python -m deeplab_load_tools.ablation --dataset=bench --num_seeds=5 --arms=baseline,load,selection_only
        --ablation_dir=runs/ablation_bench      (one command line)

Arms (--arms, a comma list; default all): baseline (a) the stage-1 model; cross_entropy (b)
more CE with the generator's optimizer; cross_entropy_selected (b') the same CE steps under
LoAd's controller (lookahead, hold-out selection, no D); adversarial (c) last / (d) best
hold-out model of plain adversarial training; load (e) LoAd; hybrid (f) CE + lambda adv per
--hybrid_weights, last / best; selection_only (g) LoAd with the generator's learning rate 0.
Every arm takes --arm_steps generator steps, or as many as the LoAd arm of the seed took
propagations. Every train flag applies (the demo profile too). Arms are judged on the data
set's test split, else on val minus the hold-out; the report has paired bootstrap intervals
against the baseline and LoAd. Writes ablation.md / .json / .png into --ablation_dir and
resumes there arm by arm when run again. See deeplab_load/experiments/ablation/.
"""
import os


from deeplab_load import cli  # first: quiets TensorFlow's start-up
from absl import flags

from deeplab_load.errors import FlagError
from deeplab_load.experiments.ablation.config import AblationConfig
from deeplab_load.experiments.ablation.runner import run_ablation
from deeplab_load.training.safety import interrupts
from deeplab_load.training.config import TrainConfig

FLAGS = flags.FLAGS
cli.define_flags(TrainConfig)
cli.define_flags(AblationConfig)

flags.adopt_module_key_flags(cli)  # --help lists the shared flags too


def ablation_config_from_flags():
    """AblationConfig of the ablation flags; FlagError naming the bad ones."""
    try:
        return cli.config_from_flags(AblationConfig)[0]
    except ValueError as err:
        raise FlagError(str(err)) from err


def main(argv):
    del argv
    if FLAGS.run_dir:
        raise FlagError("--run_dir is not used by the ablation; pass --ablation_dir")
    ablation = ablation_config_from_flags()
    config, given = cli.config_from_flags(TrainConfig)
    config, applied = config.with_demo_profile(given)
    ablation_dir = ablation.ablation_dir or os.path.join("runs",
                                                         f"ablation_{config.data.dataset}")
    try:
        run_ablation(config.validate(), ablation, ablation_dir, demo_profile=applied)
    except interrupts.TrainingInterrupted as stop:
        print(f"ablation {stop}; finished arms are kept in {os.path.abspath(ablation_dir)}: run "
              f"the same command again to resume", flush=True)
        raise SystemExit(130) from stop
    print(f"ablation report: {os.path.join(os.path.abspath(ablation_dir), 'ablation.md')}")


def run():
    """The console script's entry point (setup.py)."""
    cli.run(main)


if __name__ == "__main__":
    run()
