"""Exact resume and damaged files: random-generator state in checkpoints, damaged checkpoints /
tags / states named (with a fallback to the previous stage-1 snapshot), events.jsonl torn-line
recovery, the run-dir lock. The kill/resume run is in test_train_e2e.py, signals in
test_train_signals.py."""
import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplab_load.checkpoints.restore import restore_checkpoint
from deeplab_load.checkpoints.store import CheckpointStore, read_model_weights
from deeplab_load.errors import DamagedFileError
from deeplab_load.training import stage1
from deeplab_load.training.safety import run_lock
from deeplab_load.training.events import EventLog


def dropout_model(seed=3):
    """Dense -> Dropout(0.5): its output in training mode depends on the dropout RNG state."""
    inputs = keras.Input([16])
    outputs = keras.layers.Dropout(0.5, seed=seed)(keras.layers.Dense(16, name="dense")(inputs))
    return keras.Model(inputs, outputs)


def draw(model):
    return model(tf.ones([2, 16]), training=True).numpy()


def truncate_data_file(store, tag):
    folder = os.path.join(store.root, store.tags[tag])
    data = [n for n in os.listdir(folder) if ".data-" in n][0]
    path = os.path.join(folder, data)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    return folder


def test_dropout_random_state_is_saved_and_restored(tmp_path):
    model = dropout_model()
    store = CheckpointStore(str(tmp_path / "store"), model=model)
    assert any(name.startswith("random_state/") for name in store.tables["model"])
    draw(model)
    store.save("working")
    expected = draw(model)           # the masks an uninterrupted run draws next
    draw(model)
    store.restore("working")
    np.testing.assert_array_equal(draw(model), expected)
    # a fresh process: a new model (same seed) resumes the same draws
    other = dropout_model()
    CheckpointStore(str(tmp_path / "store"), model=other).restore("working")
    np.testing.assert_array_equal(draw(other), expected)


