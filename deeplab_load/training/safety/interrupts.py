"""SIGTERM / SIGINT during training: finish the current step, save, exit 0 saying how to resume.

`stop_on_signals()` installs the handlers for the life of a `with` block (main thread only). The
first signal only sets a flag and logs that the run will stop; training code calls
`raise_if_requested(where)` at points where everything done so far is saved (after a stage-1
step, before a LoAd hook starts new work), which raises `TrainingInterrupted`. Stage 1 saves a
checkpoint first (`requested()`). The first signal restores the default handlers, so a second
one ends the process at once (killed by that signal) without saving anything more; what was
saved stays valid (every file is written atomically). Outside the block the checks are no-ops.

Multi-worker runs: `agree_with(codes)` makes `requested()` and `raise_if_requested()` ask every
worker (`codes(local signal number or 0) -> [one per worker]`, a collective op): a signal sent to
any worker stops all of them at the same point, each exiting 0. Every worker must pass the same
checks in the same order (they run the same deterministic loop).
"""
import contextlib
import signal
import threading

from absl import logging

_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_requested = []          # signal numbers received while handlers are installed
_agreement = []          # [codes function] while a multi-worker run agrees on stopping
_installed = []          # [True] while `stop_on_signals` has its handlers installed


class TrainingInterrupted(Exception):
    """A SIGTERM / SIGINT stopped training at a point where its progress is saved."""

    def __init__(self, signal_name, where):
        super().__init__(f"stopped by {signal_name} {where}")
        self.signal_name = signal_name
        self.where = where


def _received():
    """(signal name, worker index or None) of the first stop signal received by this process or,
    under `agree_with`, by any worker; None when none has arrived."""
    local = _requested[0] if _requested else 0
    if not _agreement:
        return (signal.Signals(local).name, None) if local else None
    codes = _agreement[0](local)
    for worker, code in enumerate(codes):
        if code:
            return signal.Signals(code).name, worker
    return None


def requested():
    """True once a stop signal has arrived (at any worker, under `agree_with`)."""
    return _received() is not None


def raise_if_requested(where):
    """Raises TrainingInterrupted (message: the signal and `where`) after a stop signal."""
    received = _received()
    if received:
        name, worker = received
        raise TrainingInterrupted(name if worker is None else f"{name} (sent to worker {worker})",
                                  where)


def reinstall_handlers():
    """Installs the handlers again (inside `stop_on_signals`, before any signal arrived).

    Call it after creating a MultiWorkerMirroredStrategy: TensorFlow's coordination service
    (TF 2.21) then installs its own C-level SIGTERM handler for preemption notices, after which
    Python's handler never runs (`signal.getsignal` still names it) and the worker ignores
    SIGTERM (measured: a SIGTERM raised after creating the strategy did not reach the Python
    handler until it was installed again)."""
    if _installed and not _requested and \
            threading.current_thread() is threading.main_thread():
        for s in _SIGNALS:
            signal.signal(s, _handle)


@contextlib.contextmanager
def agree_with(codes):
    """Within the block, stop checks all-gather every worker's signal through `codes`."""
    _agreement.append(codes)
    try:
        yield
    finally:
        _agreement.remove(codes)


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
    _installed.append(True)
    try:
        yield
    finally:
        _installed.clear()
        for s, handler in previous.items():
            signal.signal(s, handler)
        _requested.clear()
