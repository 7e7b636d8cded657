"""MultiWorkerMirroredStrategy: two workers on localhost vs one worker, same global batches."""
import numpy as np
import pytest

from worker_runs import free_ports, max_weight_diff as max_diff, run_worker, wait_all

TIMEOUT_S = 900


@pytest.mark.slow
def test_two_workers_match_each_other_and_a_single_worker(make_golden_checkpoint, tmp_path):
    checkpoint = make_golden_checkpoint("manifest_mobilenetv2_voc_os16.json")
    cluster = {"worker": [f"localhost:{port}" for port in free_ports(2)]}
    processes = [run_worker("multi_worker", tmp_path / f"worker{index}.npz", checkpoint,
                            {"cluster": cluster, "task": {"type": "worker", "index": index}})
                 for index in range(2)]
    processes.append(run_worker("default", tmp_path / "single.npz", checkpoint))
    wait_all(processes, TIMEOUT_S)
    worker0, worker1, single = (np.load(tmp_path / f"{name}.npz")
                                for name in ("worker0", "worker1", "single"))
    assert int(worker0["replicas"]) == 2 and int(single["replicas"]) == 1
    assert bool(worker0["chief"]) and not bool(worker1["chief"]) and bool(single["chief"])
    assert max_diff(worker0, worker1, "g_") == 0.0          # replicas stay bit-identical
    assert max_diff(worker0, worker1, "d_") == 0.0
    # Losses are float32 sums whose order differs between layouts: equal to ~2e-6.
    np.testing.assert_allclose(worker0["stage1_losses"], single["stage1_losses"], rtol=1e-5)
    np.testing.assert_allclose(worker0["generator_losses"], single["generator_losses"], rtol=1e-5)
    assert max_diff(worker0, single, "s1_") < 1e-5           # after the stage-1 steps
    assert max_diff(worker0, single, "g_") < 1e-5            # after the adversarial steps too
    updates = max(float(np.abs(single[f"g_{i}"] - single[f"g0_{i}"]).max())
                  for i in range(sum(k.startswith("g0_") for k in single.files)))
    assert updates > 5e-5                                    # the steps changed the weights
