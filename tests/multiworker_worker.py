"""Runs a few stage-1 and adversarial generator steps under one strategy and saves the weights.

Launched as a subprocess by tests/test_distributed.py (one process per MultiWorkerMirroredStrategy
worker, TF_CONFIG in the environment, plus a single-worker reference) and by
tests/test_training_steps.py (default strategy vs MirroredStrategy on two logical CPUs).

    python tests/multiworker_worker.py --strategy {default,mirrored,multi_worker} \
        --checkpoint golden_mnv2.ckpt --out w.npz

Every run sees the same global batches and starts from the same weights (the golden synthetic
MobileNetV2 checkpoint, whose activations stay O(1), plus a seeded 3-class logits layer; a
discriminator whose BatchNorm statistics come from one fixed batch), so all runs must end with
the same generator weights. Float32 rounding differs between replica layouts (~1e-7), and this
ReLU network amplifies such differences by orders of magnitude within a few steps, so the runs use
small learning rates (stage 1: 1e-5, generator: the paper's 5e-6), no dropout (training=False;
masks cannot match across layouts) and soft maps (argmax flips would split the runs).
Also imported by tests for the tiny models. The npz holds `g0_<i>`, `s1_<i>`, `g_<i>` (generator
weights at start, after stage 1, at the end), `d_<i>` (discriminator weights), `stage1_losses`,
`generator_losses`, `replicas`.
"""
import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

NUM_CLASSES = 3
CROP = 33
GLOBAL_BATCH = 4
D_INPUT_SIZE = 32


def make_batches(num_batches, seed=0):
    """Deterministic global batches: pixels float32 [4,33,33,3], labels int32 with some 255."""
    rng = np.random.RandomState(seed)
    pixels = rng.uniform(0, 255, (num_batches * GLOBAL_BATCH, CROP, CROP, 3)).astype(np.float32)
    labels = rng.randint(0, NUM_CLASSES, (num_batches * GLOBAL_BATCH, CROP, CROP)).astype(np.int32)
    labels[:, :4, :] = 255
    return tf.data.Dataset.from_tensor_slices((pixels, labels)).batch(GLOBAL_BATCH)


def tiny_deeplab(checkpoint):
    """MobileNetV2 DeepLab (OS16, no ASPP/decoder), 3 classes, golden weights + seeded logits."""
    import keras
    from deeplab_load.checkpoints import tf1
    from deeplab_load.models.deeplab import DeepLabConfig, build_deeplab

    config = DeepLabConfig(backbone="mobilenet_v2", num_classes=NUM_CLASSES, output_stride=16,
                           atrous_rates=(), decoder_output_stride=None)
    keras.utils.set_random_seed(0)
    model = build_deeplab(config)
    tf1.load_checkpoint(model, checkpoint)
    return model


def calibrated_discriminator_weights(generator):
    """Weights of a seeded D whose BatchNorm moving statistics are those of one fixed batch of
    8 ground-truth maps and the generator's soft maps of 8 images (a fresh D's inference-mode
    output is ~0 for any input, so its gradients would be meaningless), variances floored at 0.01."""
    import keras
    from deeplab_load.models import discriminator as disc

    keras.utils.set_random_seed(0)
    discriminator = disc.build_discriminator(NUM_CLASSES, input_size=D_INPUT_SIZE,
                                             batch_norm_momentum=0.0)
    pixels, labels = next(iter(make_batches(4, seed=3).unbatch().batch(16)))
    real = disc.one_hot_maps(labels[:8], NUM_CLASSES)
    fake = disc.generator_class_maps(generator(pixels[8:], training=False), (CROP, CROP), "soft")
    inputs = disc.discriminator_inputs(pixels, tf.concat([real, fake], 0), tf.equal(labels, 255),
                                       D_INPUT_SIZE)
    discriminator(inputs, training=True)
    for layer in discriminator.get_layer(index=1).layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            # near-constant channels of one small batch would amplify any other input ~30x per
            # layer: floor their variance so D's gradients stay moderate
            layer.moving_variance.assign(tf.maximum(layer.moving_variance, 0.01))
    return discriminator.get_weights()


def tiny_discriminator(weights):
    from deeplab_load.models.discriminator import build_discriminator

    discriminator = build_discriminator(NUM_CLASSES, input_size=D_INPUT_SIZE, batch_norm_momentum=0.0)
    discriminator.set_weights(weights)
    return discriminator


def run(strategy, checkpoint, stage1_steps, generator_steps, stage1_lr, generator_lr, map_encoding):
    from deeplab_load.training import steps
    from deeplab_load.training.strategy import is_chief

    d_weights = calibrated_discriminator_weights(tiny_deeplab(checkpoint))
    with strategy.scope():
        model = tiny_deeplab(checkpoint)
        discriminator = tiny_discriminator(d_weights)
        stage1 = steps.Stage1Trainer(model, steps.stage1_optimizer(learning_rate=stage1_lr), strategy,
                                     NUM_CLASSES, model_training=False)
        generator = steps.GeneratorTrainer(model, discriminator,
                                           steps.generator_optimizer(learning_rate=generator_lr),
                                           strategy, NUM_CLASSES, map_encoding=map_encoding,
                                           model_training=False)
    initial = model.get_weights()
    plain_batch_rejected = False
    if strategy.num_replicas_in_sync > 1 and "TF_CONFIG" not in os.environ:
        try:
            stage1.step(*next(iter(make_batches(1))))
        except ValueError:
            plain_batch_rejected = True
    stage1_losses = [float(stage1.step(*batch))
                     for batch in stage1.distribute(make_batches(stage1_steps, seed=1))]
    after_stage1 = model.get_weights()
    generator_losses = [float(generator.step(*batch))
                        for batch in generator.distribute(make_batches(generator_steps, seed=2))]
    arrays = {f"g_{i}": w for i, w in enumerate(model.get_weights())}
    arrays.update({f"g0_{i}": w for i, w in enumerate(initial)})
    arrays.update({f"s1_{i}": w for i, w in enumerate(after_stage1)})
    arrays.update({f"d_{i}": w for i, w in enumerate(discriminator.get_weights())})
    return dict(arrays, stage1_losses=np.array(stage1_losses),
                generator_losses=np.array(generator_losses),
                replicas=np.array(strategy.num_replicas_in_sync),
                plain_batch_rejected=np.array(plain_batch_rejected),
                chief=np.array(is_chief(strategy)))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--strategy", choices=["default", "mirrored", "multi_worker"], required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--checkpoint", required=True, help="golden MobileNetV2 TF1 checkpoint")
    parser.add_argument("--stage1_steps", type=int, default=3)
    parser.add_argument("--generator_steps", type=int, default=3)
    parser.add_argument("--stage1_lr", type=float, default=1e-5)
    parser.add_argument("--generator_lr", type=float, default=5e-6)
    parser.add_argument("--map_encoding", default="soft",
                        help="soft by default: float32 rounding differences between replica "
                             "layouts flip a few argmax pixels of straight-through maps, after "
                             "which runs legitimately part")
    args = parser.parse_args()

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    if args.strategy == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    else:
        from deeplab_load.training.strategy import make_strategy
        strategy = make_strategy(args.strategy)
    arrays = run(strategy, args.checkpoint, args.stage1_steps, args.generator_steps,
                 args.stage1_lr, args.generator_lr, args.map_encoding)
    np.savez(args.out + ".tmp.npz", **arrays)
    os.replace(args.out + ".tmp.npz", args.out)


if __name__ == "__main__":
    main()
