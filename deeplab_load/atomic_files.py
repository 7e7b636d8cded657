"""Files written whole or not at all (pure Python).

Every writer here writes `<path>.tmp`, flushes and fsyncs it, then renames it onto `path` with
os.replace: a reader, or a run restarted after a crash or a kill, sees the old file or the new
one, never half of one, and a symlink at `path` is replaced, not followed. A writer that fails
removes its temporary file; one left by a kill is overwritten by the next write. Files that
several processes may write at once (e.g. a data set's split lists) pass `unique=True`: the
temporary file is then `<path>.tmp.<pid>`.
"""
import contextlib
import json
import os

from deeplab_load.errors import DamagedFileError


def temporary_path(path, unique=False):
    """Where the writers put `path`'s next version before renaming it: `<path>.tmp`, with
    `unique` `<path>.tmp.<pid>`."""
    tmp = f"{os.fspath(path)}.tmp"
    return f"{tmp}.{os.getpid()}" if unique else tmp


@contextlib.contextmanager
def replacing(path):
    """Yields `temporary_path(path)` for a writer that takes a path (PIL, matplotlib); on a
    normal exit the file written there is fsynced and renamed onto `path`, on an error it is
    removed."""
    tmp = temporary_path(path)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_file_atomic(path, data: bytes, unique=False) -> str:
    """Writes the bytes `data` to `path` atomically; returns `path`."""
    tmp = temporary_path(path, unique)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def write_text_atomic(path, text: str, unique=False) -> str:
    """Writes `text` (UTF-8) to `path` atomically; returns `path`."""
    return write_file_atomic(path, text.encode("utf-8"), unique)


def write_json_atomic(path, payload, sort_keys=True) -> str:
    """Writes `payload` as JSON (indent 1) to `path` atomically; returns `path`."""
    return write_text_atomic(path, json.dumps(payload, indent=1, sort_keys=sort_keys))


def read_json(path, fix="restore it from a backup or delete the run dir to start over"):
    """Reads a JSON file; a corrupt one raises DamagedFileError (a ValueError) naming it and
    `fix`, what the user can do."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        return json.loads(data.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DamagedFileError(f"{path}: damaged, not valid JSON ({error}); {fix}") from error
