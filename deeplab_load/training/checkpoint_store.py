"""Tagged snapshots ("g_s", "g_best", "g_end", "working", ...) of a model and its optimizer.

Models and optimizers are stored as tables {variable path: variable} (`variable_table`), not as
Keras object graphs: tf.train.Checkpoint does not follow the Python lists of sub-layers Keras 3
keeps, and would silently save only part of the model. Each save writes a fresh folder
`ckpt_<serial>/` and then atomically rewrites `tags.json` (tag -> folder), so a crash never leaves
a tag pointing at a half-written checkpoint. Folders no tag points at are deleted after the
pointer update. Under multi-worker training every worker keeps its own store in its own folder
(`strategy.worker_directory`).
"""
import json
import os
import shutil

import keras
import tensorflow as tf

from deeplab_load.lookahead.buffer import write_json_atomic

TAGS_FILE = "tags.json"


def variable_table(obj):
    """{name: variable} of what is checkpointed of `obj`.

    Keras models and layers: their weights by `variable.path` (layer names are fixed by the
    architecture). Optimizers: their variables by path without the first component (the
    optimizer's own name, numbered per process: "sgd", "sgd_1", ...). A single variable:
    {"variable": it}.
    """
    if isinstance(obj, keras.optimizers.Optimizer):
        entries = [(v.path.split("/", 1)[-1], v) for v in obj.variables]
    elif isinstance(obj, (keras.layers.Layer, keras.Model)):
        entries = [(v.path, v) for v in obj.weights]
    elif isinstance(obj, tf.Variable):
        entries = [("variable", obj)]
    else:
        raise TypeError(f"cannot checkpoint a {type(obj).__name__}: expected a Keras model, "
                        f"layer or optimizer, or a tf.Variable")
    table = dict(entries)
    if len(table) != len(entries):
        raise ValueError(f"{type(obj).__name__} has variables sharing a path; cannot checkpoint")
    return table


def _checkpoint_name(key, name):
    """The name tf.train.Checkpoint stores table entry `name` of object `key` under."""
    escaped = name.replace(".", "..").replace("/", ".S")
    return f"{key}/{escaped}/.ATTRIBUTES/VARIABLE_VALUE"


def check_checkpoint_matches(prefix, tables):
    """Raises ValueError naming `prefix` and every missing, unexpected or mis-shaped entry
    unless the checkpoint holds exactly the variables of `tables` ({key: variable table})."""
    stored = dict(tf.train.list_variables(prefix))
    problems = []
    for key, table in tables.items():
        expected = {_checkpoint_name(key, name): tuple(v.shape) for name, v in table.items()}
        present = {n for n in stored if n.startswith(key + "/") and
                   n.endswith("/.ATTRIBUTES/VARIABLE_VALUE")}
        problems += [f"missing {n}" for n in sorted(set(expected) - present)]
        problems += [f"unexpected {n}" for n in sorted(present - set(expected))]
        problems += [f"{n}: checkpoint {tuple(stored[n])} vs model {shape}"
                     for n, shape in sorted(expected.items())
                     if n in stored and tuple(stored[n]) != shape]
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise ValueError(f"{prefix}: checkpoint does not match ({len(problems)} problems):\n  "
                         f"{shown}{more}")


def read_model_weights(model, prefix, key="model"):
    """Loads `model`'s weights from a checkpoint written by `CheckpointStore` (object `key`).

    Every weight of the model must be in the checkpoint with its shape and vice versa; otherwise
    ValueError naming `prefix`, before anything is assigned.
    """
    table = variable_table(model)
    check_checkpoint_matches(prefix, {key: table})
    tf.train.Checkpoint(**{key: table}).read(prefix).expect_partial()


class CheckpointStore:
    """Tagged tf.train.Checkpoint snapshots of `trackables` (e.g. model=..., optimizer=...)."""

    def __init__(self, root, **trackables):
        self.root = root
        self.tables = {name: variable_table(obj) for name, obj in trackables.items()}
        self.checkpoint = tf.train.Checkpoint(**self.tables)
        os.makedirs(root, exist_ok=True)
        self.tags_path = os.path.join(root, TAGS_FILE)
        self.tags = {}
        if os.path.exists(self.tags_path):
            with open(self.tags_path, encoding="utf-8") as f:
                self.tags = json.load(f)
        self._collect_garbage()

    def _next_folder(self):
        serials = [int(name.split("_")[1]) for name in os.listdir(self.root)
                   if name.startswith("ckpt_") and name.split("_")[1].isdigit()]
        serials += [int(folder.split("_")[1]) for folder in self.tags.values()]
        return f"ckpt_{max(serials, default=-1) + 1:06d}"

    def _collect_garbage(self):
        keep = set(self.tags.values())
        for name in os.listdir(self.root):
            if name.startswith("ckpt_") and name not in keep:
                shutil.rmtree(os.path.join(self.root, name), ignore_errors=True)

    def _commit(self):
        write_json_atomic(self.tags_path, self.tags)
        self._collect_garbage()

    def has(self, tag):
        return tag in self.tags

    def prefix(self, tag):
        """Checkpoint prefix of `tag` (for tf.train.load_checkpoint or restore)."""
        if tag not in self.tags:
            raise KeyError(f"no checkpoint tagged {tag!r} in {self.root} (have {sorted(self.tags)})")
        return os.path.join(self.root, self.tags[tag], "ckpt")

    def save(self, tag):
        """Snapshots the current values under `tag` (replacing the previous snapshot of the tag)."""
        folder = self._next_folder()
        self.checkpoint.write(os.path.join(self.root, folder, "ckpt"))
        self.tags[tag] = folder
        self._commit()

    def restore(self, tag):
        """Loads the snapshot of `tag` into the tracked objects (all of them must match)."""
        prefix = self.prefix(tag)
        check_checkpoint_matches(prefix, self.tables)
        self.checkpoint.read(prefix).assert_consumed()

    def copy(self, source_tag, tag):
        """Makes `tag` point at the same snapshot as `source_tag` (no data copied)."""
        self.prefix(source_tag)
        self.tags[tag] = self.tags[source_tag]
        self._commit()

    def delete(self, tag):
        if self.tags.pop(tag, None) is not None:
            self._commit()
