"""Tagged snapshots ("g_s", "g_best", "g_end", "working", ...) of a model and its optimizer.

Models and optimizers are stored as tables {variable path: variable} (`variable_table`), not as
Keras object graphs: tf.train.Checkpoint does not follow the Python lists of sub-layers Keras 3
keeps, and would silently save only part of the model. Each save writes a fresh folder
`ckpt_<serial>/` and then atomically rewrites `tags.json` (tag -> folder), so a crash never leaves
a tag pointing at a half-written checkpoint. Folders no tag points at are deleted after the
pointer update. Under multi-worker training every worker keeps its own store in its own folder
(`strategy.worker_directory`).

Besides the weights, a model's table holds its random-generator state (the `seed_generator_state`
of Dropout layers, in `model.variables` but not `model.weights`) as "random_state/<i>", so a
resumed run draws the same dropout masks as an uninterrupted one. Checkpoints written before that
(no random_state entries) still restore, with a warning; readers of weights only
(`read_model_weights`) ignore them.

An optimizer's learning rate is saved (its `learning_rate` variable, when it has one) but never
restored: after any restore the optimizer keeps the rate it was built with -- the run's
configured flags -- and a snapshot saved with another rate is logged once as "old -> new". A
learning-rate entry may also be missing (saved under a schedule, which has no variable) or extra.

A checkpoint or tags.json that cannot be read raises `errors.DamagedFileError` naming the file.
"""
import json
import os
import shutil

import keras
import tensorflow as tf
from absl import logging

from deeplab_load.atomic_files import write_json_atomic
from deeplab_load.errors import DamagedFileError

TAGS_FILE = "tags.json"
LEARNING_RATE = "learning_rate"   # an optimizer's learning-rate variable in its table
RANDOM_STATE_PREFIX = "random_state/"
# What reading a damaged checkpoint raises (truncated data file: IndexError "Read less bytes").
_READ_ERRORS = (tf.errors.OpError, IndexError, EOFError, OSError, UnicodeDecodeError)


def variable_table(obj):
    """{name: variable} of what is checkpointed of `obj`.

    Keras models and layers: their weights by `variable.path` (layer names are fixed by the
    architecture), and their other variables (random-generator states, whose paths are numbered
    per process) as "random_state/<i>" in `obj.variables` order. Optimizers: their variables by path without the first component (the
    optimizer's own name, numbered per process: "sgd", "sgd_1", ...). A single variable:
    {"variable": it}.
    """
    if isinstance(obj, keras.optimizers.Optimizer):
        entries = [(v.path.split("/", 1)[-1], v) for v in obj.variables]
    elif isinstance(obj, (keras.layers.Layer, keras.Model)):
        entries = [(v.path, v) for v in obj.weights]
        entries += [(f"{RANDOM_STATE_PREFIX}{i}", v)
                    for i, v in enumerate(random_state_variables(obj))]
    elif isinstance(obj, tf.Variable):
        entries = [("variable", obj)]
    else:
        raise TypeError(f"cannot checkpoint a {type(obj).__name__}: expected a Keras model, "
                        f"layer or optimizer, or a tf.Variable")
    table = dict(entries)
    if len(table) != len(entries):
        raise ValueError(f"{type(obj).__name__} has variables sharing a path; cannot checkpoint")
    return table


def random_state_variables(layer):
    """Variables of a Keras layer / model that are not weights: the random-generator states
    (`keras.random.SeedGenerator`, e.g. of Dropout), in `layer.variables` order."""
    weight_ids = {id(v) for v in layer.weights}
    return [v for v in layer.variables if id(v) not in weight_ids]


def _is_random_state(checkpoint_name):
    return f"/{RANDOM_STATE_PREFIX.replace('/', '.S')}" in checkpoint_name


def list_checkpoint(prefix):
    """{name: shape} of the checkpoint at `prefix`; DamagedFileError naming it when unreadable."""
    try:
        return dict(tf.train.list_variables(prefix))
    except _READ_ERRORS as err:
        raise DamagedFileError(damaged_message(prefix, err)) from err


