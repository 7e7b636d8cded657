"""Map-aggregation buffer (paper Algorithm 1): label-map sets on disk, each written atomically.

The buffer is a folder of sets plus `index.json`:

    root/
      index.json                      {"max_sets", "next_serial", "last_op", "sets": [...]}
      set_0000_peak_g0/               B[0]: maps of the start / latest peak model
      set_0004_end_g0_1/              B[1:]: maps of cycle-ending models, oldest first

What a set folder holds is up to the writer callable (`writer(set_dir) -> None`, e.g. one uint8
label PNG per training image); the buffer only guarantees whole sets:

- a set is written into `.tmp_<name>/`, then renamed to `<name>/`;
- an operation (start / flush / append) becomes visible only when `index.json` is replaced
  atomically (temp file + os.replace); folders no longer listed are deleted after that;
- opening the buffer deletes `.tmp_*` folders, a stale `index.json.tmp` and set folders the index
  does not list (left by a crash between a rename and the index update), so a half-written set
  is never read as whole;
- an operation that fails (writer raises) removes what it wrote and leaves the index untouched.

Operations take an optional `op_id`: when the index's `last_op` already equals it, the call
returns the current sets without writing, so a caller that crashed after the index update but
before recording the result can repeat the call safely.
"""
import dataclasses
import os
import re
import shutil

from deeplab_load.atomic_files import read_json, temporary_path, write_json_atomic
from deeplab_load.errors import DamagedFileError

INDEX_FILE = "index.json"
TMP_PREFIX = ".tmp_"
SET_PREFIX = "set_"
ROLES = ("peak", "end")
_LABEL_PATTERN = re.compile(r"^[A-Za-z0-9_.-]+$")
RESTART_LOAD_FIX = ("delete {root} and the run dir's state.json and events.jsonl to restart LoAd "
                    "from the stage-1 model, or delete the run dir")


@dataclasses.dataclass(frozen=True)
class MapSet:
    """One label-map set: `role` "peak" (B[0]) or "end"; `label` names the model, e.g. "g0_1"."""
    name: str
    role: str
    label: str

    def to_json(self):
        return dataclasses.asdict(self)


class MapBuffer:
    """Algorithm 1 over set folders under `root`, holding at most `max_sets` sets."""

    def __init__(self, root, max_sets):
        if int(max_sets) != max_sets or max_sets < 2:
            raise ValueError(f"MapBuffer({root}): max_sets must be an integer >= 2 (a flush "
                             f"stores two sets), got {max_sets!r}")
        self.root = os.fspath(root)
        self.max_sets = int(max_sets)
        self.index_path = os.path.join(self.root, INDEX_FILE)
        os.makedirs(self.root, exist_ok=True)
        self._index = {"max_sets": self.max_sets, "next_serial": 0, "last_op": None, "sets": []}
        if os.path.exists(self.index_path):
            self._index = read_json(self.index_path,
                                    fix=RESTART_LOAD_FIX.format(root=self.root))
            if self._index.get("max_sets") != self.max_sets:
                raise ValueError(f"{self.index_path}: buffer was created with max_sets="
                                 f"{self._index.get('max_sets')}, opened with {self.max_sets}")
        if os.path.exists(temporary_path(self.index_path)):
            os.remove(temporary_path(self.index_path))
        self._remove_unlisted()
        for set_dir in self.set_dirs():
            if not os.path.isdir(set_dir) or not os.listdir(set_dir):
                raise DamagedFileError(
                    f"{set_dir}: buffer set listed in {self.index_path} is missing or empty; "
                    f"{RESTART_LOAD_FIX.format(root=self.root)}")

    # Reading.

    def sets(self):
        """The sets in buffer order (B[0] first) as MapSet."""
        return [MapSet(**entry) for entry in self._index["sets"]]

    def set_dirs(self):
        """Folder paths of the sets in buffer order."""
        return [self.set_dir(s) for s in self.sets()]

    def set_dir(self, map_set):
        return os.path.join(self.root, map_set.name)

    @property
    def last_op(self):
        return self._index["last_op"]

    # Algorithm 1.

    def start(self, writer, label, op_id=None):
        """Initialises B = [g_0(X)] (any previous content is dropped)."""
        return self._apply(op_id, lambda sets, write: [write("peak", label, writer)])

    def flush(self, peak_writer, end_writer, peak_label, end_label, op_id=None):
        """New peak: B = [g_peak(X), g_end(X)]."""
        return self._apply(op_id, lambda sets, write: [write("peak", peak_label, peak_writer),
                                                       write("end", end_label, end_writer)])

    def append(self, end_writer, end_label, op_id=None):
        """No peak: deletes B[1] (the oldest ending set) when |B| = max_sets, then adds g_end(X)."""
        def update(sets, write):
            if not sets:
                raise ValueError(f"{self.index_path}: append on an empty buffer (call start first)")
            if len(sets) >= self.max_sets:
                sets = sets[:1] + sets[2:]
            return sets + [write("end", end_label, end_writer)]
        return self._apply(op_id, update)

    # Mechanics.

    def _apply(self, op_id, update):
        """Runs `update(current_sets, write) -> new_sets` and commits the index atomically."""
        if op_id is not None and self._index["last_op"] == op_id:
            return self.sets()
        serial = self._index["next_serial"]
        written = []

        def write(role, label, writer):
            nonlocal serial
            map_set = self._write_set(serial, role, label, writer, written)
            serial += 1
            return map_set

        try:
            new_sets = update(self.sets(), write)
        except BaseException:
            for name in written:
                shutil.rmtree(os.path.join(self.root, name), ignore_errors=True)
            raise
        index = {"max_sets": self.max_sets, "next_serial": serial, "last_op": op_id,
                 "sets": [s.to_json() for s in new_sets]}
        write_json_atomic(self.index_path, index)
        self._index = index
        self._remove_unlisted()
        return self.sets()

    def _write_set(self, serial, role, label, writer, written):
        if role not in ROLES:
            raise ValueError(f"unknown set role {role!r} (expected one of {ROLES})")
        if not _LABEL_PATTERN.match(label):
            raise ValueError(f"set label {label!r} must match {_LABEL_PATTERN.pattern}")
        name = f"{SET_PREFIX}{serial:04d}_{role}_{label}"
        tmp_dir = os.path.join(self.root, TMP_PREFIX + name)
        final_dir = os.path.join(self.root, name)
        shutil.rmtree(tmp_dir, ignore_errors=True)
        os.makedirs(tmp_dir)
        try:
            writer(tmp_dir)
            if not os.listdir(tmp_dir):
                raise ValueError(f"map writer for {final_dir} wrote no files")
            if os.path.exists(final_dir):
                shutil.rmtree(final_dir)
            os.rename(tmp_dir, final_dir)
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)
        written.append(name)
        return MapSet(name=name, role=role, label=label)

    def _remove_unlisted(self):
        listed = {entry["name"] for entry in self._index["sets"]}
        for name in os.listdir(self.root):
            path = os.path.join(self.root, name)
            stale_set = name.startswith(SET_PREFIX) and name not in listed
            if os.path.isdir(path) and (name.startswith(TMP_PREFIX) or stale_set):
                shutil.rmtree(path, ignore_errors=True)
