"""Writing a command's outputs: only inside its output folder, and never half a run unmarked.

- `inside(root, relative)` is the one way writers turn a name (an example id, a shard name)
  into a path: it refuses anything that would land outside `root` (absolute names, `..`,
  symlinked folders leading out).
- `IncompleteMarker` leaves an `INCOMPLETE` file in the folder while a run writes into it; it
  says what stopped the run if it fails and is removed when the run completes.
"""
import os
import time

from deeplab_load.atomic_files import write_file_atomic
from deeplab_load.errors import UserError

INCOMPLETE_FILE = "INCOMPLETE"


class OutsideOutputFolderError(UserError, ValueError):
    """A computed output path would leave its output folder."""


def inside(root, relative) -> str:
    """`root/relative`, refused with OutsideOutputFolderError unless it stays inside `root`
    once `..` and symlinked folders are resolved (the file itself may not exist yet)."""
    relative = os.fspath(relative)
    path = os.path.join(root, relative)
    real_root = os.path.realpath(root)
    real_parent = os.path.realpath(os.path.dirname(path))
    name = os.path.basename(path)
    if (os.path.isabs(relative) or name in ("", ".", "..")
            or os.path.commonpath([real_root, real_parent]) != real_root):
        raise OutsideOutputFolderError(f"{path}: refusing to write outside the output folder "
                                       f"{root} (from the name {relative!r})")
    return path


class IncompleteMarker:
    """Context manager: `root/INCOMPLETE` exists while a run writes into `root`.

    Entering writes the marker (what runs, since when); an exception leaving the block rewrites
    it with the error (the files present are a partial result), and a normal exit removes it.
    A killed process leaves the first version: either way a folder with `INCOMPLETE` in it
    holds a partial result.
    """

    def __init__(self, root, what):
        self.root = os.fspath(root)
        self.what = what
        self.path = os.path.join(self.root, INCOMPLETE_FILE)

    def __enter__(self):
        os.makedirs(self.root, exist_ok=True)
        write_file_atomic(self.path, (
            f"{self.what}: started {time.strftime('%Y-%m-%d %H:%M:%S')} (pid {os.getpid()}) and "
            "has not finished; the files here are a partial result.\n").encode())
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            os.remove(self.path)
        else:
            first_line = (str(exc).splitlines() or [exc_type.__name__])[0]
            write_file_atomic(self.path, (
                f"{self.what}: stopped by {exc_type.__name__}: {first_line}\n"
                "The files here are a partial result; run again to complete them.\n").encode())
        return False
