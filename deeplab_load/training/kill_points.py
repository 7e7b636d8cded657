"""TEST-ONLY hook: SIGKILL this process at the N-th pass of a named point, for kill/resume tests.

Set `DEEPLAB_LOAD_TEST_KILL_AT=<point>:<N>` (N >= 1) in the environment of a `train` process and
it kills itself with SIGKILL (no cleanup, no handler runs: a real crash) when the code passes
`point` for the N-th time. Without the variable every call is a no-op. Points:

    stage1_step   after a stage-1 step (and its checkpoint, when one is due)
    map_batch     after a batch of label maps is written into a buffer set
    disc_epoch    after a discriminator epoch
    propagation   after a LoAd generator step, before its state is committed
    event_torn    while appending to events.jsonl: half the line is written, then the kill

Used by tests/test_resume.py; not a user feature.
"""
import os
import signal

ENV_VAR = "DEEPLAB_LOAD_TEST_KILL_AT"
POINTS = ("stage1_step", "map_batch", "disc_epoch", "propagation", "event_torn")
_passes = {}


def _target():
    value = os.environ.get(ENV_VAR)
    if not value:
        return None
    point, _, count = value.partition(":")
    if point not in POINTS or not count.isdigit() or int(count) < 1:
        raise ValueError(f"{ENV_VAR}={value!r}: expected <point>:<N> with point one of {POINTS} "
                         f"and N >= 1")
    return point, int(count)


def reached(point):
    """Counts a pass of `point`; True on the pass the environment asks to be killed at."""
    target = _target()
    if target is None or target[0] != point:
        return False
    _passes[point] = _passes.get(point, 0) + 1
    return _passes[point] == target[1]


def kill_now():
    os.kill(os.getpid(), signal.SIGKILL)


def kill_if_reached(point):
    """SIGKILLs the process when `reached(point)`."""
    if reached(point):
        kill_now()
