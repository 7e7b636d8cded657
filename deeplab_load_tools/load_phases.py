"""Where a LoAd cycle's time goes: every phase timed in one process on a trained run's model.

    python -m deeplab_load_tools.load_phases --run_dir=/path/to/bench_run --checkpoint=/path/to/bench_run/stage1

Phases (medians over --repeats after one untimed warm-up, seconds): one generator step
(--adv_batch_size), one hold-out evaluation in float32 and in bfloat16 (the run's hold-out),
one map-set write over --train_images training images, one generator checkpoint write, and one
discriminator epoch over --train_images real + --train_images fake examples, taken apart:
  d_data_only      iterating D's tf.data pipeline (PNG decode, crop, shuffle, batch), no model
  d_steps_cached   the training steps alone, on batches held in memory
  d_epoch_loop     the training loop as `fit_discriminator` runs it (pipeline + steps)
  d_bn_recompute   the BatchNorm statistics recomputation after the epoch (--disc_bn_batches)
  d_holdout        D's hold-out accuracy (real + fake of the hold-out images)
  d_get_weights    the copy of D's weights kept for the best epoch
  d_fit_1_epoch    `fit_discriminator(max_epochs=1)` end to end (compare with the parts' sum)
  d_step_parts     one D step on a batch in memory, taken apart (compiled functions):
                   inference forward, training forward, forward + gradients, the whole step
The model flags (--run_dir, required, --checkpoint, --checkpoint_tag, ...) are evaluate's.
Per-image costs are the phase divided by its images. Prints one JSON object; docs/SCALING.md
turns it into predicted cycle times.
"""
import json
import os
import statistics
import tempfile
import time

from deeplab_load import cli  # first: quiets TensorFlow's start-up

from absl import flags

from deeplab_load.checkpoints.model_source import ModelSource
from deeplab_load.errors import FlagError

FLAGS = flags.FLAGS
# The model flags (--run_dir, --checkpoint, --checkpoint_tag, the architecture), as evaluate's.
cli.define_flags(ModelSource)
flags.adopt_module_key_flags(cli)  # --help lists them too
flags.DEFINE_integer("train_images", 320, "Training images of the map set and of D's epoch.")
flags.DEFINE_integer("adv_batch_size", 8, "Generator step batch.")
flags.DEFINE_integer("eval_batch_size", 8, "Hold-out / map-set batch.")
flags.DEFINE_integer("disc_batch_size", 16, "D batch.")
flags.DEFINE_integer("disc_input_size", 96, "D input size.")
flags.DEFINE_integer("disc_bn_batches", 16, "Batches of D's BatchNorm recomputation.")
flags.DEFINE_integer("repeats", 3, "Timed repeats per phase (median reported).")


def timed(function, repeats):
    function()                                   # warm-up: traces, decodes, caches
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - start)
    return {"median_s": round(statistics.median(seconds), 4),
            "all_s": [round(s, 4) for s in seconds]}


