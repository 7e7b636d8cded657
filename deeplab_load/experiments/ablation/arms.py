"""The controls LoAd is measured against (`runner`), each from the same stage-1 model and for the
same number of generator steps as the LoAd run it is paired with, on the same batch sequence
(batch n - 1 of the seeded `--adv_batch_size` stream at step n, as LoAd's propagation n).

- `continue_cross_entropy`: arm (b), more pixel-wise CE with the generator's optimizer (its
  learning rate and momentum, not stage 1's): the last model.
- `run_controller` with `WithoutDiscriminator` hooks over a CE trainer: arm (b'), the same CE
  steps under LoAd's controller (cycles, reverts, dynamic start, hold-out selection); there is
  no discriminator and no label-map buffer content.
- `plain_adversarial`: arms (c) and (d), adversarial training without lookahead: D is trained as
  in LoAd's round 0 (ground truth vs g0's maps), then the generator takes `num_steps`
  adversarial steps with no revert and no map aggregation; every `retrain_every` steps D is
  retrained (from its last weights) on the current generator's maps only. The hold-out mIoU is
  evaluated after every step as in LoAd; the last model is arm (c), the best hold-out model
  arm (d). With a `hybrid_trainer` as the hooks' generator it is arm (f).
"""
import math
import os
import shutil

import tensorflow as tf
from absl import logging

from deeplab_load.data import pipeline
from deeplab_load.data.batches import Batches
from deeplab_load.lookahead.buffer import MapBuffer
from deeplab_load.lookahead.controller import STATE_FILE, LoAdController
from deeplab_load.training import steps
from deeplab_load.progress import Progress

CURRENT_TAG = "g_s"      # the hooks take D's hold-out fakes from this tag
BEST_TAG, LAST_TAG = "adversarial_best", "adversarial_last"
NO_MAPS_FILE = "NO_MAPS.txt"   # the only file of a label-map set of arm (b')


def _generator_training(config):
    """The generator's `training` argument in the adversarial steps (--adv_generator_mode)."""
    return config.generator.mode == "train"


def cross_entropy_trainer(job):
    """A plain (unweighted) CE trainer over the job's model with the generator's optimizer, the
    generator in the adversarial steps' mode."""
    config = job.config
    with job.strategy.scope():
        return steps.Stage1Trainer(job.model, job.generator_optimizer, job.strategy,
                                   job.ds.info.num_classes, weight_decay=config.model.weight_decay,
                                   model_training=_generator_training(config))


def hybrid_trainer(job, adversarial_weight):
    """The hybrid step CE + `adversarial_weight` * -log D(G(x)) with the generator's optimizer."""
    config = job.config
    with job.strategy.scope():
        return steps.GeneratorTrainer(job.model, job.discriminator, job.generator_optimizer,
                                      job.strategy, job.ds.info.num_classes,
                                      map_encoding=config.generator.map_encoding,
                                      weight_decay=config.model.weight_decay,
                                      model_training=_generator_training(config),
                                      hybrid_weights=(1.0, adversarial_weight))


def optimizer_settings(optimizer):
    """{"learning_rate", "momentum"} an SGD optimizer steps with (floats)."""
    return {"learning_rate": float(tf.convert_to_tensor(optimizer.learning_rate)),
            "momentum": float(optimizer.momentum)}


def continue_cross_entropy(job, num_steps, trainer):
    """Arm (b): `num_steps` plain-CE steps of `trainer` (`cross_entropy_trainer`).

    Returns {"steps", "first_loss", "loss" (of the first and last step), "optimizer"
    (`optimizer_settings` of the optimizer the steps used)}."""
    config = job.config
    dataset = pipeline.train_dataset(job.ds, job.split, config.generator.batch_size, job.crop_size,
                                     config.run.seed,
                                     random_scale=job.random_scale,
                                     skip_bad_examples=config.data.skip_bad_examples,
                                     bad_example_log=job.bad_examples)
    progress = Progress("cross-entropy arm", total=num_steps)
    loss = first_loss = float("nan")
    with Batches(trainer.distribute(dataset)) as batches:
        for step in range(1, num_steps + 1):
            loss = float(trainer.step(*next(batches)))
            first_loss = loss if step == 1 else first_loss
            if not math.isfinite(loss):
                raise FloatingPointError(f"cross-entropy arm: loss is {loss} at step {step}")
            progress.update(step, loss=loss)
            with job.writer.as_default(step=step):
                tf.summary.scalar("cross_entropy_arm/loss", loss)
    return {"steps": num_steps, "first_loss": first_loss, "loss": loss,
            "optimizer": optimizer_settings(trainer.optimizer)}


