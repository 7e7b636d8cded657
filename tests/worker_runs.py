"""Helpers for tests that run tests/multiworker_worker.py in subprocesses and compare weights."""
import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent


def free_ports(count):
    """`count` free localhost TCP ports."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("localhost", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def run_worker(strategy, out, checkpoint, tf_config=None, **flags):
    """Starts multiworker_worker.py writing its weights to `out` (TF_CONFIG only if given)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    command = [sys.executable, str(HERE / "multiworker_worker.py"), "--strategy", strategy,
               "--out", str(out), "--checkpoint", checkpoint]
    command += [f"--{key}={value}" for key, value in flags.items()]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def wait_all(processes, timeout):
    """Waits for every process, asserting success; kills the ones still running on failure."""
    try:
        for process in processes:
            output, _ = process.communicate(timeout=timeout)
            assert process.returncode == 0, output[-3000:]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()


def max_weight_diff(first, second, prefix):
    """Largest absolute difference over the arrays whose key starts with `prefix`."""
    keys = [k for k in first.files if k.startswith(prefix)]
    assert keys
    return max(float(np.abs(first[k] - second[k]).max()) for k in keys)
