"""Building a model from what a command is pointed at: a run dir or a checkpoint, the model spec
found beside it (``model.json``), and explicit model settings that override the spec."""
import dataclasses
from typing import Optional

import numpy as np
from absl import logging

from deeplab_load.checkpoints.model_source import check_eval_crop_size
from deeplab_load.checkpoints.model_spec import (architecture_config, config_differences,
                                                 find_model_spec, run_checkpoint_folder)
from deeplab_load.checkpoints.restore import (CheckpointNotFoundError, restore_checkpoint,
                                              zoo_mismatch_fix)
from deeplab_load.data import get_dataset
from deeplab_load.errors import DamagedFileError, FlagError, UserError, first_line
from deeplab_load.finite import check_model_is_finite
from deeplab_load.models.deeplab import build_deeplab


def checkpoint_path(source):
    """--checkpoint, else the run dir's checkpoint folder; FlagError without either."""
    if source.checkpoint:
        return source.checkpoint
    if source.run_dir:
        return run_checkpoint_folder(source.run_dir)
    raise FlagError("--run_dir or --checkpoint is required (a training run directory, or "
                    "a checkpoint: ours, a .weights.h5 file or an official zoo checkpoint)")


def find_spec(source):
    """(ModelSpec, path) beside the run dir or checkpoint of ``source``, or (None, None)."""
    for path in (source.run_dir, source.checkpoint):
        if path:
            spec, spec_path = find_model_spec(path)
            if spec is not None:
                return spec, spec_path
    return None, None


@dataclasses.dataclass
class LoadedModel:
    model: object
    config: object
    spec: object
    spec_path: Optional[str]
    description: str


def resolve_config(source, spec=None, num_classes=None):
    """The DeepLabConfig: explicit settings > the spec's > ``num_classes`` (a data set's) and
    --zoo_name's > DeepLab's defaults."""
    if spec is not None:
        return architecture_config(source, base=spec.config)
    return architecture_config(source, num_classes=num_classes)


def load_model(source, num_classes=None, log=logging.info):
    """Builds the model of ``source`` and restores its weights; returns a LoadedModel.

    num_classes: the data set's class count, used when neither the flags nor a spec give one.
    A checkpoint that does not fit is a UserError naming the fields that differ from the spec
    (when there is one) or suggesting --run_dir; NaN / Inf weights or logits (on seeded pixels)
    are a NonFiniteError naming the checkpoint.
    """
    checkpoint = checkpoint_path(source)
    spec, spec_path = find_spec(source)
    config = resolve_config(source, spec, num_classes)
    model = build_deeplab(config)
    try:
        description = restore_checkpoint(model, checkpoint, source.checkpoint_tag)
    except (CheckpointNotFoundError, DamagedFileError):
        raise
    except UserError as err:
        if spec is None and source.zoo_name:
            raise UserError(f"{first_line(err)}\n{zoo_mismatch_fix(source.zoo_name)}") from err
        if spec is None:
            raise UserError(f"{first_line(err)}\nno model.json beside {checkpoint}: pass "
                            f"--run_dir (or a checkpoint folder of a run), --zoo_name for an "
                            f"official checkpoint, or the checkpoint's model flags") from err
        differing = config_differences(config, spec.config)
        if not differing:
            raise
        fields = ", ".join(f"{name} (flags {getattr(config, name)!r}, model.json "
                           f"{getattr(spec.config, name)!r})" for name in differing)
        raise UserError(f"the model flags differ from {spec_path} in {fields} and the checkpoint "
                        f"does not fit them; drop those flags to use --run_dir's model") from err
    check_model_is_finite(model, checkpoint, _probe_pixels())
    log("model %s, weights from %s%s", config, description,
        f" (spec {spec_path})" if spec_path else "")
    return LoadedModel(model, config, spec, spec_path, description)


def _probe_pixels(size=65, seed=0):
    """float32 [1, size, size, 3] seeded pixels 0..255: a finite model gives finite logits."""
    return np.random.default_rng(seed).uniform(0, 255, (1, size, size, 3)).astype(np.float32)


def open_dataset(spec=None, dataset=None, dataset_dir=None, tfrecord_dir=None):
    """The data set named by the flags, else the one the spec's training run used."""
    data = (spec.data if spec is not None else {}) or {}
    same = spec is not None and dataset in (None, spec.dataset)
    name = dataset or (spec.dataset if spec is not None else None) or "demo"
    if same:
        return get_dataset(name, dataset_dir or data.get("dataset_dir"),
                           tfrecord_dir=tfrecord_dir or data.get("tfrecord_dir"),
                           **(data.get("options") or {}))
    return get_dataset(name, dataset_dir, tfrecord_dir=tfrecord_dir)


def eval_crop_size(flag_value, spec=None, info=None):
    """Padding size: ``flag_value`` ((H, W), or () for none) > the spec's > the data set's."""
    if flag_value is not None:
        check_eval_crop_size(flag_value)
        return tuple(flag_value) or None
    if spec is not None and spec.eval_crop_size is not None:
        return tuple(spec.eval_crop_size)
    return tuple(info.eval_crop_size) if info is not None else None
