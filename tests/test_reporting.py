"""Whole-val and unselected-val results of a run, and their comparison table."""
import numpy as np
import pytest
import tensorflow as tf

from deeplab_load import evaluation
from deeplab_load.data import get_dataset
from deeplab_load.models.deeplab import DeepLabConfig, build_deeplab
from deeplab_load.training import reporting


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    ds = get_dataset("demo", str(tmp_path_factory.mktemp("demo") / "demo"), num_train=2,
                     num_val=5, image_size=(33, 41), seed=5)
    tf.keras.utils.set_random_seed(3)
    model = build_deeplab(DeepLabConfig(backbone="mobilenet_v2",
                                        num_classes=ds.info.num_classes, output_stride=16,
                                        atrous_rates=(), decoder_output_stride=None))
    return ds, model


def test_whole_split_is_holdout_plus_unselected(setup, tmp_path):
    ds, model = setup
    val = ds.examples("val")
    holdout = [val[1], val[3]]
    parts = reporting.evaluate_or_load(model, ds, "val", holdout, 2, (33, 41), str(tmp_path),
                                       "baseline", "test model")
    direct = evaluation.evaluate(model, ds, "val", 2, (33, 41))
    np.testing.assert_array_equal(parts["val"]["confusion_matrix"], direct["confusion_matrix"])
    assert parts["val"]["miou"] == pytest.approx(direct["miou"])
    unselected = evaluation.evaluate(model, ds, [val[0], val[2], val[4]], 2, (33, 41))
    np.testing.assert_array_equal(parts["unselected_val"]["confusion_matrix"],
                                  unselected["confusion_matrix"])
    assert parts["unselected_val"]["num_images"] == 3 and parts["val"]["num_images"] == 5
    assert parts["val"]["holdout_images"] == 2
    # Read back, not recomputed, on a second call.
    again = reporting.evaluate_or_load(None, ds, "val", holdout, 2, (33, 41), str(tmp_path),
                                       "baseline", "test model")
    assert again["unselected_val"]["miou"] == parts["unselected_val"]["miou"]
    path = reporting.write_comparison(parts, again, str(tmp_path / "comparison.md"))
    text = open(path).read()
    assert "Whole val split" in text and "Unselected val" in text and "2 hold-out" in text


def test_holdout_covering_the_whole_split_has_no_unselected_part(setup):
    ds, model = setup
    parts = reporting.evaluate_parts(model, ds, "val", ds.examples("val"), 2, (33, 41), "m")
    assert parts["unselected_val"] is None and parts["val"]["num_images"] == 5


def test_results_are_read_back_only_when_every_worker_has_them(setup, tmp_path, monkeypatch):
    """A worker that has the results but whose peers do not (they crashed between the workers'
    writes) evaluates again with them instead of reading back and leaving them waiting."""
    ds, model = setup
    holdout = ds.examples("val")[:2]
    first = reporting.evaluate_or_load(model, ds, "val", holdout, 2, (33, 41), str(tmp_path),
                                       "baseline", "test model")
    asked = []
    monkeypatch.setattr(reporting, "on_every_worker",
                        lambda strategy, flag: asked.append(flag) or False)
    calls = []
    original = reporting.evaluate_parts
    monkeypatch.setattr(reporting, "evaluate_parts",
                        lambda *a, **k: calls.append(1) or original(*a, **k))
    again = reporting.evaluate_or_load(model, ds, "val", holdout, 2, (33, 41), str(tmp_path),
                                       "baseline", "test model")
    assert asked == [True] and calls == [1]
    np.testing.assert_array_equal(again["val"]["confusion_matrix"],
                                  first["val"]["confusion_matrix"])


def test_on_every_worker_is_a_collective_and_over_a_single_device_the_flag_itself():
    """Under MultiWorkerMirroredStrategy (one local worker, in a child process: collectives must
    be set up before TensorFlow runs anything) the flag goes through the all-gather."""
    import os
    import subprocess
    import sys
    probe = (
        "import tensorflow as tf\n"
        "strategy = tf.distribute.MultiWorkerMirroredStrategy()\n"
        "from deeplab_load.training import strategy as s\n"
        "calls = []\n"
        "original = s.worker_gather\n"
        "s.worker_gather = lambda st: (calls.append(1), original(st))[1]\n"
        "print('RESULT', s.on_every_worker(strategy, True), s.on_every_worker(strategy, False),\n"
        "      s.on_every_worker(tf.distribute.get_strategy(), True), len(calls))\n")
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")][-1]
    assert line.split()[1:] == ["True", "False", "True", "2"]
