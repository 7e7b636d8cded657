"""Official TF1 DeepLab checkpoints read by variable name into a model from ``build_deeplab``.

``match_checkpoint`` compares the model's table {TF1 name: variable} with a checkpoint's names and
shapes and reports every difference at once; ``load_checkpoint`` then assigns the tensors one at a
time (``tf.train.load_checkpoint``).
"""
import dataclasses
import glob
import os
import re

import numpy as np
import tensorflow as tf
from absl import logging

from deeplab_load.errors import DamagedFileError, UserError, first_line
from deeplab_load.models.deeplab import BACKBONE_SCOPES, LOGITS_SCOPE, checkpoint_variables

# Checkpoint contents that are not model weights.
_IGNORED = re.compile(
    r"(^global_step$|^beta[12]_power$|^learning_rate$|ExponentialMovingAverage"
    r"|/(Momentum|Adam|Adam_\d+|AdamW|AdamW_\d+|RMSProp|RMSProp_\d+|Adagrad|Ftrl|Ftrl_\d+"
    r"|Adadelta|Adadelta_\d+)$)")


def is_ignored_checkpoint_name(name):
    """True for global_step, optimizer slots and ExponentialMovingAverage shadows."""
    return bool(_IGNORED.search(name))


SHOWN_NAMES = 3   # names per kind of mismatch in the one-line summary
REFETCH_HINT = "`python -m deeplab_load_tools.download_checkpoint <zoo_name> --force`"
MISMATCH_FIX = ("pass the architecture it was trained with: --zoo_name for an official checkpoint, "
                "else --model_variant, --output_stride, --atrous_rates, --decoder_output_stride")


def _first_names(names, describe=str):
    shown = ", ".join(describe(name) for name in names[:SHOWN_NAMES])
    return shown + (f", ... ({len(names) - SHOWN_NAMES} more)" if len(names) > SHOWN_NAMES else "")


class CheckpointMismatchError(UserError, ValueError):
    """A checkpoint does not fit a model.

    The message is two lines: the checkpoint, the count of each kind of mismatch and its first
    names (mis-shaped ones with both shapes); then ``fix``. ``details()`` lists every name.
    Attributes: missing (names), unexpected (names), mismatched ({name: (ckpt_shape, model_shape)}),
    summary (the first line), fix.
    """

    def __init__(self, path, missing, unexpected, mismatched, fix=MISMATCH_FIX):
        self.path, self.missing, self.unexpected, self.mismatched = (
            path, sorted(missing), sorted(unexpected), dict(sorted(mismatched.items())))
        self.fix = fix
        shapes = lambda name: (f"{name}: checkpoint {list(self.mismatched[name][0])} vs model "
                               f"{list(self.mismatched[name][1])}")
        parts = [f"{len(names)} {kind} ({_first_names(names, describe)})"
                 for kind, names, describe in (("mis-shaped", list(self.mismatched), shapes),
                                               ("missing in the checkpoint", self.missing, str),
                                               ("unexpected in it", self.unexpected, str))
                 if names]
        self.summary = f"checkpoint {path} does not fit the model: {'; '.join(parts)}"
        super().__init__(f"{self.summary}\n{fix}")

    def with_fix(self, fix):
        """The same error whose second line is ``fix``."""
        return CheckpointMismatchError(self.path, self.missing, self.unexpected, self.mismatched,
                                       fix)

    def details(self):
        """Every offending name, one per line."""
        lines = [f"missing in checkpoint: {name}" for name in self.missing]
        lines += [f"unexpected in checkpoint: {name}" for name in self.unexpected]
        lines += [f"shape mismatch: {name}: checkpoint {list(ckpt)} vs model {list(model)}"
                  for name, (ckpt, model) in self.mismatched.items()]
        return "\n".join(lines)


def data_files(prefix):
    """The ``.data-NNNNN-of-NNNNN`` shard files of a checkpoint prefix that exist."""
    return sorted(glob.glob(glob.escape(os.fspath(prefix)) + ".data-?????-of-?????"))


class DamagedCheckpointError(DamagedFileError):
    """A checkpoint file cannot be read as its index says. Attributes: file (the damaged file
    or shard pattern), problem (what is wrong, without the fix)."""

    def __init__(self, file, problem, fix=f"use an intact copy (official checkpoints: "
                                          f"{REFETCH_HINT})"):
        self.file, self.problem = file, problem
        super().__init__(f"checkpoint file {file} is damaged/truncated ({problem}); {fix}")


def _damaged(prefix, problem):
    files = data_files(prefix)
    return DamagedCheckpointError(files[0] if len(files) == 1 else f"{prefix}.data-*", problem)


def checkpoint_reader(prefix):
    """tf.train.load_checkpoint(prefix); DamagedCheckpointError for an unreadable index."""
    try:
        return tf.train.load_checkpoint(prefix)
    except (tf.errors.OpError, ValueError) as err:
        raise DamagedCheckpointError(f"{prefix}.index", first_line(err)) from err


def check_data_files(prefix, reader):
    """DamagedFileError naming the .data file when shards are missing or shorter than the
    tensors the index lists (a cut-short download); reads only file sizes."""
    files = data_files(prefix)
    shards = {int(name.rsplit("-of-", 1)[1]) for name in files}
    if not files or len(shards) != 1 or len(files) != shards.pop():
        raise DamagedCheckpointError(f"{prefix}.data-*", f"{len(files)} shard files found, "
                                     f"the index needs {sorted(shards) or 'one or more'}")
    shapes, dtypes = reader.get_variable_to_shape_map(), reader.get_variable_to_dtype_map()
    expected = sum(int(np.prod(shapes[name])) * dtypes[name].size for name in shapes
                   if dtypes[name] != tf.string)
    size = sum(os.path.getsize(name) for name in files)
    if size < expected:
        raise _damaged(prefix, f"{size} bytes, the index lists {expected}")


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
    CheckpointMismatchError, and missing or cut-short .data files a DamagedFileError, before any
    weight is changed; a tensor that fails its checksum while being read raises DamagedFileError
    with the model partly loaded. Tensors are read and assigned one at a time, so no second copy
    of the weights outlives the call. Returns a LoadReport.
    """
    prefix = resolve_checkpoint_prefix(path)
    table = checkpoint_variables(model)
    reader = checkpoint_reader(prefix)
    try:
        backbone_scope = (BACKBONE_SCOPES[model.deeplab_config.backbone] if backbone_only
                          else None)
        names, skipped, ignored = match_checkpoint(
            table, reader.get_variable_to_shape_map(), prefix, skip_mismatched_logits,
            backbone_scope)
        check_data_files(prefix, reader)
        for name in names:
            variable = table[name]
            try:
                value = reader.get_tensor(name)
            except (tf.errors.OpError, IndexError) as err:
                raise _damaged(prefix, f"reading {name}: {first_line(err)}") from err
            variable.assign(value.astype(variable.dtype, copy=False))
            del value
    finally:
        del reader
    return LoadReport(prefix, len(names), skipped, ignored)


def check_checkpoint_readable(prefix):
    """Reads every tensor of a checkpoint once (checksums included), one at a time; raises
    DamagedFileError naming the .data file when one cannot be read."""
    reader = checkpoint_reader(prefix)
    check_data_files(prefix, reader)
    for name in reader.get_variable_to_shape_map():
        try:
            reader.get_tensor(name)
        except (tf.errors.OpError, IndexError) as err:
            raise _damaged(prefix, f"reading {name}: {first_line(err)}") from err
