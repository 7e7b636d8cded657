"""One stage-1 model shared by several LoAd runs (an lr sweep, ablation arms).

    out_dir/stage1/      the shared start's run dir: stage 1 (or --initial_checkpoint), hold-out
                         ids, baseline results
    out_dir/stage1.json  {"checkpoint", "holdout_ids", "baseline"}: written when done (resume
                         marker)

Each run then starts from `start_flags`: the shared weights (the stage-1 store as
--initial_checkpoint, --stage1=off), the shared hold-out ids copied into its run dir.
"""
import json
import os
import shutil

from deeplab_load.atomic_files import write_json_atomic
from deeplab_load.training import run
from deeplab_load.training.reporting import UNSELECTED, WHOLE

MARKER = "stage1.json"


def read_json(path):
    with open(path, encoding="utf-8") as stream:
        return json.load(stream)


def miou_figures(parts):
    """{part: mIoU or None} of evaluation results (`reporting.evaluate_or_load`)."""
    return {part: None if parts.get(part) is None else parts[part]["miou"]
            for part in (WHOLE, UNSELECTED)}


def prepare_start(config, out_dir, demo_profile=None, evaluate_baseline=None):
    """Stage 1 of TrainConfig `config` (unless --initial_checkpoint fits), the hold-out ids and the
    baseline evaluation, once; returns the marker's content.

    evaluate_baseline(job, holdout_refs) -> JSON-able figures of the start model; default: its
    whole-val and unselected-val mIoU (`miou_figures`)."""
    marker = os.path.join(out_dir, MARKER)
    if os.path.exists(marker):
        return read_json(marker)
    job = run.open_job(config.with_flags(run_dir=os.path.join(out_dir, "stage1"), export=False),
                       demo_profile)
    run.run_stage1_if_needed(job)
    stage1_store = os.path.join(job.local_dir, "stage1")
    checkpoint = stage1_store if os.path.isdir(stage1_store) else config.model.initial_checkpoint
    if not checkpoint:
        raise ValueError("runs from a shared start need trained weights: stage 1 was skipped "
                         "(--stage1=off) and there is no --initial_checkpoint")
    holdout_refs = run.holdout_refs_of(job)
    if evaluate_baseline is None:
        baseline = miou_figures(run.evaluate_model(job, holdout_refs, "baseline",
                                                   "stage-1 baseline"))
    else:
        baseline = evaluate_baseline(job, holdout_refs)
    start = {"checkpoint": checkpoint,
             "holdout_ids": os.path.join(job.local_dir, "holdout_ids.txt"),
             "baseline": baseline}
    write_json_atomic(marker, start)
    return start


def start_flags(config, start, run_dir, **changes):
    """TrainConfig of a run in `run_dir` from the shared start (its hold-out ids copied in)."""
    os.makedirs(run_dir, exist_ok=True)
    holdout = os.path.join(run_dir, "holdout_ids.txt")
    if not os.path.exists(holdout):
        shutil.copyfile(start["holdout_ids"], holdout)
    return config.with_flags(run_dir=run_dir, initial_checkpoint=start["checkpoint"], stage1="off",
                     export=False, resume=True, **changes)


def read_events(run_dir):
    """A run's events.jsonl, one event per seq (a resumed run may repeat lines)."""
    seen = {}
    with open(os.path.join(run_dir, "events.jsonl"), encoding="utf-8") as stream:
        for line in stream:
            if line.strip():
                event = json.loads(line)
                seen.setdefault(event["seq"], event)
    return [seen[seq] for seq in sorted(seen)]
