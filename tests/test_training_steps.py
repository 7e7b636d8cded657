"""Training steps on a tiny MobileNetV2 DeepLab (golden synthetic weights, 33x33, 3 classes)."""
import json
import os
import pathlib

import numpy as np
import pytest
import tensorflow as tf

import multiworker_worker as tiny
from worker_runs import max_weight_diff, run_worker, wait_all
from deeplab_load.models import discriminator as disc
from deeplab_load.training import class_weights, steps
from deeplab_load.training import strategy as strategy_lib

HERE = pathlib.Path(__file__).resolve().parent
K = tiny.NUM_CLASSES


@pytest.fixture(scope="module")
def checkpoint(make_golden_checkpoint):
    return make_golden_checkpoint("manifest_mobilenetv2_voc_os16.json")


@pytest.fixture(scope="module")
def models(checkpoint):
    """(generator, discriminator, their initial weights); tests reset them before use."""
    model = tiny.tiny_deeplab(checkpoint)
    discriminator = tiny.tiny_discriminator(tiny.calibrated_discriminator_weights(model))
    return model, discriminator, model.get_weights(), discriminator.get_weights()


@pytest.fixture
def fresh(models):
    model, discriminator, model_weights, d_weights = models
    model.set_weights(model_weights)
    discriminator.set_weights(d_weights)
    return model, discriminator


def fixed_batch(seed=1):
    return next(iter(tiny.make_batches(1, seed=seed)))


def test_stage1_step_reduces_cross_entropy_and_traces_once(fresh):
    model, _ = fresh
    strategy = tf.distribute.get_strategy()
    trainer = steps.Stage1Trainer(model, steps.stage1_optimizer(learning_rate=1e-3), strategy, K,
                                  model_training=False)   # no dropout: a deterministic descent
    pixels, labels = fixed_batch()
    step_losses = [float(trainer.step(pixels, labels)) for _ in range(5)]
    assert step_losses[-1] < step_losses[0] - 1e-3, step_losses
    assert trainer.trace_count == 1


def test_stage1_weighted_cross_entropy_switches_with_one_trace(fresh):
    model, _ = fresh
    pixels, labels = fixed_batch()
    stats = class_weights.compute_class_pixel_stats(labels.numpy(), K)
    trainer = steps.Stage1Trainer(model, steps.stage1_optimizer(learning_rate=1e-3),
                                  tf.distribute.get_strategy(), K, class_stats=stats,
                                  use_class_weights=True, min_class_weight=0.2, max_class_weight=5.0,
                                  model_training=False)
    weighted = [float(trainer.step(pixels, labels)) for _ in range(4)]
    assert weighted[-1] < weighted[0], weighted
    trainer.set_use_class_weights(False)
    trainer.step(pixels, labels)
    trainer.step(pixels, labels)
    assert trainer.trace_count == 2
    with pytest.raises(ValueError, match="class_stats"):
        steps.Stage1Trainer(model, steps.stage1_optimizer(), tf.distribute.get_strategy(), K,
                            use_class_weights=True)


@pytest.mark.parametrize("encoding", ["straight_through", "soft"])
def test_generator_step_updates_only_the_generator(fresh, encoding):
    model, discriminator = fresh
    d_before = discriminator.get_weights()
    g_before = model.get_weights()
    trainer = steps.GeneratorTrainer(model, discriminator,
                                     steps.generator_optimizer(learning_rate=5e-5),
                                     tf.distribute.get_strategy(), K, map_encoding=encoding,
                                     model_training=False)
    pixels, labels = fixed_batch(seed=2)
    step_losses = [float(trainer.step(pixels, labels)) for _ in range(4)]
    assert np.all(np.isfinite(step_losses))
    if encoding == "soft":
        # a smooth objective: descends; the straight-through forward is piecewise constant in
        # the weights and its gradient a surrogate, so its loss need not fall step by step
        assert all(b < a for a, b in zip(step_losses, step_losses[1:])), step_losses
    for before, after in zip(d_before, discriminator.get_weights()):
        np.testing.assert_array_equal(before, after)
    assert max(np.abs(b - a).max() for b, a in zip(g_before, model.get_weights())) > 1e-6
    assert trainer.trace_count == 1


