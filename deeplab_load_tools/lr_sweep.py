"""LoAd at several adversarial learning rates from one stage-1 model: which rate to use.

    python -m deeplab_load_tools.lr_sweep --sweep_dir=runs/lr_sweep_demo \
        --learning_rates=1e-6,1e-5,1e-4,1e-3 --max_propagations=40

Every train flag applies (the demo profile too); --adv_learning_rate is replaced by each value
of --learning_rates. Writes sweep.md / sweep.json into --sweep_dir and resumes there when run
again (finished rates are read back, an interrupted one continues inside its run). See
deeplab_load/experiments/lr_sweep.py.
"""
import os


from deeplab_load import cli  # first: quiets TensorFlow's start-up
from absl import flags

from deeplab_load.errors import FlagError
from deeplab_load.training.config import TrainConfig

FLAGS = flags.FLAGS
cli.define_flags(TrainConfig)
flags.DEFINE_string("sweep_dir", None, "Where the runs and the report go (default: "
                    "runs/lr_sweep_<dataset>).")
flags.DEFINE_list("learning_rates", ["1e-6", "1e-5", "1e-4", "1e-3"],
                  "Adversarial learning rates to run, comma-separated (each >= 0).")

flags.adopt_module_key_flags(cli)  # --help lists the shared flags too


def parse_learning_rates(values):
    """Floats of --learning_rates; FlagError naming the flag on a bad value."""
    try:
        rates = [float(v) for v in values]
    except ValueError as err:
        raise FlagError(f"--learning_rates={','.join(values)}: not numbers ({err})") from err
    if not rates or any(not rate >= 0 for rate in rates):
        raise FlagError(f"--learning_rates={','.join(values)} must be one or more values >= 0")
    if len(set(rates)) != len(rates):
        raise FlagError(f"--learning_rates={','.join(values)} repeats a value")
    return rates


def main(argv):
    del argv
    if FLAGS.run_dir:
        raise FlagError("--run_dir is not used by the sweep; pass --sweep_dir")
    rates = parse_learning_rates(FLAGS.learning_rates)
    from deeplab_load.experiments.lr_sweep import run_lr_sweep
    config, given = cli.config_from_flags(TrainConfig)
    config, applied = config.with_demo_profile(given)
    if not config.load.max_propagations:
        raise FlagError("--max_propagations=0: the sweep needs a propagation cap (> 0)")
    sweep_dir = FLAGS.sweep_dir or os.path.join("runs", f"lr_sweep_{config.data.dataset}")
    run_lr_sweep(config.validate(), sweep_dir, rates, demo_profile=applied)
    print(f"lr sweep report: {os.path.join(os.path.abspath(sweep_dir), 'sweep.md')}")


def run():
    """The console script's entry point (setup.py)."""
    cli.run(main)


if __name__ == "__main__":
    run()
