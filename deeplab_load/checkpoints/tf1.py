"""Official TF1 DeepLab checkpoints read by variable name into a model from ``build_deeplab``.

``match_checkpoint`` compares the model's table {TF1 name: variable} with a checkpoint's names and
shapes and reports every difference at once; ``load_checkpoint`` then assigns the tensors one at a
time (``tf.train.load_checkpoint``).
"""
import dataclasses
import glob
import os
import re

import tensorflow as tf
from absl import logging

from deeplab_load.errors import UserError
from deeplab_load.models.deeplab import BACKBONE_SCOPES, LOGITS_SCOPE, checkpoint_variables

# Checkpoint contents that are not model weights.
_IGNORED = re.compile(
    r"(^global_step$|^beta[12]_power$|^learning_rate$|ExponentialMovingAverage"
    r"|/(Momentum|Adam|Adam_\d+|AdamW|AdamW_\d+|RMSProp|RMSProp_\d+|Adagrad|Ftrl|Ftrl_\d+"
    r"|Adadelta|Adadelta_\d+)$)")


def is_ignored_checkpoint_name(name):
    """True for global_step, optimizer slots and ExponentialMovingAverage shadows."""
    return bool(_IGNORED.search(name))


class CheckpointMismatchError(UserError, ValueError):
    """A checkpoint does not fit a model. Lists every offending TF1 name.

    Attributes: missing (names), unexpected (names), mismatched ({name: (ckpt_shape, model_shape)}).
    """

    def __init__(self, path, missing, unexpected, mismatched):
        self.path, self.missing, self.unexpected, self.mismatched = (
            path, sorted(missing), sorted(unexpected), dict(sorted(mismatched.items())))
        lines = [f"checkpoint {path} does not match the model ({len(self.missing)} missing, "
                 f"{len(self.unexpected)} unexpected, {len(self.mismatched)} mis-shaped "
                 f"variables):"]
        lines += [f"  missing in checkpoint: {name}" for name in self.missing]
        lines += [f"  unexpected in checkpoint: {name}" for name in self.unexpected]
        lines += [f"  shape mismatch: {name}: checkpoint {list(ckpt)} vs model {list(model)}"
                  for name, (ckpt, model) in self.mismatched.items()]
        super().__init__("\n".join(lines))


@dataclasses.dataclass
class LoadReport:
    """What load_checkpoint did: prefix read, tensors assigned, model weights left untouched
    (skipped logits), and checkpoint entries ignored (step, slots, EMA, non-model names)."""
    path: str
    loaded: int
    skipped: list
    ignored: int


def resolve_checkpoint_prefix(path):
    """A checkpoint prefix from a prefix or a directory.

    A directory uses its ``checkpoint`` state file if that points to an existing checkpoint,
    else the single ``*.index`` file found in it (searched recursively).
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        latest = tf.train.latest_checkpoint(path)
        if latest and os.path.exists(latest + ".index"):
            return latest
        indexes = sorted(glob.glob(os.path.join(path, "**", "*.index"), recursive=True))
        if len(indexes) != 1:
            found = ", ".join(indexes) if indexes else "none"
            raise FileNotFoundError(f"{path}: expected exactly one checkpoint (*.index), "
                                    f"found {found}")
        return indexes[0][:-len(".index")]
    if os.path.exists(path + ".index"):
        return path
    if path.endswith(".index") and os.path.exists(path):
        return path[:-len(".index")]
    raise FileNotFoundError(f"no TF checkpoint at {path} (neither a directory nor a prefix with "
                            f"{path}.index)")


def _logits_differ_in_classes_only(name, ckpt_shape, model_shape):
    return (name.startswith(LOGITS_SCOPE + "/") and len(ckpt_shape) == len(model_shape)
            and list(ckpt_shape[:-1]) == list(model_shape[:-1]))


def match_checkpoint(table, shapes, path, skip_mismatched_logits=True, backbone_scope=None):
    """Compares {TF1 name: variable} with {TF1 name: checkpoint shape}.

    Returns (names to load, skipped model names, number of ignored checkpoint entries); raises
    CheckpointMismatchError naming every missing / unexpected / mis-shaped variable.
    ``backbone_scope``: only the model's variables under it are required and unexpected
    checkpoint names are ignored (ImageNet backbone checkpoints).
    """
    weights = {name: shape for name, shape in shapes.items()
               if not is_ignored_checkpoint_name(name)}
    ignored = len(shapes) - len(weights)
    skipped = []
    if backbone_scope is not None:
        skipped = sorted(name for name in table if not name.startswith(backbone_scope + "/"))
        table = {name: v for name, v in table.items() if name.startswith(backbone_scope + "/")}
        ignored += len(set(weights) - set(table))
        weights = {name: shape for name, shape in weights.items() if name in table}
    mismatched = {name: (tuple(weights[name]), tuple(variable.shape))
                  for name, variable in table.items()
                  if name in weights and tuple(weights[name]) != tuple(variable.shape)}
    logits_mismatch = {name for name, (ckpt, model) in mismatched.items()
                       if _logits_differ_in_classes_only(name, ckpt, model)}
    if skip_mismatched_logits and logits_mismatch:
        logits_names = {name for name in table if name.startswith(LOGITS_SCOPE + "/")}
        for name in sorted(logits_names):
            mismatched.pop(name, None)
        skipped += sorted(logits_names)
        logging.warning("checkpoint %s has %s classes, the model %s: %s not loaded", path,
                     weights[sorted(logits_mismatch)[0]][-1],
                     table[sorted(logits_mismatch)[0]].shape[-1], ", ".join(sorted(logits_names)))
        table = {name: v for name, v in table.items() if name not in logits_names}
        ignored += len(logits_names & set(weights))
    missing = set(table) - set(weights)
    unexpected = set(weights) - set(table) - set(skipped)
    if missing or unexpected or mismatched:
        raise CheckpointMismatchError(path, missing, unexpected, mismatched)
    return sorted(table), skipped, ignored


def load_checkpoint(model, path, skip_mismatched_logits=True, backbone_only=False):
    """Assigns a TF1 checkpoint to a model from build_deeplab, by TF1 variable name.

    Ignores global_step, optimizer slots and ExponentialMovingAverage shadows. With
    ``skip_mismatched_logits`` a ``logits/semantic`` whose class count differs is left untouched
    (and logged). Anything else missing, unexpected or mis-shaped raises ONE
    CheckpointMismatchError before any weight is changed. Tensors are read and assigned one at
    a time, so no second copy of the weights outlives the call. Returns a LoadReport.
    """
    prefix = resolve_checkpoint_prefix(path)
    table = checkpoint_variables(model)
    reader = tf.train.load_checkpoint(prefix)
    try:
        backbone_scope = (BACKBONE_SCOPES[model.deeplab_config.backbone] if backbone_only
                          else None)
        names, skipped, ignored = match_checkpoint(
            table, reader.get_variable_to_shape_map(), prefix, skip_mismatched_logits,
            backbone_scope)
        for name in names:
            variable = table[name]
            value = reader.get_tensor(name)
            variable.assign(value.astype(variable.dtype, copy=False))
            del value
    finally:
        del reader
    return LoadReport(prefix, len(names), skipped, ignored)
