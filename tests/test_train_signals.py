"""SIGTERM / SIGINT stop `train` at a saved point with exit 0 and a resume line; a second signal
exits at once; a second `train` on a locked run dir is refused naming the holder's pid.

The signals come from the run itself at fixed points (`training/safety/kill_points.py`), not from the
test after watching the log, so what is checked does not depend on timing or machine load.
"""
import json
import os
import signal
import subprocess
import sys

import pytest

from test_train_e2e import REPO, environment, train_command


def run_with_signals(run_dir, demo_dir, log_path, kill_at):
    """Runs `train` (no checkpoint due before step 100) signalling itself at `kill_at`
    (DEEPLAB_LOAD_TEST_KILL_AT); returns (exit code, stdout); stderr goes to `log_path`."""
    env = dict(environment(), DEEPLAB_LOAD_TEST_KILL_AT=kill_at)
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.run(train_command(run_dir, demo_dir, ["--checkpoint_every=100"]),
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=log, text=True,
                              timeout=600)
    return proc.returncode, proc.stdout


def text(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


@pytest.mark.slow
def test_sigterm_stops_at_a_saved_point_and_a_second_signal_exits_at_once(tmp_path):
    demo_dir, run_dir = str(tmp_path / "demo"), str(tmp_path / "run")
    log = str(tmp_path / "stderr.txt")
    stage1_path = os.path.join(run_dir, "stage1_state.json")

    # SIGTERM right after stage-1 step 3: step 4 finishes, a checkpoint is written (none would
    # be due before step 100), exit 0 with how to resume.
    code, out = run_with_signals(run_dir, demo_dir, log, "stage1_step:3:SIGTERM")
    assert code == 0, text(log)[-3000:]
    assert "stopped by SIGTERM after stage-1 step 4 of 9" in out and \
        "to resume, run the same train command again" in out, out
    assert json.load(open(stage1_path)) == {"step": 4, "done": False}
    assert "stage1_working" in json.load(open(os.path.join(run_dir, "stage1", "tags.json")))

    # Two SIGINTs after the resumed run's first step (step 5): the first asks for a clean stop
    # after the next step, the second ends the process at once (the kernel's default action),
    # so step 6 never runs and nothing more is saved. A single SIGINT during LoAd, and exact
    # resume after it, is in test_train_e2e's kill/resume run.
    code, _ = run_with_signals(run_dir, demo_dir, log, "stage1_step:1:SIGINT,SIGINT")
    assert code == -signal.SIGINT, text(log)[-2000:]
    # The first signal's log line goes through the stderr filter's copier thread; the second
    # signal ends the process at once, possibly before the copier forwards it (seen in CI): it is
    # never there twice, and the state below shows the first signal did not save step 5.
    assert text(log).count("SIGINT received: finishing the current step") <= 1
    assert "Traceback" not in text(log)
    assert "stage 1: resuming at step 4" in text(log)
    assert json.load(open(stage1_path)) == {"step": 4, "done": False}


HOLD_LOCK = """
import sys, time
from deeplab_load.training.safety import run_lock
run_lock.lock_run_dir(sys.argv[1])
print("locked", flush=True)
time.sleep(120)
"""


@pytest.mark.slow
def test_second_train_on_a_locked_run_dir_is_refused_naming_the_pid(tmp_path):
    demo_dir, run_dir = str(tmp_path / "demo"), str(tmp_path / "run")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, run_dir], env=environment(),
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        second = subprocess.run(train_command(run_dir, demo_dir), cwd=REPO, env=environment(),
                                capture_output=True, text=True, timeout=300)
        assert second.returncode != 0
        assert f"is in use by another train process (pid {holder.pid}" in second.stderr
        assert os.listdir(run_dir) == ["train.lock"]      # nothing else written
    finally:
        holder.kill()
        holder.wait()


def test_kill_point_sends_a_handled_signal_at_its_nth_pass(monkeypatch):
    """The deterministic trigger the kill/resume test stops its run with: no timing involved."""
    from deeplab_load.training.safety import interrupts, kill_points
    monkeypatch.setattr(kill_points, "_passes", {})
    monkeypatch.setenv(kill_points.ENV_VAR, "propagation_start:2:SIGINT")
    with interrupts.stop_on_signals():
        kill_points.kill_if_reached("propagation")          # another point: not counted
        kill_points.kill_if_reached("propagation_start")
        assert not interrupts.requested()
        kill_points.kill_if_reached("propagation_start")
        assert interrupts.requested()
        with pytest.raises(interrupts.TrainingInterrupted, match="stopped by SIGINT before x"):
            interrupts.raise_if_requested("before x")
    for bad in ("propagation_start:2:SIGHUP", "propagation_start:2:SIGINT,SIGHUP",
                "propagation_start:0", "nowhere:1"):
        monkeypatch.setenv(kill_points.ENV_VAR, bad)
        with pytest.raises(ValueError, match="DEEPLAB_LOAD_TEST_KILL_AT"):
            kill_points.reached("propagation_start")


SIGNALLED_TWICE = """
from deeplab_load.training.safety import interrupts, kill_points
with interrupts.stop_on_signals():
    kill_points.kill_if_reached("propagation_start")
    print("first pass", flush=True)
    kill_points.kill_if_reached("propagation_start")
    print("second pass", flush=True)
    interrupts.raise_if_requested("at the end")
"""


@pytest.mark.parametrize("signals", ["SIGTERM", "SIGTERM,SIGTERM", "SIGINT,SIGINT"])
def test_a_kill_point_can_deliver_a_second_signal_that_ends_the_process(signals):
    """One handled signal only asks for a stop; a second one at the same pass ends the process
    at once by that signal (the handler restored the default action)."""
    env = dict(environment(), DEEPLAB_LOAD_TEST_KILL_AT=f"propagation_start:2:{signals}")
    proc = subprocess.run([sys.executable, "-c", SIGNALLED_TWICE], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    name = signals.split(",")[0]
    assert proc.stderr.count(f"{name} received: finishing the current step") == 1, proc.stderr
    if "," in signals:
        assert proc.returncode == -getattr(signal, name) and proc.stdout == "first pass\n"
    else:
        assert proc.returncode == 1 and proc.stdout == "first pass\nsecond pass\n"
        assert f"TrainingInterrupted: stopped by {name} at the end" in proc.stderr
