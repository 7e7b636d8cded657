"""Does LoAd work? One stage-1 model, then for each seed five arms with the same step budget.

    ablation_dir/
      stage1/                 the shared start: stage 1 (or --initial_checkpoint), hold-out
                              ids, baseline results
      seed_<s>/load/          arm (e): a whole LoAd run (`run.run_training`, resumable)
      seed_<s>/cross_entropy/ arm (b): as many plain-CE steps as LoAd took propagations
      seed_<s>/adversarial/   arms (c) last and (d) best hold-out model of plain adversarial
                              training for the same number of steps (`control_arms`)
      seed_<s>/<arm>.json     an arm's figures, written when it is done (its resume marker)
      ablation.md, ablation.json, ablation.png

Every arm starts from the same model, uses the same hold-out images (the stage-1 run's) and is
judged on the unselected val images (val minus hold-out), where no arm selected anything. A
killed ablation resumes arm by arm: finished arms are read back, the LoAd arm resumes inside its
run, an interrupted control arm is run again from its start.
"""
import json
import os
import shutil
import time

from absl import logging

from deeplab_load.lookahead.buffer import write_json_atomic
from deeplab_load.training import control_arms, run
from deeplab_load.training.reporting import UNSELECTED, WHOLE

ARMS = ("baseline", "cross_entropy", "adversarial_last", "adversarial_best", "load")
ARM_TITLES = {
    "baseline": "(a) stage-1 baseline",
    "cross_entropy": "(b) + pixel-wise CE, same steps",
    "adversarial_last": "(c) + adversarial, no lookahead (last)",
    "adversarial_best": "(d) + adversarial, no lookahead (best hold-out)",
    "load": "(e) + LoAd",
}


def _figures(parts, **extra):
    """The part of evaluation results an arm keeps: mIoU and per-class IoU per split part."""
    out = dict(extra)
    for part in (WHOLE, UNSELECTED):
        results = parts.get(part)
        out[part] = None if results is None else {
            "miou": results["miou"], "per_class_iou": results["per_class_iou"],
            "class_names": results["class_names"], "num_images": results["num_images"]}
    return out


def _read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def prepare_start(f, ablation_dir, demo_profile=None):
    """Stage 1 (unless --initial_checkpoint fits), hold-out ids and baseline, once.

    Returns {"checkpoint" (start weights for every arm), "holdout_ids" (file), "baseline"}.
    """
    marker = os.path.join(ablation_dir, "stage1.json")
    if os.path.exists(marker):
        return _read_json(marker)
    job = run.open_job(f.replace(run_dir=os.path.join(ablation_dir, "stage1"), export=False),
                       demo_profile)
    run.run_stage1_if_needed(job)
    stage1_store = os.path.join(job.local_dir, "stage1")
    checkpoint = stage1_store if os.path.isdir(stage1_store) else f.initial_checkpoint
    if not checkpoint:
        raise ValueError("the ablation needs a trained start: stage 1 was skipped (--stage1=off) "
                         "and there is no --initial_checkpoint")
    holdout_refs = run.holdout_refs_of(job)
    baseline = run.evaluate_model(job, holdout_refs, "baseline", "stage-1 baseline")
    start = {"checkpoint": checkpoint,
             "holdout_ids": os.path.join(job.local_dir, "holdout_ids.txt"),
             "baseline": _figures(baseline, steps=0)}
    write_json_atomic(marker, start)
    return start


def _arm_flags(f, start, seed, run_dir):
    os.makedirs(run_dir, exist_ok=True)
    holdout = os.path.join(run_dir, "holdout_ids.txt")
    if not os.path.exists(holdout):
        shutil.copyfile(start["holdout_ids"], holdout)
    return f.replace(seed=seed, run_dir=run_dir, initial_checkpoint=start["checkpoint"],
                     stage1="off", export=False, resume=True)


def _discriminator_rounds(run_dir):
    """Hold-out accuracies of a LoAd run's D rounds, from its events.jsonl."""
    rounds = []
    path = os.path.join(run_dir, "events.jsonl")
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                event = json.loads(line)
                if event["kind"] == "discriminator":
                    metrics = event["metrics"]
                    rounds.append({k: metrics.get(k) for k in
                                   ("accuracy", "real_accuracy", "fake_accuracy", "epochs")})
    return rounds


