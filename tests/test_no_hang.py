"""A bad example in any input pipeline ends the run with the named error, and the process exits.

The exit hang of issue 11 came from a tf.data iterator that outlived the error: the traceback
kept it until interpreter shutdown, where its destructor waits for loader threads that can no
longer take the GIL (see deeplab_load/data/batches.py). The in-process tests check that cause
directly -- no tf.data iterator is reachable from the raised error -- for every pipeline that
reads through tf.data; the subprocess test checks the process behaviour: each pipeline, run as
its own process (all at once, so the CPU is busy) with the error left uncaught, exits non-zero,
names the file, and does not hang.
"""
import gc
import os
import re
import subprocess
import sys
import time
import types

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from deeplab_load import evaluation as evaluate
from deeplab_load.data import BadExampleError, get_dataset, pipeline
from deeplab_load.data.batches import Batches
from deeplab_load.training import map_sets, steps
from deeplab_load.checkpoints.store import CheckpointStore
from deeplab_load.training.holdout import HoldoutEvaluator
from deeplab_load.training.stage1 import run_stage1
from deeplab_load.training.strategy import make_strategy
from fake_datasets import make_fake_voc

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SIZE = (33, 33)


def tf_iterators_reachable(error, limit=2_000_000):
    """tf.data iterators reachable from `error` (traceback frames' locals, context, cause),
    not counting what is reachable only through modules, classes or module globals."""
    from tensorflow.python.data.ops.iterator_ops import OwnedIterator
    module_dicts = {id(vars(m)) for m in list(sys.modules.values()) if m is not None}
    seen, stack, found = set(), [error], []
    while stack and len(seen) < limit:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, OwnedIterator) or type(obj).__name__ == "DistributedIterator":
            found.append(obj)
            continue
        if isinstance(obj, (type, types.ModuleType)) or id(obj) in module_dicts:
            continue
        stack.extend(gc.get_referents(obj))
    assert len(seen) < limit, "reachability walk hit its limit"
    return found


def _break_label(path, value=77):
    label = np.array(Image.open(path))
    label[:4] = value
    Image.fromarray(label, mode="L").save(path)


@pytest.fixture(scope="module")
def bad_voc(tmp_path_factory):
    tree = make_fake_voc(tmp_path_factory.mktemp("voc"), num_train=6, num_val=4, size=SIZE)
    ds = get_dataset("voc", tree.data_dir)
    bad_train, bad_val = ds.examples("train")[3], ds.examples("val")[1]
    _break_label(bad_train.label_path)
    _break_label(bad_val.label_path)
    return ds, bad_train.label_path, bad_val.label_path


@pytest.fixture(scope="module")
def tiny_model(bad_voc):
    """A 1x1 convolution: logits [B,H,W,K] of pixels (the pipelines need no more)."""
    tf.keras.utils.set_random_seed(0)
    inputs = tf.keras.Input((None, None, 3))
    return tf.keras.Model(inputs,
                          tf.keras.layers.Conv2D(bad_voc[0].info.num_classes, 1)(inputs))


def _assert_clean_error(excinfo, path):
    error = excinfo.value
    assert isinstance(error, BadExampleError), type(error)
    assert path in str(error) and len(str(error).splitlines()) <= 2
    assert tf_iterators_reachable(error) == []


def test_plain_tf_data_error_keeps_the_iterator_alive(bad_voc):
    """The mechanism the tests below rely on: without Batches the error holds the iterator."""
    ds, bad_train, _ = bad_voc
    with pytest.raises(tf.errors.OpError) as excinfo:
        for _ in pipeline.train_dataset(ds, "train", 2, SIZE, seed=0):
            pass
    assert tf_iterators_reachable(excinfo.value)
    with pytest.raises(BadExampleError) as excinfo:
        for _ in Batches(pipeline.train_dataset(ds, "train", 2, SIZE, seed=0)):
            pass
    _assert_clean_error(excinfo, bad_train)


def test_stage1(bad_voc, tiny_model, tmp_path):
    ds, bad_train, _ = bad_voc
    strategy = make_strategy("default")
    with strategy.scope():
        optimizer = steps.stage1_optimizer(1e-4, 0.9)
        trainer = steps.Stage1Trainer(tiny_model, optimizer, strategy, ds.info.num_classes)
    store = CheckpointStore(str(tmp_path / "stage1"), model=tiny_model, optimizer=optimizer)
    with pytest.raises(BadExampleError) as excinfo:
        run_stage1(trainer, store, ds, str(tmp_path), split="train", batch_size=2,
                   crop_size=SIZE, weighted_epochs=0, plain_epochs=2, seed=0)
    _assert_clean_error(excinfo, bad_train)


