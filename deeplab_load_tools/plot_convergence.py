"""Draws the hold-out mIoU per propagation of a LoAd run (paper Fig. 3 style).

    python -m deeplab_load_tools.plot_convergence --state=runs/demo_mobilenet_v2/state.json --out=conv.png
"""


from deeplab_load import cli  # first: quiets TensorFlow's start-up
from absl import flags

from deeplab_load.errors import FlagError

FLAGS = flags.FLAGS
flags.DEFINE_string("state", None, "LoAd state JSON of a run (its history is drawn).")
flags.DEFINE_string("out", None, "Output PNG path.")


def main(argv):
    del argv
    from deeplab_load.lookahead.convergence_plot import plot_convergence
    if not FLAGS.state or not FLAGS.out:
        raise FlagError("--state and --out are required")
    print(plot_convergence(FLAGS.state, FLAGS.out))


def run():
    """The console script's entry point (setup.py)."""
    cli.run(main)


if __name__ == "__main__":
    run()
