"""One training run end to end: data, models, stage 1, LoAd, evaluation, tables, graph, export.

Run directory layout:
    flags.txt                  flags of the first start (flags_resume_<n>.txt for resumes)
    train.lock                 pid of the train process running in the dir (`run_lock`)
    class_stats.json           training-set class pixel statistics (weighted CE)
    holdout_ids.txt            the fixed hold-out images
    stage1_state.json, generator/ (tagged checkpoints), discriminator/ (one per D round)
    state.json                 the LoAd controller state; events.jsonl its event log
    buffer/                    label-map sets of the aggregation buffer
    tensorboard/               scalars; at every LoAd cycle end, image strips of the first
                               hold-out images (image | ground truth | g_s | generator)
    results/{baseline,final}[_unselected_val]/results.{json,md}, results/comparison.md
                               (whole eval split and the split minus the hold-out)
    convergence.png            hold-out mIoU per propagation (paper Fig. 3 style)
    changes.png                the eval-split images the final model changed most against the
                               baseline: image, ground truth, baseline, LoAd, gains / losses
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

from deeplab_load import visualize
from deeplab_load.checkpoints.restore import tagged_prefix, zoo_mismatch_fix
from deeplab_load.data import get_dataset, pipeline
from deeplab_load.data.common import as_size
from deeplab_load.errors import FlagError
from deeplab_load.lookahead.buffer import MapBuffer
from deeplab_load.lookahead.controller import STATE_FILE, LoAdController
from deeplab_load.lookahead.convergence_plot import plot_convergence
from deeplab_load.checkpoints.model_spec import (RUN_CHECKPOINT_FOLDERS, ModelSpec,
                                                 architecture_config, write_model_spec)
from deeplab_load.models.discriminator import build_discriminator
from deeplab_load.models.layers import set_batch_norm_decay
from deeplab_load.models.precision import compute_dtype
from deeplab_load.serving import export_saved_model
from deeplab_load.training import lr_schedules, pictures, reporting, steps
from deeplab_load.checkpoints.store import CheckpointStore, read_model_weights, read_tags
from deeplab_load.training.holdout import HoldoutEvaluator
from deeplab_load.training.load_hooks import HookData, LoAdTrainingHooks
from deeplab_load.training.safety import interrupts, run_lock
from deeplab_load.training.segmentor import check_segmentor, deeplab_segmentor
from deeplab_load.progress import format_duration, Progress
from deeplab_load.training.stage1 import DONE_TAG, run_stage1, schedule, training_class_stats
from deeplab_load.training.strategy import PEER_ERRORS, is_multi_worker, lost_worker_error, \
    make_strategy, stop_agreement, worker_directory
from deeplab_load.training.worker_sync import sync_saved_progress
from deeplab_load.checkpoints.tf1 import MISMATCH_FIX, CheckpointMismatchError


def dataset_options(data):
    """Extra ``get_dataset`` arguments of the data group (the demo generator's settings)."""
    if data.dataset != "demo":
        return {}
    return dict(num_train=data.demo_num_train, num_val=data.demo_num_val,
                seed=data.demo_data_seed, image_size=as_size(data.demo_image_size))


def open_dataset(config):
    data = config.data
    return get_dataset(data.dataset, data.dataset_dir, tfrecord_dir=data.tfrecord_dir,
                       **dataset_options(data))


def train_split(config, ds):
    """--train_split, else VOC's train_aug when SBD is present, else train."""
    if config.data.train_split:
        return config.data.train_split
    return "train_aug" if "train_aug" in ds.splits and ds.available("train_aug") else "train"


def prepare_run_dir(config, run_dir):
    """Creates the run dir, refusing to touch an existing run unless --resume; writes flags."""
    existing = os.path.exists(os.path.join(run_dir, "flags.txt"))
    if existing and not config.run.resume:
        raise FileExistsError(f"--run_dir {run_dir} already holds a run; pass --resume to "
                              f"continue it or choose another --run_dir (nothing was changed)")
    os.makedirs(run_dir, exist_ok=True)
    name = "flags.txt"
    if existing:
        resumes = len(glob.glob(os.path.join(run_dir, 'flags_resume_*.txt')))
        previous = f"flags_resume_{resumes}.txt" if resumes else "flags.txt"
        with open(os.path.join(run_dir, previous), encoding="utf-8") as before:
            changes = changed_flags(before.read(), config.to_flagfile())
        if changes:
            logging.warning("resuming %s with changed flags (the run continues with the new "
                            "values; snapshots keep their weights and optimizer slots, the "
                            "optimizers use the configured learning rates): %s", run_dir,
                            "; ".join(f"--{k} {old} -> {new}" for k, (old, new) in changes.items()))
        name = f"flags_resume_{resumes + 1}.txt"
    with open(os.path.join(run_dir, name), "w", encoding="utf-8") as out:
        out.write(config.to_flagfile())
    return existing


def _flag_values(text):
    """{name: value} of `TrainConfig.to_flagfile` lines (booleans as "true" / "false")."""
    values = {}
    for line in text.splitlines():
        if not line.startswith("--"):
            continue
        name, has_value, value = line[2:].partition("=")
        if not has_value:
            value = "false" if name.startswith("no") and len(name) > 2 else "true"
            name = name[2:] if value == "false" else name
        values[name] = value
    return values


def changed_flags(old_text, new_text):
    """{name: (old, new)} of the flags two flag files give differently ("unset" when absent)."""
    old, new = _flag_values(old_text), _flag_values(new_text)
    return {name: (old.get(name, "unset"), new.get(name, "unset"))
            for name in sorted(set(old) | set(new)) if old.get(name) != new.get(name)}


def write_model_specs(job):
    """model.json (architecture, data set, eval crop) into the run's checkpoint folders, so
    evaluate / export / predict need only --run_dir; None (nothing written) for a segmentor
    without a DeepLab model_config."""
    if job.model_config is None:
        logging.info("segmentor %r has no model_config: no model.json (evaluate / export / "
                     "predict --run_dir need one; the run's export/ SavedModel has the model)",
                     job.segmentor.name)
        return None
    config, info = job.config, job.ds.info
    data = {"dataset_dir": getattr(job.ds, "data_dir", None) or config.data.dataset_dir,
            "tfrecord_dir": config.data.tfrecord_dir and os.path.abspath(config.data.tfrecord_dir),
            "options": dataset_options(config.data), "eval_split": config.data.eval_split}
    if "image_size" in data["options"]:
        data["options"]["image_size"] = list(data["options"]["image_size"])
    spec = ModelSpec(config=job.model_config, dataset=info.name,
                     class_names=tuple(info.class_names), eval_crop_size=job.eval_crop_size,
                     data=data)
    for name in RUN_CHECKPOINT_FOLDERS:
        write_model_spec(os.path.join(job.local_dir, name), spec)
    return spec


def load_initial_weights(model, config, segmentor):
    """Loads --initial_checkpoint with `segmentor.restore_weights`; returns True when the logits
    were loaded too."""
    if not config.model.initial_checkpoint:
        logging.info("no --initial_checkpoint: random initialisation")
        return False
    try:
        description = segmentor.restore_weights(model, config.model.initial_checkpoint)
    except CheckpointMismatchError as err:
        zoo_name = config.model.zoo_name
        raise err.with_fix(zoo_mismatch_fix(zoo_name, "--initial_checkpoint") if zoo_name
                           else f"--initial_checkpoint: {MISMATCH_FIX}") from err
    logging.info("initial weights: %s", description)
    return "skipped" not in description


@dataclasses.dataclass
class Job:
    """What every part of a run shares: the TrainConfig, data, strategy, models, sizes,
    folders."""
    config: object
    ds: object
    model_config: object    # the DeepLabConfig (segmentor.model_config), None for other models
    strategy: object
    run_dir: str
    local_dir: str
    resumed: bool
    crop_size: tuple
    eval_crop_size: tuple
    split: str
    random_scale: tuple
    writer: object
    model: object
    discriminator: object
    stage1_optimizer: object
    generator_optimizer: object
    discriminator_optimizer: object
    logits_loaded: bool
    spec: object = None  # the ModelSpec written into the checkpoint folders
    segmentor: object = None  # the `segmentor.Segmentor` that built `model`
    # Examples skipped under --skip_bad_examples by any part of the run, each file once.
    bad_examples: pipeline.BadExampleLog = dataclasses.field(
        default_factory=pipeline.BadExampleLog)

    @property
    def results_dir(self):
        return os.path.join(self.local_dir, "results")


def config_segmentor(config, num_classes):
    """DeepLab of the TrainConfig's model group (`segmentor.deeplab_segmentor`)."""
    model_config = architecture_config(config.model, num_classes=num_classes)
    return deeplab_segmentor(dataclasses.replace(
        model_config, fine_tune_batch_norm=config.model.fine_tune_batch_norm))


def open_job(config, demo_profile=None, segmentor=None):
    """Seeds, data set, strategy, run dir (flags and model specs written) and models of the
    TrainConfig `config` (validated first: a bad value fails before any work).

    segmentor: the `segmentor.Segmentor` to train; None: DeepLab of the config's model group.
    With another segmentor the model group's DeepLab fields (zoo_name, model_variant,
    output_stride, atrous_rates, decoder_output_stride, fine_tune_batch_norm, batch_norm_decay)
    are not used: its BatchNorm layers keep their own momentum and follow the `training`
    argument."""
    config.validate()
    tf.keras.utils.set_random_seed(config.run.seed)
    keras.mixed_precision.set_global_policy(config.run.mixed_precision)
    ds = open_dataset(config)
    info = ds.info
    num_classes = config.model.num_classes or info.num_classes
    if segmentor is None:
        segmentor = config_segmentor(config, num_classes)
    model_config = segmentor.model_config
    strategy = make_strategy(config.run.strategy, config.run.worker_timeout_s,
                             config.run.collective_timeout_s)
    interrupts.reinstall_handlers()   # after TensorFlow's own SIGTERM handler (multi-worker)
    if model_config is not None and config.model.fine_tune_batch_norm and \
            strategy.num_replicas_in_sync > 1:
        raise FlagError(
            f"--fine_tune_batch_norm with {strategy.num_replicas_in_sync} replicas is not "
            f"supported: BatchNorm statistics would be per replica, so the workers' hold-out mIoU "
            f"and LoAd decisions could differ. Use --nofine_tune_batch_norm (DeepLab's default "
            f"for fine-tuning) or one replica.")
    run_dir = os.path.abspath(config.run.run_dir or
                              os.path.join("runs", f"{info.name}_{segmentor.name}"))
    # Every worker runs the same deterministic controller; non-chief workers keep their state
    # and snapshots in their own scratch folder (run_dir/worker_tmp_<i>), the chief in run_dir.
    local_dir = worker_directory(run_dir, strategy)
    run_lock.lock_run_dir(local_dir)   # held until run_training returns
    resumed = prepare_run_dir(config, local_dir)
    if demo_profile:
        logging.info("demo data set: demo profile applied to unset flags: %s", demo_profile)
    logging.info("run dir %s (%s); model %s; strategy %s with %d replica(s); map encoding %s; "
                 "dtype policy %s", run_dir, "resuming" if resumed else "new run",
                 model_config or f"{segmentor.name} (output stride {segmentor.output_stride})",
                 type(strategy).__name__, strategy.num_replicas_in_sync,
                 config.generator.map_encoding, config.run.mixed_precision)
    split = train_split(config, ds)
    stage1_lr = lr_schedules.stage1_learning_rate(config, stage1_total_steps(config, ds, split))
    crop_size = as_size(config.data.crop_size or info.crop_size)
    eval_crop_size = as_size(config.data.eval_crop_size or info.eval_crop_size)
    with strategy.scope():
        model = check_segmentor(segmentor, segmentor.build(num_classes), num_classes,
                                (crop_size, eval_crop_size))
        if model_config is not None:   # DeepLab's BatchNorm; another model keeps its own
            set_batch_norm_decay(model, config.model.batch_norm_decay)
        logits_loaded = load_initial_weights(model, config, segmentor)
        discriminator = build_discriminator(info.num_classes,
                                            input_size=config.discriminator.input_size)
        stage1_opt = steps.stage1_optimizer(stage1_lr, config.stage1.momentum)
        generator_opt = steps.generator_optimizer(config.generator.learning_rate,
                                                  config.generator.momentum)
        disc_opt = steps.discriminator_optimizer(config.discriminator.learning_rate,
                                                 config.discriminator.optimizer)
    job = Job(
        config=config, ds=ds, model_config=model_config, strategy=strategy, run_dir=run_dir,
        local_dir=local_dir, resumed=resumed, crop_size=crop_size, eval_crop_size=eval_crop_size,
        split=split, random_scale=config.data.random_scale,
        writer=tf.summary.create_file_writer(os.path.join(local_dir, "tensorboard")),
        model=model, discriminator=discriminator, stage1_optimizer=stage1_opt,
        generator_optimizer=generator_opt, discriminator_optimizer=disc_opt,
        logits_loaded=logits_loaded, segmentor=segmentor)
    job.spec = write_model_specs(job)
    return job


def stage1_total_steps(config, ds, split):
    """Stage 1's step budget (`stage1.schedule`); None for the constant policy without slow
    start, which needs none (and then no split listing is read)."""
    if config.stage1.learning_policy == "constant" and config.stage1.slow_start_step == 0:
        return None
    return schedule(len(pipeline.split_ids(ds, split)), config.stage1.batch_size,
                    config.stage1.weighted_epochs, config.stage1.plain_epochs)[2]


def run_stage1_if_needed(job):
    """Stage 1 (pixel-wise CE) when --stage1=on, or auto without a fitting checkpoint."""
    config, ds, info = job.config, job.ds, job.ds.info
    if not (config.stage1.mode == "on" or (config.stage1.mode == "auto" and not job.logits_loaded)):
        logging.info("stage 1 skipped (--stage1=%s, initial checkpoint with matching logits: %s)",
                     config.stage1.mode, job.logits_loaded)
        return
    stats = None
    if config.stage1.weighted_epochs > 0:
        stats = training_class_stats(ds, job.split,
                                     os.path.join(job.local_dir, "class_stats.json"),
                                     config.data.skip_bad_examples, job.bad_examples)
    with job.strategy.scope():
        trainer = steps.Stage1Trainer(job.model, job.stage1_optimizer, job.strategy,
                                      info.num_classes, class_stats=stats,
                                      min_class_weight=config.stage1.min_class_weight,
                                      max_class_weight=config.stage1.max_class_weight,
                                      weight_decay=config.model.weight_decay,
                                      kernels_to_decay=job.segmentor.weight_decay_kernels(
                                          job.model, config.model.weight_decay))
    store = CheckpointStore(os.path.join(job.local_dir, "stage1"), model=job.model,
                            optimizer=job.stage1_optimizer)
    run_stage1(trainer, store, ds, job.local_dir, split=job.split,
               batch_size=config.stage1.batch_size, crop_size=job.crop_size,
               weighted_epochs=config.stage1.weighted_epochs,
               plain_epochs=config.stage1.plain_epochs,
               seed=config.run.seed, random_scale=job.random_scale,
               skip_bad_examples=config.data.skip_bad_examples,
               checkpoint_every=config.stage1.checkpoint_every,
               summary_writer=job.writer, bad_example_log=job.bad_examples)


def holdout_refs_of(job):
    """The run's fixed hold-out images (a seeded share of --eval_split, kept in the run dir)."""
    config = job.config
    available = None
    if config.data.skip_bad_examples:
        available = [ref.id for ref in pipeline.usable_refs(job.ds, config.data.eval_split, True,
                                                             job.bad_examples)]
    return pipeline.select_refs(job.ds, config.data.eval_split, pipeline.holdout_ids(
        job.ds, job.local_dir, config.load.holdout_fraction, config.run.seed,
        split=config.data.eval_split, available=available))


def evaluate_model(job, holdout_refs, name, label):
    """`reporting.evaluate_or_load` of the current model into results/<name>."""
    return reporting.evaluate_or_load(job.model, job.ds, job.config.data.eval_split, holdout_refs,
                                      job.config.run.eval_batch_size, job.eval_crop_size,
                                      job.results_dir, name, label,
                                      job.config.data.skip_bad_examples, job.bad_examples,
                                      strategy=job.strategy)


def build_adversarial_hooks(job, holdout_refs, progress=None):
    """(LoAdTrainingHooks, generator CheckpointStore) over the job's generator and D."""
    config, info = job.config, job.ds.info
    with job.strategy.scope():
        generator_trainer = steps.GeneratorTrainer(
            job.model, job.discriminator, job.generator_optimizer, job.strategy,
            info.num_classes, map_encoding=config.generator.map_encoding,
            weight_decay=config.model.weight_decay,
            model_training=steps.GENERATOR_MODES[config.generator.mode],
            kernels_to_decay=job.segmentor.weight_decay_kernels(job.model,
                                                                config.model.weight_decay))
        discriminator_trainer = steps.DiscriminatorTrainer(
            job.discriminator, job.discriminator_optimizer, job.strategy, info.num_classes)
    generator_store = CheckpointStore(os.path.join(job.local_dir, "generator"),
                                      model=job.model, optimizer=job.generator_optimizer)
    discriminator_store = CheckpointStore(os.path.join(job.local_dir, "discriminator"),
                                          model=job.discriminator,
                                          optimizer=job.discriminator_optimizer)
    holdout = HoldoutEvaluator(job.model, job.ds, holdout_refs, config.run.eval_batch_size,
                               job.eval_crop_size, strategy=job.strategy,
                               dtype=config.load.holdout_dtype)
    data = HookData(train_split=job.split, crop_size=job.crop_size,
                    eval_crop_size=job.eval_crop_size, bad_example_log=job.bad_examples)
    train_refs = pipeline.usable_refs(job.ds, job.split, config.data.skip_bad_examples,
                                      job.bad_examples)
    hooks = LoAdTrainingHooks(generator_trainer, discriminator_trainer, generator_store,
                              discriminator_store, holdout, job.ds, train_refs, config, data,
                              job.local_dir, summary_writer=job.writer, progress=progress)
    return hooks, generator_store


def run_training(config, demo_profile=None, segmentor=None):
    """Runs (or resumes) the whole job of TrainConfig `config`; returns a summary dict.

    segmentor: the model to train (`segmentor.Segmentor`: any Keras model from raw pixels to
    logits at a stride); None: DeepLab of `config`'s model group.

    Holds the run dir's lock (`run_lock`) throughout. A SIGTERM / SIGINT stops the run at the
    next saved point (`interrupts`): returns {"interrupted": message} after logging how to
    resume."""
    with interrupts.stop_on_signals(), run_lock.release_acquired_since():
        try:
            return _run_training(config, demo_profile, segmentor)
        except interrupts.TrainingInterrupted as stop:
            held = run_lock.held_run_dirs()
            where = held[-1] if held else config.run.run_dir
            message = (f"{stop}; progress is saved in {where}: to resume, run the same train "
                       f"command again (--resume is the default)")
            logging.warning("%s", message)
            print(message, flush=True)
            return {"interrupted": message}
        except PEER_ERRORS as error:
            if not is_multi_worker():
                raise
            held = run_lock.held_run_dirs()
            raise lost_worker_error(error, held[-1] if held else config.run.run_dir) from error


def _run_training(config, demo_profile=None, segmentor=None):
    start_time = time.monotonic()
    job = open_job(config, demo_profile, segmentor)
    if isinstance(job.strategy, tf.distribute.MultiWorkerMirroredStrategy):
        # Every worker resumes from the same saved point and stops at the same check when any
        # of them gets a SIGTERM / SIGINT (`worker_sync`, `interrupts.agree_with`).
        sync_saved_progress(job.strategy, job.run_dir, job.local_dir)
        with interrupts.agree_with(stop_agreement(job.strategy)):
            return _train_job(job, start_time)
    return _train_job(job, start_time)


def _train_job(job, start_time):
    config, run_dir, local_dir, model = job.config, job.run_dir, job.local_dir, job.model
    run_stage1_if_needed(job)
    state_exists = os.path.exists(os.path.join(local_dir, STATE_FILE))
    holdout_refs = holdout_refs_of(job)
    baseline = evaluate_model(job, holdout_refs, "baseline", "baseline (before LoAd)")

    # Stage 2: LoAd.
    load_config = config.load.controller_config()
    hooks, generator_store = build_adversarial_hooks(
        job, holdout_refs, Progress("LoAd propagation", total=load_config.max_propagations))
    buffer = MapBuffer(os.path.join(local_dir, "buffer"), load_config.b_max)
    controller = LoAdController(load_config, hooks, os.path.join(local_dir, STATE_FILE), buffer,
                                seed=config.run.seed)
    if state_exists:
        logging.info("LoAd: resuming from %s", os.path.join(local_dir, STATE_FILE))
    try:
        result = controller.run()
    finally:
        hooks.close()
    logging.info("LoAd finished: %s", result)

    # Final model: evaluation, tables, graph, export.
    generator_store.restore(result.final_tag)
    generator_store.copy(result.final_tag, "final")
    final = evaluate_model(job, holdout_refs, "final", f"LoAd final ({result.final_tag})")
    reporting.write_comparison(baseline, final, os.path.join(job.results_dir, "comparison.md"))
    plot_path = write_convergence_plot(controller.state["history"],
                                       os.path.join(local_dir, "convergence.png"))
    changes_path = write_changes_picture(job, os.path.join(local_dir, "changes.png"))
    export_dir = None
    if config.run.export:
        export_dir = export_final(model, os.path.join(local_dir, "export"), job.eval_crop_size,
                                  spec=job.spec)
    summary = {
        "run_dir": run_dir, "baseline_miou": baseline["val"]["miou"],
        "final_miou": final["val"]["miou"],
        "baseline_unselected_miou": _miou(baseline["unselected_val"]),
        "final_unselected_miou": _miou(final["unselected_val"]),
        "holdout_images": len(holdout_refs),
        "holdout_miou_start": result.mu_start, "holdout_miou_final": result.mu_final,
        "final_tag": result.final_tag, "propagations": result.propagations,
        "cycles": result.cycles, "peaks": result.peaks, "stop_reason": result.reason,
        "convergence_plot": plot_path, "changes_picture": changes_path,
        "export_dir": export_dir,
        "wall_time_s": round(time.monotonic() - start_time, 1),
        "skipped_examples": job.bad_examples.summary(),
    }
    if job.bad_examples.count:
        logging.warning("%d bad examples skipped (--skip_bad_examples): %s",
                        job.bad_examples.count, "; ".join(job.bad_examples.messages[:5]))
    with open(os.path.join(local_dir, "summary.json"), "w", encoding="utf-8") as out:
        json.dump(summary, out, indent=1)
    unselected = ""
    if summary["final_unselected_miou"] is not None:
        unselected = (f", unselected val {100 * summary['baseline_unselected_miou']:.2f}% -> "
                      f"{100 * summary['final_unselected_miou']:.2f}%")
    logging.info("done in %s: val mIoU %.2f%% -> %.2f%%%s (hold-out of %d images %.2f%% -> "
                 "%.2f%%); run dir %s", format_duration(summary["wall_time_s"]),
                 100 * summary["baseline_miou"], 100 * summary["final_miou"], unselected,
                 len(holdout_refs), 100 * result.mu_start, 100 * result.mu_final, run_dir)
    return summary


def _miou(results):
    return None if results is None else results["miou"]


def write_convergence_plot(history, path):
    try:
        plot_convergence(history, path)
    except ImportError as err:
        logging.warning("convergence graph not drawn (%s); the data is in state.json", err)
        return None
    return path


def load_baseline_weights(job, model):
    """Puts the weights evaluated as the baseline into `model`: stage 1's result, else
    --initial_checkpoint's. False when there are neither (a random start is not stored)."""
    stage1_folder = os.path.join(job.local_dir, "stage1")
    if os.path.isfile(os.path.join(stage1_folder, "tags.json")) and \
            DONE_TAG in read_tags(os.path.join(stage1_folder, "tags.json")):
        read_model_weights(model, tagged_prefix(stage1_folder, DONE_TAG))
        return True
    if job.config.model.initial_checkpoint:
        job.segmentor.restore_weights(model, job.config.model.initial_checkpoint)
        return True
    return False


def write_changes_picture(job, path):
    """changes.png of the eval split: where the final model (job.model) differs most from the
    baseline; None (logged) when the baseline's weights are not stored."""
    baseline = job.segmentor.build(job.config.model.num_classes or job.ds.info.num_classes)
    if not load_baseline_weights(job, baseline):
        logging.info("no changes.png: the baseline was a random initialisation (not stored)")
        return None
    config, info = job.config, job.ds.info
    examples = pictures.most_changed_examples(baseline, job.model, job.ds, config.data.eval_split,
                                              config.run.eval_batch_size, job.eval_crop_size,
                                              skip_bad_examples=config.data.skip_bad_examples)
    pictures.write_changes_png(path, examples, visualize.palette_for(info, info.num_classes))
    logging.info("wrote %s: the %d %s images the final model changed most", path,
                 len(examples), config.data.eval_split)
    return path


def export_final(model, export_dir, eval_crop_size, spec=None):
    """SavedModel of `model`: float32 for DeepLab (a float32 copy of a bfloat16 one), else in
    the dtype the model computes in (only DeepLab can be rebuilt in another)."""
    if os.path.exists(export_dir):
        logging.info("export %s exists: replacing it atomically", export_dir)
    dtype = "float32" if getattr(model, "deeplab_config", None) is not None \
        else compute_dtype(model)
    export_saved_model(model, export_dir, eval_crop_size=eval_crop_size, spec=spec, dtype=dtype)
    logging.info("exported SavedModel to %s", export_dir)
    return export_dir
