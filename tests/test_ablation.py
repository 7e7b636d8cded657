"""tools/ablation.py end to end on a tiny demo configuration, its resume, and its table maths."""
import json
import math
import os
import subprocess
import sys

import pytest

from test_train_e2e import REPO, TINY_FLAGS, environment

from deeplab_load.training import ablation_report
from deeplab_load.training.ablation import ARMS

ABLATION_FLAGS = [f for f in TINY_FLAGS
                  if not f.startswith(("--seed", "--max_propagations", "--disc_max_epochs"))] + [
    "--max_propagations=3", "--disc_max_epochs=1", "--psi_max=1", "--seed=3", "--num_seeds=2"]


def run_ablation(ablation_dir, demo_dir):
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "ablation.py"),
         f"--ablation_dir={ablation_dir}", f"--dataset_dir={demo_dir}", *ABLATION_FLAGS],
        cwd=REPO, env=environment(), capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    ablation_dir = str(tmp_path_factory.mktemp("ablation") / "ablation")
    demo_dir = str(tmp_path_factory.mktemp("demo") / "demo")
    run_ablation(ablation_dir, demo_dir)
    return ablation_dir, demo_dir


@pytest.mark.slow
def test_every_arm_runs_for_every_seed_with_loads_step_budget(finished):
    ablation_dir, _ = finished
    for name in ("ablation.md", "ablation.json", "ablation.png", "stage1.json",
                 "stage1/holdout_ids.txt"):
        assert os.path.exists(os.path.join(ablation_dir, name)), name
    report = json.load(open(os.path.join(ablation_dir, "ablation.json")))
    results = report["results"]
    assert sorted(results) == ["3", "4"]
    holdout = open(os.path.join(ablation_dir, "stage1", "holdout_ids.txt")).read().split()
    for seed, arms in results.items():
        assert sorted(arms) == sorted(ARMS)
        steps = arms["load"]["steps"]
        assert steps >= 1
        for arm in ("cross_entropy", "adversarial_last", "adversarial_best"):
            assert arms[arm]["steps"] == steps, (seed, arm)
        # Every arm is judged on the same unselected images: val (8) minus the hold-out.
        for arm in ARMS:
            assert arms[arm]["unselected_val"]["num_images"] == 8 - len(holdout), arm
            assert arms[arm]["val"]["num_images"] == 8, arm
        # The controls really trained: D rounds every gamma_max steps, a hold-out trace per
        # step, and the CE arm's steps changed the model (its loss moved).
        adversarial = arms["adversarial_last"]
        assert len(adversarial["holdout_miou"]) == steps + 1
        assert len(adversarial["discriminator_rounds"]) == math.ceil(steps / 3)
        assert arms["load"]["discriminator_rounds"]
        ce = arms["cross_entropy"]
        assert math.isfinite(ce["loss"]) and ce["loss"] != ce["first_loss"]
        # Each LoAd arm ran with its own seed from the shared start and hold-out.
        load_dir = os.path.join(ablation_dir, f"seed_{seed}", "load")
        assert open(os.path.join(load_dir, "holdout_ids.txt")).read().split() == holdout
        assert f"--seed={seed}" in open(os.path.join(load_dir, "flags.txt")).read()
    markdown = open(os.path.join(ablation_dir, "ablation.md")).read()
    for arm in ("(a)", "(b)", "(c)", "(d)", "(e)"):
        assert arm in markdown
    assert "unselected-val mIoU" in markdown and "LoAd minus (d)" in markdown


@pytest.mark.slow
def test_a_second_run_resumes_from_the_finished_arms(finished):
    ablation_dir, demo_dir = finished
    markers = [os.path.join(ablation_dir, f"seed_{s}", f"{arm}.json")
               for s in (3, 4) for arm in ARMS if arm != "baseline"]
    before = {path: os.path.getmtime(path) for path in markers}
    table = open(os.path.join(ablation_dir, "ablation.md")).read()
    run_ablation(ablation_dir, demo_dir)
    assert {path: os.path.getmtime(path) for path in markers} == before
    assert open(os.path.join(ablation_dir, "ablation.md")).read() == table


def test_mean_std_and_paired_difference():
    assert ablation_report.mean_std([0.5, 0.7, None]) == pytest.approx((0.6, 0.1414213))
    assert ablation_report.mean_std([0.4]) == (0.4, 0.0)
    assert ablation_report.mean_std([None]) == (None, None)

    def arm(miou):
        return {"val": {"miou": miou, "per_class_iou": {"a": miou}, "class_names": ["a"],
                        "num_images": 1},
                "unselected_val": {"miou": miou, "per_class_iou": {"a": miou},
                                   "class_names": ["a"], "num_images": 1}, "steps": 5}
    results = {s: {name: arm(0.5 + 0.01 * i + 0.001 * s) for i, name in enumerate(ARMS)}
               for s in (0, 1)}
    summary = ablation_report.summarize(results)
    assert summary["load_minus_adversarial_best"] == pytest.approx([0.01, 0.01])
    text = ablation_report.format_markdown(summary, "t")
    assert "54.05 ± 0.07" in text and "+1.00" in text