def damaged_message(prefix, err):
    folder = os.path.dirname(prefix)
    return (f"{folder}: checkpoint is damaged or incomplete ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); it cannot be restored: delete the "
            f"run dir to start over")


def _read(checkpoint, prefix):
    """checkpoint.read(prefix), with DamagedFileError naming `prefix` on unreadable data."""
    try:
        return checkpoint.read(prefix)
    except _READ_ERRORS as err:
        raise DamagedFileError(damaged_message(prefix, err)) from err


def _checkpoint_name(key, name):
    """The name tf.train.Checkpoint stores table entry `name` of object `key` under."""
    escaped = name.replace(".", "..").replace("/", ".S")
    return f"{key}/{escaped}/.ATTRIBUTES/VARIABLE_VALUE"


def check_checkpoint_matches(prefix, tables, optional=()):
    """Raises ValueError naming `prefix` and every missing, unexpected or mis-shaped entry
    unless the checkpoint holds exactly the variables of `tables` ({key: variable table}).

    Random-state entries, and the checkpoint names in `optional`, may be missing (older
    checkpoints) or extra (a reader of weights only); returns the names of `tables`' entries
    absent from the checkpoint ({key: [name]})."""
    stored = list_checkpoint(prefix)
    optional = set(optional)
    problems, absent = [], {}
    for key, table in tables.items():
        expected = {_checkpoint_name(key, name): tuple(v.shape) for name, v in table.items()}
        present = {n for n in stored if n.startswith(key + "/") and
                   n.endswith("/.ATTRIBUTES/VARIABLE_VALUE")}
        absent[key] = [name for name in table if _checkpoint_name(key, name) not in present]
        problems += [f"missing {n}" for n in sorted(set(expected) - present)
                     if not _is_random_state(n) and n not in optional]
        problems += [f"unexpected {n}" for n in sorted(present - set(expected))
                     if not _is_random_state(n) and n not in optional]
        problems += [f"{n}: checkpoint {tuple(stored[n])} vs model {shape}"
                     for n, shape in sorted(expected.items())
                     if n in stored and tuple(stored[n]) != shape]
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise ValueError(f"{prefix}: checkpoint does not match ({len(problems)} problems):\n  "
                         f"{shown}{more}")
    return absent


def read_model_weights(model, prefix, key="model"):
    """Loads `model`'s weights from a checkpoint written by `CheckpointStore` (object `key`).

    Every weight of the model must be in the checkpoint with its shape and vice versa; otherwise
    ValueError naming `prefix`, before anything is assigned.
    """
    table = variable_table(model)
    absent = check_checkpoint_matches(prefix, {key: table})[key]
    table = {name: v for name, v in table.items() if name not in absent}
    _read(tf.train.Checkpoint(**{key: table}), prefix).expect_partial()


