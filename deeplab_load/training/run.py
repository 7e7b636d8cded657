"""One training run end to end: data, models, stage 1, LoAd, evaluation, tables, graph, export.

Run directory layout:
    flags.txt                  flags of the first start (flags_resume_<n>.txt for resumes)
    class_stats.json           training-set class pixel statistics (weighted CE)
    holdout_ids.txt            the fixed hold-out images
    stage1_state.json, generator/ (tagged checkpoints), discriminator/ (one per D round)
    state.json                 the LoAd controller state; events.jsonl its event log
    buffer/                    label-map sets of the aggregation buffer
    tensorboard/               scalars
    results/{baseline,final}/results.{json,md}, results/comparison.md
    convergence.png            hold-out mIoU per propagation (paper Fig. 3 style)
    export/                    SavedModel of the final generator
"""
import dataclasses
import glob
import json
import os
import time

import keras
import tensorflow as tf
from absl import logging

from deeplab_load import evaluate as evaluate_lib
from deeplab_load import metrics
from deeplab_load.data import get_dataset, pipeline
from deeplab_load.data.common import as_size
from deeplab_load.lookahead.buffer import MapBuffer
from deeplab_load.lookahead.controller import STATE_FILE, LoAdConfig, LoAdController
from deeplab_load.models.deeplab import build_deeplab
from deeplab_load.models.discriminator import build_discriminator
from deeplab_load.models.layers import set_batch_norm_decay
from deeplab_load.training import steps
from deeplab_load.training.checkpoint_store import CheckpointStore
from deeplab_load.training.holdout import HoldoutEvaluator
from deeplab_load.training.load_hooks import LoAdTrainingHooks
from deeplab_load.training.progress import format_duration, Progress
from deeplab_load.training.stage1 import run_stage1, training_class_stats
from deeplab_load.training.strategy import make_strategy, worker_directory


def size_flag(value, default, flag_name):
    """A list flag of one or two ints as (H, W), or `default` when unset."""
    if not value:
        return as_size(default)
    try:
        sizes = [int(v) for v in value]
    except ValueError as err:
        raise ValueError(f"--{flag_name} must be H,W integers, got {value}") from err
    if len(sizes) not in (1, 2) or min(sizes) < 1:
        raise ValueError(f"--{flag_name} must be one or two positive integers, got {value}")
    return as_size(sizes[0] if len(sizes) == 1 else sizes)


def open_dataset(f):
    kwargs = {}
    if f.dataset == "demo":
        kwargs = dict(num_train=f.demo_num_train, num_val=f.demo_num_val, seed=f.seed,
                      image_size=size_flag(f.demo_image_size, None, "demo_image_size"))
    return get_dataset(f.dataset, f.dataset_dir, tfrecord_dir=f.tfrecord_dir, **kwargs)


def train_split(f, ds):
    if f.train_split:
        return f.train_split
    return "train_aug" if "train_aug" in ds.splits else "train"


def prepare_run_dir(f, run_dir):
    """Creates the run dir, refusing to touch an existing run unless --resume; writes flags."""
    existing = os.path.exists(os.path.join(run_dir, "flags.txt"))
    if existing and not f.resume:
        raise FileExistsError(f"--run_dir {run_dir} already holds a run; pass --resume to "
                              f"continue it or choose another --run_dir (nothing was changed)")
    os.makedirs(run_dir, exist_ok=True)
    name = "flags.txt"
    if existing:
        name = f"flags_resume_{len(glob.glob(os.path.join(run_dir, 'flags_resume_*.txt'))) + 1}.txt"
    with open(os.path.join(run_dir, name), "w", encoding="utf-8") as out:
        out.write(f.flags_into_string())
    return existing


def evaluate_split(model, ds, split, f, eval_crop_size, out_dir, label):
    results = evaluate_lib.evaluate(model, ds, split, f.eval_batch_size, eval_crop_size)
    results["checkpoint"] = label
    evaluate_lib.write_results(results, out_dir)
    logging.info("%s on %s/%s:\n%s", label, ds.info.name, split,
                 metrics.format_text_table(results))
    return results


def load_initial_weights(model, f):
    """Loads --initial_checkpoint; returns True when the logits were loaded too."""
    if not f.initial_checkpoint:
        logging.info("no --initial_checkpoint: random initialisation")
        return False
    description = evaluate_lib.restore_checkpoint(model, f.initial_checkpoint)
    logging.info("initial weights: %s", description)
    return "skipped" not in description


