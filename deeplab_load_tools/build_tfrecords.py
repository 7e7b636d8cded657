"""Converts a data-set split into TFRecord shards the training/eval pipeline reads.

    python -m deeplab_load_tools.build_tfrecords --dataset=cityscapes --data_dir=/data/cityscapes \
        --split=train --output_dir=/data/cityscapes/tfrecord --num_shards=10

Then pass the output dir as `--tfrecord_dir` to train / evaluate (or `tfrecord_dir` to
`deeplab_load.data.get_dataset`); the raw tree is not needed any more. The records use
research/deeplab's keys plus `id`, and `<split>.json` lists the ids (see
deeplab_load/data/tfrecords.py). Every example is decoded and validated while writing; a bad one
stops the conversion with an error naming the file, unless --skip_bad_examples (then it is left
out and listed in `<split>.json`).
A split's shards are written into a temporary folder and moved into place when the split is
complete: a stopped conversion leaves no partial split and no temporary files.
"""
import time

from absl import flags


from deeplab_load import cli  # first: quiets TensorFlow's start-up
from deeplab_load.data import DATASET_NAMES, get_dataset, pipeline
from deeplab_load.data import tfrecords

flags.DEFINE_enum("dataset", None, list(DATASET_NAMES), "Data set to convert.")
flags.DEFINE_string("data_dir", None, "Root of the data set in its standard layout.")
flags.DEFINE_list("split", ["train", "val"], "Split(s) to convert.")
flags.DEFINE_string("output_dir", None, "Where to write the shards.")
flags.DEFINE_integer("num_shards", 4, "Shards per split.", lower_bound=1)
flags.DEFINE_bool("skip_bad_examples", False, "Leave bad examples out instead of failing.")
flags.mark_flags_as_required(["dataset", "output_dir"])
FLAGS = flags.FLAGS


def main(argv):
    del argv
    ds = get_dataset(FLAGS.dataset, FLAGS.data_dir)
    bad_examples = pipeline.BadExampleLog()
    for split in FLAGS.split:
        start = time.time()
        metadata = tfrecords.write_split(ds, split, FLAGS.output_dir, FLAGS.num_shards,
                                         FLAGS.skip_bad_examples, bad_examples)
        print(f"{FLAGS.dataset} {split}: {metadata['num_examples']} examples in "
              f"{metadata['num_shards']} shards, {len(metadata['skipped'])} skipped, "
              f"{time.time() - start:.1f} s -> {FLAGS.output_dir}")


def run():
    """The console script's entry point (setup.py)."""
    cli.run(main)


if __name__ == "__main__":
    run()
