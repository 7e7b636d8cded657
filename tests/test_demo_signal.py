"""The shipped demo, as `python -m deeplab_load.train` runs it: its stage-1 baseline segments and
its round-0 discriminator (ground truth vs g0's maps) leaves chance on the hold-out images."""
import json
import os
import subprocess
import sys

import pytest

from test_train_e2e import REPO, environment


@pytest.mark.slow
def test_demo_baseline_segments_and_round0_discriminator_discriminates(tmp_path):
    run_dir = tmp_path / "run"
    env = dict(environment(), DEEPLAB_LOAD_CACHE=str(tmp_path / "cache"))
    proc = subprocess.run(
        [sys.executable, "-m", "deeplab_load.train", f"--run_dir={run_dir}",
         "--max_propagations=1", "--noexport"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.load(open(run_dir / "summary.json"))
    assert summary["baseline_miou"] >= 0.5, summary
    assert summary["holdout_images"] >= 30, summary
    assert summary["baseline_unselected_miou"] is not None
    events = [json.loads(line) for line in open(run_dir / "events.jsonl")]
    round0 = next(e for e in events if e["kind"] == "discriminator" and e["round"] == 0)
    metrics = round0["metrics"]
    assert metrics["accuracy"] >= 0.8, metrics
    assert metrics["real_accuracy"] >= 0.7 and metrics["fake_accuracy"] >= 0.7, metrics
    # Per-epoch accuracies are in the event too, and the log says them.
    assert metrics["epoch_1_holdout_accuracy"] >= 0.0
    assert "discriminator round 0 epoch 1: hold-out accuracy" in proc.stderr
    assert os.listdir(run_dir / "tensorboard")
