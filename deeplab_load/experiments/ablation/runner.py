"""Does LoAd work? One stage-1 model, then for each seed the selected arms (`arm_names`) with the
same step budget on the same batch sequence.

    ablation_dir/
      stage1/                   the shared start: stage 1 (or --initial_checkpoint), hold-out
                                ids; stage1.json its marker, baseline.per_image.npz/.json
                                the baseline's per-image confusion matrices
      seed_<s>/load/            arm (e): a whole LoAd run (`run.run_training`, resumable)
      seed_<s>/selection_only/  arm (g): the same with the generator's learning rate 0
      seed_<s>/cross_entropy/   arm (b): plain CE with the generator's optimizer
      seed_<s>/cross_entropy_selected/  arm (b'): those CE steps under LoAd's controller, no D
      seed_<s>/adversarial/     arms (c) last and (d) best hold-out (`arms.plain_adversarial`)
      seed_<s>/hybrid_<l>/      arms (f) last and best hold-out, CE + l adv
      seed_<s>/<arm>.per_image.npz/.json  the arm's per-image confusion matrices and structure
                                records on the report split (`PerImageResults`)
      seed_<s>/<arm>.json       an arm's figures, written when it is done (its resume marker)
      ablation.md, ablation.json, ablation.png   (`report`)
      changes_load.png          the report-split images the first seed's LoAd arm changed most
                                against the baseline (`changes`)

The step budget is `AblationConfig.arm_steps`, else the propagations the LoAd arm of the seed
took (LoAd then runs first). Every arm starts from the same model and uses the same hold-out
images (the stage-1 run's). Arms are judged on the report split: the data set's `test` split
when it has one, else the evaluation split minus the hold-out ("unselected val"), where no arm
selected anything. A killed ablation resumes arm by arm: finished arms are read back, the LoAd
and selection-only arms resume inside their runs, any other interrupted arm is run again from
its start.
"""
import os
import shutil
import time

from absl import logging

from deeplab_load import metrics
from deeplab_load.data import pipeline
from deeplab_load.data.common import as_size, read_id_list
from deeplab_load.errors import FlagError
from deeplab_load.evaluation_stats.per_image import evaluate_per_image
from deeplab_load.experiments.ablation import arm_names, arms, report
from deeplab_load.experiments.ablation.changes import write_arm_changes
from deeplab_load.atomic_files import write_json_atomic
from deeplab_load.checkpoints.model_loading import load_model
from deeplab_load.checkpoints.model_source import ModelSource
from deeplab_load.training import run, shared_start
from deeplab_load.training.safety import interrupts

TEST_SPLIT = "test"
# Per-image results of an arm: <arm>.per_image.npz and .per_image.json (`PerImageResults`).
PER_IMAGE_SUFFIX = ".per_image.npz"


def report_target(ds, config, holdout_refs):
    """(split name, refs or None for the whole split, label) the arms are judged on."""
    if TEST_SPLIT in ds.splits and ds.available(TEST_SPLIT):
        return TEST_SPLIT, None, TEST_SPLIT
    holdout_ids = {ref.id for ref in holdout_refs}
    refs = [ref for ref in ds.examples(config.data.eval_split) if ref.id not in holdout_ids]
    if not refs:
        raise ValueError(f"the ablation's report split is empty: {ds.info.name} has no "
                         f"{TEST_SPLIT!r} split and the hold-out is all of "
                         f"{config.data.eval_split!r} (lower --holdout_fraction)")
    return config.data.eval_split, refs, f"{config.data.eval_split} minus hold-out"


