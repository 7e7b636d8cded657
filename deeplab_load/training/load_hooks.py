"""The TensorFlow side of the LoAd controller: the hooks of `lookahead.controller.LoAdHooks`.

The working generator is `model`; its snapshots (weights + the adversarial optimizer's slots)
live in a `CheckpointStore` under the controller's tags ("g_s", "g_best", "g_end") and two
rotating per-propagation slots used for resume. The discriminator and its optimizer are saved
once per training round. Data for propagation n is batch n - 1 of the seeded training stream, so
a resumed run sees exactly the batches an uninterrupted one did.

A stop signal (`interrupts`) is honoured when a hook starts new work or between discriminator
epochs: all finished work is saved by then (an interrupted D round restarts from round - 1).
"""
import dataclasses
import itertools
import json
import os

import tensorflow as tf
from absl import logging

from deeplab_load import visualize
from deeplab_load.data import pipeline
from deeplab_load.data.batches import Batches
from deeplab_load.errors import DamagedFileError
from deeplab_load.checkpoints.store import read_model_weights, variable_table
from deeplab_load.training import map_sets, pictures
from deeplab_load.training.safety import interrupts, kill_points
from deeplab_load.training.events import EventLog
from deeplab_load.training.steps import fit_discriminator

EVENTS_FILE = "events.jsonl"
CHANCE_ACCURACY = 0.55   # a D round ending at or below this hold-out accuracy is at chance


def _accuracy_names(values):
    """The hold-out accuracy keys of D's metrics: overall, real, fake (pooled) and per fake part."""
    return ["accuracy", "real_accuracy", "fake_accuracy"] + sorted(
        k for k in values if k.startswith("fake_accuracy_"))


def newest_set_holdout_fakes(set_dirs, triples, g_s_snapshot, crop_size, seed):
    """{"newest_set": hold-out fakes (`map_sets.in_memory_examples`)} of the generator that wrote
    the newest buffer set (`set_dirs[-1]`), when that generator is not g_s (whose checkpoint is
    `g_s_snapshot`), e.g. g_end after a cycle without a peak; else {}.

    triples: g_s's (image, labels, map) per hold-out image (`HoldoutEvaluator.examples_with_maps`);
    the newest set's maps replace the map, the crops are those of g_s's fakes."""
    if not set_dirs:
        return {}
    stored = map_sets.read_holdout_maps(set_dirs[-1])
    if stored is None:
        logging.info("%s has no hold-out maps (written by an older version): D's hold-out "
                     "fakes are g_s's maps only", set_dirs[-1])
        return {}
    source, maps = stored
    if source["snapshot"] == g_s_snapshot:
        return {}
    if len(maps) != len(triples) or any(m.shape != label.shape
                                        for m, (_, label, _) in zip(maps, triples)):
        raise DamagedFileError(
            f"{os.path.join(set_dirs[-1], map_sets.HOLDOUT_MAPS_FILE)}: its {len(maps)} "
            f"hold-out maps do not fit the {len(triples)} hold-out images; "
            f"{map_sets.RESTART_LOAD_FIX.format(root=os.path.dirname(set_dirs[-1]))}")
    logging.info("discriminator hold-out fakes: g_s's maps and those of %s (%s), which wrote "
                 "the newest buffer set %s", source["tag"], source["snapshot"],
                 os.path.basename(set_dirs[-1]))
    newest = [(image, label, label_map) for (image, label, _), label_map in zip(triples, maps)]
    return {"newest_set": map_sets.in_memory_examples(newest, crop_size, real=False, seed=seed)}


@dataclasses.dataclass(frozen=True)
class HookData:
    """What the run resolved for the hooks besides the config: the training split, the training
    crop and eval padding sizes (H, W), and the log of skipped examples (or None)."""
    train_split: str
    crop_size: tuple
    eval_crop_size: tuple
    bad_example_log: object = None


def working_tag(propagation):
    return f"working_{propagation % 2}"


