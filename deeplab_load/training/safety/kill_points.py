"""TEST-ONLY hook: signal this process at the N-th pass of a named point, for kill/resume tests.

Set `DEEPLAB_LOAD_TEST_KILL_AT=<point>:<N>[:<signal>[,<signal>...]]` (N >= 1) in the environment
of a `train` process and it sends itself each `signal` in turn (default SIGKILL: no cleanup, no
handler runs, a real crash; SIGINT / SIGTERM: the user's stop, handled by `interrupts`) when the
code passes `point` for the N-th time. Each handled signal's Python handler has run before the
next is sent, so `SIGINT,SIGINT` is a user pressing Ctrl-C twice while the run is busy at that
point. Without the variable every call is a no-op. Points:

    stage1_step        after a stage-1 step (and its checkpoint, when one is due)
    map_batch          after a batch of label maps is written into a buffer set
    disc_epoch         after a discriminator epoch
    propagation_start  when a LoAd generator step starts, before its stop check
    propagation        after a LoAd generator step, before its state is committed
    event_torn         while appending to events.jsonl: half the line is written, then the kill

A signal is delivered at a fixed point of the run, not at a time, so tests do not depend on
timing or on the run's trajectory. Used by tests/test_train_e2e.py; not a user feature.
"""
import os
import signal

ENV_VAR = "DEEPLAB_LOAD_TEST_KILL_AT"
POINTS = ("stage1_step", "map_batch", "disc_epoch", "propagation_start", "propagation",
          "event_torn")
SIGNALS = ("SIGKILL", "SIGINT", "SIGTERM")
_passes = {}


def _target():
    value = os.environ.get(ENV_VAR)
    if not value:
        return None
    point, _, rest = value.partition(":")
    count, _, names = rest.partition(":")
    names = tuple((names or "SIGKILL").split(","))
    if point not in POINTS or not count.isdigit() or int(count) < 1 or \
            not set(names) <= set(SIGNALS):
        raise ValueError(f"{ENV_VAR}={value!r}: expected <point>:<N>[:<signal>[,<signal>...]] "
                         f"with point one of {POINTS}, N >= 1 and signals from {SIGNALS}")
    return point, int(count), names


def reached(point):
    """Counts a pass of `point`; True on the pass the environment asks to be killed at."""
    target = _target()
    if target is None or target[0] != point:
        return False
    _passes[point] = _passes.get(point, 0) + 1
    return _passes[point] == target[1]


def kill_now():
    """Raises the configured signals in this thread, in turn (SIGKILL by default). A handled
    signal (SIGINT, SIGTERM) has run its Python handler before the next is raised and when this
    returns (`signal.raise_signal` runs pending handlers before it returns)."""
    target = _target()
    for name in target[2] if target else ("SIGKILL",):
        signal.raise_signal(getattr(signal, name))


def kill_if_reached(point):
    """Signals the process when `reached(point)`."""
    if reached(point):
        kill_now()
