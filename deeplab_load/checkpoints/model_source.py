"""What a command loads a model from (the model flags), without TensorFlow: the architecture
settings (`ModelArchitecture`, shared with training's `ModelConfig`) and `ModelSource`, the
weights' location on top. `model_loading` builds and restores the model."""
import dataclasses
from typing import Optional

from deeplab_load.config_fields import option
from deeplab_load.errors import FlagError


@dataclasses.dataclass(frozen=True)
class ModelArchitecture:
    """The architecture settings every command takes (the model flags); None keeps the value of
    the spec (model.json), else of --zoo_name's entry, else DeepLab's default.

    atrous_rates: ints, () for no atrous branches. decoder_output_stride: 4, 0 for no decoder.
    """
    zoo_name: Optional[str] = option(
        None, "Official zoo entry whose architecture applies when there is no model.json "
        "(e.g. xception65_coco_voc_trainaug).")
    model_variant: Optional[str] = option(
        None, "Backbone (default: model.json's, else --zoo_name's, else xception_65).",
        ("xception_65", "mobilenet_v2"))
    num_classes: Optional[int] = option(
        None, "Classes (default: model.json's, else the data set's).",
        valid=(lambda v: v is None or v >= 1, ">= 1"))
    output_stride: Optional[int] = option(
        None, "Output stride 8/16/32 (default: model.json's, else 16; atrous rates rescaled).",
        valid=(lambda v: v is None or v in (8, 16, 32), "8, 16 or 32"))
    atrous_rates: Optional[tuple] = option(
        None, "ASPP atrous rates; 'none' for no atrous branches (default: model.json's, else "
        "--zoo_name's, else 6,12,18 scaled to the output stride).",
        valid=(lambda v: v is None or all(r >= 1 for r in v), "positive integers"))
    decoder_output_stride: Optional[int] = option(
        None, "4 for the decoder, 0 for none (default: model.json's, else --zoo_name's, else 4).",
        valid=(lambda v: v is None or v in (0, 4), "0 or 4"))


@dataclasses.dataclass(frozen=True)
class ModelSource(ModelArchitecture):
    """Where the weights come from, and explicit architecture settings (`ModelArchitecture`;
    None: from the spec)."""
    run_dir: Optional[str] = option(
        None, "Training run directory whose model the command uses: its checkpoint (tag "
        "'final' first) and model.json (architecture, data set, eval crop size), so no model "
        "flags are needed.")
    checkpoint: Optional[str] = option(
        None, "Instead of / inside --run_dir: a checkpoint of ours (a run's checkpoint folder, a "
        "tf.train prefix, a .weights.h5 file) or an official TF1 zoo checkpoint (prefix or "
        "folder).")
    checkpoint_tag: Optional[str] = option(
        None, "Snapshot of a checkpoint folder (final, g_best, g_s, g_end, stage1; default: the "
        "first present).")


def check_eval_crop_size(flag_value):
    """FlagError unless ``flag_value`` is None, () (no padding) or (H, W) >= 1."""
    if flag_value and (len(flag_value) != 2 or min(flag_value) < 1):
        raise FlagError(f"--eval_crop_size={','.join(map(str, flag_value))} must be H,W "
                        f"(positive integers) or none")
