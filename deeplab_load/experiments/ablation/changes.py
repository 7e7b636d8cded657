"""The ablation's picture of what LoAd changed: the report-split images where the first seed's
LoAd arm differs most from the stage-1 baseline (image, ground truth, baseline, LoAd, gains and
losses), written once as `changes_<arm>.png` beside `ablation.md`."""
import os

from absl import logging

from deeplab_load import visualize
from deeplab_load.checkpoints.model_loading import load_model
from deeplab_load.checkpoints.model_source import ModelSource
from deeplab_load.data import pipeline
from deeplab_load.data.common import as_size, read_id_list
from deeplab_load.training import pictures, run


def picture_path(ablation_dir, arm):
    return os.path.join(ablation_dir, f"changes_{arm}.png")


def write_arm_changes(config, ablation_dir, start, seed, arm, report_refs):
    """Writes `changes_<arm>.png` for `seed` unless it exists; returns its path.

    config: the TrainConfig the arms share; start: the shared start (`shared_start.prepare_start`);
    report_refs(ds, config, holdout_refs) -> (split, refs or None, label), the runner's
    `report_target`."""
    path = picture_path(ablation_dir, arm)
    if os.path.exists(path):
        return path
    run_dir = os.path.join(ablation_dir, f"seed_{seed}", arm)
    final = load_model(ModelSource(run_dir=run_dir, checkpoint_tag="final")).model
    baseline = load_model(ModelSource(run_dir=run_dir, checkpoint=start["checkpoint"])).model
    ds = run.open_dataset(config)
    holdout_refs = pipeline.select_refs(ds, config.data.eval_split,
                                        read_id_list(start["holdout_ids"]))
    split, refs, label = report_refs(ds, config, holdout_refs)
    examples = pictures.most_changed_examples(
        baseline, final, ds, refs if refs is not None else split, config.run.eval_batch_size,
        as_size(config.data.eval_crop_size or ds.info.eval_crop_size))
    pictures.write_changes_png(path, examples,
                               visualize.palette_for(ds.info, ds.info.num_classes))
    logging.info("wrote %s: the %d %s images the %s arm (seed %d) changed most against the "
                 "baseline", path, len(examples), label, arm, seed)
    return path