def test_evaluate_holdout_and_map_sets(bad_voc, tiny_model, tmp_path):
    ds, bad_train, bad_val = bad_voc
    with pytest.raises(BadExampleError) as excinfo:
        evaluate.evaluate(tiny_model, ds, "val", batch_size=2, eval_crop_size=SIZE)
    _assert_clean_error(excinfo, bad_val)
    with pytest.raises(BadExampleError) as excinfo:
        HoldoutEvaluator(tiny_model, ds, ds.examples("val"), 2, SIZE).mean_iou()
    _assert_clean_error(excinfo, bad_val)
    with pytest.raises(BadExampleError) as excinfo:
        map_sets.write_label_map_set(tiny_model, ds, ds.examples("train"), str(tmp_path / "s"),
                                     2, SIZE)
    _assert_clean_error(excinfo, bad_train)
    with pytest.raises(BadExampleError) as excinfo:  # the discriminator's data
        for _ in Batches(map_sets.real_examples(ds, ds.examples("train"), 17, seed=0)):
            pass
    _assert_clean_error(excinfo, bad_train)


def test_loop_body_error_closes_the_stream(bad_voc):
    """An error of the loop body (e.g. a NaN loss) leaves no iterator behind either."""
    ds, _, _ = bad_voc
    good = [r for r in ds.examples("val") if r.id != ds.examples("val")[1].id]
    with pytest.raises(FloatingPointError) as excinfo:
        with Batches(pipeline.eval_dataset(ds, good, 1, SIZE)) as batches:
            for _ in batches:
                raise FloatingPointError("loss is nan")
    assert batches.closed and tf_iterators_reachable(excinfo.value) == []


PIPELINES = ("stage1", "evaluate", "predict", "map_sets", "holdout")
EXIT_SECONDS = 120  # after the error is printed; interpreter shutdown of TF under load is ~20 s


def _start(command, log_path, env):
    with open(log_path, "w") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)


@pytest.mark.slow
def test_every_pipeline_exits_after_its_error(tmp_path):
    """Each pipeline in its own process, all at once (a busy CPU is when the hang showed)."""
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    commands = {name: [sys.executable, os.path.join(HERE, "pipeline_error_worker.py"), name,
                       str(tmp_path / name)] for name in PIPELINES}
    tree = make_fake_voc(tmp_path / "records_data", num_train=6, num_val=0, size=SIZE)
    bad_record = get_dataset("voc", tree.data_dir).examples("train")[2].label_path
    _break_label(bad_record)
    commands["build_tfrecords"] = [
        sys.executable, "-m", "deeplab_load_tools.build_tfrecords", "--dataset=voc",
        f"--data_dir={tree.data_dir}", "--split=train", f"--output_dir={tmp_path / 'records'}"]
    logs = {name: tmp_path / f"{name}.log" for name in commands}
    processes = {name: _start(command, logs[name], env) for name, command in commands.items()}
    finished, deadline = {}, time.monotonic() + 600
    while len(finished) < len(processes) and time.monotonic() < deadline:
        for name, process in processes.items():
            if name not in finished and process.poll() is not None:
                finished[name] = time.time()
        time.sleep(0.2)
    for name, process in processes.items():
        if name not in finished:
            process.kill()
            process.wait()
            pytest.fail(f"{name}: still running after 600 s (hang):\n"
                        f"{logs[name].read_text()[-3000:]}")
    for name, process in processes.items():
        output = logs[name].read_text()
        assert process.returncode not in (0, -6), f"{name} exit {process.returncode}:\n{output}"
        bad = bad_record if name == "build_tfrecords" else re.search(
            r"^BAD_FILE (.+)$", output, re.M).group(1)
        expected = f"error: {bad}" if name == "build_tfrecords" else f"BadExampleError: {bad}"
        assert expected in output, f"{name}:\n{output[-3000:]}"
        error_at = re.search(r"^ERROR_AT ([\d.]+)$", output, re.M)
        if name != "build_tfrecords":
            assert finished[name] - float(error_at.group(1)) < EXIT_SECONDS, name
        if name == "map_sets":
            assert f"D_DATA_ERROR BadExampleError {bad}" in output
    assert os.listdir(tmp_path / "records") == []  # no half-written shards
