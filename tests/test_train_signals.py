"""SIGTERM / SIGINT stop `train` at a saved point with exit 0 and a resume line; a second signal
exits at once; a second `train` on a locked run dir is refused naming the holder's pid."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from test_train_e2e import REPO, environment, train_command


def start(run_dir, demo_dir, log_path):
    log = open(log_path, "w", encoding="utf-8")
    proc = subprocess.Popen(train_command(run_dir, demo_dir, ["--checkpoint_every=100"]),
                            cwd=REPO, env=environment(), stdout=subprocess.PIPE, stderr=log,
                            text=True)
    log.close()
    return proc


def wait_until(proc, ready, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if ready():
            return
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"not ready before the process ended (exit {proc.poll()})")


def text(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def load_phase(run_dir):
    try:
        return json.load(open(os.path.join(run_dir, "state.json")))["phase"]
    except (OSError, ValueError):
        return None


@pytest.mark.slow
def test_sigterm_stops_at_a_saved_point_and_a_second_signal_exits_at_once(tmp_path):
    demo_dir, run_dir = str(tmp_path / "demo"), str(tmp_path / "run")
    log = str(tmp_path / "stderr.txt")

    # SIGTERM in stage 1: the step finishes, a checkpoint is written (none would be due before
    # step 100), exit 0 with how to resume.
    proc = start(run_dir, demo_dir, log)
    wait_until(proc, lambda: "stage 1: 9 steps" in text(log))
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, text(log)[-3000:]
    assert "stopped by SIGTERM after stage-1 step" in out and \
        "to resume, run the same train command again" in out, out
    state = json.load(open(os.path.join(run_dir, "stage1_state.json")))
    assert not state["done"] and 1 <= state["step"] < 9
    assert "stage1_working" in json.load(open(os.path.join(run_dir, "stage1", "tags.json")))

    # Two signals: the first asks for a clean stop, the second ends the process at once (the
    # kernel's default action: no wait for the step). A single SIGINT during LoAd, and exact
    # resume after it, is in test_train_e2e's kill/resume run.
    # The first comes right after stage 1, in the baseline evaluation: seconds before the next
    # point where the run could stop.
    stage1_path = os.path.join(run_dir, "stage1_state.json")
    proc = start(run_dir, demo_dir, log)
    wait_until(proc, lambda: json.load(open(stage1_path))["done"])
    proc.send_signal(signal.SIGINT)
    wait_until(proc, lambda: "SIGINT received" in text(log))
    sent = time.time()
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGINT and time.time() - sent < 5, text(log)[-2000:]
    assert "SIGINT received: finishing the current step" in text(log)
    assert "Traceback" not in text(log)
    assert f"stage 1: resuming at step {state['step']}" in text(log)


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
    for bad in ("propagation_start:2:SIGHUP", "propagation_start:0", "nowhere:1"):
        monkeypatch.setenv(kill_points.ENV_VAR, bad)
        with pytest.raises(ValueError, match="DEEPLAB_LOAD_TEST_KILL_AT"):
            kill_points.reached("propagation_start")
