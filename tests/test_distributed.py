"""MultiWorkerMirroredStrategy: two workers on localhost vs one worker, same global batches."""
import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

HERE = pathlib.Path(__file__).resolve().parent
TIMEOUT_S = 900


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("localhost", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def launch(strategy, out, checkpoint, tf_config=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    command = [sys.executable, str(HERE / "multiworker_worker.py"), "--strategy", strategy,
               "--out", str(out), "--checkpoint", checkpoint]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def max_diff(first, second, prefix):
    keys = [k for k in first.files if k.startswith(prefix)]
    assert keys
    return max(float(np.abs(first[k] - second[k]).max()) for k in keys)


@pytest.mark.slow
def test_two_workers_match_each_other_and_a_single_worker(make_golden_checkpoint, tmp_path):
    checkpoint = make_golden_checkpoint("manifest_mobilenetv2_voc_os16.json")
    cluster = {"worker": [f"localhost:{port}" for port in free_ports(2)]}
    processes = [launch("multi_worker", tmp_path / f"worker{index}.npz", checkpoint,
                        {"cluster": cluster, "task": {"type": "worker", "index": index}})
                 for index in range(2)]
    processes.append(launch("default", tmp_path / "single.npz", checkpoint))
    try:
        for process in processes:
            output, _ = process.communicate(timeout=TIMEOUT_S)
            assert process.returncode == 0, output[-3000:]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    worker0, worker1, single = (np.load(tmp_path / f"{name}.npz")
                                for name in ("worker0", "worker1", "single"))
    assert int(worker0["replicas"]) == 2 and int(single["replicas"]) == 1
    assert bool(worker0["chief"]) and not bool(worker1["chief"]) and bool(single["chief"])
    assert max_diff(worker0, worker1, "g_") == 0.0          # replicas stay bit-identical
    assert max_diff(worker0, worker1, "d_") == 0.0
    np.testing.assert_allclose(worker0["stage1_losses"], single["stage1_losses"], rtol=1e-6)
    np.testing.assert_allclose(worker0["generator_losses"], single["generator_losses"], rtol=1e-6)
    assert max_diff(worker0, single, "s1_") < 1e-5           # after the stage-1 steps
    assert max_diff(worker0, single, "g_") < 1e-5            # after the adversarial steps too
    updates = max(float(np.abs(single[f"g_{i}"] - single[f"g0_{i}"]).max())
                  for i in range(sum(k.startswith("g0_") for k in single.files)))
    assert updates > 5e-5                                    # the steps changed the weights
