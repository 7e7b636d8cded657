"""SIGTERM / SIGINT during training: finish the current step, save, exit 0 saying how to resume.

`stop_on_signals()` installs the handlers for the life of a `with` block (main thread only). The
first signal only sets a flag and logs that the run will stop; training code calls
`raise_if_requested(where)` at points where everything done so far is saved (after a stage-1
step, before a LoAd hook starts new work), which raises `TrainingInterrupted`. Stage 1 saves a
checkpoint first (`requested()`). The first signal restores the default handlers, so a second
one ends the process at once (killed by that signal) without saving anything more; what was
saved stays valid (every file is written atomically). Outside the block the checks are no-ops.
"""
import contextlib
import signal
import threading

from absl import logging

_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_requested = []          # signal numbers received while handlers are installed


class TrainingInterrupted(Exception):
    """A SIGTERM / SIGINT stopped training at a point where its progress is saved."""

    def __init__(self, signal_name, where):
        super().__init__(f"stopped by {signal_name} {where}")
        self.signal_name = signal_name
        self.where = where


def requested():
    """True once a stop signal has arrived."""
    return bool(_requested)


def raise_if_requested(where):
    """Raises TrainingInterrupted (message: the signal and `where`) after a stop signal."""
    if _requested:
        raise TrainingInterrupted(signal.Signals(_requested[0]).name, where)


def _handle(signum, frame):
    del frame
    _requested.append(signum)
    # The next SIGTERM / SIGINT gets the default action: the kernel ends the process at once,
    # even while the main thread is inside a long TensorFlow op (a Python handler would wait).
    for s in _SIGNALS:
        signal.signal(s, signal.SIG_DFL)
    logging.warning("%s received: finishing the current step, then saving and stopping "
                    "(send it again to exit at once, keeping only what is saved)",
                    signal.Signals(signum).name)


@contextlib.contextmanager
def stop_on_signals():
    """Installs the SIGTERM / SIGINT handlers for the block (no-op off the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in _SIGNALS}
    _requested.clear()
    for s in _SIGNALS:
        signal.signal(s, _handle)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _requested.clear()