def discriminator_tag(round_index):
    return f"round_{round_index}"


class LoAdTrainingHooks:
    """Hooks for `LoAdController` over a generator, a discriminator and their trainers.

    Args:
      generator_trainer: `steps.GeneratorTrainer` (holds model, discriminator, optimizer).
      discriminator_trainer: `steps.DiscriminatorTrainer`.
      generator_store: CheckpointStore(model=..., optimizer=<generator optimizer>).
      discriminator_store: CheckpointStore(model=<discriminator>, optimizer=<its optimizer>).
      holdout: `holdout.HoldoutEvaluator` of the working generator.
      ds: data set; train_refs: training ExampleRefs (the buffer's image set).
      config: the `TrainConfig` (its generator, discriminator and load groups, the seed, the
        data's random scale and --skip_bad_examples); data: `HookData`.
      run_dir: where events.jsonl goes; summary_writer: TensorBoard writer or None.
    """

    def __init__(self, generator_trainer, discriminator_trainer, generator_store,
                 discriminator_store, holdout, ds, train_refs, config, data, run_dir,
                 summary_writer=None, progress=None):
        self.generator = generator_trainer
        self.discriminator = discriminator_trainer
        self.generator_store = generator_store
        self.discriminator_store = discriminator_store
        self.holdout = holdout
        self.ds = ds
        self.train_refs = train_refs
        self.config = config
        self.data = data
        self.events_path = os.path.join(run_dir, EVENTS_FILE)
        self.events = EventLog(self.events_path)
        self.summary_writer = summary_writer
        self.progress = progress
        self._batches = None
        self._next_propagation = None

    # Generator.

    def _batch_for(self, propagation):
        if self._next_propagation != propagation:
            self.close()
            config, data = self.config, self.data
            dataset = pipeline.train_dataset(
                self.ds, data.train_split, config.generator.batch_size, data.crop_size,
                config.run.seed, random_scale=config.data.random_scale,
                skip_bad_examples=config.data.skip_bad_examples, start_step=propagation - 1,
                bad_example_log=data.bad_example_log)
            self._batches = Batches(self.generator.distribute(dataset))
        self._next_propagation = propagation + 1
        return next(self._batches)

    def close(self):
        """Deletes the adversarial batch stream (its iterator stays alive between steps)."""
        if self._batches is not None:
            self._batches.close()
        self._batches, self._next_propagation = None, None

    def adversarial_step(self, propagation):
        kill_points.kill_if_reached("propagation_start")
        interrupts.raise_if_requested(f"before LoAd propagation {propagation}")
        pixels, labels = self._batch_for(propagation)
        loss = float(self.generator.step(pixels, labels))
        kill_points.kill_if_reached("propagation")
        return {"generator_loss": loss}

    def evaluate(self):
        return float(self.holdout.mean_iou())

    def save_working(self, propagation):
        self.generator_store.save(working_tag(propagation))

    def _restore(self, store, tag):
        """store.restore(tag); a damaged snapshot's error also says how to restart LoAd."""
        try:
            store.restore(tag)
        except DamagedFileError as err:
            run_dir = os.path.dirname(self.events_path)
            raise DamagedFileError(
                f"{err}. To keep stage 1 and restart only LoAd instead, delete state.json, "
                f"events.jsonl and buffer/ in {run_dir}") from err

    def restore_working(self, propagation):
        self._restore(self.generator_store, working_tag(propagation))

    def save_model(self, tag):
        self.generator_store.save(tag)

    def copy_model(self, src_tag, dst_tag):
        self.generator_store.copy(src_tag, dst_tag)

    def restore_model(self, tag):
        self._restore(self.generator_store, tag)

    def _snapshot(self, tag):
        """The generator store's checkpoint of `tag`, relative to the store (a moved run dir
        keeps the name)."""
        store = self.generator_store
        return os.path.relpath(store.prefix(tag), store.root)

    def write_map_set(self, tag, set_dir):
        interrupts.raise_if_requested(f"before writing the label maps of {tag}")
        self._restore(self.generator_store, tag)
        # the hold-out's model: the generator, or its --holdout_dtype copy with these weights
        count = map_sets.write_label_map_set(
            self.holdout.computing_model(), self.ds, self.train_refs, set_dir,
            self.config.load.map_batch_size, self.data.eval_crop_size,
            strategy=self.holdout.strategy)
        holdout_maps = [label_map for _, _, label_map in self.holdout.examples_with_maps()]
        map_sets.write_holdout_maps(set_dir, holdout_maps, tag, self._snapshot(tag))
        logging.info("wrote %d label maps (and %d hold-out maps) of %s into %s", count,
                     len(holdout_maps), tag, set_dir)

    # Discriminator.

    def train_discriminator(self, set_dirs, round):
        interrupts.raise_if_requested(f"before discriminator round {round}")
        config, disc = self.config, self.config.discriminator
        if round > 0:
            self.restore_discriminator(round - 1)
        crop, scale = self.data.crop_size, config.data.random_scale
        seed = config.run.seed + 1000 * (round + 1)
        # Hold-out fakes come from the generator the next cycle starts from; the hold-out crops
        # are the same in every round, so the rounds' accuracies compare.
        self._restore(self.generator_store, "g_s")
        triples = list(self.holdout.examples_with_maps())
        holdout_real = map_sets.in_memory_examples(triples, crop, real=True, seed=config.run.seed)
        holdout_fake = map_sets.in_memory_examples(triples, crop, real=False,
                                                   seed=config.run.seed)
        extra_fakes = newest_set_holdout_fakes(set_dirs, triples,
                                               self._snapshot("g_s"), crop, config.run.seed)
        counter = iter(range(10 ** 9))
        real = lambda: map_sets.real_examples(self.ds, self.train_refs, crop,
                                              seed + next(counter), scale)
        fakes = [(lambda d=d: map_sets.fake_examples(self.ds, self.train_refs, d, crop,
                                                     seed + next(counter), scale))
                 for d in set_dirs]

        def log(epoch, values):
            parts = "".join(f", {k[len('fake_accuracy_'):]} {v:.3f}" for k, v in values.items()
                            if k.startswith("fake_accuracy_"))
            logging.info("discriminator round %d epoch %d: hold-out accuracy %.4f (real %.3f, "
                         "fake %.3f%s), train loss %.4f, train accuracy %.3f", round, epoch,
                         values["accuracy"], values["real_accuracy"], values["fake_accuracy"],
                         parts, values["loss"], values["train_accuracy"])
            if self.summary_writer is not None:
                with self.summary_writer.as_default(step=round * disc.max_epochs + epoch):
                    for name in _accuracy_names(values):
                        tf.summary.scalar(f"discriminator_epoch/holdout_{name}", values[name])
                    tf.summary.scalar("discriminator_epoch/train_loss", values["loss"])
                    tf.summary.scalar("discriminator_epoch/train_accuracy",
                                      values["train_accuracy"])
            kill_points.kill_if_reached("disc_epoch")
            interrupts.raise_if_requested(f"in discriminator round {round} after epoch {epoch} "
                                          f"(the round restarts on resume)")

        result = fit_discriminator(
            self.discriminator, real, fakes, holdout_real, holdout_fake,
            batch_size=disc.batch_size, max_epochs=disc.max_epochs, patience=disc.patience,
            target_accuracy=disc.target, seed=seed, log=log,
            batch_norm_batches=disc.bn_batches, min_epochs=disc.min_epochs,
            extra_holdout_fakes=extra_fakes)
        if result["accuracy"] <= CHANCE_ACCURACY:
            logging.warning(
                "discriminator round %d ends at hold-out accuracy %.3f (real %.3f, fake %.3f), "
                "chance is 0.5: D cannot tell ground truth from the generator's maps on the "
                "hold-out images, so the generator's adversarial loss -log D(G(x)) carries "
                "no information in the next cycle. More D epochs (--disc_max_epochs, "
                "--disc_patience) or D data may help.", round, result["accuracy"],
                result["real_accuracy"], result["fake_accuracy"])
        self.discriminator_store.save(discriminator_tag(round))
        self.discriminator_store.delete(discriminator_tag(round - 2))
        metrics = {k: v for k, v in result.items() if isinstance(v, (int, float))}
        for entry in result["history"]:
            for name in _accuracy_names(entry):
                metrics[f"epoch_{entry['epoch']}_holdout_{name}"] = entry[name]
        return metrics

    def restore_discriminator(self, round):
        self._restore(self.discriminator_store, discriminator_tag(round))

    # Events.

    def on_event(self, event):
        if event["seq"] <= self.events.last_seq:
            return
        if kill_points.reached("event_torn"):
            line = json.dumps(event, sort_keys=True)
            with open(self.events_path, "a", encoding="utf-8") as f:
                f.write(line[:len(line) // 2])
            kill_points.kill_now()
        self.events.append(event)
        kind = event["kind"]
        if kind == "propagation":
            if self.progress is not None:
                self.progress.update(
                    event["propagation"], mIoU=round(100 * event["mu"], 2),
                    mu_s=round(100 * event["mu_s"], 2), best=round(100 * event["mu_best"], 2),
                    cycle=event["cycle"], gamma=event["gamma"], omega=event["omega"],
                    psi=event["psi"], loss=event.get("losses", {}).get("generator_loss"))
            if self.summary_writer is not None:
                with self.summary_writer.as_default(step=event["propagation"]):
                    tf.summary.scalar("load/holdout_miou", event["mu"])
                    tf.summary.scalar("load/mu_s", event["mu_s"])
                    tf.summary.scalar("load/mu_best", event["mu_best"])
                    for name, value in event.get("losses", {}).items():
                        tf.summary.scalar(f"load/{name}", value)
        else:
            if kind == "cycle_end" and self.summary_writer is not None:
                self._write_cycle_pictures(event)
            if kind == "discriminator" and self.summary_writer is not None:
                with self.summary_writer.as_default(step=event["round"]):
                    for name in _accuracy_names(event["metrics"]):
                        if name in event["metrics"]:
                            tf.summary.scalar(f"discriminator/holdout_{name}",
                                              event["metrics"][name])
            details = {k: v for k, v in event.items() if k not in ("kind", "seq", "history")}
            logging.info("LoAd %s: %s", kind, details)

    def _write_cycle_pictures(self, event):
        """TensorBoard image strips [image | ground truth | g_s | generator at the cycle end] of
        the first `pictures.HOLDOUT_PICTURES` hold-out images, step = the propagation. Both
        generators are read from their snapshots (g_s, the working slot of the event's
        propagation); the working generator's weights are put back afterwards."""
        model = self.generator.model
        variables = list(variable_table(model).values())   # what read_model_weights assigns
        saved = [variable.numpy() for variable in variables]
        maps = {}
        try:
            for name, tag in (("start", "g_s"), ("current", working_tag(event["propagation"]))):
                read_model_weights(model, self.generator_store.prefix(tag))
                examples = list(itertools.islice(self.holdout.examples_with_maps(),
                                                 pictures.HOLDOUT_PICTURES))
                maps[name] = [label_map for _, _, label_map in examples]
        finally:
            for variable, value in zip(variables, saved):
                variable.assign(value)
        info = self.ds.info
        strips = pictures.cycle_end_strips(
            [(image, labels) for image, labels, _ in examples], maps["start"], maps["current"],
            visualize.palette_for(info, info.num_classes))
        with self.summary_writer.as_default(step=event["propagation"]):
            for index, picture in enumerate(strips):
                tf.summary.image(f"cycle_end/holdout_{index}", picture[None],
                                 description=f"hold-out image {index}: image | ground truth | "
                                             f"g_s | generator at the end of cycle "
                                             f"{event['label']}")
