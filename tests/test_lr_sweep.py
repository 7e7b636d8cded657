"""python -m deeplab_load_tools.lr_sweep on a tiny demo configuration: one row per rate, resume, lr 0 holds still."""
import json
import os
import subprocess
import sys

import pytest

from test_train_e2e import REPO, TINY_FLAGS, environment

SWEEP_FLAGS = [f for f in TINY_FLAGS
               if not f.startswith(("--max_propagations", "--disc_max_epochs", "--psi_max"))] + [
    "--max_propagations=3", "--disc_max_epochs=1", "--psi_max=1",
    "--learning_rates=0,0.001"]


def run_sweep(sweep_dir, demo_dir, extra=()):
    proc = subprocess.run(
        [sys.executable, "-m", "deeplab_load_tools.lr_sweep", f"--sweep_dir={sweep_dir}",
         f"--dataset_dir={demo_dir}", *SWEEP_FLAGS, *extra],
        cwd=REPO, env=environment(), capture_output=True, text=True, timeout=1200)
    return proc


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    sweep_dir = str(tmp_path_factory.mktemp("sweep") / "sweep")
    demo_dir = str(tmp_path_factory.mktemp("demo") / "demo")
    proc = run_sweep(sweep_dir, demo_dir)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return sweep_dir, demo_dir


@pytest.mark.slow
def test_sweep_writes_one_row_per_rate_from_one_start(finished):
    sweep_dir, _ = finished
    report = json.load(open(os.path.join(sweep_dir, "sweep.json")))
    rows = report["rows"]
    assert [row["learning_rate"] for row in rows] == [0.0, 0.001]
    holdout = open(os.path.join(sweep_dir, "stage1", "holdout_ids.txt")).read().split()
    for row in rows:
        assert 1 <= row["propagations"] <= 3
        assert row["discriminator_rounds"] and row["wall_time_s"] > 0
        run_dir = os.path.join(sweep_dir, f"lr_{row['learning_rate']:g}")
        assert open(os.path.join(run_dir, "holdout_ids.txt")).read().split() == holdout
        flags_txt = open(os.path.join(run_dir, "flags.txt")).read()
        assert f"--adv_learning_rate={row['learning_rate']}" in flags_txt
        assert "--stage1=off" in flags_txt
    # Both runs start from the same stage-1 model: the same hold-out start.
    assert rows[0]["holdout_start"] == rows[1]["holdout_start"]
    # lr 0 with the frozen generator (default): the hold-out mIoU never moves.
    zero = rows[0]
    assert zero["holdout_min"] == zero["holdout_max"] == zero["holdout_start"]
    assert zero["peaks"] == 0
    markdown = open(os.path.join(sweep_dir, "sweep.md")).read()
    assert sum(line.startswith("| 0 |") or line.startswith("| 0.001 |")
               for line in markdown.splitlines()) == 2


@pytest.mark.slow
def test_a_second_run_resumes_from_the_finished_rates(finished):
    sweep_dir, demo_dir = finished
    markers = [os.path.join(sweep_dir, name) for name in ("lr_0.json", "lr_0.001.json")]
    before = {path: os.path.getmtime(path) for path in markers}
    os.remove(markers[1])         # as if killed before the second rate's marker
    proc = run_sweep(sweep_dir, demo_dir)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert os.path.getmtime(markers[0]) == before[markers[0]]
    assert "lr_0 done, read from" in proc.stderr
    rows = json.load(open(os.path.join(sweep_dir, "sweep.json")))["rows"]
    assert [row["learning_rate"] for row in rows] == [0.0, 0.001]
    # The second rate's finished run was resumed, not redone: LoAd reports it already done.
    assert "LoAd: resuming" in proc.stderr


def test_bad_learning_rates_are_refused_naming_the_flag(tmp_path):
    for value, message in (("abc", "not numbers"), ("-1e-3", "values >= 0"),
                           ("1e-3,0.001", "repeats")):
        proc = subprocess.run(
            [sys.executable, "-m", "deeplab_load_tools.lr_sweep",
             f"--sweep_dir={tmp_path / 'sweep'}", f"--learning_rates={value}"],
            cwd=REPO, env=environment(), capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2, proc.stderr
        assert "--learning_rates=" in proc.stderr and message in proc.stderr, proc.stderr
    assert not (tmp_path / "sweep").exists()
