"""Baseline-vs-boosted per-class IoU table in the style of the paper's Table 1.

    python -m deeplab_load_tools.compare_runs runs/base/results.json runs/load/results.json \
        --names=DLv3+,DLv3+&LoAd --markdown=compare.md

Inputs are `results.json` files written by `python -m deeplab_load.evaluate`. Prints a console
table (one row per class, both IoUs in percent, the better one marked with `*`, and the
difference) and optionally writes markdown laid out like the paper (one row per method, classes
as columns wrapped into blocks, the better value in bold, mIoU last).
"""
import os

from absl import app, flags

from deeplab_load.comparison import compare, format_markdown, format_text
from deeplab_load.metrics import load_results

FLAGS = flags.FLAGS
flags.DEFINE_list("names", None, "Two display names for the runs (default: the file names' "
                  "parent folders).")
flags.DEFINE_string("markdown", None, "Write the paper-style markdown table to this file.")
flags.DEFINE_integer("columns_per_block", 11, "Columns per block of the markdown table.")


def main(argv):
    if len(argv) != 3:
        raise app.UsageError(
            "usage: compare_runs.py A.json B.json [--names=a,b] [--markdown=out.md]")
    path_a, path_b = argv[1], argv[2]
    names = FLAGS.names or [os.path.basename(os.path.dirname(os.path.abspath(p))) or p
                            for p in (path_a, path_b)]
    if len(names) != 2:
        raise app.UsageError(f"--names needs exactly two names, got {names}")
    for path in (path_a, path_b):
        if not os.path.isfile(path):
            raise app.UsageError(f"results file not found: {path}")
    rows = compare(load_results(path_a), load_results(path_b), path_a, path_b)
    print(format_text(rows, names))
    if FLAGS.markdown:
        with open(FLAGS.markdown, "w", encoding="utf-8") as f:
            f.write(format_markdown(rows, names, FLAGS.columns_per_block))
        print(f"wrote {FLAGS.markdown}")


def run():
    """The console script's entry point (setup.py)."""
    app.run(main)


if __name__ == "__main__":
    run()
