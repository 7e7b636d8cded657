import json
import os

import numpy as np
import pytest
import tensorflow as tf

from deeplab_load.checkpoints.store import CheckpointStore
from deeplab_load.progress import Progress, format_duration


def make_store(root):
    var = tf.Variable(np.zeros(3, np.float32))
    return var, CheckpointStore(str(root), var=var)


def test_save_restore_copy_and_garbage_collection(tmp_path):
    var, store = make_store(tmp_path)
    var.assign([1, 2, 3])
    store.save("g_s")
    var.assign([4, 5, 6])
    store.save("g_best")
    store.copy("g_best", "g_end")
    var.assign([0, 0, 0])
    store.restore("g_s")
    np.testing.assert_array_equal(var.numpy(), [1, 2, 3])
    store.restore("g_end")
    np.testing.assert_array_equal(var.numpy(), [4, 5, 6])
    var.assign([7, 7, 7])
    store.save("g_s")  # the old g_s folder is no longer referenced and is deleted
    folders = sorted(n for n in os.listdir(tmp_path) if n.startswith("ckpt_"))
    assert len(folders) == 2
    tags = json.loads((tmp_path / "tags.json").read_text())
    assert tags["g_best"] == tags["g_end"] and set(tags.values()) == set(folders)


def test_reopen_keeps_tags_and_removes_unreferenced_folders(tmp_path):
    var, store = make_store(tmp_path)
    var.assign([1, 1, 1])
    store.save("working")
    os.makedirs(tmp_path / "ckpt_000099")  # e.g. a save killed before tags.json was updated
    var2, store2 = make_store(tmp_path)
    assert not (tmp_path / "ckpt_000099").exists()
    store2.restore("working")
    np.testing.assert_array_equal(var2.numpy(), [1, 1, 1])


def test_missing_tag_names_it(tmp_path):
    _, store = make_store(tmp_path)
    with pytest.raises(KeyError, match="g_best"):
        store.restore("g_best")


def test_progress_line_has_rate_and_eta():
    t = [0.0]
    lines = []
    progress = Progress("stage1", total=100, interval=0, clock=lambda: t[0], log=lines.append)
    progress.update(0, loss=1.0)
    t[0] = 10.0
    text = progress.update(50, loss=0.5, mIoU=0.25)
    assert "stage1 50/100" in text and "loss 0.5" in text and "mIoU 0.25" in text
    assert "5.00 it/s" in text and "ETA 10s" in text
    assert len(lines) == 2
    assert format_duration(3725) == "1h02m" and format_duration(185) == "3m05s"


def test_deeplab_and_optimizer_round_trip_every_variable(tmp_path):
    """Regression: Keras 3 keeps sub-layers in Python lists that tf.train.Checkpoint does not
    follow; the store must still save and restore every weight and optimizer slot."""
    from deeplab_load.models.deeplab import DeepLabConfig, build_deeplab
    from deeplab_load.training import steps
    from deeplab_load.training.strategy import make_strategy
    strategy = make_strategy()
    config = DeepLabConfig(backbone="mobilenet_v2", num_classes=4, output_stride=16,
                           atrous_rates=(), decoder_output_stride=None)
    with strategy.scope():
        model = build_deeplab(config)
        optimizer = steps.generator_optimizer()
        trainer = steps.Stage1Trainer(model, optimizer, strategy, 4)
    pixels = tf.random.stateless_uniform([2, 33, 33, 3], [0, 1], maxval=255.0)
    labels = tf.random.stateless_uniform([2, 33, 33], [0, 2], maxval=4, dtype=tf.int32)
    trainer.step(pixels, labels)
    store = CheckpointStore(str(tmp_path), model=model, optimizer=optimizer)
    store.save("g_best")
    saved = [v.numpy().copy() for v in model.weights + optimizer.variables]
    trainer.step(pixels, labels)
    assert any(not np.array_equal(a, v.numpy()) for a, v in zip(saved, model.weights))
    store.restore("g_best")
    for before, variable in zip(saved, model.weights + optimizer.variables):
        np.testing.assert_array_equal(before, variable.numpy(), err_msg=variable.path)
    other = build_deeplab(DeepLabConfig(backbone="mobilenet_v2", num_classes=5,
                                        output_stride=16, atrous_rates=(),
                                        decoder_output_stride=None))
    with pytest.raises(ValueError, match="logits"):
        CheckpointStore(str(tmp_path), model=other, optimizer=optimizer).restore("g_best")


def test_restore_keeps_the_configured_learning_rate_and_logs_old_to_new(tmp_path, caplog):
    """A snapshot saved at lr 1e-3 restored into an optimizer configured with 5e-4: the next
    update uses 5e-4 (momentum 0, gradient 1: the variable moves by exactly -lr)."""
    import keras
    from deeplab_load.training import steps

    def trainer(learning_rate):
        var = keras.Variable(np.zeros(2, np.float32), name="w")
        optimizer = steps.generator_optimizer(learning_rate, momentum=0.0)
        optimizer.build([var])
        return var, optimizer, CheckpointStore(str(tmp_path / "generator"), var=var.value,
                                               optimizer=optimizer)

    var, optimizer, store = trainer(1e-3)
    optimizer.apply_gradients([(np.ones(2, np.float32), var)])
    np.testing.assert_allclose(var.numpy(), [-1e-3, -1e-3], rtol=1e-6)
    store.save("g_s")

    var, optimizer, store = trainer(5e-4)
    with caplog.at_level("WARNING"):
        store.restore("g_s")
        store.restore("g_s")      # a revert: logged once
    np.testing.assert_allclose(var.numpy(), [-1e-3, -1e-3], rtol=1e-6)
    assert int(optimizer.iterations.numpy()) == 1          # the rest of the optimizer restored
    assert float(optimizer.learning_rate.numpy()) == pytest.approx(5e-4)
    optimizer.apply_gradients([(np.ones(2, np.float32), var)])
    np.testing.assert_allclose(var.numpy(), [-1.5e-3, -1.5e-3], rtol=1e-6)
    changed = [r.getMessage() for r in caplog.records if "learning rate" in r.getMessage()]
    assert len(changed) == 1 and "0.001 -> 0.0005" in changed[0], changed
