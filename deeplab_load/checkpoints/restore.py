"""Restoring weights into a DeepLab model from any checkpoint a user may point at.

Our tagged checkpoint folders (a run's ``generator/`` with ``tags.json``), single tf.train
checkpoints of ours, Keras ``.weights.h5`` files, and official TF1 DeepLab zoo checkpoints (told
apart by their variable names).
"""
import glob
import json
import os

import tensorflow as tf

from deeplab_load.checkpoints import tf1
from deeplab_load.checkpoints.store import read_model_weights
from deeplab_load.errors import DamagedFileError, UserError, first_line

# Tags tried in order when a tagged folder is given without a tag.
DEFAULT_CHECKPOINT_TAGS = ("final", "g_best", "g_s", "g_end", "stage1")
DOWNLOAD_HINT = ("official zoo checkpoints are fetched with "
                 "`python -m deeplab_load_tools.download_checkpoint <zoo_name>`")


def zoo_mismatch_fix(zoo_name, flag="--checkpoint"):
    """The fix line for a checkpoint that does not fit the architecture of --zoo_name."""
    return (f"{flag} is not a checkpoint of --zoo_name={zoo_name} (or was changed): check "
            f"--zoo_name and the model flags, or fetch it again with "
            f"`python -m deeplab_load_tools.download_checkpoint {zoo_name} --force`")


class CheckpointNotFoundError(UserError, FileNotFoundError):
    """No checkpoint at the path given (the message says how to get official ones)."""


def is_tagged_folder(path):
    """True for a folder written by ``CheckpointStore`` (it holds ``tags.json``)."""
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, "tags.json"))


def tagged_prefix(folder, tag=None):
    """The checkpoint prefix of ``tag`` in a tagged folder (default: the first of
    ``DEFAULT_CHECKPOINT_TAGS`` present)."""
    tags_path = os.path.join(folder, "tags.json")
    try:
        with open(tags_path, encoding="utf-8") as f:
            tags = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DamagedFileError(f"{tags_path} is damaged ({err}); restore it from a backup or "
                               f"point --checkpoint at one of the ckpt_* folders in "
                               f"{folder}") from err
    if tag is None:
        tag = next((t for t in DEFAULT_CHECKPOINT_TAGS if t in tags), None)
        if tag is None:
            raise UserError(f"{tags_path} has none of the tags {', '.join(DEFAULT_CHECKPOINT_TAGS)}"
                            f"; pass --checkpoint_tag (have {', '.join(sorted(tags))})")
    if tag not in tags:
        raise UserError(f"{tags_path} has no tag {tag!r}; --checkpoint_tag must be one of "
                        f"{', '.join(sorted(tags))}")
    return os.path.join(folder, tags[tag], "ckpt")


def _checkpoint_prefix(path):
    try:
        return tf1.resolve_checkpoint_prefix(path)
    except FileNotFoundError as err:
        raise CheckpointNotFoundError(f"{err}; {DOWNLOAD_HINT}") from err


def _list_variables(prefix):
    try:
        return [name for name, _ in tf.train.list_variables(prefix)]
    except (tf.errors.OpError, ValueError, IndexError) as err:
        raise DamagedFileError(f"checkpoint {prefix} is unreadable ({first_line(err)}); it is "
                               f"damaged or incomplete: use another checkpoint or tag") from err


def restore_checkpoint(model, path, tag=None, allow_tf1=True):
    """Loads weights into a model from ``build_deeplab``; returns a one-line description.

    ``path``: a ``.weights.h5`` file (or a folder holding just one); a folder with
    ``tags.json`` (``tag`` picks the snapshot); or a checkpoint prefix / folder. A checkpoint
    whose variable names carry ``.ATTRIBUTES`` is a TF2 checkpoint of ours (the model's weights
    by variable path under the key ``model`` or the only other top-level key); otherwise it is
    read as an official TF1 DeepLab checkpoint by ``tf1.load_checkpoint``. Errors are
    ``UserError``s naming the path. ``allow_tf1=False`` (a model that is not DeepLab: any Keras
    model, read by variable path) makes a TF1 checkpoint a ``UserError`` too.
    """
    path = os.fspath(path)
    if path.endswith(".weights.h5"):
        if not os.path.isfile(path):
            raise CheckpointNotFoundError(f"checkpoint not found: {path}")
        model.load_weights(path)
        return f"Keras weights {path}"
    if is_tagged_folder(path):
        path = tagged_prefix(path, tag)
    elif os.path.isdir(path) and not tf.train.latest_checkpoint(path):
        weight_files = glob.glob(os.path.join(path, "*.weights.h5"))
        if len(weight_files) == 1 and not glob.glob(os.path.join(path, "**", "*.index"),
                                                    recursive=True):
            return restore_checkpoint(model, weight_files[0])
    prefix = _checkpoint_prefix(path)
    names = _list_variables(prefix)
    if not any(".ATTRIBUTES" in name for name in names):
        if not allow_tf1:
            raise UserError(f"{prefix} is an official TF1 DeepLab checkpoint: only a DeepLab "
                            f"model reads it (this model reads .weights.h5 files and the "
                            f"checkpoints this package writes)")
        report = tf1.load_checkpoint(model, prefix)
        skipped = f", skipped {len(report.skipped)}" if report.skipped else ""
        return f"TF1 checkpoint {prefix}: {report.loaded} tensors{skipped}"
    roots = {name.split("/")[0] for name in names if ".ATTRIBUTES" in name}
    roots -= {"save_counter", "optimizer", "_CHECKPOINTABLE_OBJECT_GRAPH"}
    key = "model" if "model" in roots else (roots.pop() if len(roots) == 1 else None)
    if key is None:
        raise UserError(f"{prefix}: cannot tell which object holds the model among "
                        f"{sorted(roots)}")
    try:
        read_model_weights(model, prefix, key)
    except ValueError as err:
        examples = "; ".join(line.strip() for line in str(err).splitlines()[1:3])
        raise UserError(f"{first_line(err)} {examples}") from err
    return f"checkpoint {prefix} ({key})"
