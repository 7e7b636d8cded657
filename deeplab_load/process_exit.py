"""Ending a command after an error without going through interpreter shutdown.

The library deletes its tf.data iterators before an error leaves them (`data.batches`), which
removes the cause of the exit hangs of issue 11. This is the last line of defence, for the
command-line layer only: once the error is printed, `exit_after_error` flushes what the user
must see and ends the process at once (`os._exit`), so nothing still alive -- an iterator kept by
some other reference, TensorFlow's thread pools -- can hang or abort the exit, and an error exit
does not pay the seconds of tearing TensorFlow down. Nothing a run needs is lost: checkpoints,
state and results are written atomically before an error can happen; pending TensorBoard events
of the last seconds may be.
"""
import os
import sys

from absl import logging


def flush_outputs():
    """Flushes stdout, stderr and the absl log handlers (errors while flushing are ignored)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    try:
        logging.flush()
    except (OSError, ValueError):
        pass


def exit_after_error(code=1):
    """Flushes the outputs and ends the process with exit status `code` (non-zero) at once."""
    if not code:
        raise ValueError("exit_after_error is for error exits; give a non-zero code")
    flush_outputs()
    os._exit(code)