class CheckpointStore:
    """Tagged tf.train.Checkpoint snapshots of `trackables` (e.g. model=..., optimizer=...)."""

    def __init__(self, root, **trackables):
        self.root = root
        self.tables = {name: variable_table(obj) for name, obj in trackables.items()}
        self.optimizers = {name: obj for name, obj in trackables.items()
                           if isinstance(obj, keras.optimizers.Optimizer)}
        self._reported_rates = set()
        self.checkpoint = tf.train.Checkpoint(**self.tables)
        os.makedirs(root, exist_ok=True)
        self.tags_path = os.path.join(root, TAGS_FILE)
        self.tags = {}
        if os.path.exists(self.tags_path):
            self.tags = read_tags(self.tags_path)
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
        """Loads the snapshot of `tag` into the tracked objects (all of them must match).

        DamagedFileError naming the snapshot when its files cannot be read (nothing is assigned
        when the index is unreadable; a data file that breaks mid-read may leave part assigned,
        so restore another tag after that error)."""
        prefix = self.prefix(tag)
        rate_names = {_checkpoint_name(key, LEARNING_RATE): key for key in self.optimizers}
        absent = check_checkpoint_matches(prefix, self.tables, optional=rate_names)
        stored_rates = self._stored_learning_rates(prefix, rate_names)
        random_absent = sorted(f"{k}/{n}" for k, names in absent.items() for n in names
                               if n.startswith(RANDOM_STATE_PREFIX))
        if random_absent:
            logging.warning("%s (tag %s) predates random-state checkpointing: %s keep their "
                            "current state, so dropout draws after this restore differ from an "
                            "uninterrupted run", prefix, tag, random_absent)
        tables = {}
        for key, table in self.tables.items():
            table = {n: v for n, v in table.items() if n not in absent[key]}
            if key in self.optimizers:
                table.pop(LEARNING_RATE, None)     # the configured rate stays
                if key in stored_rates:            # consumed into a scratch variable
                    table[LEARNING_RATE] = tf.Variable(stored_rates[key][1])
            tables[key] = table
        _read(tf.train.Checkpoint(**tables), prefix).assert_consumed()
        self._report_rates(prefix, stored_rates)

    @staticmethod
    def _stored_learning_rates(prefix, rate_names):
        """{optimizer key: (checkpoint name, stored learning rate)} of the snapshot."""
        try:
            reader = tf.train.load_checkpoint(prefix)
            present = reader.get_variable_to_shape_map()
            return {key: (name, reader.get_tensor(name)) for name, key in rate_names.items()
                    if name in present}
        except _READ_ERRORS as err:
            raise DamagedFileError(damaged_message(prefix, err)) from err

    def _report_rates(self, prefix, stored_rates):
        """Logs, once per optimizer and pair, a snapshot rate other than the configured one."""
        for key, optimizer in self.optimizers.items():
            if key not in stored_rates:
                continue
            old = float(stored_rates[key][1])
            new = optimizer.get_config()["learning_rate"]
            new_value = new if not isinstance(new, dict) else None
            if new_value is not None and abs(new_value - old) <= 1e-7 * max(abs(old), 1e-30):
                continue
            shown = f"{new_value:g}" if new_value is not None else \
                f"the schedule {new.get('class_name', '')} {new.get('config', {})}"
            if (key, old, shown) not in self._reported_rates:
                self._reported_rates.add((key, old, shown))
                logging.warning("%s: the snapshot's %s learning rate is %g; the configured one "
                                "is used: %g -> %s", os.path.dirname(prefix), key, old, old,
                                shown)

    def restore_first(self, tags):
        """Restores the first of `tags` that exists and reads back; returns that tag.

        A damaged snapshot is skipped with a warning naming it; DamagedFileError when none of
        them could be read, None when none of them exists."""
        damaged = []
        for tag in tags:
            if tag not in self.tags:
                continue
            try:
                self.restore(tag)
                return tag
            except DamagedFileError as err:
                logging.warning("%s; trying the previous snapshot", err)
                damaged.append(str(err))
        if damaged:
            raise DamagedFileError(damaged[-1])
        return None

    def copy(self, source_tag, tag):
        """Makes `tag` point at the same snapshot as `source_tag` (no data copied)."""
        self.prefix(source_tag)
        self.tags[tag] = self.tags[source_tag]
        self._commit()

    def delete(self, tag):
        if self.tags.pop(tag, None) is not None:
            self._commit()


def read_tags(path):
    """tags.json of a store ({tag: folder}); DamagedFileError naming it when corrupt."""
    try:
        with open(path, encoding="utf-8") as f:
            tags = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DamagedFileError(
            f"{path}: corrupt ({err}); the snapshots in {os.path.dirname(path)} cannot be "
            f"found: restore the file from a backup or delete the run dir to start over") from err
    if not isinstance(tags, dict) or not all(
            isinstance(folder, str) and folder.startswith("ckpt_") for folder in tags.values()):
        raise DamagedFileError(f"{path}: not a tag table {{tag: ckpt_<n>}}; restore it from a "
                               f"backup or delete the run dir to start over")
    return tags
