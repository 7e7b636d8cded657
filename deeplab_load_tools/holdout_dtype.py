"""--holdout_dtype: how many labels bfloat16 keeps, and how much faster it is, on a trained model.

    python -m deeplab_load_tools.holdout_dtype --run_dir=runs/bench --checkpoint=runs/bench/stage1 \
        --train_images=64 --repeats=3

Reads the run's model (the model flags are evaluate's; `--checkpoint`: a checkpoint folder of the
run, default the run's own), data set and hold-out images (holdout_ids.txt), and measures side by
side in this process, for float32 and bfloat16
(`training.holdout.HoldoutEvaluator(..., dtype=...)`, what LoAd runs): the hold-out mIoU, the
median seconds of one hold-out evaluation, the share of hold-out pixels whose label is the same in
both dtypes, and the same share over the label maps of the first `--train_images` training images
(what a map set holds). Prints one JSON object.
"""
import json
import os
import statistics
import time

from deeplab_load import cli  # first: quiets TensorFlow's start-up

from absl import flags

from deeplab_load.checkpoints.model_source import ModelSource
from deeplab_load.errors import FlagError

FLAGS = flags.FLAGS
# The model flags (--run_dir, --checkpoint, --checkpoint_tag, the architecture), as evaluate's.
cli.define_flags(ModelSource)
flags.adopt_module_key_flags(cli)  # --help lists them too
flags.DEFINE_integer("train_images", 64, "Training images whose maps are compared (0: none).")
flags.DEFINE_integer("repeats", 3, "Timed hold-out evaluations per dtype (median reported).")
flags.DEFINE_integer("batch_size", 8, "Evaluation batch.")


def agreement(first, second):
    same = sum(int((a == b).sum()) for a, b in zip(first, second))
    return same / sum(a.size for a in first)


def main(argv):
    del argv
    source = cli.config_from_flags(ModelSource)[0]
    if not source.run_dir:
        raise FlagError("--run_dir is required: the training run whose holdout_ids.txt names the "
                        "hold-out images (--checkpoint: one of its checkpoints)")
    import numpy as np
    from deeplab_load.checkpoints.model_loading import (eval_crop_size, find_spec, load_model,
                                                        open_dataset)
    from deeplab_load.data import pipeline
    from deeplab_load.inference import label_map_function
    from deeplab_load.training.holdout import HoldoutEvaluator

    spec, _ = find_spec(source)
    ds = open_dataset(spec)
    loaded = load_model(source, ds.info.num_classes)
    crop = eval_crop_size(None, spec, ds.info)
    split = (spec.data or {}).get("eval_split") or "val"
    ids = open(os.path.join(source.run_dir, "holdout_ids.txt")).read().split()
    refs = pipeline.select_refs(ds, split, ids)
    out = {"checkpoint": loaded.description, "holdout_images": len(refs), "eval_crop_size": crop}
    maps = {}
    for dtype in ("float32", "bfloat16"):
        evaluator = HoldoutEvaluator(loaded.model, ds, refs, FLAGS.batch_size, crop, dtype=dtype)
        evaluator.mean_iou()                      # decode, trace
        seconds = []
        for _ in range(FLAGS.repeats):
            start = time.perf_counter()
            miou = evaluator.mean_iou()
            seconds.append(time.perf_counter() - start)
        maps[dtype] = [m for _, _, m in evaluator.examples_with_maps()]
        train = []
        if FLAGS.train_images:
            predict = label_map_function(evaluator.computing_model())
            train_refs = ds.examples((spec.data or {}).get("train_split") or "train")
            for batch in pipeline.eval_dataset(ds, train_refs[:FLAGS.train_images],
                                               FLAGS.batch_size, crop):
                labels = predict(batch["pixels"]).numpy()
                train += [labels[i, :h, :w] for i, (h, w) in enumerate(batch["sizes"].numpy())]
        maps[dtype + "_train"] = train
        out[dtype] = {"holdout_miou": round(100 * miou, 3),
                      "holdout_eval_s_median": round(statistics.median(seconds), 3),
                      "holdout_eval_s_all": [round(s, 3) for s in seconds]}
    out["holdout_label_agreement"] = round(agreement(maps["float32"], maps["bfloat16"]), 6)
    if FLAGS.train_images:
        out["train_images"] = len(maps["float32_train"])
        out["train_label_agreement"] = round(
            agreement(maps["float32_train"], maps["bfloat16_train"]), 6)
    out["bfloat16_speedup"] = round(out["float32"]["holdout_eval_s_median"]
                                    / out["bfloat16"]["holdout_eval_s_median"], 3)
    out["changed_holdout_pixels"] = int(sum(int((a != b).sum()) for a, b in
                                            zip(maps["float32"], maps["bfloat16"])))
    print(json.dumps(out, indent=1, default=lambda v: v.tolist() if isinstance(v, np.ndarray)
                     else str(v)))


def run():
    """The console script's entry point (setup.py)."""
    cli.run(main)


if __name__ == "__main__":
    run()
