"""The controls LoAd is measured against (tools/ablation.py), each from the same stage-1 model
and for the same number of generator steps as the LoAd run it is paired with.

- `continue_cross_entropy`: arm (b), more pixel-wise CE (stage 1's plain CE, learning rate and
  momentum) on the generator's batches (`--adv_batch_size`, the same batch sequence as LoAd's
  propagations).
- `plain_adversarial`: arms (c) and (d), adversarial training without lookahead: D is trained as
  in LoAd's round 0 (ground truth vs g0's maps), then the generator takes `num_steps`
  adversarial steps with no revert and no map aggregation; every `retrain_every` steps D is
  retrained (from its last weights) on the current generator's maps only. The hold-out mIoU is
  evaluated after every step as in LoAd; the last model is arm (c), the best hold-out model
  arm (d).
"""
import math
import os
import shutil

import tensorflow as tf
from absl import logging

from deeplab_load.data import pipeline
from deeplab_load.data.batches import Batches
from deeplab_load.training import steps
from deeplab_load.training.progress import Progress

CURRENT_TAG = "g_s"      # the hooks take D's hold-out fakes from this tag
BEST_TAG, LAST_TAG = "adversarial_best", "adversarial_last"


def continue_cross_entropy(job, num_steps):
    """Arm (b): `num_steps` plain-CE steps on the job's model.

    Returns {"steps", "first_loss", "loss" (of the first and last step)}."""
    f = job.f
    with job.strategy.scope():
        optimizer = steps.stage1_optimizer(f.stage1_learning_rate, f.stage1_momentum)
        trainer = steps.Stage1Trainer(job.model, optimizer, job.strategy,
                                      job.ds.info.num_classes, weight_decay=f.weight_decay)
    dataset = pipeline.train_dataset(job.ds, job.split, f.adv_batch_size, job.crop_size, f.seed,
                                     random_scale=job.random_scale,
                                     skip_bad_examples=f.skip_bad_examples,
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
    return {"steps": num_steps, "first_loss": first_loss, "loss": loss}


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
    logging.info("adversarial arm: D round %d hold-out accuracy %.3f (real %.3f, fake %.3f)",
                 round_index, result["accuracy"], result["real_accuracy"],
                 result["fake_accuracy"])
    return {k: result[k] for k in ("accuracy", "real_accuracy", "fake_accuracy", "epochs")}


def plain_adversarial(job, hooks, num_steps, retrain_every):
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
    progress = Progress("adversarial arm", total=num_steps)
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
            tf.summary.scalar("adversarial_arm/holdout_miou", mu)
            tf.summary.scalar("adversarial_arm/generator_loss", losses["generator_loss"])
        if step % retrain_every == 0 and step < num_steps:
            rounds.append(_train_discriminator_on_current(job, hooks, len(rounds)))
    hooks.save_model(LAST_TAG)
    shutil.rmtree(os.path.join(job.local_dir, "maps"), ignore_errors=True)
    return {"steps": num_steps, "holdout_miou": trace, "best_step": best_step,
            "best_holdout_miou": best, "discriminator_rounds": rounds}