def d_step_parts(discriminator, trainer, batch, repeats):
    """Seconds of one D step's parts on one batch (`trainer.inputs` of it, in memory)."""
    import tensorflow as tf
    from deeplab_load.traced import compiled
    pixels, label_map, ignore_mask, is_real, weight = batch
    inputs = trainer.inputs(pixels, label_map, ignore_mask)
    variables = discriminator.trainable_variables

    def gradients(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(discriminator(x, training=True))
        return tape.gradient(loss, variables)
    parts = {"inference_forward": compiled(lambda x: discriminator(x, training=False)),
             "training_forward": compiled(lambda x: discriminator(x, training=True)),
             "forward_and_gradients": compiled(gradients)}
    out = {name: timed(lambda f=f: tf.nest.map_structure(lambda t: t.numpy(), f(inputs)),
                       repeats) for name, f in parts.items()}
    out["whole_step"] = timed(lambda: float(trainer.step(*batch)[0]), repeats)
    out["batch"] = int(inputs.shape[0])
    out["input_shape"] = list(inputs.shape[1:])
    return out


def main(argv):
    del argv
    source = cli.config_from_flags(ModelSource)[0]
    if not source.run_dir:
        raise FlagError("--run_dir is required: the training run whose holdout_ids.txt names the "
                        "hold-out images (--checkpoint: one of its checkpoints)")
    import tensorflow as tf
    from deeplab_load.checkpoints.model_loading import (eval_crop_size, find_spec, load_model,
                                                        open_dataset)
    from deeplab_load.checkpoints.store import CheckpointStore
    from deeplab_load.data import pipeline
    from deeplab_load.data.batches import Batches
    from deeplab_load.models.discriminator import build_discriminator
    from deeplab_load.training import map_sets, steps
    from deeplab_load.training.holdout import HoldoutEvaluator

    strategy = tf.distribute.get_strategy()
    spec, _ = find_spec(source)
    ds = open_dataset(spec)
    classes = ds.info.num_classes
    model = load_model(source, classes).model
    crop = eval_crop_size(None, spec, ds.info)
    eval_split = (spec.data or {}).get("eval_split") or "val"
    holdout_refs = pipeline.select_refs(ds, eval_split, open(os.path.join(
        source.run_dir, "holdout_ids.txt")).read().split())
    train_refs = ds.examples("train")[:FLAGS.train_images]
    tf.keras.utils.set_random_seed(0)
    discriminator = build_discriminator(classes, input_size=FLAGS.disc_input_size)
    generator_optimizer = steps.generator_optimizer(1e-4)
    generator = steps.GeneratorTrainer(model, discriminator, generator_optimizer, strategy,
                                       classes)
    d_trainer = steps.DiscriminatorTrainer(discriminator,
                                           steps.discriminator_optimizer(1e-3, "adam"),
                                           strategy, classes)
    out = {"checkpoint": source.checkpoint or source.run_dir, "classes": classes,
           "eval_crop_size": crop, "holdout_images": len(holdout_refs),
           "train_images": len(train_refs), "settings": {
               name: getattr(FLAGS, name) for name in (
                   "adv_batch_size", "eval_batch_size", "disc_batch_size", "disc_input_size",
                   "disc_bn_batches", "repeats")}}
    phases = out["phases"] = {}
    repeats = FLAGS.repeats
    work = tempfile.mkdtemp(prefix="load_phases_")

    batches = iter(Batches(generator.distribute(pipeline.train_dataset(
        ds, "train", FLAGS.adv_batch_size, crop, 0))))
    phases["generator_step"] = timed(lambda: float(generator.step(*next(batches))), repeats)

    holdout = {}
    for dtype in ("float32", "bfloat16"):
        holdout[dtype] = HoldoutEvaluator(model, ds, holdout_refs, FLAGS.eval_batch_size, crop,
                                          dtype=dtype)
        phases[f"holdout_eval_{dtype}"] = timed(holdout[dtype].confusion_matrix, repeats)

    set_dir = os.path.join(work, "set")
    phases["map_set_write"] = timed(lambda: map_sets.write_label_map_set(
        model, ds, train_refs, set_dir, FLAGS.eval_batch_size, crop), repeats)

    store = CheckpointStore(os.path.join(work, "generator"), model=model,
                            optimizer=generator_optimizer)
    phases["checkpoint_write"] = timed(lambda: store.save("timed"), repeats)

    crop_size = crop
    counter = iter(range(10 ** 9))

    def real():
        return map_sets.real_examples(ds, train_refs, crop_size, next(counter))

    def fake():
        return map_sets.fake_examples(ds, train_refs, set_dir, crop_size, next(counter))

    def data(seed):
        return steps.discriminator_dataset(real, [fake], FLAGS.disc_batch_size, seed=seed)

    def iterate_only():
        for _ in Batches(d_trainer.distribute(data(1))):
            pass
    phases["d_data_only"] = timed(iterate_only, repeats)

    cached = list(Batches(d_trainer.distribute(data(2))))
    phases["d_steps_cached"] = timed(
        lambda: [float(d_trainer.step(*batch)[0]) for batch in cached], repeats)

    def epoch_loop():
        with Batches(d_trainer.distribute(data(3))) as stream:
            for batch in stream:
                float(d_trainer.step(*batch)[0])
    phases["d_epoch_loop"] = timed(epoch_loop, repeats)
    phases["d_bn_recompute"] = timed(lambda: d_trainer.recompute_batch_norm_statistics(
        data(4), max_batches=FLAGS.disc_bn_batches), repeats)

    triples = list(holdout["float32"].examples_with_maps())
    holdout_real = map_sets.in_memory_examples(triples, crop_size, real=True)
    holdout_fake = map_sets.in_memory_examples(triples, crop_size, real=False)
    holdout_data = steps.discriminator_dataset(holdout_real, [holdout_fake],
                                               FLAGS.disc_batch_size, shuffle=False,
                                               balance=False)
    phases["d_holdout"] = timed(lambda: d_trainer.evaluate_accuracy(holdout_data), repeats)
    phases["d_get_weights"] = timed(discriminator.get_weights, repeats)
    phases["d_fit_1_epoch"] = timed(lambda: steps.fit_discriminator(
        d_trainer, real, [fake], holdout_real, holdout_fake, batch_size=FLAGS.disc_batch_size,
        max_epochs=1, batch_norm_batches=FLAGS.disc_bn_batches), repeats)

    phases["d_step_parts"] = d_step_parts(discriminator, d_trainer, cached[0], repeats)

    per_image = out["per_image_s"] = {}
    per_image["generator_step"] = phases["generator_step"]["median_s"] / FLAGS.adv_batch_size
    for dtype in ("float32", "bfloat16"):
        per_image[f"holdout_eval_{dtype}"] = (phases[f"holdout_eval_{dtype}"]["median_s"]
                                              / len(holdout_refs))
    per_image["map_set_write"] = phases["map_set_write"]["median_s"] / len(train_refs)
    per_image["d_epoch_loop"] = phases["d_epoch_loop"]["median_s"] / (2 * len(train_refs))
    per_image["d_steps_cached"] = phases["d_steps_cached"]["median_s"] / (2 * len(train_refs))
    per_image = {k: round(v, 6) for k, v in per_image.items()}
    out["per_image_s"] = per_image
    print(json.dumps(out, indent=1, default=str))


def run():
    """The console script's entry point (setup.py)."""
    cli.run(main)


if __name__ == "__main__":
    run()