def d_examples(model, count, seed):
    """Unbatched (real, fake) sources: ground truth, and the generator's argmax maps."""
    pixels, labels = next(iter(tiny.make_batches(1, seed=seed).unbatch().batch(count)))
    predicted = tf.argmax(disc.resize_bilinear_align_corners(model(pixels), (tiny.CROP, tiny.CROP)),
                          -1, output_type=tf.int32)
    real = tf.data.Dataset.from_tensor_slices((pixels, labels))
    fake = tf.data.Dataset.from_tensor_slices((pixels, predicted, tf.equal(labels, 255)))
    return real, fake


def test_discriminator_step_reduces_weighted_bce(fresh):
    model, discriminator = fresh
    trainer = steps.DiscriminatorTrainer(discriminator, steps.discriminator_optimizer(),
                                         tf.distribute.get_strategy(), K)
    real, fake = d_examples(model, 4, seed=4)
    batch = next(iter(steps.discriminator_dataset(real, [fake], batch_size=8, shuffle=False)))
    np.testing.assert_allclose(batch[3].numpy(), [1] * 4 + [0] * 4)
    np.testing.assert_allclose(batch[4].numpy(), [1.0] * 8)   # one fake set: both sides weigh 1
    results = [trainer.step(*batch) for _ in range(6)]
    step_losses = [float(loss) for loss, _ in results]
    assert step_losses[-1] < step_losses[0], step_losses
    assert 0.0 <= float(results[-1][1]) <= 1.0


def test_discriminator_dataset_weights_balance_the_sides(fresh):
    model, _ = fresh
    real, fake = d_examples(model, 2, seed=5)
    data = steps.discriminator_dataset(real, [fake, fake, fake], batch_size=3, seed=0)
    is_real = np.concatenate([b[3].numpy() for b in data])
    weights = np.concatenate([b[4].numpy() for b in data])
    assert len(is_real) == 8 and is_real.sum() == 2
    assert weights[is_real == 1].sum() == pytest.approx(weights[is_real == 0].sum())
    with pytest.raises(ValueError, match="fake"):
        steps.discriminator_dataset(real, [])


def test_evaluate_accuracy_matches_direct_prediction(fresh):
    model, discriminator = fresh
    trainer = steps.DiscriminatorTrainer(discriminator, steps.discriminator_optimizer(),
                                         tf.distribute.get_strategy(), K)
    real, fake = d_examples(model, 3, seed=6)
    data = steps.discriminator_dataset(real, [fake], batch_size=4, shuffle=False, balance=False)
    metrics = trainer.evaluate_accuracy(data)
    predictions, truth = [], []
    for pixels, label_map, ignore_mask, is_real, _ in data:
        inputs = disc.discriminator_inputs(pixels, disc.one_hot_maps(label_map, K), ignore_mask,
                                           tiny.D_INPUT_SIZE)
        predictions.append(discriminator(inputs, training=False).numpy()[:, 0] > 0)
        truth.append(is_real.numpy() > 0.5)
    predictions, truth = np.concatenate(predictions), np.concatenate(truth)
    real_accuracy = np.mean(predictions[truth])
    fake_accuracy = np.mean(~predictions[~truth])
    assert metrics["examples"] == 6
    assert metrics["real_accuracy"] == pytest.approx(real_accuracy)
    assert metrics["accuracy"] == pytest.approx(0.5 * (real_accuracy + fake_accuracy))


def test_fit_discriminator_stops_on_target_patience_and_cap(fresh):
    model, discriminator = fresh
    trainer = steps.DiscriminatorTrainer(discriminator, steps.discriminator_optimizer(),
                                         tf.distribute.get_strategy(), K)
    real, fake = d_examples(model, 4, seed=7)
    holdout_real, holdout_fake = d_examples(model, 2, seed=8)
    logged = []
    result = steps.fit_discriminator(trainer, real, [fake, lambda: fake], holdout_real, holdout_fake,
                                     batch_size=4, max_epochs=3, target_accuracy=0.0,
                                     log=lambda epoch, metrics: logged.append((epoch, metrics)))
    assert result["stopped"] == "target" and result["epochs"] == 1 and len(logged) == 1
    assert {"loss", "accuracy", "real_accuracy", "fake_accuracy"} <= set(logged[0][1])
    capped = steps.fit_discriminator(trainer, real, [fake], holdout_real, holdout_fake,
                                     batch_size=4, max_epochs=2, patience=5)
    assert capped["stopped"] == "max_epochs" and capped["epochs"] == 2
    assert 0.0 <= capped["accuracy"] <= 1.0 and np.isfinite(capped["loss"])
    patient = steps.fit_discriminator(trainer, real, [fake], holdout_real, holdout_fake,
                                      batch_size=4, max_epochs=10, patience=1, min_delta=1.0)
    assert patient["stopped"] == "patience" and patient["epochs"] == 2
    assert patient["best_epoch"] == 1
    with pytest.raises(ValueError, match="max_epochs"):
        steps.fit_discriminator(trainer, real, [fake], holdout_real, holdout_fake, max_epochs=0)