def evaluate_on_report_split(model, ds, config, eval_crop_size, holdout_refs, ablation_dir, path):
    """Per-image confusion matrices of `model` on the report split, saved to `path` (.npz);
    returns the arm's "report" figures (mIoU of the summed matrices, per-class IoU, the
    structural metric's totals)."""
    split, refs, label = report_target(ds, config, holdout_refs)
    results = evaluate_per_image(model, ds, split, config.run.eval_batch_size, eval_crop_size,
                                 refs=refs)
    results.save(path)
    summary = metrics.results_dict(results.confusions.sum(axis=0), ds.info.class_names)
    return {"split": label, "miou": summary["miou"], "per_class_iou": summary["per_class_iou"],
            "class_names": summary["class_names"], "num_images": len(results.ids),
            "structure": results.structure.summary(ds.info.class_names),
            "per_image": os.path.relpath(path, ablation_dir)}


def prepare_start(config, ablation_dir, demo_profile=None):
    """Stage 1 (unless --initial_checkpoint fits), hold-out ids and the baseline on the report
    split, once (`shared_start.prepare_start`).

    Returns {"checkpoint" (start weights for every arm), "holdout_ids" (file), "baseline"}.
    """
    begin = time.monotonic()

    def evaluate_baseline(job, holdout_refs):
        path = os.path.join(job.local_dir, f"baseline{PER_IMAGE_SUFFIX}")
        report = evaluate_on_report_split(job.model, job.ds, config, job.eval_crop_size,
                                          holdout_refs, ablation_dir, path)
        return {"steps": 0, "report": report,
                "wall_time_s": round(time.monotonic() - begin, 1)}

    return shared_start.prepare_start(config, ablation_dir, demo_profile, evaluate_baseline)


def _arm_flags(config, start, seed, run_dir, **changes):
    return shared_start.start_flags(config, start, run_dir, seed=seed, **changes)


def _discriminator_rounds(history):
    """Hold-out accuracies of a controller run's D rounds, from its events."""
    return [{k: event["metrics"].get(k) for k in
             ("accuracy", "real_accuracy", "fake_accuracy", "epochs")}
            for event in history if event["kind"] == "discriminator" and event["metrics"]]


def _decisions(history):
    """What a controller run decided, from its events: counts per kind and the end."""
    kinds = ("propagation", "new_best", "dynamic_start", "cycle_start", "cycle_end", "peak")
    counts = {kind: sum(1 for e in history if e["kind"] == kind) for kind in kinds}
    done = next((e for e in history if e["kind"] == "done"), {})
    return dict(counts, reason=done.get("reason"), final_tag=done.get("final_tag"),
                mu_start=done.get("mu_start"), mu_final=done.get("mu_final"))