def run_training(f, demo_profile=None):
    """Runs (or resumes) the whole job described by flag values `f`; returns a summary dict."""
    start_time = time.monotonic()
    tf.keras.utils.set_random_seed(f.seed)
    keras.mixed_precision.set_global_policy(f.mixed_precision)
    ds = open_dataset(f)
    info = ds.info
    config = evaluate_lib.model_config_from_flags(info.num_classes)
    config = dataclasses.replace(config, fine_tune_batch_norm=f.fine_tune_batch_norm)
    strategy = make_strategy(f.strategy)
    if f.fine_tune_batch_norm and strategy.num_replicas_in_sync > 1:
        raise ValueError(
            f"--fine_tune_batch_norm with {strategy.num_replicas_in_sync} replicas is not "
            f"supported: BatchNorm statistics would be per replica, so the workers' hold-out mIoU "
            f"and LoAd decisions could differ. Use --nofine_tune_batch_norm (DeepLab's default "
            f"for fine-tuning) or one replica.")
    run_dir = os.path.abspath(f.run_dir or os.path.join("runs", f"{info.name}_{config.backbone}"))
    # Every worker runs the same deterministic controller; non-chief workers keep their state
    # and snapshots in their own scratch folder (run_dir/worker_tmp_<i>), the chief in run_dir.
    local_dir = worker_directory(run_dir, strategy)
    resumed = prepare_run_dir(f, local_dir)
    if demo_profile:
        logging.info("demo data set: demo profile applied to unset flags: %s", demo_profile)
    logging.info("run dir %s (%s); model %s; strategy %s with %d replica(s); map encoding %s; "
                 "dtype policy %s", run_dir, "resuming" if resumed else "new run", config,
                 type(strategy).__name__, strategy.num_replicas_in_sync, f.map_encoding,
                 f.mixed_precision)
    crop_size = size_flag(f.crop_size, info.crop_size, "crop_size")
    eval_crop_size = size_flag(f.eval_crop_size, info.eval_crop_size, "eval_crop_size")
    split = train_split(f, ds)
    random_scale = (f.min_scale_factor, f.max_scale_factor)
    writer = tf.summary.create_file_writer(os.path.join(local_dir, "tensorboard"))

    with strategy.scope():
        model = build_deeplab(config)
        set_batch_norm_decay(model, f.batch_norm_decay)
        logits_loaded = load_initial_weights(model, f)
        discriminator = build_discriminator(info.num_classes, input_size=f.disc_input_size)
        stage1_opt = steps.stage1_optimizer(f.stage1_learning_rate, f.stage1_momentum)
        generator_opt = steps.generator_optimizer(f.adv_learning_rate, f.adv_momentum)
        disc_opt = steps.discriminator_optimizer(f.disc_learning_rate)

    # Stage 1.
    do_stage1 = f.stage1 == "on" or (f.stage1 == "auto" and not logits_loaded)
    if do_stage1:
        stats = None
        if f.stage1_weighted_epochs > 0:
            stats = training_class_stats(ds, split, os.path.join(local_dir, "class_stats.json"))
        with strategy.scope():
            trainer = steps.Stage1Trainer(model, stage1_opt, strategy, info.num_classes,
                                          class_stats=stats, min_class_weight=f.min_class_weight,
                                          max_class_weight=f.max_class_weight)
        store = CheckpointStore(os.path.join(local_dir, "stage1"), model=model,
                                optimizer=stage1_opt)
        run_stage1(trainer, store, ds, local_dir, split=split, batch_size=f.stage1_batch_size,
                   crop_size=crop_size, weighted_epochs=f.stage1_weighted_epochs,
                   plain_epochs=f.stage1_plain_epochs, seed=f.seed, random_scale=random_scale,
                   skip_bad_examples=f.skip_bad_examples, checkpoint_every=f.checkpoint_every,
                   summary_writer=writer)
    else:
        logging.info("stage 1 skipped (--stage1=%s, initial checkpoint with matching logits: %s)",
                     f.stage1, logits_loaded)

    results_dir = os.path.join(local_dir, "results")
    baseline_dir = os.path.join(results_dir, "baseline")
    state_exists = os.path.exists(os.path.join(local_dir, STATE_FILE))
    if os.path.exists(os.path.join(baseline_dir, "results.json")):
        baseline = metrics.load_results(os.path.join(baseline_dir, "results.json"))
    else:
        baseline = evaluate_split(model, ds, f.eval_split, f, eval_crop_size, baseline_dir,
                                  "baseline (before LoAd)")

    # Stage 2: LoAd.
    holdout_refs = pipeline.select_refs(ds, f.eval_split, pipeline.holdout_ids(
        ds, local_dir, f.holdout_fraction, f.seed, split=f.eval_split))
    train_refs = ds.examples(split)
    with strategy.scope():
        generator_trainer = steps.GeneratorTrainer(model, discriminator, generator_opt, strategy,
                                                   info.num_classes, map_encoding=f.map_encoding)
        discriminator_trainer = steps.DiscriminatorTrainer(discriminator, disc_opt, strategy,
                                                           info.num_classes)
    generator_store = CheckpointStore(os.path.join(local_dir, "generator"),
                                      model=model, optimizer=generator_opt)
    discriminator_store = CheckpointStore(os.path.join(local_dir, "discriminator"),
                                          model=discriminator, optimizer=disc_opt)
    holdout = HoldoutEvaluator(model, ds, holdout_refs, f.eval_batch_size, eval_crop_size)
    options = dict(train_split=split, batch_size=f.adv_batch_size, crop_size=crop_size, seed=f.seed,
                   random_scale=random_scale, skip_bad_examples=f.skip_bad_examples,
                   map_batch_size=f.map_batch_size, eval_crop_size=eval_crop_size,
                   disc_batch_size=f.disc_batch_size, disc_max_epochs=f.disc_max_epochs,
                   disc_patience=f.disc_patience, disc_bn_batches=f.disc_bn_batches,
                   disc_target_accuracy=f.disc_target_accuracy or None)
    load_config = LoAdConfig(beta_l=f.beta_l, beta_u=f.beta_u, gamma_max=f.gamma_max,
                             psi_max=f.psi_max, omega_max=f.omega_max, b_max=f.buffer_max,
                             max_propagations=f.max_propagations or None)
    hooks = LoAdTrainingHooks(generator_trainer, discriminator_trainer, generator_store,
                              discriminator_store, holdout, ds, train_refs, options, local_dir,
                              summary_writer=writer,
                              progress=Progress("LoAd propagation", total=load_config.max_propagations))
    buffer = MapBuffer(os.path.join(local_dir, "buffer"), load_config.b_max)
    controller = LoAdController(load_config, hooks, os.path.join(local_dir, STATE_FILE), buffer,
                                seed=f.seed)
    if state_exists:
        logging.info("LoAd: resuming from %s", os.path.join(local_dir, STATE_FILE))
    result = controller.run()
    logging.info("LoAd finished: %s", result)

    # Final model: evaluation, tables, graph, export.
    generator_store.restore(result.final_tag)
    generator_store.copy(result.final_tag, "final")
    final = evaluate_split(model, ds, f.eval_split, f, eval_crop_size,
                           os.path.join(results_dir, "final"), f"LoAd final ({result.final_tag})")
    write_comparison(baseline, final, os.path.join(results_dir, "comparison.md"))
    plot_path = write_convergence_plot(controller.state["history"],
                                       os.path.join(local_dir, "convergence.png"))
    export_dir = None
    if f.export:
        export_dir = export_final(model, os.path.join(local_dir, "export"), eval_crop_size)
    summary = {
        "run_dir": run_dir, "baseline_miou": baseline["miou"], "final_miou": final["miou"],
        "holdout_miou_start": result.mu_start, "holdout_miou_final": result.mu_final,
        "final_tag": result.final_tag, "propagations": result.propagations,
        "cycles": result.cycles, "peaks": result.peaks, "stop_reason": result.reason,
        "convergence_plot": plot_path, "export_dir": export_dir,
        "wall_time_s": round(time.monotonic() - start_time, 1),
    }
    with open(os.path.join(local_dir, "summary.json"), "w", encoding="utf-8") as out:
        json.dump(summary, out, indent=1)
    logging.info("done in %s: val mIoU %.2f%% -> %.2f%% (hold-out %.2f%% -> %.2f%%); run dir %s",
                 format_duration(summary["wall_time_s"]), 100 * baseline["miou"],
                 100 * final["miou"], 100 * result.mu_start, 100 * result.mu_final, run_dir)
    return summary


def write_comparison(baseline, final, path):
    """The paper's Table 1 style markdown: per-class IoU, baseline vs LoAd, better in bold."""
    from deeplab_load import comparison
    rows = comparison.compare(baseline, final, "baseline", "LoAd")
    with open(path, "w", encoding="utf-8") as out:
        out.write(comparison.format_markdown(rows, ("DeepLabv3+", "DeepLabv3+ & LoAd")))


def write_convergence_plot(history, path):
    from deeplab_load.lookahead.convergence_plot import plot_convergence
    try:
        plot_convergence(history, path)
    except ImportError as err:
        logging.warning("convergence graph not drawn (%s); the data is in state.json", err)
        return None
    return path


def export_final(model, export_dir, eval_crop_size):
    from deeplab_load.export import export_saved_model
    if os.path.exists(export_dir):
        logging.info("export %s exists: replacing it atomically", export_dir)
    export_saved_model(model, export_dir, eval_crop_size=eval_crop_size)
    logging.info("exported SavedModel to %s", export_dir)
    return export_dir
