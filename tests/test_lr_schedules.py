"""Stage-1 learning policies: research/deeplab's formulas, the optimizer using them, resume."""
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import multiworker_worker as tiny
from deeplab_load.training import lr_schedules, steps
from deeplab_load.checkpoints.store import CheckpointStore
from deeplab_load.training.config import TrainConfig
from deeplab_load.training.lr_schedules import DeepLabLearningRate, current_learning_rate


# research/deeplab utils/train_utils.get_model_learning_rate, written out independently
# (tf.train.polynomial_decay / exponential_decay(staircase=True) with the slow-start switch).
def reference_rate(t, policy, base, total, power=0.9, end=0.0, decay_step=2000,
                   decay_factor=0.1, slow_start_step=0, slow_start_rate=1e-4):
    if t < slow_start_step:
        return slow_start_rate
    adjusted = max(t - slow_start_step, 0)
    if policy == "poly":
        decay_steps = total - slow_start_step
        adjusted = min(adjusted, decay_steps)
        return (base - end) * (1.0 - adjusted / decay_steps) ** power + end
    if policy == "step":
        return base * decay_factor ** (adjusted // decay_step)
    return base


def rates(schedule, steps_):
    return [float(schedule(tf.constant(t, tf.int64))) for t in steps_]


def test_poly_follows_research_deeplab_and_reaches_its_end_value_at_the_last_step():
    schedule = DeepLabLearningRate("poly", 0.05, 384, power=0.9, end_learning_rate=0.0)
    sampled = [0, 1, 7, 100, 191, 383, 384, 500]
    expected = [reference_rate(t, "poly", 0.05, 384) for t in sampled]
    np.testing.assert_allclose(rates(schedule, sampled), expected, rtol=1e-5, atol=1e-9)
    assert rates(schedule, [384]) == [0.0]            # after the last step: the end value
    assert rates(schedule, [383])[0] > 0.0            # the last update itself still moves
    with_end = DeepLabLearningRate("poly", 0.01, 50, power=2.0, end_learning_rate=1e-3)
    assert rates(with_end, [50]) == pytest.approx([1e-3], rel=1e-6)
    np.testing.assert_allclose(rates(with_end, [10, 25]),
                               [reference_rate(t, "poly", 0.01, 50, power=2.0, end=1e-3)
                                for t in (10, 25)], rtol=1e-5)


def test_step_policy_and_slow_start_follow_research_deeplab():
    step = DeepLabLearningRate("step", 0.1, 100, decay_step=7, decay_factor=0.5)
    sampled = [0, 6, 7, 13, 14, 50, 99]
    np.testing.assert_allclose(rates(step, sampled),
                               [reference_rate(t, "step", 0.1, 100, decay_step=7,
                                               decay_factor=0.5) for t in sampled], rtol=1e-6)
    slow = DeepLabLearningRate("poly", 0.05, 40, slow_start_step=10,
                               slow_start_learning_rate=1e-3)
    sampled = [0, 5, 9, 10, 11, 25, 39, 40]
    np.testing.assert_allclose(rates(slow, sampled),
                               [reference_rate(t, "poly", 0.05, 40, slow_start_step=10,
                                               slow_start_rate=1e-3) for t in sampled],
                               rtol=1e-5, atol=1e-9)
    assert rates(slow, [9, 10]) == pytest.approx([1e-3, 0.05], rel=1e-6)


def test_schedule_round_trips_through_keras_serialisation_and_rejects_bad_budgets():
    schedule = DeepLabLearningRate("step", 0.1, 100, decay_step=7, decay_factor=0.5,
                                   slow_start_step=3, slow_start_learning_rate=1e-3)
    optimizer = keras.optimizers.SGD(learning_rate=schedule, momentum=0.9)
    again = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    sampled = [0, 2, 3, 10, 17, 99]
    assert rates(again._learning_rate, sampled) == rates(schedule, sampled)
    with pytest.raises(ValueError, match="step budget"):
        DeepLabLearningRate("poly", 0.1, 10, slow_start_step=10)
    with pytest.raises(ValueError, match="learning policy"):
        DeepLabLearningRate("cosine", 0.1, 10)


def test_constant_default_keeps_the_plain_float_rate():
    """The paper's constant policy stays a float (an optimizer variable, as before)."""
    constant = TrainConfig.from_flags(stage1_learning_rate=0.03)
    assert lr_schedules.stage1_learning_rate(constant, None) == 0.03
    poly = lr_schedules.stage1_learning_rate(
        TrainConfig.from_flags(stage1_learning_rate=0.03, stage1_learning_policy="poly",
                               stage1_learning_power=0.8), 120)
    assert isinstance(poly, DeepLabLearningRate)
    assert (poly.total_steps, poly.power, poly.base_learning_rate) == (120, 0.8, 0.03)


@pytest.fixture(scope="module")
def checkpoint(make_golden_checkpoint):
    return make_golden_checkpoint("manifest_mobilenetv2_voc_os16.json")


def stage1_trainer(model, schedule):
    optimizer = steps.stage1_optimizer(schedule, momentum=0.9)
    return steps.Stage1Trainer(model, optimizer, tf.distribute.get_strategy(), tiny.NUM_CLASSES,
                               model_training=False)


def test_stage1_trainer_updates_with_the_scheduled_rate(checkpoint):
    """Slow start at rate 0: the first 2 updates leave the weights unchanged, the third moves
    them; the optimizer's rate at step t is the policy's value at t."""
    model = tiny.tiny_deeplab(checkpoint)
    schedule = DeepLabLearningRate("poly", 1e-3, 6, slow_start_step=2,
                                   slow_start_learning_rate=0.0)
    trainer = stage1_trainer(model, schedule)
    batches = list(tiny.make_batches(4, seed=5))
    start = model.get_weights()
    seen = []
    for t, (pixels, labels) in enumerate(batches):
        seen.append(current_learning_rate(trainer.optimizer))
        trainer.step(pixels, labels)
        moved = any(not np.array_equal(a, b) for a, b in zip(start, model.get_weights()))
        assert moved == (t >= 2), t
    expected = [reference_rate(t, "poly", 1e-3, 6, slow_start_step=2, slow_start_rate=0.0)
                for t in range(4)]
    np.testing.assert_allclose(seen, expected, rtol=1e-5, atol=0)
    assert seen[3] < seen[2]


def test_resumed_stage1_continues_the_schedule_exactly(checkpoint, tmp_path):
    def make():
        model = tiny.tiny_deeplab(checkpoint)
        trainer = stage1_trainer(model, DeepLabLearningRate("poly", 1e-3, 6))
        store = CheckpointStore(str(tmp_path / "stage1"), model=model,
                                optimizer=trainer.optimizer)
        return model, trainer, store

    batches = list(tiny.make_batches(5, seed=6))
    model, trainer, store = make()
    for pixels, labels in batches[:3]:
        trainer.step(pixels, labels)
    store.save("stage1_working")
    for pixels, labels in batches[3:]:
        trainer.step(pixels, labels)
    uninterrupted = model.get_weights()
    assert current_learning_rate(trainer.optimizer) == pytest.approx(
        reference_rate(5, "poly", 1e-3, 6), rel=1e-5)

    model, trainer, store = make()
    assert current_learning_rate(trainer.optimizer) == pytest.approx(1e-3)
    store.restore("stage1_working")
    assert current_learning_rate(trainer.optimizer) == pytest.approx(
        reference_rate(3, "poly", 1e-3, 6), rel=1e-5)
    for pixels, labels in batches[3:]:
        trainer.step(pixels, labels)
    for a, b in zip(uninterrupted, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert not math.isclose(reference_rate(3, "poly", 1e-3, 6), 1e-3)