def run_load_arm(f, start, seed, seed_dir):
    run_dir = os.path.join(seed_dir, "load")
    summary = run.run_training(_arm_flags(f, start, seed, run_dir))
    results_dir = os.path.join(run_dir, "results")
    parts = {WHOLE: _read_json(os.path.join(results_dir, "final", "results.json"))}
    unselected = os.path.join(results_dir, f"final_{UNSELECTED}", "results.json")
    parts[UNSELECTED] = _read_json(unselected) if os.path.exists(unselected) else None
    return _figures(parts, steps=summary["propagations"], cycles=summary["cycles"],
                    peaks=summary["peaks"], final_tag=summary["final_tag"],
                    discriminator_rounds=_discriminator_rounds(run_dir),
                    wall_time_s=summary["wall_time_s"])


def _fresh_job(f, start, seed, run_dir):
    shutil.rmtree(run_dir, ignore_errors=True)     # a control arm always runs from its start
    job = run.open_job(_arm_flags(f, start, seed, run_dir))
    return job, run.holdout_refs_of(job)


def run_cross_entropy_arm(f, start, seed, seed_dir, num_steps):
    begin = time.monotonic()
    job, holdout_refs = _fresh_job(f, start, seed, os.path.join(seed_dir, "cross_entropy"))
    result = control_arms.continue_cross_entropy(job, num_steps)
    parts = run.evaluate_model(job, holdout_refs, "final", "cross-entropy arm")
    return _figures(parts, steps=num_steps, first_loss=result["first_loss"],
                    loss=result["loss"], wall_time_s=round(time.monotonic() - begin, 1))


def run_adversarial_arms(f, start, seed, seed_dir, num_steps):
    begin = time.monotonic()
    job, holdout_refs = _fresh_job(f, start, seed, os.path.join(seed_dir, "adversarial"))
    hooks, store = run.build_adversarial_hooks(job, holdout_refs)
    result = control_arms.plain_adversarial(job, hooks, num_steps, retrain_every=f.gamma_max)
    wall = round(time.monotonic() - begin, 1)
    arms = {}
    for arm, tag in (("adversarial_last", control_arms.LAST_TAG),
                     ("adversarial_best", control_arms.BEST_TAG)):
        store.restore(tag)
        parts = run.evaluate_model(job, holdout_refs, arm, f"{arm} arm")
        arms[arm] = _figures(parts, steps=num_steps, best_step=result["best_step"],
                             discriminator_rounds=result["discriminator_rounds"],
                             holdout_miou=result["holdout_miou"], wall_time_s=wall)
    return arms


def run_ablation(f, ablation_dir, num_seeds, demo_profile=None):
    """Runs (or resumes) every arm of TrainConfig `f` for seeds f.seed .. f.seed + num_seeds - 1;
    returns {seed: {arm: figures}} and writes the report (see `ablation_report`)."""
    from deeplab_load.training import ablation_report
    if num_seeds < 1:
        raise ValueError(f"--num_seeds must be >= 1, got {num_seeds}")
    ablation_dir = os.path.abspath(ablation_dir)
    os.makedirs(ablation_dir, exist_ok=True)
    start = prepare_start(f, ablation_dir, demo_profile)
    results = {}
    for index in range(num_seeds):
        seed = f.seed + index
        seed_dir = os.path.join(ablation_dir, f"seed_{seed}")
        os.makedirs(seed_dir, exist_ok=True)
        arms = {"baseline": start["baseline"]}

        def cached(names, compute):
            """{name: figures} of finished arms; `compute` runs them otherwise."""
            paths = {name: os.path.join(seed_dir, f"{name}.json") for name in names}
            if not all(os.path.exists(p) for p in paths.values()):
                logging.info("ablation seed %d (%d/%d): %s", seed, index + 1, num_seeds,
                             ", ".join(names))
                for name, figures in compute().items():
                    write_json_atomic(paths[name], figures)
            return {name: _read_json(path) for name, path in paths.items()}

        arms.update(cached(["load"], lambda: {"load": run_load_arm(f, start, seed, seed_dir)}))
        steps = arms["load"]["steps"]
        arms.update(cached(["cross_entropy"], lambda: {
            "cross_entropy": run_cross_entropy_arm(f, start, seed, seed_dir, steps)}))
        arms.update(cached(["adversarial_last", "adversarial_best"],
                           lambda: run_adversarial_arms(f, start, seed, seed_dir, steps)))
        results[seed] = arms
        ablation_report.write_report(results, ablation_dir)
    return results
