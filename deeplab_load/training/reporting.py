"""Honest figures of a run: mIoU on the whole evaluation split (the paper's figure) and on the
split minus the hold-out images LoAd selected its model on ("unselected val").

    results/<name>/results.{json,md}                   the whole split
    results/<name>_unselected_val/results.{json,md}    the split minus the hold-out images
    results/comparison.md                              both, baseline vs LoAd (Table 1 style)
"""
import os

import numpy as np
from absl import logging

from deeplab_load import comparison, metrics
from deeplab_load import evaluation
from deeplab_load.data import pipeline
from deeplab_load.training.strategy import on_every_worker

WHOLE, UNSELECTED = "val", "unselected_val"
TITLES = {
    WHOLE: "Whole {split} split (the paper's figure; includes the {holdout} hold-out images the "
           "run selected its model on)",
    UNSELECTED: "Unselected {split}: the {split} split minus the {holdout} hold-out images "
                "(no model selection on them)",
}


def _result_dirs(results_dir, name):
    return {WHOLE: os.path.join(results_dir, name),
            UNSELECTED: os.path.join(results_dir, f"{name}_{UNSELECTED}")}


def evaluate_parts(model, ds, split, holdout_refs, batch_size, eval_crop_size, label,
                   skip_bad_examples=False, bad_example_log=None, strategy=None):
    """{"val": results of the whole split, "unselected_val": results without the hold-out}.

    Each image is evaluated once: the whole split's confusion matrix is the sum of the two
    parts'. "unselected_val" is None when the hold-out is the whole split. With
    `skip_bad_examples`, examples that do not load are left out of both (`pipeline.usable_refs`,
    logged to `bad_example_log`) and both results say how many under "skipped_examples".
    `strategy`: the run's, whose replicas share the images (`evaluation.evaluate`).
    """
    holdout_ids = {ref.id for ref in holdout_refs}
    usable = pipeline.usable_refs(ds, split, skip_bad_examples, bad_example_log)
    extra = {}
    if skip_bad_examples:
        extra["skipped_examples"] = len(ds.examples(split)) - len(usable)
    usable_ids = {ref.id for ref in usable}
    holdout_refs = [ref for ref in holdout_refs if ref.id in usable_ids]
    unselected_refs = [ref for ref in usable if ref.id not in holdout_ids]
    holdout = evaluation.evaluate(model, ds, list(holdout_refs), batch_size, eval_crop_size,
                                  strategy=strategy)
    parts = {UNSELECTED: None}
    matrix = holdout["confusion_matrix"]
    images = holdout["num_images"]
    if unselected_refs:
        unselected = evaluation.evaluate(model, ds, unselected_refs, batch_size, eval_crop_size,
                                         strategy=strategy)
        parts[UNSELECTED] = dict(unselected, split=f"{split} minus hold-out", checkpoint=label,
                                 holdout_images=len(holdout_ids), **extra)
        matrix = np.add(matrix, unselected["confusion_matrix"])
        images += unselected["num_images"]
    parts[WHOLE] = metrics.results_dict(
        matrix, ds.info.class_names, dataset=ds.info.name, split=split, num_images=images,
        eval_crop_size=holdout.get("eval_crop_size"), checkpoint=label,
        holdout_images=len(holdout_ids), **extra)
    return parts


def evaluate_or_load(model, ds, split, holdout_refs, batch_size, eval_crop_size, results_dir,
                     name, label, skip_bad_examples=False, bad_example_log=None,
                     strategy=None):
    """`evaluate_parts`, written under results_dir (see module doc), or read back if there.

    Under MultiWorkerMirroredStrategy the evaluation is collective: the results are read back
    only when every worker has them (a worker that crashed between the workers' writes would
    otherwise evaluate alone and wait for the others forever)."""
    dirs = _result_dirs(results_dir, name)
    paths = {part: os.path.join(d, "results.json") for part, d in dirs.items()}
    if on_every_worker(strategy, os.path.exists(paths[WHOLE])):
        return {part: metrics.load_results(path) if os.path.exists(path) else None
                for part, path in paths.items()}
    parts = evaluate_parts(model, ds, split, holdout_refs, batch_size, eval_crop_size, label,
                           skip_bad_examples, bad_example_log, strategy)
    for part in (UNSELECTED, WHOLE):          # the whole split last: it marks "done"
        if parts[part] is not None:
            evaluation.write_results(parts[part], dirs[part])
            logging.info("%s on %s/%s:\n%s", label, ds.info.name, parts[part]["split"],
                         metrics.format_text_table(parts[part]))
    return parts


def write_comparison(baseline, final, path, names=("DeepLabv3+", "DeepLabv3+ & LoAd")):
    """Markdown: per-class IoU baseline vs LoAd on the whole split and on unselected val."""
    sections = []
    for part in (WHOLE, UNSELECTED):
        if baseline.get(part) is None or final.get(part) is None:
            continue
        title = TITLES[part].format(split=baseline[WHOLE]["split"],
                                    holdout=baseline[WHOLE].get("holdout_images", "?"))
        rows = comparison.compare(baseline[part], final[part], "baseline", "LoAd")
        sections.append(f"## {title}\n\n" + comparison.format_markdown(rows, names))
    with open(path, "w", encoding="utf-8") as out:
        out.write("\n".join(sections))
    return path
