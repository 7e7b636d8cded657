"""`python -m deeplab_load.train` end to end on a tiny demo set, and resume after SIGKILL."""
import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY_FLAGS = [
    "--demo_num_train=12", "--demo_num_val=8", "--demo_image_size=49,65",
    "--stage1_weighted_epochs=1", "--stage1_plain_epochs=2", "--stage1_batch_size=4",
    "--gamma_max=3", "--psi_max=2", "--omega_max=1", "--max_propagations=12",
    "--adv_batch_size=4", "--disc_input_size=32", "--disc_max_epochs=2", "--eval_batch_size=4",
    "--map_batch_size=4", "--seed=7",
    # The tiny model predicts only background; a generator in training mode (BatchNorm batch
    # statistics) still moves its hold-out mIoU, so LoAd has the peaks, reverts and cycles the
    # kill plan needs. The default frozen mode is tested in test_generator_mode / test_lr_sweep.
    "--adv_generator_mode=train",
]


def train_command(run_dir, demo_dir, extra=()):
    return [sys.executable, "-m", "deeplab_load.train", f"--run_dir={run_dir}",
            f"--dataset_dir={demo_dir}", *TINY_FLAGS, *extra]


def environment():
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO)


def run_to_end(run_dir, demo_dir, extra=()):
    proc = subprocess.run(train_command(run_dir, demo_dir, extra), cwd=REPO, env=environment(),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def decisions(run_dir):
    """The controller's event log, de-duplicated by seq, without wall-clock-dependent fields."""
    seen = {}
    with open(os.path.join(run_dir, "events.jsonl"), encoding="utf-8") as f:
        for line in f:
            event = json.loads(line)
            seen.setdefault(event["seq"], event)
    out = []
    for seq in sorted(seen):
        event = dict(seen[seq])
        event.pop("losses", None)
        event.pop("result", None)
        out.append(event)
    return out


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("demo") / "demo")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, demo_dir):
    run_dir = str(tmp_path_factory.mktemp("run") / "run")
    proc = run_to_end(run_dir, demo_dir)
    return run_dir, proc


@pytest.mark.slow
def test_run_dir_holds_every_output(finished_run):
    run_dir, proc = finished_run
    for name in ("flags.txt", "state.json", "events.jsonl", "holdout_ids.txt", "convergence.png",
                 "summary.json", "results/baseline/results.json", "results/final/results.json",
                 "results/final/results.md", "results/comparison.md",
                 "results/baseline_unselected_val/results.json",
                 "results/final_unselected_val/results.json", "export/saved_model.pb",
                 "generator/tags.json", "generator/model.json", "export/model.json",
                 "buffer/index.json"):
        assert os.path.exists(os.path.join(run_dir, name)), name
    assert os.listdir(os.path.join(run_dir, "tensorboard"))
    # The default output is the run's own: no checkpoint-sharding or TensorFlow start-up lines.
    for noise in ("Sharding callback duration", "oneDNN custom operations", "cuda"):
        assert noise not in proc.stderr, noise
    assert "LoAd propagation" in proc.stderr
    summary = json.load(open(os.path.join(run_dir, "summary.json")))
    # LoAd returns the best generator it saw: never worse than where it started.
    assert summary["holdout_miou_final"] >= summary["holdout_miou_start"]
    state = json.load(open(os.path.join(run_dir, "state.json")))
    assert state["phase"] == "done" and state["propagation"] >= 3
    assert "--beta_l=0.05" in open(os.path.join(run_dir, "flags.txt")).read()
    assert "LoAd propagation" in proc.stderr and "ETA" in proc.stderr
    comparison = open(os.path.join(run_dir, "results/comparison.md")).read()
    assert "| DeepLabv3+ & LoAd |" in comparison and "Unselected val" in comparison
    # Whole val = hold-out + unselected: the unselected part has the other images.
    whole = json.load(open(os.path.join(run_dir, "results/final/results.json")))
    part = json.load(open(os.path.join(run_dir, "results/final_unselected_val/results.json")))
    holdout = open(os.path.join(run_dir, "holdout_ids.txt")).read().split()
    assert whole["num_images"] == 8 and part["num_images"] == 8 - len(holdout)
    assert summary["final_unselected_miou"] == part["miou"]


