"""One input pipeline that meets a bad example, run as its own process by test_no_hang.py.

    python pipeline_error_worker.py <pipeline> <work_dir>

Makes a tiny fake VOC tree in <work_dir> with one bad file, then runs <pipeline> (stage1,
evaluate, predict, map_sets, holdout) over it through the library and lets the error propagate
uncaught -- the worst case for the exit, since the traceback lives until interpreter shutdown.
Before that, the D-data and cached-hold-out paths of the same process are run once with the
error caught. Prints "BAD_FILE <path>" first and "ERROR_AT <unix time>" when the uncaught error
reaches the interpreter, so the test can measure how long the exit takes after it.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from fake_datasets import make_fake_voc  # noqa: E402

SIZE = (65, 65)


def _report_error_time(hook=sys.excepthook):
    def excepthook(*args):
        hook(*args)
        sys.stderr.write(f"\nERROR_AT {time.time():.3f}\n")
        sys.stderr.flush()
    sys.excepthook = excepthook


def _break_label(path, value=77):
    """A label PNG with a value that is neither a class nor 255."""
    label = np.array(Image.open(path))
    label[: SIZE[0] // 2] = value
    Image.fromarray(label, mode="L").save(path)


def _tiny_model(num_classes):
    """A 1x1 convolution: logits [B,H,W,K] of pixels [B,H,W,3] (the pipelines need no more)."""
    import keras
    keras.utils.set_random_seed(0)
    inputs = keras.Input((None, None, 3))
    return keras.Model(inputs, keras.layers.Conv2D(num_classes, 1)(inputs))


def main(pipeline_name, work_dir):
    tree = make_fake_voc(os.path.join(work_dir, "data"), num_train=12, num_val=6, size=SIZE)
    from deeplab_load.data import get_dataset
    ds = get_dataset("voc", tree.data_dir)
    train, val = ds.examples("train"), ds.examples("val")
    if pipeline_name == "predict":
        bad = train[7].image_path
        with open(bad, "wb") as f:
            f.write(b"\xff\xd8\xff\xe0 not a JPEG")
    else:
        bad = (train if pipeline_name in ("stage1", "map_sets") else val)[3].label_path
        _break_label(bad)
    print("BAD_FILE", bad, flush=True)
    _report_error_time()
    model = _tiny_model(ds.info.num_classes)

    if pipeline_name == "stage1":
        from deeplab_load.training import steps
        from deeplab_load.checkpoints.store import CheckpointStore
        from deeplab_load.training.stage1 import run_stage1
        from deeplab_load.training.strategy import make_strategy
        strategy = make_strategy("default")
        with strategy.scope():
            optimizer = steps.stage1_optimizer(1e-4, 0.9)
            trainer = steps.Stage1Trainer(model, optimizer, strategy, ds.info.num_classes)
        store = CheckpointStore(os.path.join(work_dir, "run", "stage1"), model=model,
                                optimizer=optimizer)
        run_stage1(trainer, store, ds, os.path.join(work_dir, "run"), split="train",
                   batch_size=2, crop_size=SIZE, weighted_epochs=0, plain_epochs=3, seed=0)
    elif pipeline_name == "evaluate":
        from deeplab_load import evaluation as evaluate
        evaluate.evaluate(model, ds, "val", batch_size=2, eval_crop_size=SIZE)
    elif pipeline_name == "predict":
        from deeplab_load import prediction as predict
        predict.predict_examples(model, predict.dataset_examples(ds, "train"), ds.info,
                                 os.path.join(work_dir, "predictions"), "raw", SIZE)
    elif pipeline_name == "map_sets":
        from deeplab_load.data.batches import Batches
        from deeplab_load.training import map_sets
        try:  # the discriminator's data over the same training images, read as D reads it
            for _ in Batches(map_sets.real_examples(ds, train, 33, seed=0)):
                pass
        except Exception as error:  # noqa: BLE001 -- reported, then the map set runs
            print("D_DATA_ERROR", type(error).__name__, str(error).splitlines()[0], flush=True)
        map_sets.write_label_map_set(model, ds, train, os.path.join(work_dir, "set"), 2, SIZE)
    elif pipeline_name == "holdout":
        from deeplab_load.training.holdout import HoldoutEvaluator
        HoldoutEvaluator(model, ds, val, 2, SIZE).mean_iou()
    else:
        raise SystemExit(f"unknown pipeline {pipeline_name}")
    print("NO_ERROR", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
