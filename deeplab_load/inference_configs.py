"""What ``evaluate``, ``export`` and ``predict`` are told: `EvaluateConfig`, `ExportConfig`,
`PredictConfig`. Each field is a flag of its command (`deeplab_load.config_fields`); the model
flags are `ModelSource`'s and the multi-scale flags `InferenceOptions`'. No TensorFlow here, so
the command modules define their flags from these classes at import and ``--help`` stays fast.
"""
import dataclasses
from typing import Optional

from deeplab_load.checkpoints.model_source import ModelSource, check_eval_crop_size
from deeplab_load.config_fields import group, option, size
from deeplab_load.dataset_names import DATASET_NAMES_TEXT
from deeplab_load.errors import FlagError

# tf.distribute strategies (`training.strategy.make_strategy`'s kinds).
STRATEGY_KINDS = ("auto", "default", "mirrored", "multi_worker")
_STRATEGY_HELP = ("tf.distribute strategy whose replicas share the images (auto: "
                  "MultiWorkerMirroredStrategy when TF_CONFIG names several tasks, "
                  "MirroredStrategy with several GPUs, else one device); the numbers equal one "
                  "device's.")

# predict's output formats (see `deeplab_load.prediction`).
FORMATS = ("raw", "color", "overlay", "voc_submission", "cityscapes_submission")


def parse_scales(text):
    """``"0.5,0.75,1.0"`` (or a list of strings) -> tuple of floats; ValueError names the value."""
    items = text.split(",") if isinstance(text, str) else list(text)
    try:
        scales = tuple(float(item) for item in items if str(item).strip())
    except ValueError as err:
        raise ValueError(f"--eval_scales must be comma-separated numbers, got {text!r}") from err
    if not scales or min(scales) <= 0:
        raise ValueError(f"--eval_scales must be positive numbers, got {text!r}")
    return scales


def _scales_flag(name, values):
    del name  # parse_scales names --eval_scales
    try:
        return parse_scales(values)
    except ValueError as err:
        raise FlagError(str(err)) from err


@dataclasses.dataclass(frozen=True)
class InferenceOptions:
    """Multi-scale inference and the compute dtype (evaluate, export and predict)."""
    eval_scales: tuple = option(
        (1.0,), "Multi-scale inference as research/deeplab: image scales whose softmax "
        "probabilities are averaged, e.g. 0.5,0.75,1.0,1.25,1.5,1.75.", parse=_scales_flag)
    add_flipped_images: bool = option(
        False, "Also average the left-right flipped image's probabilities (research/deeplab's "
        "add_flipped_images).")
    dtype: str = option(
        "float32", "Compute dtype of the model (weights stay float32; logits, resizes and "
        "softmax are float32). bfloat16 is faster on CPUs with bf16 units and agrees with "
        "float32 on >= 99.5% of the labels of a trained model.", ("float32", "bfloat16"))


@dataclasses.dataclass(frozen=True)
class EvaluateConfig(InferenceOptions):
    """What ``python -m deeplab_load.evaluate`` does.

    dataset / dataset_dir / tfrecord_dir / split: None -> the model spec's (the training run's
    data set and eval split), else demo / val. eval_crop_size: (H, W), () for no padding, None
    for the spec's or the data set's.
    """
    model: ModelSource = group(ModelSource)
    dataset: Optional[str] = option(
        None, f"{DATASET_NAMES_TEXT} (default: the run's model.json, else "
        "demo).")
    dataset_dir: Optional[str] = option(
        None, "Data set root: the folder holding VOCdevkit, the Cityscapes root, the folder "
        "holding iccv09Data; not needed for demo or with --run_dir.")
    tfrecord_dir: Optional[str] = option(
        None, "Read the split from TFRecords (ours, or research/deeplab's build_*_data.py "
        "output) instead of the image files.")
    split: Optional[str] = option(
        None, "Split to evaluate (default: the run's eval split, else val).")
    eval_crop_size: Optional[tuple] = option(
        None, "Pad every image to H,W (the original's eval_crop_size); 'none' disables padding "
        "(default: model.json's, else the data set's: 513,513 VOC, 1025,2049 Cityscapes).",
        parse=size)
    batch_size: int = option(1, "Images per batch (does not change the numbers).",
                             flag="eval_batch_size", lower_bound=1)
    max_images: Optional[int] = option(None, "Evaluate only the first N images of the split.",
                                       lower_bound=1)
    skip_bad_examples: bool = option(False, "Skip (and count) corrupt examples instead of "
                                     "stopping at the first.")
    output_dir: Optional[str] = option(None, "Where results.json and results.md go (default: "
                                       "only print the table).")
    strategy: str = option("auto", _STRATEGY_HELP, STRATEGY_KINDS)

    def __post_init__(self):
        check_eval_crop_size(self.eval_crop_size)


@dataclasses.dataclass(frozen=True)
class ExportConfig(InferenceOptions):
    """What ``python -m deeplab_load.export`` does. dataset: names the classes and the eval crop
    size when the model has no spec. eval_crop_size: (H, W), () for none, None for the spec's /
    the data set's."""
    model: ModelSource = group(ModelSource)
    export_dir: Optional[str] = option(None, "Where the SavedModel goes (required).")
    dataset: Optional[str] = option(
        None, f"{DATASET_NAMES_TEXT}: the class names and eval crop size when "
        "there is no model.json (no data is read).")
    eval_crop_size: Optional[tuple] = option(
        None, "Pad every image to H,W before the model (the original export's crop_size); "
        "'none': no padding (default: model.json's, else the --dataset's, else none).",
        parse=size)
    with_probabilities: bool = option(False, "Also return softmax probabilities.")
    overwrite: bool = option(False, "Replace an existing --export_dir (atomically).")

    def __post_init__(self):
        check_eval_crop_size(self.eval_crop_size)


@dataclasses.dataclass(frozen=True)
class PredictConfig(InferenceOptions):
    """What ``python -m deeplab_load.predict`` does.

    input_dir: predict the images of a folder instead of a split; the data set (flag or the
    model spec's) then names the classes, palette and eval crop size. eval_crop_size: (H, W), ()
    for none, None for the spec's / the data set's (none for a folder without a data set).
    """
    model: ModelSource = group(ModelSource)
    output_dir: Optional[str] = option(None, "Where the PNGs go (required).")
    fmt: str = option("color", "raw, color, overlay, voc_submission or cityscapes_submission "
                      "(see the module doc).", FORMATS, flag="format")
    dataset: Optional[str] = option(
        None, f"{DATASET_NAMES_TEXT} (default: the run's model.json, else "
        "demo); with --input_dir it names the classes, palette and eval crop size only.")
    dataset_dir: Optional[str] = option(
        None, "Data set root (as for train/evaluate); not needed for demo, with --run_dir, or "
        "with --input_dir.")
    split: Optional[str] = option(
        None, "Split whose images are predicted (default: the run's eval split, else val; test "
        "for submissions).")
    input_dir: Optional[str] = option(
        None, "Predict the images (.jpg, .png, .bmp) in this folder instead of a data-set "
        "split.")
    eval_crop_size: Optional[tuple] = option(
        None, "Pad every image to H,W before the model; 'none' disables padding (default: "
        "model.json's, else the data set's; none for --input_dir without a data set).",
        parse=size)
    skip_bad_examples: bool = option(False, "Skip (and count) images that do not load instead "
                                     "of stopping at the first.")
    strategy: str = option("auto", _STRATEGY_HELP + " The chief writes the PNGs.",
                           STRATEGY_KINDS)

    def __post_init__(self):
        check_eval_crop_size(self.eval_crop_size)
