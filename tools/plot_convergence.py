"""Draws the hold-out mIoU per propagation of a LoAd run (paper Fig. 3 style).

    python tools/plot_convergence.py --state=runs/demo_mobilenet_v2/state.json --out=conv.png
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from deeplab_load import cli  # noqa: E402  (first: quiets TensorFlow's start-up)
from absl import flags  # noqa: E402

from deeplab_load.errors import FlagError  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("state", None, "LoAd state JSON of a run (its history is drawn).")
flags.DEFINE_string("out", None, "Output PNG path.")


def main(argv):
    del argv
    from deeplab_load.lookahead.convergence_plot import plot_convergence
    if not FLAGS.state or not FLAGS.out:
        raise FlagError("--state and --out are required")
    print(plot_convergence(FLAGS.state, FLAGS.out))


if __name__ == "__main__":
    cli.run(main)
