"""Hold-out evaluations, a label-map set and an evaluation of a tiny DeepLab under one strategy.

Launched as a subprocess by tests/test_replicated.py (1 replica, 2 replicas on two logical CPU
devices, or one process per MultiWorkerMirroredStrategy worker with TF_CONFIG):

    python tests/replicated_eval_worker.py --strategy {default,mirrored,multi_worker} \
        --demo_dir DEMO --out DIR [--dtype bfloat16]

The demo set (5 train, 5 val images of 41x57, made by the test first) gives uneven shares at
batch 2: the hold-out's 5 images are batches of 2, 2, 1 (on 2 replicas: groups [2, 2], [1, -]),
the map set's 5 training images the same. Every run evaluates the same three weight states
(seeded initialisation, then twice seeded noise added to every weight), so per-"propagation"
confusion matrices compare. Writes DIR/result.npz (confusion_<state>, holdout maps
map_<state>_<i>, evaluation matrices padded to the crop and unpadded, replicas, chief),
DIR/set/<id>.png (a map set) and DIR/predict/<id>.png (`predict --format=raw`, the chief only).
"""
import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

STATES = 3
DEMO = dict(num_train=5, num_val=5, image_size=(41, 57), seed=3)
CROP = (48, 64)
BATCH = 2


def demo_dataset(demo_dir):
    from deeplab_load.data import get_dataset
    return get_dataset("demo", demo_dir, **DEMO)


def tiny_model(num_classes):
    from deeplab_load.models.deeplab import DeepLabConfig, build_deeplab
    tf.keras.utils.set_random_seed(0)
    return build_deeplab(DeepLabConfig(backbone="mobilenet_v2", num_classes=num_classes,
                                       output_stride=16, atrous_rates=(),
                                       decoder_output_stride=None))


def perturb(model, state):
    """Seeded noise on every weight (10% of its spread): a new 'propagation' of the model."""
    rng = np.random.RandomState(100 + state)
    for variable in model.weights:
        value = variable.numpy()
        variable.assign(value + 0.1 * (value.std() + 1e-3) * rng.standard_normal(value.shape)
                        .astype(value.dtype))


def run(strategy, demo_dir, out_dir, dtype):
    from deeplab_load.evaluation import evaluate
    from deeplab_load.prediction import dataset_examples, predict_examples
    from deeplab_load.training import map_sets
    from deeplab_load.training.holdout import HoldoutEvaluator
    from deeplab_load.training.strategy import is_chief

    ds = demo_dataset(demo_dir)
    with strategy.scope():
        model = tiny_model(ds.info.num_classes)
    holdout = HoldoutEvaluator(model, ds, ds.examples("val"), BATCH, CROP, strategy=strategy,
                               dtype=dtype)
    arrays = {}
    for state in range(STATES):
        if state:
            with strategy.scope():
                perturb(model, state)
        arrays[f"confusion_{state}"] = holdout.confusion_matrix()
        for index, (_, _, label_map) in enumerate(holdout.examples_with_maps()):
            arrays[f"map_{state}_{index}"] = label_map
    count = map_sets.write_label_map_set(holdout.computing_model(), ds, ds.examples("train"),
                                         os.path.join(out_dir, "set"), BATCH, CROP,
                                         strategy=strategy)
    results = evaluate(model, ds, "val", BATCH, CROP, strategy=strategy, dtype=dtype)
    unpadded = evaluate(model, ds, "val", BATCH, None, strategy=strategy, dtype=dtype)
    predict_examples(model, dataset_examples(ds, "val"), ds.info, os.path.join(out_dir, "predict"),
                     "raw", CROP, strategy=strategy, dtype=dtype, write=is_chief(strategy))
    arrays.update(evaluation=np.asarray(results["confusion_matrix"]),
                  evaluation_unpadded=np.asarray(unpadded["confusion_matrix"]),
                  set_count=np.array(count),
                  replicas=np.array(strategy.num_replicas_in_sync),
                  chief=np.array(is_chief(strategy)))
    np.savez(os.path.join(out_dir, "result.tmp.npz"), **arrays)
    os.replace(os.path.join(out_dir, "result.tmp.npz"), os.path.join(out_dir, "result.npz"))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--strategy", choices=["default", "mirrored", "multi_worker"],
                        required=True)
    parser.add_argument("--demo_dir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    if args.strategy == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu,
                                                   [tf.config.LogicalDeviceConfiguration()] * 2)
    from deeplab_load.training.strategy import make_strategy
    strategy = make_strategy(args.strategy)
    os.makedirs(args.out, exist_ok=True)
    run(strategy, args.demo_dir, args.out, args.dtype)


if __name__ == "__main__":
    main()
