"""`python -m deeplab_load_tools.ablation` end to end on a tiny demo configuration (every arm,
its resume, an interrupted arm, --arms), and the arm selection, step budget and report maths in
process."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from test_train_e2e import REPO, TINY_FLAGS, environment

from deeplab_load import metrics
from deeplab_load.errors import FlagError
from deeplab_load.evaluation_stats.per_image import PerImageResults
from deeplab_load.evaluation_stats.structure import StructureStats
from deeplab_load.experiments.ablation import arm_names, report
from deeplab_load.experiments.ablation.config import AblationConfig
from deeplab_load.experiments.ablation.runner import Ablation
from deeplab_load.checkpoints.store import read_tags
from deeplab_load.training import pictures

SEED = 3
ADV_LR = 0.005
ABLATION_FLAGS = [f for f in TINY_FLAGS
                  if not f.startswith(("--seed", "--max_propagations", "--disc_max_epochs",
                                       "--psi_max"))] + [
    "--max_propagations=3", "--disc_max_epochs=1", "--psi_max=1", f"--seed={SEED}",
    "--num_seeds=1", "--hybrid_weights=0.1", "--bootstrap_resamples=1000",
    # A generator step large enough to change the tiny model's maps within 3 steps.
    f"--adv_learning_rate={ADV_LR}"]
ALL_ARMS = arm_names.arm_ids(arm_names.GROUPS, (0.1,))


def run_ablation(ablation_dir, demo_dir, extra=(), env=None, check=True):
    proc = subprocess.run(
        [sys.executable, "-m", "deeplab_load_tools.ablation",
         f"--ablation_dir={ablation_dir}", f"--dataset_dir={demo_dir}", *ABLATION_FLAGS,
         *extra], cwd=REPO, env=env or environment(), capture_output=True, text=True,
        timeout=1800)
    if check:
        assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    ablation_dir = str(tmp_path_factory.mktemp("ablation") / "ablation")
    demo_dir = str(tmp_path_factory.mktemp("demo") / "demo")
    run_ablation(ablation_dir, demo_dir)
    return ablation_dir, demo_dir


def read_json(*parts):
    with open(os.path.join(*parts), encoding="utf-8") as f:
        return json.load(f)


def read_events(run_dir):
    with open(os.path.join(run_dir, "events.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def model_weights(store_dir, tag):
    """{variable: array} of the model in a CheckpointStore snapshot."""
    prefix = os.path.join(store_dir, read_tags(os.path.join(store_dir, "tags.json"))[tag],
                          "ckpt")
    reader = tf.train.load_checkpoint(prefix)
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if name.startswith("model/")}


def confusions(ablation_dir, figures):
    return PerImageResults.load(os.path.join(ablation_dir,
                                             figures["report"]["per_image"])).confusions


@pytest.mark.slow
def test_every_arm_runs_with_loads_step_budget_and_its_mechanism(finished):
    ablation_dir, _ = finished
    for name in ("ablation.md", "ablation.json", "ablation.png", "stage1.json",
                 "stage1/holdout_ids.txt", "stage1/baseline.per_image.npz", "changes_load.png"):
        assert os.path.exists(os.path.join(ablation_dir, name)), name
    # The changes picture has a title row, then a caption and a strip per report-split image
    # (val minus the hold-out: at most pictures.CHANGED_PICTURES), then the legend.
    with Image.open(os.path.join(ablation_dir, "changes_load.png")) as picture:
        assert picture.width >= pictures.MIN_CHANGES_WIDTH
        assert picture.height > 3 * pictures.TEXT_ROW
    saved = read_json(ablation_dir, "ablation.json")
    arms = saved["results"][str(SEED)]
    assert list(arms) == ALL_ARMS or sorted(arms) == sorted(ALL_ARMS)
    seed_dir = os.path.join(ablation_dir, f"seed_{SEED}")
    budget = arms["load"]["steps"]
    assert budget >= 1
    for arm in ("cross_entropy", "adversarial_last", "adversarial_best", "hybrid_0.1_last",
                "hybrid_0.1_best"):
        assert arms[arm]["steps"] == budget, arm
    # Controller-driven arms are capped at the budget and may stop earlier.
    for arm in ("cross_entropy_selected", "selection_only"):
        assert 1 <= arms[arm]["steps"] <= budget, arm
    # Every arm is judged on the same images: val (8) minus the hold-out.
    holdout = open(os.path.join(ablation_dir, "stage1", "holdout_ids.txt")).read().split()
    for arm in ALL_ARMS:
        assert arms[arm]["report"]["num_images"] == 8 - len(holdout), arm
        assert arms[arm]["wall_time_s"] > 0, arm
        assert arms[arm]["report"]["structure"]["num_objects"] > 0, arm

    # (b): CE with the generator's optimizer (momentum 0.95), not stage 1's (demo: lr 0.05).
    ce = arms["cross_entropy"]
    assert ce["optimizer"] == pytest.approx({"learning_rate": ADV_LR, "momentum": 0.95})
    assert ce["loss"] != ce["first_loss"]
    # (b'): CE steps under the controller; its decisions are in its events, no D trained, and
    # the selected model is the best hold-out model of the run (when one beat the start).
    selected = arms["cross_entropy_selected"]
    assert selected["optimizer"] == ce["optimizer"]
    events = read_events(os.path.join(seed_dir, "cross_entropy_selected"))
    propagations = [e for e in events if e["kind"] == "propagation"]
    assert len(propagations) == selected["steps"]
    assert all(set(e["losses"]) == {"cross_entropy"} for e in propagations)
    assert [e["metrics"] for e in events if e["kind"] == "discriminator"] == [{}]
    assert {"start", "cycle_start", "done"} <= {e["kind"] for e in events}
    buffer_dir = os.path.join(seed_dir, "cross_entropy_selected", "buffer")
    sets = [d for d in os.listdir(buffer_dir) if d.startswith("set_")]
    assert sets and all(os.listdir(os.path.join(buffer_dir, d)) == ["NO_MAPS.txt"] for d in sets)
    assert selected["decisions"]["propagation"] == selected["steps"]
    start_mu = events[0]["mu"]
    best_mu = max(e["mu"] for e in propagations)
    expected = best_mu if selected["decisions"]["new_best"] else start_mu
    assert selected["holdout_miou_final"] == expected
    assert selected["final_tag"] == ("g_best" if selected["decisions"]["new_best"] else "g_s")
    # (c)/(d) and (f): D rounds logged, the best model is the best hold-out step.
    for name in ("adversarial", "hybrid_0.1"):
        last, best = arms[f"{name}_last"], arms[f"{name}_best"]
        assert last["discriminator_rounds"] and last["holdout_miou"] == best["holdout_miou"]
        trace = best["holdout_miou"]
        assert len(trace) == budget + 1 and trace[best["best_step"]] == max(trace)
    assert arms["hybrid_0.1_last"]["hybrid_weight"] == 0.1
    assert arms["adversarial_last"]["hybrid_weight"] is None
    # (e) and (g): whole LoAd runs with D rounds; (g) at lr 0 leaves the weights exactly as
    # stage 1 ended them, so it predicts as the baseline, yet its controller decided as LoAd's.
    assert arms["load"]["discriminator_rounds"] and arms["selection_only"]["discriminator_rounds"]
    assert arms["selection_only"]["learning_rate"] == 0.0
    null_weights = model_weights(os.path.join(seed_dir, "selection_only", "generator"), "final")
    stage1_weights = model_weights(os.path.join(ablation_dir, "stage1", "stage1"), "stage1")
    assert null_weights.keys() == stage1_weights.keys() and null_weights
    for name, value in stage1_weights.items():
        np.testing.assert_array_equal(null_weights[name], value, err_msg=name)
    np.testing.assert_array_equal(confusions(ablation_dir, arms["selection_only"]),
                                  confusions(ablation_dir, arms["baseline"]))
    null_events = read_events(os.path.join(seed_dir, "selection_only"))
    assert sum(e["kind"] == "propagation" for e in null_events) == arms["selection_only"]["steps"]
    assert arms["selection_only"]["decisions"]["reason"] in ("max_propagations",
                                                             "no_peak_in_psi_cycles")
    # The report: every arm, intervals against the baseline and LoAd.
    summary = saved["summary"]
    assert summary["arms"]["selection_only"]["vs_baseline"]["low"] == 0.0
    assert summary["arms"]["selection_only"]["vs_baseline"]["high"] == 0.0
    assert summary["arms"]["load"]["vs_load"]["difference"] == 0.0
    markdown = open(os.path.join(ablation_dir, "ablation.md")).read()
    for letter in ("(a)", "(b)", "(b')", "(c)", "(d)", "(e)", "(f)", "(g)"):
        assert f"| {letter} " in markdown, letter
    assert "bootstrap intervals (1000 resamples" in markdown and "round 0" in markdown


def arm_markers(seed_dir, arms):
    return [os.path.join(seed_dir, f"{arm}.json") for arm in arms if arm != "baseline"]


@pytest.mark.slow
def test_a_second_run_reads_every_finished_arm_back(finished):
    ablation_dir, demo_dir = finished
    markers = arm_markers(os.path.join(ablation_dir, f"seed_{SEED}"), ALL_ARMS)
    before = {path: os.path.getmtime(path) for path in markers}
    table = open(os.path.join(ablation_dir, "ablation.md")).read()
    run_ablation(ablation_dir, demo_dir)
    assert {path: os.path.getmtime(path) for path in markers} == before
    assert open(os.path.join(ablation_dir, "ablation.md")).read() == table


@pytest.mark.slow
def test_an_interrupted_arm_reruns_to_the_same_result_and_arms_selects(finished, tmp_path):
    ablation_dir, demo_dir = finished
    copy = str(tmp_path / "ablation")
    shutil.copytree(ablation_dir, copy)
    seed_dir = os.path.join(copy, f"seed_{SEED}")
    for arm in ("adversarial_last", "adversarial_best"):
        for suffix in (".json", ".per_image.npz", ".per_image.json"):
            os.remove(os.path.join(seed_dir, arm + suffix))
    # Killed (SIGKILL) at the start of the arm's second generator step.
    killed = run_ablation(copy, demo_dir, ["--arms=adversarial"], check=False,
                          env=dict(environment(),
                                   DEEPLAB_LOAD_TEST_KILL_AT="propagation_start:2"))
    assert killed.returncode != 0
    assert not os.path.exists(os.path.join(seed_dir, "adversarial_last.json"))
    run_ablation(copy, demo_dir, ["--arms=adversarial"])
    original = read_json(ablation_dir, "ablation.json")["results"][str(SEED)]
    rerun = read_json(copy, "ablation.json")["results"][str(SEED)]
    # --arms: only the baseline and the selected group are reported.
    assert sorted(rerun) == ["adversarial_best", "adversarial_last", "baseline"]
    for arm in ("adversarial_last", "adversarial_best"):
        timeless = lambda figures: {k: v for k, v in figures.items() if k != "wall_time_s"}
        assert timeless(rerun[arm]) == timeless(original[arm]), arm
        np.testing.assert_array_equal(confusions(copy, rerun[arm]),
                                      confusions(ablation_dir, original[arm]))


# Fast tests: arm selection, the step budget, the report's intervals.

def test_arms_flag_selects_groups_and_arm_ids():
    assert arm_names.parse_groups("all") == arm_names.GROUPS
    assert arm_names.parse_groups("load, baseline") == ("baseline", "load")
    with pytest.raises(ValueError, match="unknown arm group.*nope"):
        arm_names.parse_groups("load,nope")
    ids = arm_names.arm_ids(arm_names.parse_groups("hybrid,cross_entropy_selected"), (0.01, 0.1))
    assert ids == ["baseline", "cross_entropy_selected", "hybrid_0.01_last", "hybrid_0.01_best",
                   "hybrid_0.1_last", "hybrid_0.1_best"]
    assert arm_names.letter("cross_entropy_selected") == "(b')"
    assert arm_names.title("hybrid_0.1_best").startswith("(f) + CE + 0.1 adv")
    assert AblationConfig(groups=("load", "adversarial")).groups == ("adversarial", "load")
    with pytest.raises(ValueError, match="num_seeds.*arm_steps"):
        AblationConfig(num_seeds=0, arm_steps=-1)


def test_step_budget_is_arm_steps_or_the_load_arms_propagations(tmp_path):
    def budget(config, results):
        return Ablation(None, config, str(tmp_path))._budget(0, str(tmp_path), results)

    assert budget(AblationConfig(arm_steps=7), {"load": {"steps": 3}}) == 7
    assert budget(AblationConfig(), {"load": {"steps": 3}}) == 3
    with pytest.raises(FlagError, match="load.json does not exist.*add load to --arms or "
                                         "pass --arm_steps"):
        budget(AblationConfig(groups=("cross_entropy",)), {})
    with open(tmp_path / "load.json", "w") as f:       # LoAd ran in an earlier call
        json.dump({"steps": 5}, f)
    assert budget(AblationConfig(groups=("cross_entropy",)), {}) == 5


K_CLASSES, N_IMAGES = 3, 12


def save_per_image(path, confusions):
    n = confusions.shape[0]
    structure = StructureStats(
        num_objects=np.full(n, 4), num_pure=np.full(n, 3), num_correct_pure=np.full(n, 2),
        gt_components=np.ones((n, K_CLASSES), np.int64),
        predicted_components=np.full((n, K_CLASSES), 2, np.int64))
    PerImageResults(ids=[f"i{i}" for i in range(n)], confusions=confusions,
                    structure=structure, class_names=("a", "b", "c")).save(path)
    return structure.summary(("a", "b", "c"))


def arm_figures(ablation_dir, name, confusions, extra=None):
    path = os.path.join(ablation_dir, f"{name}.npz")
    structure = save_per_image(path, confusions)
    matrix = confusions.sum(axis=0)
    summary = metrics.results_dict(matrix, ("a", "b", "c"))
    return dict({"steps": 4, "wall_time_s": 1.5, "report": {
        "split": "test", "miou": summary["miou"], "per_class_iou": summary["per_class_iou"],
        "class_names": summary["class_names"], "num_images": confusions.shape[0],
        "structure": structure, "per_image": f"{name}.npz"}}, **(extra or {}))


def confusions_of(rng, accuracy):
    """int [N, K, K]: per image, `accuracy` of 100 pixels per class on the diagonal."""
    out = np.zeros((N_IMAGES, K_CLASSES, K_CLASSES), np.int64)
    for image in range(N_IMAGES):
        for k in range(K_CLASSES):
            right = int(rng.binomial(100, accuracy))
            out[image, k, k] = right
            out[image, k, (k + 1) % K_CLASSES] = 100 - right
    return out


def test_report_intervals_an_arm_against_itself_is_zero_and_a_better_arm_is_positive(tmp_path):
    rng = np.random.default_rng(0)
    ablation_dir = str(tmp_path)
    baseline = arm_figures(ablation_dir, "baseline", confusions_of(rng, 0.6))
    results = {}
    for seed in (0, 1, 2):
        results[seed] = {
            "baseline": baseline,
            "load": arm_figures(ablation_dir, f"load_{seed}", confusions_of(rng, 0.8), {
                "discriminator_rounds": [{"accuracy": 0.7 + 0.01 * seed},
                                         {"accuracy": 0.9}]}),
            "cross_entropy": arm_figures(ablation_dir, f"ce_{seed}", confusions_of(rng, 0.6))}
    config = AblationConfig(groups=("cross_entropy", "load"), bootstrap_resamples=2000)
    summary = report.summarize(results, ablation_dir, config)
    assert summary["order"] == ["baseline", "cross_entropy", "load"]
    load = summary["arms"]["load"]
    # Against itself: difference and both interval ends exactly 0.
    for entry in (load["vs_load"], summary["arms"]["baseline"]["vs_baseline"]):
        assert (entry["difference"], entry["low"], entry["high"]) == (0.0, 0.0, 0.0)
    assert entry["num_resamples"] == 2000
    # 80% vs 60% of pixels right: a clearly positive, paired, interval.
    vs_baseline = load["vs_baseline"]
    assert 0 < vs_baseline["low"] < vs_baseline["difference"] < vs_baseline["high"]
    assert vs_baseline["num_seeds"] == 3 and vs_baseline["num_images"] == N_IMAGES
    assert load["miou"] == [results[s]["load"]["report"]["miou"] for s in (0, 1, 2)]
    assert load["discriminator_rounds"] == [[0.7, 0.71, 0.72], [0.9, 0.9, 0.9]]
    assert summary["arms"]["cross_entropy"]["discriminator_rounds"] == []
    assert load["structure"]["pure_share"] == [0.75] * 3
    text = report.format_markdown(summary, "t")
    assert "| (e) + LoAd |" in text and "+0.00 [+0.00, +0.00]" in text
    assert "| (e) + LoAd | 70.00" not in text and "round 1" in text
    assert "75.00 ± 0.00" in text and "2.00 ± 0.00" in text     # pure share, components ratio
    report.write_report(results, ablation_dir, config)
    for name in ("ablation.md", "ablation.json", "ablation.png"):
        assert os.path.exists(os.path.join(ablation_dir, name))


def test_mean_std():
    assert report.mean_std([0.5, 0.7, None]) == pytest.approx((0.6, 0.1414213))
    assert report.mean_std([0.4]) == (0.4, 0.0)
    assert report.mean_std([None]) == (None, None)


class ScriptedGenerator:
    """The generator side of `LoAdTrainingHooks` as a script: hold-out mIoU per step, snapshots
    as the step they were taken at; any discriminator call fails."""

    def __init__(self, mious):
        self.mious, self.step, self.snapshots, self.events = mious, 0, {}, []

    def adversarial_step(self, propagation):
        self.step = propagation
        return {"generator_loss": 1.0 / propagation}

    def evaluate(self):
        return self.mious[self.step]

    def save_working(self, propagation):
        self.snapshots[f"working_{propagation}"] = self.step

    def restore_working(self, propagation):
        self.step = self.snapshots[f"working_{propagation}"]

    def save_model(self, tag):
        self.snapshots[tag] = self.step

    def copy_model(self, src_tag, dst_tag):
        self.snapshots[dst_tag] = self.snapshots[src_tag]

    def restore_model(self, tag):
        self.step = self.snapshots[tag]

    def on_event(self, event):
        self.events.append(event)

    def write_map_set(self, tag, set_dir):
        raise AssertionError("arm (b') wrote label maps")

    def train_discriminator(self, set_dirs, round):
        raise AssertionError("arm (b') trained a discriminator")

    def restore_discriminator(self, round):
        raise AssertionError("arm (b') restored a discriminator")


def test_cross_entropy_under_the_controller_logs_decisions_and_selects_the_best(tmp_path):
    from deeplab_load.experiments.ablation import arms
    from deeplab_load.lookahead.controller import LoAdConfig

    # Hold-out mIoU after steps 0..6: a peak at step 2, then a decline (the cycle diverges).
    generator = ScriptedGenerator([0.50, 0.52, 0.60, 0.55, 0.40, 0.30, 0.20])
    config = type("Config", (), {"run": type("Run", (), {"seed": 0})})
    job = type("Job", (), {"local_dir": str(tmp_path), "config": config})
    config = LoAdConfig(beta_l=0.05, beta_u=0.001, gamma_max=3, psi_max=1, omega_max=5,
                        b_max=3, max_propagations=6)
    result, history = arms.run_controller(job, arms.WithoutDiscriminator(generator), config)
    kinds = [e["kind"] for e in history]
    assert kinds.count("new_best") == 2 and "peak" in kinds and "cycle_end" in kinds
    assert [e["metrics"] for e in history if e["kind"] == "discriminator"] == [{}, {}]
    assert all(set(e["losses"]) == {"cross_entropy"} for e in history
               if e["kind"] == "propagation")
    assert generator.events == history                 # delivered to the wrapped hooks' log
    # Selection: the returned model is the best hold-out step, not the last.
    assert result.final_tag == "g_best" and result.mu_final == 0.60
    assert generator.snapshots["g_best"] == 2
    buffer_dir = tmp_path / "buffer"
    sets = [d for d in os.listdir(buffer_dir) if d.startswith("set_")]
    assert sets and all(os.listdir(buffer_dir / d) == [arms.NO_MAPS_FILE] for d in sets)


def test_report_split_is_the_test_split_else_val_minus_the_hold_out(tmp_path):
    from deeplab_load.data import get_dataset
    from deeplab_load.experiments.ablation.runner import report_target
    from deeplab_load.training.config import TrainConfig

    f = TrainConfig()
    bench = get_dataset("bench", str(tmp_path / "bench"), num_train=2, num_val=3, num_test=4,
                        image_size=(49, 49))
    holdout = bench.examples("val")[:1]
    assert report_target(bench, f, holdout) == ("test", None, "test")
    demo = get_dataset("demo", str(tmp_path / "demo"), num_train=2, num_val=3,
                       image_size=(33, 33))
    holdout = demo.examples("val")[:1]
    split, refs, label = report_target(demo, f, holdout)
    assert (split, label) == ("val", "val minus hold-out")
    assert [r.id for r in refs] == [r.id for r in demo.examples("val")[1:]]
    with pytest.raises(ValueError, match="report split is empty"):
        report_target(demo, f, demo.examples("val"))
