"""Writes the embedded demo data set (what `python -m deeplab_load.train` generates on first use).

    python -m deeplab_load_tools.make_demo_data [--output_dir=DIR] [--num_train=256] [--num_val=120]
"""
import time


from deeplab_load import cli  # first: quiets TensorFlow's start-up
from absl import flags

from deeplab_load.data import demo

FLAGS = flags.FLAGS
flags.DEFINE_string("output_dir", None, "Where to write (default: the cache dir).")
flags.DEFINE_integer("num_train", demo.DEFAULT_NUM_TRAIN, "Training images.", lower_bound=1)
flags.DEFINE_integer("num_val", demo.DEFAULT_NUM_VAL, "Validation images.", lower_bound=1)
flags.DEFINE_integer("height", demo.DEFAULT_IMAGE_SIZE[0], "Image height in pixels.",
                     lower_bound=33)
flags.DEFINE_integer("width", demo.DEFAULT_IMAGE_SIZE[1], "Image width in pixels.",
                     lower_bound=33)
flags.DEFINE_integer("seed", 0, "Generator seed.")


def main(argv):
    del argv
    start = time.time()
    root = demo.ensure_demo(FLAGS.output_dir, FLAGS.num_train, FLAGS.num_val,
                            (FLAGS.height, FLAGS.width), FLAGS.seed)
    print(f"demo data set ready in {root} ({time.time() - start:.2f} s)")


def run():
    """The console script's entry point (setup.py)."""
    cli.run(main)


if __name__ == "__main__":
    run()
