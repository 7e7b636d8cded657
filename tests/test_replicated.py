"""Hold-out evaluation, map sets and evaluation on every replica: the numbers and files of one
device (tests/replicated_eval_worker.py runs each layout in its own process)."""
import filecmp
import os
import subprocess
import sys

import numpy as np
import pytest

from deeplab_load.replicated import groups
from worker_runs import free_ports, wait_all

HERE = os.path.dirname(os.path.abspath(__file__))
TIMEOUT_S = 900


def test_groups_cut_batches_into_replica_groups():
    assert list(groups(range(5), 2)) == [[0, 1], [2, 3], [4]]
    assert list(groups(iter(range(4)), 2)) == [[0, 1], [2, 3]]
    assert list(groups([], 3)) == []


def test_strategy_flag_offers_the_training_strategies():
    from deeplab_load import cli
    from deeplab_load.training.strategy import STRATEGY_KINDS
    assert cli.STRATEGY_KINDS == STRATEGY_KINDS


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    sys.path.insert(0, HERE)
    from replicated_eval_worker import demo_dataset
    path = str(tmp_path_factory.mktemp("demo") / "demo")
    demo_dataset(path)          # made once here, read by every worker
    return path


def start(strategy, demo_dir, out, dtype="float32", tf_config=None):
    import json
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return subprocess.Popen(
        [sys.executable, os.path.join(HERE, "replicated_eval_worker.py"), "--strategy", strategy,
         "--demo_dir", demo_dir, "--out", str(out), "--dtype", dtype],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def assert_same_results(single_dir, other_dir, replicas):
    single = np.load(os.path.join(single_dir, "result.npz"))
    other = np.load(os.path.join(other_dir, "result.npz"))
    assert int(single["replicas"]) == 1 and int(other["replicas"]) == replicas
    keys = [k for k in single.files if k.startswith(("confusion_", "map_"))]
    assert len(keys) == 3 + 3 * 5
    for key in keys + ["evaluation", "set_count"]:
        np.testing.assert_array_equal(single[key], other[key], err_msg=key)
    # the states differ from each other and the maps are not one class: the comparison can fail
    assert not np.array_equal(single["confusion_0"], single["confusion_1"])
    assert len(np.unique(np.concatenate([single[k].ravel() for k in keys
                                         if k.startswith("map_")]))) >= 2
    names = sorted(os.listdir(os.path.join(single_dir, "set")))
    assert len(names) == 5 and names == sorted(os.listdir(os.path.join(other_dir, "set")))
    for name in names:
        assert filecmp.cmp(os.path.join(single_dir, "set", name),
                           os.path.join(other_dir, "set", name), shallow=False), name


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_two_replicas_give_one_devices_holdout_maps_sets_and_evaluation(demo_dir, tmp_path,
                                                                        dtype):
    """1 replica vs 2 (two logical CPU devices): 5 images at batch 2 leave the second replica
    without a batch in the last group."""
    processes = [start(kind, demo_dir, tmp_path / kind, dtype) for kind in ("default", "mirrored")]
    wait_all(processes, TIMEOUT_S)
    assert_same_results(tmp_path / "default", tmp_path / "mirrored", 2)


@pytest.mark.slow
def test_two_workers_give_one_workers_holdout_maps_sets_and_evaluation(demo_dir, tmp_path):
    """1 worker vs 2 MultiWorkerMirroredStrategy workers on localhost (TF_CONFIG): both workers
    hold every map (gathered) and write the whole set, each in its own folder."""
    cluster = {"worker": [f"localhost:{port}" for port in free_ports(2)]}
    processes = [start("multi_worker", demo_dir, tmp_path / f"worker{index}",
                       tf_config={"cluster": cluster, "task": {"type": "worker", "index": index}})
                 for index in range(2)]
    processes.append(start("default", demo_dir, tmp_path / "single"))
    wait_all(processes, TIMEOUT_S)
    for index in range(2):
        assert_same_results(tmp_path / "single", tmp_path / f"worker{index}", 2)
    assert bool(np.load(tmp_path / "worker0" / "result.npz")["chief"])
    assert not bool(np.load(tmp_path / "worker1" / "result.npz")["chief"])