@pytest.mark.slow
def test_discriminator_accuracy_is_logged_per_round_and_epoch(finished_run):
    import tensorflow as tf
    run_dir, proc = finished_run
    events = [json.loads(line) for line in open(os.path.join(run_dir, "events.jsonl"))]
    rounds = [e for e in events if e["kind"] == "discriminator"]
    assert rounds and [e["round"] for e in rounds] == list(range(len(rounds)))
    for event in rounds:
        metrics = event["metrics"]
        for name in ("accuracy", "real_accuracy", "fake_accuracy", "epoch_1_holdout_accuracy"):
            assert 0.0 <= metrics[name] <= 1.0, (name, metrics)
        warned = (f"discriminator round {event['round']} ends at hold-out accuracy"
                  in proc.stderr)
        assert warned == (metrics["accuracy"] <= 0.55), metrics
    tags = set()
    for path in os.listdir(os.path.join(run_dir, "tensorboard")):
        for record in tf.compat.v1.train.summary_iterator(
                os.path.join(run_dir, "tensorboard", path)):
            tags.update(value.tag for value in record.summary.value)
    assert {"discriminator/holdout_accuracy", "discriminator/holdout_real_accuracy",
            "discriminator/holdout_fake_accuracy", "discriminator_epoch/holdout_accuracy",
            "load/holdout_miou"} <= tags, sorted(tags)


@pytest.mark.slow
def test_run_shows_its_cycles_and_changes_as_pictures(finished_run):
    """TensorBoard: a strip [image | ground truth | g_s | generator] per hold-out image (up to
    HOLDOUT_PICTURES) at every cycle end; changes.png: the 6 val images changed most."""
    from PIL import Image
    from deeplab_load.training import pictures
    from test_pictures import png_summaries
    run_dir, _ = finished_run
    events = [json.loads(line) for line in open(os.path.join(run_dir, "events.jsonl"))]
    cycle_ends = [e["propagation"] for e in events if e["kind"] == "cycle_end"]
    holdout = open(os.path.join(run_dir, "holdout_ids.txt")).read().split()
    shown = min(len(holdout), pictures.HOLDOUT_PICTURES)
    found = png_summaries(os.path.join(run_dir, "tensorboard"))
    assert cycle_ends and sorted(found) == [f"cycle_end/holdout_{i}" for i in range(shown)]
    for strips in found.values():
        assert [step for step, _ in strips] == cycle_ends
        assert {strip.shape for _, strip in strips} == {(49, 4 * 65 + 3 * pictures.GAP, 3)}
    path = os.path.join(run_dir, "changes.png")
    assert json.load(open(os.path.join(run_dir, "summary.json")))["changes_picture"] == path
    rows = min(8, pictures.CHANGED_PICTURES)
    assert np.asarray(Image.open(path)).shape == (16 + rows * (16 + 49) + 16, 760, 3)


@pytest.mark.slow
def test_exported_model_gives_the_final_label_maps(finished_run, demo_dir):
    import tensorflow as tf
    from deeplab_load.data import get_dataset
    from deeplab_load.checkpoints.restore import restore_checkpoint
    from deeplab_load.inference import predict_labels
    from deeplab_load.models.deeplab import DeepLabConfig, build_deeplab
    run_dir, _ = finished_run
    ds = get_dataset("demo", demo_dir, num_train=12, num_val=8, image_size=(49, 65), seed=0)
    image, _ = ds.load(ds.examples("val")[0])
    model = build_deeplab(DeepLabConfig(backbone="mobilenet_v2", num_classes=ds.info.num_classes,
                                        output_stride=8, atrous_rates=(),
                                        decoder_output_stride=None))
    restore_checkpoint(model, os.path.join(run_dir, "generator"), "final")
    expected = predict_labels(model, image[None], ds.info.eval_crop_size).numpy()
    loaded = tf.saved_model.load(os.path.join(run_dir, "export"))
    got = loaded.signatures["serving_default"](tf.constant(image[None]))
    labels = [v for k, v in got.items() if v.dtype == tf.int32][0].numpy()
    np.testing.assert_array_equal(labels, expected)


