"""One `train` process per run dir: an advisory lock on `<run dir>/train.lock`.

`lock_run_dir(run_dir)` takes `fcntl.flock(LOCK_EX | LOCK_NB)` on the file and writes the
holder's pid into it; the lock lives as long as the open file (the kernel drops it when the
process ends, even on SIGKILL, so a stale file never blocks a later run). A second process gets
`RunDirBusyError` naming the holder's pid. The process holding the lock may lock the dir again
(a no-op: in-process callers such as the ablation open several jobs); `release_acquired_since`
frees what a block of code took.
"""
import contextlib
import fcntl
import os

from deeplab_load.errors import UserError

LOCK_FILE = "train.lock"
_held = []    # (run_dir, open file) in acquisition order


class RunDirBusyError(UserError):
    """Another process is training in the run dir."""


def lock_run_dir(run_dir):
    """Creates `run_dir` if needed and locks it for this process (until `release`)."""
    run_dir = os.path.abspath(run_dir)
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, LOCK_FILE)
    for held_dir, held in _held:
        if held_dir == run_dir and _same_file(held, path):
            return path
    handle = open(path, "a+", encoding="utf-8")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise RunDirBusyError(
            f"--run_dir {run_dir} is in use by another train process (pid {holder}, lock "
            f"{path}); wait for it to end or stop it, or choose another --run_dir") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    _held.append((run_dir, handle))
    return path


def _same_file(handle, path):
    """True when `path` still names the open file `handle` (not deleted and re-created)."""
    try:
        return os.path.samestat(os.fstat(handle.fileno()), os.stat(path))
    except OSError:
        return False


def release(run_dir):
    """Releases this process's lock on `run_dir` (no-op when not held)."""
    run_dir = os.path.abspath(run_dir)
    for entry in [e for e in _held if e[0] == run_dir]:
        _held.remove(entry)
        fcntl.flock(entry[1].fileno(), fcntl.LOCK_UN)
        entry[1].close()


def held_run_dirs():
    """Run dirs this process holds locks on, in acquisition order."""
    return [run_dir for run_dir, _ in _held]


@contextlib.contextmanager
def release_acquired_since():
    """Releases, when the block ends, every run-dir lock taken inside it."""
    before = len(_held)
    try:
        yield
    finally:
        for run_dir, _ in list(reversed(_held[before:])):
            release(run_dir)