def test_checkpoints_without_random_state_still_restore(tmp_path, caplog):
    model = dropout_model()
    weights_only = {v.path: v for v in model.weights}
    folder = tmp_path / "old" / "ckpt_000000"
    tf.train.Checkpoint(model=weights_only).write(str(folder / "ckpt"))
    (tmp_path / "old" / "tags.json").write_text(json.dumps({"g_best": "ckpt_000000"}))
    fresh = dropout_model()
    store = CheckpointStore(str(tmp_path / "old"), model=fresh)
    store.restore("g_best")
    assert "predates random-state checkpointing" in caplog.text
    for a, b in zip(model.get_weights(), fresh.get_weights()):
        np.testing.assert_array_equal(a, b)
    # and a weights-only reader takes a new checkpoint (random state present) too
    new = CheckpointStore(str(tmp_path / "new"), model=model)
    new.save("g_best")
    reader = dropout_model()
    read_model_weights(reader, new.prefix("g_best"))
    for a, b in zip(model.get_weights(), reader.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_truncated_checkpoint_names_the_folder(tmp_path):
    model = dropout_model()
    store = CheckpointStore(str(tmp_path), model=model)
    store.save("g_best")
    folder = truncate_data_file(store, "g_best")
    with pytest.raises(DamagedFileError, match=f"{folder}: checkpoint is damaged"):
        store.restore("g_best")
    with pytest.raises(DamagedFileError, match=folder):
        read_model_weights(dropout_model(), store.prefix("g_best"))


@pytest.mark.parametrize("content", ["{\"g_best\": \"ckpt_0", "[1, 2]", "\xff"])
def test_corrupt_tags_json_is_named(tmp_path, content):
    (tmp_path / "tags.json").write_text(content, encoding="latin-1")
    with pytest.raises(DamagedFileError, match="tags.json"):
        CheckpointStore(str(tmp_path), model=dropout_model())
    if content.startswith("["):
        return    # valid JSON: restore.tagged_prefix's own checks apply
    with pytest.raises(DamagedFileError, match="tags.json is damaged"):
        restore_checkpoint(dropout_model(), str(tmp_path))


def test_stage1_resumes_from_the_previous_snapshot_when_the_latest_is_damaged(tmp_path, caplog):
    step_counter = tf.Variable(0.0)
    store = CheckpointStore(str(tmp_path / "stage1"), model=step_counter)
    state_path = str(tmp_path / stage1.STATE_FILE)
    state = {"step": 0, "done": False}
    for step in (2, 4):
        step_counter.assign(float(step))
        state = stage1.save_working(store, state_path, state, step)
    assert state == {"step": 4, "done": False, "previous_step": 2}
    step_counter.assign(-1.0)
    assert stage1.restore_working(store, stage1.read_state(state_path, store.root))["step"] == 4
    assert step_counter.numpy() == 4.0
    truncate_data_file(store, stage1.WORKING_TAG)
    restored = stage1.restore_working(store, stage1.read_state(state_path, store.root))
    assert restored == {"step": 2, "done": False} and step_counter.numpy() == 2.0
    assert "resuming stage 1 from the snapshot before, at step 2" in caplog.text
    # the damaged snapshot is dropped: the next save keeps a readable previous one
    state = stage1.save_working(store, state_path, restored, 3)
    assert state["previous_step"] == 2
    # no earlier snapshot: the error says how to redo stage 1
    truncate_data_file(store, stage1.WORKING_TAG)
    with pytest.raises(DamagedFileError, match="no earlier snapshot: delete .*stage1"):
        stage1.restore_working(store, {"step": 3, "done": False})


def test_corrupt_stage1_state_is_named(tmp_path):
    path = tmp_path / stage1.STATE_FILE
    for content in ("{\"step\": 4, \"do", "{\"step\": \"4\"}"):
        path.write_text(content)
        with pytest.raises(DamagedFileError, match="stage1_state.json.*redo stage 1"):
            stage1.read_state(str(path), "stage1")


# events.jsonl

def test_torn_last_event_line_is_cut_off_and_written_again(tmp_path, caplog):
    path = tmp_path / "events.jsonl"
    log = EventLog(path)
    for seq in (1, 2):
        log.append({"kind": "propagation", "seq": seq, "mu": 0.5})
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"kind": "propag')        # killed mid-append of seq 3
    log = EventLog(path)
    assert log.last_seq == 2 and path.read_bytes() == whole
    assert "line 3 is incomplete" in caplog.text
    log.append({"kind": "propagation", "seq": 3, "mu": 0.5})
    assert [json.loads(line)["seq"] for line in path.read_text().splitlines()] == [1, 2, 3]


def test_damaged_event_line_before_the_end_is_named(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text('{"seq": 1}\nnot json\n{"seq": 3}\n')
    with pytest.raises(DamagedFileError, match="events.jsonl: line 2 is not an event"):
        EventLog(path)


def test_event_log_refuses_nan(tmp_path):
    with pytest.raises(ValueError):
        EventLog(tmp_path / "events.jsonl").append({"seq": 1, "mu": float("nan")})
    assert not (tmp_path / "events.jsonl").exists() or \
        (tmp_path / "events.jsonl").read_text() == ""


# One process per run dir.

HOLD_LOCK = """
import sys, time
from deeplab_load.training.safety import run_lock
run_lock.lock_run_dir(sys.argv[1])
print("locked", flush=True)
time.sleep(60)
"""


def test_run_dir_lock_refuses_a_second_holder_naming_its_pid(tmp_path):
    run_dir = str(tmp_path / "run")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, run_dir],
                              env=dict(os.environ, PYTHONPATH=os.path.dirname(
                                  os.path.dirname(os.path.abspath(__file__)))),
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(run_lock.RunDirBusyError,
                           match=f"in use by another train process \\(pid {holder.pid},"):
            run_lock.lock_run_dir(run_dir)
    finally:
        holder.kill()
        holder.wait()
    # the kernel dropped the dead holder's lock: a stale lock file does not block
    with run_lock.release_acquired_since():
        run_lock.lock_run_dir(run_dir)
        run_lock.lock_run_dir(run_dir)    # the holder itself may lock again (a no-op)
        assert run_lock.held_run_dirs() == [os.path.abspath(run_dir)]
        assert open(os.path.join(run_dir, run_lock.LOCK_FILE)).read() == f"{os.getpid()}\n"
    assert os.path.abspath(run_dir) not in run_lock.held_run_dirs()
    run_lock.lock_run_dir(run_dir)
    run_lock.release(run_dir)


# Buffer sets.

def test_missing_or_corrupt_buffer_set_is_named_with_a_fix(tmp_path):
    """(A map PNG that does not decode is a BadExampleError naming it, saying the set is damaged.)"""
    import collections
    from deeplab_load.lookahead.buffer import MapBuffer
    from deeplab_load.training import map_sets

    def write_maps(set_dir):
        with open(os.path.join(set_dir, "a.png"), "wb") as f:
            f.write(b"\x89PNG\r\n\x1a\n truncated")

    buffer = MapBuffer(tmp_path / "buffer", 3)
    (map_set,) = buffer.start(write_maps, "g0")
    set_dir = buffer.set_dir(map_set)

    class OneImage:
        def load(self, ref):
            return np.zeros([4, 4, 3], np.uint8), np.zeros([4, 4], np.uint8)

    refs = [collections.namedtuple("Ref", "id")("a")]
    # inside tf.data the loader returns its error as a string (`batches.reports_errors`)
    error = map_sets._load_triple(OneImage(), refs, set_dir)(0)[-1].decode()
    assert re.search(f"a.png: .*the buffer set {set_dir} is damaged: delete .*buffer and the run "
                     f"dir's state.json", error), error
    os.remove(os.path.join(set_dir, "a.png"))
    with pytest.raises(DamagedFileError, match=f"{set_dir}: buffer set listed in .*index.json "
                                               f"is missing or empty; delete"):
        MapBuffer(tmp_path / "buffer", 3)


def test_damaged_load_snapshot_says_how_to_restart_load(tmp_path):
    from deeplab_load.training.load_hooks import LoAdTrainingHooks, working_tag
    model = dropout_model()
    store = CheckpointStore(str(tmp_path / "generator"), model=model)
    store.save(working_tag(3))
    truncate_data_file(store, working_tag(3))
    hooks = LoAdTrainingHooks(None, None, store, None, None, None, [], None, None,
                              str(tmp_path))
    with pytest.raises(DamagedFileError, match="checkpoint is damaged.*restart only LoAd instead, "
                                               "delete state.json, events.jsonl and buffer/"):
        hooks.restore_working(3)
