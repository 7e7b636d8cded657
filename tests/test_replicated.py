"""Hold-out evaluation, map sets, evaluation and prediction on every replica: the numbers and
files of one device (tests/replicated_eval_worker.py runs each layout in its own process)."""
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
    from deeplab_load import inference_configs
    from deeplab_load.training.strategy import STRATEGY_KINDS
    assert inference_configs.STRATEGY_KINDS == STRATEGY_KINDS
    assert inference_configs.EvaluateConfig().strategy == "auto"
    assert inference_configs.PredictConfig().strategy == "auto"


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
    for key in keys + ["evaluation", "evaluation_unpadded", "set_count"]:
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
    if bool(other["chief"]):
        names = sorted(os.listdir(os.path.join(single_dir, "predict")))
        assert len(names) == 5 and names == sorted(os.listdir(os.path.join(other_dir, "predict")))
        for name in names:
            assert filecmp.cmp(os.path.join(single_dir, "predict", name),
                               os.path.join(other_dir, "predict", name), shallow=False), name
    else:
        assert not os.path.exists(os.path.join(other_dir, "predict"))


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


LOAD_FLAGS = [
    "--demo_num_train=12", "--demo_num_val=8", "--demo_image_size=49,65",
    "--holdout_fraction=0.7", "--stage1_weighted_epochs=1", "--stage1_plain_epochs=2",
    "--stage1_batch_size=4", "--gamma_max=3", "--psi_max=2", "--omega_max=1",
    "--max_propagations=6", "--adv_batch_size=4", "--disc_input_size=32", "--disc_max_epochs=2",
    "--eval_batch_size=4", "--map_batch_size=4", "--seed=7", "--nofine_tune_batch_norm",
    "--noexport",
    # The generator is held (lr 0): its adversarial steps and D's training are not bit-identical
    # across replica layouts (float sums in another order; D's BatchNorm batch statistics are
    # per replica), so only the parts distributed here -- hold-out evaluations, map sets, the
    # final evaluation -- and the controller's decisions on them are compared.
    "--adv_learning_rate=0",
]


def train(run_dir, demo_dir, extra, logical_cpus=False):
    script = ([os.path.join(HERE, "train_on_logical_cpus.py")] if logical_cpus
              else ["-m", "deeplab_load.train"])
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=os.path.dirname(HERE))
    env.pop("TF_CONFIG", None)
    proc = subprocess.run([sys.executable, *script, f"--run_dir={run_dir}",
                           f"--dataset_dir={demo_dir}", *LOAD_FLAGS, *extra],
                          cwd=os.path.dirname(HERE), env=env, capture_output=True, text=True,
                          timeout=TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


@pytest.mark.slow
def test_two_replicas_make_one_devices_load_decisions_and_map_sets(tmp_path):
    """A tiny LoAd run on 1 replica (with stage 1), then on 2 replicas (two logical CPUs) from
    the first run's stage-1 result: the same events (D's metrics aside), hold-out mIoU per
    propagation, byte-identical buffer sets and the same evaluations (about 8 minutes on 2
    busy cores)."""
    import json
    from test_train_e2e import decisions
    demo_dir, single, double = (str(tmp_path / name) for name in ("demo", "single", "double"))
    train(single, demo_dir, ["--strategy=default"])
    proc = train(double, demo_dir, ["--strategy=mirrored", "--stage1=off",
                                    f"--initial_checkpoint={single}/stage1"], logical_cpus=True)
    assert "strategy MirroredStrategy with 2 replica(s)" in proc.stderr

    def without_d_metrics(run_dir):
        return [{k: v for k, v in event.items() if not (event["kind"] == "discriminator"
                                                          and k == "metrics")}
                for event in decisions(run_dir)]
    events = without_d_metrics(single)
    assert events == without_d_metrics(double)
    assert sum(e["kind"] == "propagation" for e in events) == 6
    assert any(e["kind"] == "cycle_end" for e in events)
    holdout = open(os.path.join(single, "holdout_ids.txt")).read().split()
    # uneven shares: 6 hold-out images are batches of 4 and 2; 12 training images are 3 map
    # batches of 4, so the second replica has no batch in the last group
    assert len(holdout) == 6
    set_names = sorted(n for n in os.listdir(os.path.join(single, "buffer"))
                       if n.startswith("set_"))
    assert len(set_names) >= 2
    assert set_names == sorted(n for n in os.listdir(os.path.join(double, "buffer"))
                               if n.startswith("set_"))
    for name in set_names:
        files = sorted(os.listdir(os.path.join(single, "buffer", name)))
        assert len(files) == 12 + 1                   # 12 PNGs and holdout_maps.npz
        assert files == sorted(os.listdir(os.path.join(double, "buffer", name)))
        for file in files:
            assert filecmp.cmp(os.path.join(single, "buffer", name, file),
                               os.path.join(double, "buffer", name, file), shallow=False)
    for part in ("baseline", "final", "baseline_unselected_val", "final_unselected_val"):
        first, second = (json.load(open(os.path.join(run, "results", part, "results.json")))
                         for run in (single, double))
        assert first["confusion_matrix"] == second["confusion_matrix"], part