def test_fit_discriminator_restores_best_epoch_weights(fresh):
    model, discriminator = fresh
    trainer = steps.DiscriminatorTrainer(discriminator, steps.discriminator_optimizer(),
                                         tf.distribute.get_strategy(), K)
    real, fake = d_examples(model, 4, seed=9)
    holdout_real, holdout_fake = d_examples(model, 2, seed=10)
    result = steps.fit_discriminator(trainer, real, [fake], holdout_real, holdout_fake,
                                     batch_size=4, max_epochs=3, patience=1, min_delta=1.0)
    assert result["best_epoch"] == 1
    again = trainer.evaluate_accuracy(
        steps.discriminator_dataset(holdout_real, [holdout_fake], 4, shuffle=False, balance=False))
    assert again["accuracy"] == pytest.approx(result["accuracy"])


def test_models_built_outside_the_strategy_scope_are_rejected(fresh):
    model, _ = fresh
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0"])
    with pytest.raises(ValueError, match="strategy.scope"):
        steps.Stage1Trainer(model, steps.stage1_optimizer(), mirrored, K)


def test_make_strategy_and_chief(monkeypatch, tmp_path):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert strategy_lib.make_strategy() is tf.distribute.get_strategy()
    assert strategy_lib.is_chief()
    assert strategy_lib.worker_directory(str(tmp_path)) == str(tmp_path)
    with pytest.raises(ValueError, match="strategy kind"):
        strategy_lib.make_strategy("tpu")
    cluster = {"worker": ["localhost:1", "localhost:2"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster,
                                                "task": {"type": "worker", "index": 1}}))
    assert not strategy_lib.is_chief()
    assert strategy_lib.worker_directory(str(tmp_path)) == os.path.join(tmp_path, "worker_tmp_1")
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster,
                                                "task": {"type": "worker", "index": 0}}))
    assert strategy_lib.is_chief()
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": dict(cluster, chief=["localhost:3"]),
                                                "task": {"type": "worker", "index": 0}}))
    assert not strategy_lib.is_chief()
    monkeypatch.setenv("TF_CONFIG", "{broken")
    with pytest.raises(ValueError, match="TF_CONFIG"):
        strategy_lib.make_strategy()


@pytest.mark.slow
def test_two_replica_mirrored_equals_default_strategy(checkpoint, tmp_path):
    """Same global batches, 3 stage-1 + 3 generator steps: 1 vs 2 replicas (2 logical CPUs)."""
    processes = [run_worker(kind, tmp_path / f"{kind}.npz", checkpoint)
                 for kind in ("default", "mirrored")]
    wait_all(processes, timeout=600)
    single, mirrored = (np.load(tmp_path / f"{kind}.npz") for kind in ("default", "mirrored"))
    assert int(single["replicas"]) == 1 and int(mirrored["replicas"]) == 2
    assert bool(mirrored["plain_batch_rejected"])              # undistributed input is an error
    # Losses are float32 sums whose order differs between 1 and 2 replicas: equal to ~2e-6.
    np.testing.assert_allclose(mirrored["stage1_losses"], single["stage1_losses"], rtol=1e-5)
    np.testing.assert_allclose(mirrored["generator_losses"], single["generator_losses"], rtol=1e-5)
    assert max_weight_diff(single, mirrored, "s1_") < 1e-5
    assert max_weight_diff(single, mirrored, "g_") < 1e-5
    assert max_weight_diff(single, mirrored, "d_") == 0.0      # D frozen during generator steps
    moved = max(float(np.abs(single[f"g_{i}"] - single[f"g0_{i}"]).max())
                for i in range(sum(k.startswith("g0_") for k in single.files)))
    assert moved > 5e-5                                        # the steps did change the weights
