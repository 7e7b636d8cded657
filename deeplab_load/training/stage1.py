"""Stage 1: pixel-wise cross entropy before LoAd, for data sets without a trained checkpoint.

The paper's schedule: the weighted CE (class-balanced pixel weights) for the first epochs, then
plain CE; momentum SGD with a constant learning rate (or research/deeplab's poly / step policy,
`lr_schedules`, over the stage's step budget). Resumable: the batch of step t is a pure
function of (seed, t) (`pipeline.train_dataset(start_step=t)`), and the model + optimizer are
snapshotted with the step number every `checkpoint_every` steps, at the end, and when a stop
signal arrives (`interrupts`). The snapshot before the latest is kept too: when the latest cannot
be read, the run resumes from the one before (the batches being a function of the step, the
result is the same).
"""
import math
import os

import tensorflow as tf
from absl import logging

from deeplab_load.data import pipeline
from deeplab_load.data.batches import Batches
from deeplab_load.errors import DamagedFileError
from deeplab_load.atomic_files import read_json, write_json_atomic, write_text_atomic
from deeplab_load.training.safety import interrupts, kill_points
from deeplab_load.training.lr_schedules import current_learning_rate, describe_learning_rate
from deeplab_load.training.class_weights import ClassPixelStats, compute_class_pixel_stats
from deeplab_load.progress import Progress

STATE_FILE = "stage1_state.json"
WORKING_TAG = "stage1_working"
PREVIOUS_TAG = "stage1_previous"   # the working snapshot before the latest
DONE_TAG = "stage1"


def training_class_stats(ds, split, path, skip_bad_examples=False, bad_example_log=None):
    """Class pixel statistics of `split` (of its usable examples with `skip_bad_examples`),
    computed once and kept as JSON at `path`."""
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            stats = ClassPixelStats.from_json(f.read())
        if stats.num_classes == ds.info.num_classes:
            return stats
    refs = pipeline.usable_refs(ds, split, skip_bad_examples, bad_example_log)
    labels = (ds.load(ref)[1] for ref in refs)
    stats = compute_class_pixel_stats(labels, ds.info.num_classes)
    write_text_atomic(path, stats.to_json())
    return stats


def schedule(num_examples, batch_size, weighted_epochs, plain_epochs):
    """(steps per epoch, weighted steps, total steps) of the stage-1 run."""
    steps_per_epoch = max(1, num_examples // batch_size)
    return (steps_per_epoch, int(math.ceil(weighted_epochs * steps_per_epoch)),
            int(math.ceil((weighted_epochs + plain_epochs) * steps_per_epoch)))


def run_stage1(trainer, store, ds, run_dir, split="train", batch_size=7, crop_size=513,
               weighted_epochs=4.0, plain_epochs=8.0, seed=0, random_scale=(1.0, 1.0),
               skip_bad_examples=False, checkpoint_every=100, summary_writer=None,
               bad_example_log=None):
    """Trains `trainer.model` with CE; returns {"steps", "loss"}. Leaves the tag "stage1".

    trainer: `steps.Stage1Trainer` (with class_stats when weighted_epochs > 0).
    store: `CheckpointStore` tracking the model and the stage-1 optimizer.
    """
    state_path = os.path.join(run_dir, STATE_FILE)
    state = {"step": 0, "done": False}
    if os.path.exists(state_path):
        state = read_state(state_path, store.root)
    if state["done"]:
        store.restore(DONE_TAG)
        logging.info("stage 1 already done (%d steps): restored its checkpoint", state["step"])
        return state
    if state["step"] > 0:
        state = restore_working(store, state)
        logging.info("stage 1: resuming at step %d", state["step"])
    num_examples = len(pipeline.split_ids(ds, split))
    steps_per_epoch, weighted_steps, total = schedule(num_examples, batch_size, weighted_epochs,
                                                      plain_epochs)
    logging.info("stage 1: %d steps (%d with weighted CE), %d steps per epoch, batch %d, crop %s, "
                 "learning rate %s", total, weighted_steps, steps_per_epoch, batch_size,
                 crop_size, describe_learning_rate(trainer.optimizer))
    dataset = pipeline.train_dataset(ds, split, batch_size, crop_size, seed,
                                     random_scale=random_scale,
                                     skip_bad_examples=skip_bad_examples, start_step=state["step"],
                                     bad_example_log=bad_example_log)
    progress = Progress("stage1", total=total)
    step, loss = state["step"], float("nan")
    with Batches(trainer.distribute(dataset)) as batches:
        while step < total:
            trainer.set_use_class_weights(step < weighted_steps)
            pixels, labels = next(batches)
            learning_rate = current_learning_rate(trainer.optimizer)   # this step's
            loss = float(trainer.step(pixels, labels))
            if not math.isfinite(loss):
                raise FloatingPointError(f"stage 1: loss is {loss} at step {step}")
            step += 1
            progress.update(step, loss=loss, lr=learning_rate,
                            epoch=f"{step / steps_per_epoch:.2f}", weighted=step <= weighted_steps)
            if summary_writer is not None:
                with summary_writer.as_default(step=step):
                    tf.summary.scalar("stage1/loss", loss)
                    tf.summary.scalar("stage1/learning_rate", learning_rate)
            stopping = interrupts.requested()
            if (step % checkpoint_every == 0 or stopping) and step < total:
                state = save_working(store, state_path, state, step)
            kill_points.kill_if_reached("stage1_step")
            if stopping and step < total:
                interrupts.raise_if_requested(f"after stage-1 step {step} of {total}")
    store.save(DONE_TAG)
    store.delete(WORKING_TAG)
    store.delete(PREVIOUS_TAG)
    state = {"step": step, "done": True, "loss": loss}
    write_json_atomic(state_path, state)
    progress.update(step, force=True, loss=loss)
    return state


def read_state(path, store_root):
    """stage1_state.json; DamagedFileError naming it (and what to delete) when unreadable."""
    fix = (f"delete it and {store_root} to redo stage 1, or delete the run dir to start over")
    state = read_json(path, fix=fix)
    if not (isinstance(state, dict) and isinstance(state.get("step"), int)
            and isinstance(state.get("done"), bool)):
        raise DamagedFileError(f"{path}: not a stage-1 state {{step, done}}; {fix}")
    return state


def save_working(store, state_path, state, step):
    """Snapshots the working model at `step` (keeping the previous snapshot); returns the state."""
    new_state = {"step": step, "done": False}
    if state["step"] > 0 and store.has(WORKING_TAG):
        store.copy(WORKING_TAG, PREVIOUS_TAG)
        new_state["previous_step"] = state["step"]
    store.save(WORKING_TAG)
    write_json_atomic(state_path, new_state)
    return new_state


def restore_working(store, state):
    """Restores the latest stage-1 snapshot, or the one before when the latest is damaged;
    returns the state of the snapshot restored."""
    try:
        store.restore(WORKING_TAG)
        return state
    except DamagedFileError as err:
        if "previous_step" not in state or not store.has(PREVIOUS_TAG):
            raise DamagedFileError(f"{err} (stage 1 has no earlier snapshot: delete "
                                   f"{store.root} and its stage1_state.json to redo stage 1)")
        logging.warning("%s; resuming stage 1 from the snapshot before, at step %d", err,
                        state["previous_step"])
    store.restore(PREVIOUS_TAG)
    store.copy(PREVIOUS_TAG, WORKING_TAG)   # drops the damaged snapshot
    return {"step": state["previous_step"], "done": False}
