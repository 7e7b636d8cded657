"""Tagged snapshots ("g_s", "g_best", "g_end", "working", ...) of a model and its optimizer.

Each save writes a fresh folder `ckpt_<serial>/` and then atomically rewrites `tags.json`
(tag -> folder), so a crash never leaves a tag pointing at a half-written checkpoint. Folders no
tag points at are deleted after the pointer update. Under multi-worker training only the chief
keeps what it writes: other workers write into a temporary folder that is then removed (every
worker must still call `save`, checkpoint writes are collective there).
"""
import json
import os
import shutil
import tempfile

import tensorflow as tf

TAGS_FILE = "tags.json"


def write_json_atomic(path, payload):
    """Writes JSON to `path` via a temp file and os.replace (readers never see half a file)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class CheckpointStore:
    """Tagged tf.train.Checkpoint snapshots of `trackables` (e.g. model=..., optimizer=...)."""

    def __init__(self, root, is_chief=True, **trackables):
        self.root = root
        self.is_chief = is_chief
        self.checkpoint = tf.train.Checkpoint(**trackables)
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
        if not self.is_chief:
            return
        keep = set(self.tags.values())
        for name in os.listdir(self.root):
            if name.startswith("ckpt_") and name not in keep:
                shutil.rmtree(os.path.join(self.root, name), ignore_errors=True)

    def _commit(self):
        if self.is_chief:
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
        if not self.is_chief:
            scratch = tempfile.mkdtemp(prefix="ckpt_nonchief_")
            try:
                self.checkpoint.write(os.path.join(scratch, "ckpt"))
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            return
        folder = self._next_folder()
        self.checkpoint.write(os.path.join(self.root, folder, "ckpt"))
        self.tags[tag] = folder
        self._commit()

    def restore(self, tag):
        """Loads the snapshot of `tag` into the tracked objects (all of them must match).

        Non-chief workers read the chief's `tags.json` (the run dir must be on a shared filesystem).
        """
        if not self.is_chief and os.path.exists(self.tags_path):
            with open(self.tags_path, encoding="utf-8") as f:
                self.tags = json.load(f)
        self.checkpoint.read(self.prefix(tag)).assert_existing_objects_matched()

    def copy(self, source_tag, tag):
        """Makes `tag` point at the same snapshot as `source_tag` (no data copied)."""
        self.prefix(source_tag)
        self.tags[tag] = self.tags[source_tag]
        self._commit()

    def delete(self, tag):
        if self.tags.pop(tag, None) is not None:
            self._commit()