class WithoutDiscriminator:
    """`LoAdHooks` for arm (b'): the generator side of `hooks` (a `LoAdTrainingHooks` whose
    generator trainer is a CE trainer), and no discriminator.

    Label-map sets hold only a NO_MAPS_FILE note (nothing reads them) and D rounds train nothing;
    each such call is logged, and D rounds return no metrics (the events say `"metrics": {}`).
    """

    def __init__(self, hooks):
        self.hooks = hooks

    def adversarial_step(self, propagation):
        return {"cross_entropy": self.hooks.adversarial_step(propagation)["generator_loss"]}

    def evaluate(self):
        return self.hooks.evaluate()

    def save_working(self, propagation):
        self.hooks.save_working(propagation)

    def restore_working(self, propagation):
        self.hooks.restore_working(propagation)

    def save_model(self, tag):
        self.hooks.save_model(tag)

    def copy_model(self, src_tag, dst_tag):
        self.hooks.copy_model(src_tag, dst_tag)

    def restore_model(self, tag):
        self.hooks.restore_model(tag)

    def write_map_set(self, tag, set_dir):
        # The buffer keeps whole sets only and refuses an empty folder: the set holds a note.
        with open(os.path.join(set_dir, NO_MAPS_FILE), "w", encoding="utf-8") as note:
            note.write(f"no label maps of {tag}: this arm has no discriminator\n")
        logging.info("CE under the controller: no label maps of %s written (no D in this arm)",
                     tag)

    def train_discriminator(self, set_dirs, round):
        logging.info("CE under the controller: discriminator round %d skipped (no D in this arm)",
                     round)
        return {}

    def restore_discriminator(self, round):
        logging.info("CE under the controller: no discriminator of round %d to restore", round)

    def on_event(self, event):
        self.hooks.on_event(event)


def run_controller(job, hooks, load_config):
    """Runs `LoAdController` over `hooks` in the job's run dir (state.json, buffer/); returns
    (LoAdResult, the state's event history)."""
    buffer = MapBuffer(os.path.join(job.local_dir, "buffer"), load_config.b_max)
    controller = LoAdController(load_config, hooks, os.path.join(job.local_dir, STATE_FILE),
                                buffer, seed=job.config.run.seed)
    result = controller.run()
    return result, controller.state["history"]


def _set_dir(job, round_index):
    return os.path.join(job.local_dir, "maps", f"round_{round_index}")


def _train_discriminator_on_current(job, hooks, round_index):
    """D (round `round_index`) on the ground truth vs the current generator's maps only."""
    hooks.save_model(CURRENT_TAG)
    set_dir = _set_dir(job, round_index)
    shutil.rmtree(set_dir, ignore_errors=True)
    os.makedirs(set_dir)
    hooks.write_map_set(CURRENT_TAG, set_dir)
    result = hooks.train_discriminator([set_dir], round_index)
    hooks.restore_model(CURRENT_TAG)
    if round_index > 0:
        shutil.rmtree(_set_dir(job, round_index - 1), ignore_errors=True)
    logging.info("control arm: D round %d hold-out accuracy %.3f (real %.3f, fake %.3f)",
                 round_index, result["accuracy"], result["real_accuracy"],
                 result["fake_accuracy"])
    return {k: result[k] for k in ("accuracy", "real_accuracy", "fake_accuracy", "epochs")}


def plain_adversarial(job, hooks, num_steps, retrain_every, name="adversarial arm"):
    """Arms (c)/(d) with `hooks` (`run.build_adversarial_hooks`) over the job's model.

    Leaves the snapshots LAST_TAG and BEST_TAG in the hooks' generator store and returns
    {"steps", "holdout_miou" (per step, index 0 = start), "best_step", "best_holdout_miou",
    "discriminator_rounds" (hold-out accuracies per D round)}.
    """
    if retrain_every < 1:
        raise ValueError(f"retrain_every must be >= 1, got {retrain_every}")
    start = hooks.evaluate()
    best, best_step, trace = start, 0, [start]
    hooks.save_model(BEST_TAG)
    rounds = [_train_discriminator_on_current(job, hooks, 0)]
    progress = Progress(name, total=num_steps)
    summary = name.replace(" ", "_")
    for step in range(1, num_steps + 1):
        losses = hooks.adversarial_step(step)
        mu = hooks.evaluate()
        trace.append(mu)
        if mu > best:
            best, best_step = mu, step
            hooks.save_model(BEST_TAG)
        progress.update(step, mIoU=round(100 * mu, 2), best=round(100 * best, 2),
                        loss=losses["generator_loss"])
        with job.writer.as_default(step=step):
            tf.summary.scalar(f"{summary}/holdout_miou", mu)
            tf.summary.scalar(f"{summary}/generator_loss", losses["generator_loss"])
        if step % retrain_every == 0 and step < num_steps:
            rounds.append(_train_discriminator_on_current(job, hooks, len(rounds)))
    hooks.save_model(LAST_TAG)
    shutil.rmtree(os.path.join(job.local_dir, "maps"), ignore_errors=True)
    return {"steps": num_steps, "holdout_miou": trace, "best_step": best_step,
            "best_holdout_miou": best, "discriminator_rounds": rounds}