def run_command(module, *args):
    proc = subprocess.run([sys.executable, "-m", f"deeplab_load.{module}", *args], cwd=REPO,
                          env=environment(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


@pytest.mark.slow
def test_commands_need_only_the_run_dir(finished_run, tmp_path):
    """evaluate / export / predict with --run_dir alone: the run's own final mIoU, and the
    labels of the run's export."""
    import tensorflow as tf
    from PIL import Image
    from deeplab_load.data import get_dataset
    run_dir, _ = finished_run
    spec = json.load(open(os.path.join(run_dir, "generator", "model.json")))
    assert spec["dataset"] == "demo" and spec["config"]["backbone"] == "mobilenet_v2"
    assert spec["data"]["options"]["num_val"] == 8 and spec["data"]["eval_split"] == "val"

    evaluated = run_command("evaluate", f"--run_dir={run_dir}", f"--output_dir={tmp_path / 'e'}")
    assert "Traceback" not in evaluated.stderr and "cuda" not in evaluated.stderr
    ours = json.load(open(tmp_path / "e" / "results.json"))
    final = json.load(open(os.path.join(run_dir, "results", "final", "results.json")))
    assert ours["num_images"] == final["num_images"] == 8
    assert abs(ours["miou"] - final["miou"]) < 1e-9, (ours["miou"], final["miou"])
    from deeplab_load.evaluation import run_evaluation
    from deeplab_load.inference_configs import EvaluateConfig
    from deeplab_load.checkpoints.model_source import ModelSource
    bf16 = run_evaluation(EvaluateConfig(model=ModelSource(run_dir=run_dir), dtype="bfloat16"),
                          log=lambda *a: None)
    assert bf16["dtype"] == "bfloat16" and "dtype" not in ours
    assert abs(bf16["miou"] - final["miou"]) < 0.02, (bf16["miou"], final["miou"])

    run_command("export", f"--run_dir={run_dir}", f"--export_dir={tmp_path / 'x'}")
    exported = json.load(open(tmp_path / "x" / "model.json"))
    assert exported["config"] == spec["config"]
    assert exported["eval_crop_size"] == spec["eval_crop_size"]

    run_command("predict", f"--run_dir={run_dir}", f"--output_dir={tmp_path / 'p'}",
                "--format=raw")
    ds = get_dataset("demo", spec["data"]["dataset_dir"], **spec["data"]["options"])
    os.makedirs(tmp_path / "photos")
    for ref in ds.examples("val"):  # the same images as a folder: padded like the split
        shutil.copy(ref.image_path, tmp_path / "photos")
    run_command("predict", f"--run_dir={run_dir}", f"--input_dir={tmp_path / 'photos'}",
                f"--output_dir={tmp_path / 'f'}", "--format=raw")
    serving = tf.saved_model.load(str(tmp_path / "x")).signatures["serving_default"]
    run_export = tf.saved_model.load(os.path.join(run_dir, "export")).signatures[
        "serving_default"]
    for ref in ds.examples("val"):
        image, _ = ds.load(ref)
        predicted = np.array(Image.open(tmp_path / "p" / f"{ref.id}.png"))
        expected = run_export(images=tf.constant(image[None]))["labels"].numpy()[0]
        np.testing.assert_array_equal(predicted, expected)
        np.testing.assert_array_equal(np.array(Image.open(tmp_path / "f" / f"{ref.id}.png")),
                                      expected)
        np.testing.assert_array_equal(
            serving(images=tf.constant(image[None]))["labels"].numpy()[0], expected)


@pytest.mark.slow
def test_existing_run_is_not_touched_without_resume(finished_run, demo_dir):
    run_dir, _ = finished_run
    before = open(os.path.join(run_dir, "state.json")).read()
    proc = subprocess.run(train_command(run_dir, demo_dir, ["--noresume"]), cwd=REPO,
                          env=environment(), capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "--resume" in proc.stderr
    assert open(os.path.join(run_dir, "state.json")).read() == before


def events_with_values(run_dir):
    """Every event of the log by seq (a resent event once), losses and D metrics included."""
    seen = {}
    with open(os.path.join(run_dir, "events.jsonl"), encoding="utf-8") as f:
        for line in f:
            event = json.loads(line)
            assert seen.setdefault(event["seq"], event) == event, event["seq"]
    return [seen[seq] for seq in sorted(seen)]


# (kill point, how many passes of it the process may make before the kill: the seeded pick is
# in 1..max). In order, each in a process that resumes the run the previous kill left.
KILL_PLAN = (("stage1_step", 3), ("stage1_step", 3), ("map_batch", 3), ("disc_epoch", 2),
             ("propagation", 3), ("event_torn", 4), ("disc_epoch", 2), ("propagation", 3))
KILLED_RUN_FLAGS = ["--checkpoint_every=2", "--noexport"]


@pytest.mark.slow
def test_sigkill_at_seeded_points_of_every_phase_then_resume_gives_the_same_run(
        finished_run, demo_dir, tmp_path):
    """One run SIGKILLed (by itself, `safety.kill_points`) at 8 seeded points: twice in stage
    1, in map-set generation, in D training, after a generator step, mid-write of events.jsonl,
    in D's next round and in the next cycle; resumed after each; then stopped once by SIGINT in
    the propagation loop (exit 0, by the same self-signalling mechanism, so nothing depends on
    timing) and resumed to the end. Decisions, every loss and D metric, and the
    final metrics equal the uninterrupted run's."""
    import random
    reference_dir, _ = finished_run
    run_dir = str(tmp_path / "killed")
    rng = random.Random(11)
    kills, stderr = [], []
    for point, most in KILL_PLAN:
        passes = rng.randint(1, most)
        env = dict(environment(), DEEPLAB_LOAD_TEST_KILL_AT=f"{point}:{passes}")
        proc = subprocess.run(train_command(run_dir, demo_dir, KILLED_RUN_FLAGS),
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == -signal.SIGKILL, (point, passes, proc.stderr[-3000:])
        state_path = os.path.join(run_dir, "state.json")
        phase = json.load(open(state_path))["phase"] if os.path.exists(state_path) else None
        kills.append((point, passes, phase))
        print("killed at", kills[-1], flush=True)
        stderr.append(proc.stderr)
    # and a SIGINT in the propagation loop: the process sends it to itself when its first
    # generator step starts (the last kill fell after a generator step, so every resumed run
    # redoes one), a clean stop (exit 0)
    env = dict(environment(), DEEPLAB_LOAD_TEST_KILL_AT="propagation_start:1:SIGINT")
    proc = subprocess.run(train_command(run_dir, demo_dir, KILLED_RUN_FLAGS), cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    out = proc.stdout
    assert proc.returncode == 0 and "stopped by SIGINT before LoAd propagation" in out, (
        out, proc.stderr[-3000:])
    assert "SIGINT received: finishing the current step" in proc.stderr
    stderr.append(proc.stderr)
    kills.append(("SIGINT", 1, json.load(open(os.path.join(run_dir, "state.json")))["phase"]))
    print("stopped at", kills[-1], flush=True)
    final = run_to_end(run_dir, demo_dir, KILLED_RUN_FLAGS)
    stderr.append(final.stderr)
    # the kills fell in stage 1 (no LoAd state yet), LoAd's start and later cycles
    assert [k[2] for k in kills[:2]] == [None, None], kills
    assert {k[2] for k in kills[2:]} >= {"init_buffer", "init_discriminator", "propagate",
                                          "cycle_end"}, kills
    log = "\n".join(stderr)
    assert "stage 1: resuming at step" in log and "events.jsonl: line" in log
    assert "predates random-state" not in log
    assert events_with_values(run_dir) == events_with_values(reference_dir)
    reference = json.load(open(os.path.join(reference_dir, "summary.json")))
    resumed = json.load(open(os.path.join(run_dir, "summary.json")))
    for key in ("final_tag", "propagations", "cycles", "peaks", "holdout_miou_start",
                "holdout_miou_final", "baseline_miou", "final_miou", "final_unselected_miou"):
        assert resumed[key] == reference[key], key
    assert (json.load(open(os.path.join(run_dir, "stage1_state.json"))) ==
            json.load(open(os.path.join(reference_dir, "stage1_state.json"))))


def launch_two_workers(run_dir, demo_dir, extra):
    from worker_runs import free_ports
    cluster = {"worker": [f"localhost:{port}" for port in free_ports(2)]}
    processes = []
    for index in range(2):
        env = dict(environment(), TF_CONFIG=json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": index}}))
        processes.append(subprocess.Popen(train_command(run_dir, demo_dir, extra), cwd=REPO,
                                          env=env, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.PIPE, text=True))
    results = []
    try:
        for process in processes:
            _, err = process.communicate(timeout=600)
            results.append((process.returncode, err))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    return results


@pytest.mark.slow
def test_two_workers_run_the_same_load_decisions(finished_run, demo_dir, tmp_path):
    """The same train command under MultiWorkerMirroredStrategy (TF_CONFIG, two workers on
    localhost), with DeepLab's frozen BatchNorm: both workers make every LoAd decision alike."""
    run_dir = str(tmp_path / "multiworker")
    for returncode, err in launch_two_workers(
            run_dir, demo_dir, ["--noexport", "--max_propagations=6", "--nofine_tune_batch_norm"]):
        assert returncode == 0, err[-4000:]
    worker_dir = os.path.join(run_dir, "worker_tmp_1")
    assert decisions(run_dir) == decisions(worker_dir)
    assert any(e["kind"] == "cycle_end" for e in decisions(run_dir))
    chief = json.load(open(os.path.join(run_dir, "summary.json")))
    other = json.load(open(os.path.join(worker_dir, "summary.json")))
    for key in ("final_tag", "propagations", "cycles", "holdout_miou_final", "final_miou"):
        assert chief[key] == other[key], key


@pytest.mark.slow
def test_two_workers_refuse_per_replica_batch_norm(finished_run, demo_dir, tmp_path):
    results = launch_two_workers(str(tmp_path / "refused"), demo_dir, ["--fine_tune_batch_norm"])
    for returncode, err in results:
        assert returncode != 0 and "--fine_tune_batch_norm" in err
