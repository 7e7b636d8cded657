"""``model.json``: what a checkpoint folder or an export holds, so commands need no model flags.

Written next to every checkpoint folder a training run makes (``<run>/generator/``,
``<run>/stage1/``) and into every export. ``evaluate``, ``export`` and ``predict`` find it from
``--run_dir`` or ``--checkpoint``; explicit model flags override it.

    {"config": DeepLabConfig fields, "dataset": "voc", "class_names": [...],
     "eval_crop_size": [513, 513], "data": {"dataset_dir": ..., "tfrecord_dir": ...,
     "options": {...}, "eval_split": "val"}}
"""
import dataclasses
import json
import os
from typing import Optional

from deeplab_load.atomic_files import write_json_atomic
from deeplab_load.checkpoints import zoo
from deeplab_load.errors import DamagedFileError, UserError
from deeplab_load.models.deeplab import DeepLabConfig

SPEC_FILE = "model.json"
# Where a run directory keeps the checkpoints the commands read, in order of preference.
RUN_CHECKPOINT_FOLDERS = ("generator", "stage1")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A model's architecture and the data set it was trained for.

    data: how to open the training run's data set again ({"dataset_dir", "tfrecord_dir",
    "options" (extra get_dataset arguments), "eval_split"}); empty for specs not made by a run.
    """
    config: DeepLabConfig
    dataset: Optional[str] = None
    class_names: Optional[tuple] = None
    eval_crop_size: Optional[tuple] = None
    data: dict = dataclasses.field(default_factory=dict)

    def to_dict(self):
        return {"config": dataclasses.asdict(self.config), "dataset": self.dataset,
                "class_names": None if self.class_names is None else list(self.class_names),
                "eval_crop_size": (None if self.eval_crop_size is None
                                   else list(self.eval_crop_size)),
                "data": self.data}

    @classmethod
    def from_dict(cls, payload):
        config = DeepLabConfig(**payload["config"])
        names = payload.get("class_names")
        crop = payload.get("eval_crop_size")
        return cls(config=config, dataset=payload.get("dataset"),
                   class_names=None if names is None else tuple(names),
                   eval_crop_size=None if crop is None else tuple(int(s) for s in crop),
                   data=dict(payload.get("data") or {}))


def write_model_spec(folder, spec):
    """Writes ``folder/model.json`` atomically; returns its path."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, SPEC_FILE)
    return write_json_atomic(path, spec.to_dict(), sort_keys=False)


def read_model_spec(path):
    """The ModelSpec in the file ``path``; a damaged file is a DamagedFileError naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            return ModelSpec.from_dict(json.load(f))
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as err:
        raise DamagedFileError(f"{path} is not a valid model spec ({err}); delete it and pass "
                               f"the model flags instead") from err


def spec_candidates(path):
    """Files that may hold the spec of a checkpoint path, a run dir or an export dir."""
    path = os.path.abspath(os.fspath(path))
    if os.path.basename(path) == SPEC_FILE:
        return [path]
    folders = []
    if os.path.isdir(path):
        folders += [path] + [os.path.join(path, name) for name in RUN_CHECKPOINT_FOLDERS]
    # A prefix <store>/ckpt_000003/ckpt, or a file / prefix inside a checkpoint folder.
    parent = os.path.dirname(path)
    folders += [parent, os.path.dirname(parent)]
    return [os.path.join(folder, SPEC_FILE) for folder in folders]


def find_model_spec(path):
    """(ModelSpec, its file) for a checkpoint / run / export path, or (None, None)."""
    for candidate in spec_candidates(path):
        if os.path.isfile(candidate):
            return read_model_spec(candidate), candidate
    return None, None


def run_checkpoint_folder(run_dir):
    """The checkpoint folder of a training run (``generator/``, else ``stage1/``)."""
    if not os.path.isdir(run_dir):
        raise UserError(f"--run_dir {run_dir} does not exist")
    for name in RUN_CHECKPOINT_FOLDERS:
        folder = os.path.join(run_dir, name)
        if os.path.isfile(os.path.join(folder, "tags.json")):
            return folder
    folders = " or ".join(f"{name}/tags.json" for name in RUN_CHECKPOINT_FOLDERS)
    raise UserError(f"--run_dir {run_dir} holds no checkpoints ({folders}); is it a training "
                    f"run directory?")


def architecture_config(architecture, base=None, num_classes=None):
    """`model_config` of a `ModelArchitecture` (the model flags) over ``base`` (a spec's
    config); ``num_classes`` (a data set's) applies when the architecture gives none."""
    return model_config(base=base, zoo_name=architecture.zoo_name,
                        num_classes=architecture.num_classes or num_classes,
                        model_variant=architecture.model_variant,
                        output_stride=architecture.output_stride,
                        atrous_rates=architecture.atrous_rates,
                        decoder_output_stride=architecture.decoder_output_stride)


def model_config(base=None, num_classes=None, model_variant=None, output_stride=None,
                 atrous_rates=None, decoder_output_stride=None, zoo_name=None):
    """A DeepLabConfig: explicit arguments > ``base`` (a spec's config) > ``zoo_name``'s >
    DeepLab's defaults.

    atrous_rates: a sequence of ints (empty: no atrous branches) or None (keep the base's,
    rescaled when ``output_stride`` changes). decoder_output_stride: 0 for none, 4, or None.
    """
    if base is None:
        if zoo_name:
            base = zoo.get_entry(zoo_name).config
        else:
            base = DeepLabConfig()
    changes = {}
    if model_variant:
        changes["backbone"] = model_variant
    if num_classes:
        changes["num_classes"] = int(num_classes)
    if output_stride and output_stride != base.output_stride:
        changes["output_stride"] = output_stride
        changes["atrous_rates"] = tuple(r * base.output_stride // output_stride
                                        for r in base.atrous_rates)
    if atrous_rates is not None:
        changes["atrous_rates"] = tuple(int(r) for r in atrous_rates)
    if decoder_output_stride is not None:
        changes["decoder_output_stride"] = decoder_output_stride or None
    try:
        return dataclasses.replace(base, **changes)
    except ValueError as err:
        raise UserError(f"model flags: {err}") from err


def config_differences(config, other):
    """Names of the DeepLabConfig fields (bar fine_tune_batch_norm) that differ."""
    return [field.name for field in dataclasses.fields(DeepLabConfig)
            if field.name != "fine_tune_batch_norm"
            and getattr(config, field.name) != getattr(other, field.name)]