class Ablation:
    """The ablation of TrainConfig `config` and AblationConfig `ablation` in `ablation_dir`."""

    def __init__(self, config, ablation, ablation_dir, demo_profile=None):
        self.config, self.ablation = config, ablation
        self.dir = os.path.abspath(ablation_dir)
        self.demo_profile = demo_profile
        self.start = None

    def _budget_flags(self, budget):
        return {"max_propagations": budget} if budget else {}

    def _evaluate(self, job, holdout_refs, seed_dir, arm):
        return evaluate_on_report_split(job.model, job.ds, self.config, job.eval_crop_size,
                                        holdout_refs, self.dir,
                                        os.path.join(seed_dir, f"{arm}{PER_IMAGE_SUFFIX}"))

    def _fresh_job(self, seed, run_dir):
        shutil.rmtree(run_dir, ignore_errors=True)     # a control arm always runs from its start
        job = run.open_job(_arm_flags(self.config, self.start, seed, run_dir))
        return job, run.holdout_refs_of(job)

    # Arms run through `run.run_training`: (e) and (g).

    def _training_run_arm(self, seed, seed_dir, arm, budget, **changes):
        begin = time.monotonic()
        run_dir = os.path.join(seed_dir, arm)
        config = _arm_flags(self.config, self.start, seed, run_dir, **changes,
                            **self._budget_flags(self.ablation.arm_steps or budget))
        summary = run.run_training(config)
        if "interrupted" in summary:       # its progress is saved: the next call resumes it
            raise interrupts.TrainingInterrupted("a signal", f"in the {arm} arm (seed {seed})")
        model = load_model(ModelSource(run_dir=run_dir, checkpoint_tag="final")).model
        ds = run.open_dataset(config)
        holdout_refs = pipeline.select_refs(ds, config.data.eval_split, read_id_list(
            os.path.join(run_dir, pipeline.HOLDOUT_FILE)))
        report_figures = evaluate_on_report_split(
            model, ds, config, as_size(config.data.eval_crop_size or ds.info.eval_crop_size),
            holdout_refs, self.dir, os.path.join(seed_dir, f"{arm}{PER_IMAGE_SUFFIX}"))
        history = shared_start.read_events(run_dir)
        return {"steps": summary["propagations"], "report": report_figures,
                "cycles": summary["cycles"], "peaks": summary["peaks"],
                "final_tag": summary["final_tag"], "decisions": _decisions(history),
                "discriminator_rounds": _discriminator_rounds(history),
                "learning_rate": config.generator.learning_rate,
                "wall_time_s": round(time.monotonic() - begin, 1)}

    def load(self, seed, seed_dir, budget):
        return {"load": self._training_run_arm(seed, seed_dir, "load", budget)}

    def selection_only(self, seed, seed_dir, budget):
        return {"selection_only": self._training_run_arm(seed, seed_dir, "selection_only",
                                                         budget, adv_learning_rate=0.0)}

    # Control arms, run from their start in a fresh run dir.

    def cross_entropy(self, seed, seed_dir, budget):
        begin = time.monotonic()
        job, holdout_refs = self._fresh_job(seed, os.path.join(seed_dir, "cross_entropy"))
        result = arms.continue_cross_entropy(job, budget, arms.cross_entropy_trainer(job))
        return {"cross_entropy": dict(result, report=self._evaluate(job, holdout_refs, seed_dir,
                                                                    "cross_entropy"),
                                      wall_time_s=round(time.monotonic() - begin, 1))}

    def cross_entropy_selected(self, seed, seed_dir, budget):
        begin = time.monotonic()
        arm = "cross_entropy_selected"
        job, holdout_refs = self._fresh_job(seed, os.path.join(seed_dir, arm))
        hooks, store = run.build_adversarial_hooks(job, holdout_refs)
        hooks.generator = arms.cross_entropy_trainer(job)
        config = self.config
        load_config = config.load.controller_config(max_propagations=budget)
        try:
            result, history = arms.run_controller(job, arms.WithoutDiscriminator(hooks),
                                                  load_config)
        finally:
            hooks.close()
        store.restore(result.final_tag)
        return {arm: {"steps": result.propagations, "cycles": result.cycles,
                      "peaks": result.peaks, "final_tag": result.final_tag,
                      "holdout_miou_final": result.mu_final, "decisions": _decisions(history),
                      "optimizer": arms.optimizer_settings(hooks.generator.optimizer),
                      "report": self._evaluate(job, holdout_refs, seed_dir, arm),
                      "wall_time_s": round(time.monotonic() - begin, 1)}}

    def _plain_adversarial_arms(self, seed, seed_dir, budget, name, hybrid_weight=None):
        """Arms `name`_last and `name`_best: plain adversarial or hybrid training."""
        begin = time.monotonic()
        job, holdout_refs = self._fresh_job(seed, os.path.join(seed_dir, name))
        hooks, store = run.build_adversarial_hooks(job, holdout_refs)
        if hybrid_weight is not None:
            hooks.generator = arms.hybrid_trainer(job, hybrid_weight)
        try:
            result = arms.plain_adversarial(job, hooks, budget,
                                            retrain_every=self.config.load.gamma_max,
                                            name=f"{name} arm")
        finally:
            hooks.close()
        wall = round(time.monotonic() - begin, 1)
        out = {}
        for which, tag in (("last", arms.LAST_TAG), ("best", arms.BEST_TAG)):
            store.restore(tag)
            arm = f"{name}_{which}"
            out[arm] = {"steps": budget, "best_step": result["best_step"],
                        "discriminator_rounds": result["discriminator_rounds"],
                        "holdout_miou": result["holdout_miou"], "hybrid_weight": hybrid_weight,
                        "report": self._evaluate(job, holdout_refs, seed_dir, arm),
                        "wall_time_s": wall}
        return out

    def adversarial(self, seed, seed_dir, budget):
        return self._plain_adversarial_arms(seed, seed_dir, budget, "adversarial")

    def hybrid(self, seed, seed_dir, budget):
        out = {}
        for weight in self.ablation.hybrid_weights:
            name = f"hybrid_{weight:g}"
            out.update(self._cached(seed_dir, [arm_names.hybrid_arm(weight, w)
                                               for w in ("last", "best")],
                                    lambda: self._plain_adversarial_arms(
                                        seed, seed_dir, budget, name, hybrid_weight=weight)))
        return out

    # Driver.

    def _cached(self, seed_dir, names, compute):
        """{name: figures} of finished arms; `compute` runs them otherwise."""
        paths = {name: os.path.join(seed_dir, f"{name}.json") for name in names}
        if not all(os.path.exists(p) for p in paths.values()):
            logging.info("ablation %s: %s", os.path.basename(seed_dir), ", ".join(names))
            for name, figures in compute().items():
                write_json_atomic(paths[name], figures)
        return {name: shared_start.read_json(path) for name, path in paths.items()}

    def _budget(self, seed, seed_dir, results):
        if self.ablation.arm_steps:
            return self.ablation.arm_steps
        if "load" in results:
            return results["load"]["steps"]
        finished_load = os.path.join(seed_dir, "load.json")
        if os.path.exists(finished_load):         # LoAd ran for this seed in an earlier call
            return shared_start.read_json(finished_load)["steps"]
        raise FlagError(f"the control arms of seed {seed} take as many steps as its LoAd arm, "
                         f"which has not run ({finished_load} does not exist): add load to "
                         f"--arms or pass --arm_steps")

    def run_seed(self, seed):
        seed_dir = os.path.join(self.dir, f"seed_{seed}")
        os.makedirs(seed_dir, exist_ok=True)
        results = {"baseline": self.start["baseline"]}
        groups = self.ablation.groups
        if "load" in groups:
            results.update(self._cached(seed_dir, ["load"],
                                        lambda: self.load(seed, seed_dir, None)))
        controls = [g for g in groups if g in arm_names.CONTROL_GROUPS]
        if not controls:
            return results
        budget = self._budget(seed, seed_dir, results)
        for group in controls:
            if group == "hybrid":
                results.update(self.hybrid(seed, seed_dir, budget))
                continue
            names = arm_names.group_arms(group, self.ablation.hybrid_weights)
            results.update(self._cached(seed_dir, names,
                                        lambda g=group: getattr(self, g)(seed, seed_dir, budget)))
        return results

    def run(self):
        """Runs (or resumes) every selected arm for seeds seed .. seed + num_seeds - 1 (seed:
        the TrainConfig's run.seed); writes the report after each seed; returns
        {seed: {arm: figures}}."""
        os.makedirs(self.dir, exist_ok=True)
        self.start = prepare_start(self.config, self.dir, self.demo_profile)
        results = {}
        for index in range(self.ablation.num_seeds):
            seed = self.config.run.seed + index
            logging.info("ablation seed %d (%d/%d)", seed, index + 1, self.ablation.num_seeds)
            results[seed] = self.run_seed(seed)
            report.write_report(results, self.dir, self.ablation)
            if arm_names.LOAD in results[seed]:
                write_arm_changes(self.config, self.dir, self.start, seed, arm_names.LOAD,
                                  report_target)
        return results


def run_ablation(config, ablation, ablation_dir, demo_profile=None):
    """`Ablation(config, ablation, ablation_dir, demo_profile).run()`."""
    return Ablation(config, ablation, ablation_dir, demo_profile).run()
