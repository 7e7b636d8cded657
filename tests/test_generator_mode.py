"""--adv_generator_mode: frozen adversarial steps at lr 0 change nothing (the hold-out mIoU cannot
move); train mode moves the BatchNorm statistics. And D's hold-out fakes of the newest set."""
import numpy as np
import pytest
import tensorflow as tf

from deeplab_load.data import get_dataset
from deeplab_load.models.deeplab import DeepLabConfig, build_deeplab
from deeplab_load.models.discriminator import build_discriminator
from deeplab_load.models.layers import set_batch_norm_decay
from deeplab_load.training import map_sets, steps
from deeplab_load.training.holdout import HoldoutEvaluator

CROP = 41


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return get_dataset("demo", str(tmp_path_factory.mktemp("demo") / "demo"), num_train=4,
                       num_val=4, image_size=(41, 57), seed=5)


def generator_and_discriminator(num_classes):
    tf.keras.utils.set_random_seed(0)
    model = build_deeplab(DeepLabConfig(backbone="mobilenet_v2", num_classes=num_classes,
                                        output_stride=16, atrous_rates=(),
                                        decoder_output_stride=None, fine_tune_batch_norm=True))
    set_batch_norm_decay(model, 0.9)
    discriminator = build_discriminator(num_classes, input_size=32)
    return model, discriminator


def batches(num_classes, count=3):
    rng = np.random.RandomState(2)
    for _ in range(count):
        pixels = rng.uniform(0, 255, (2, CROP, CROP, 3)).astype(np.float32)
        labels = rng.randint(0, num_classes, (2, CROP, CROP)).astype(np.int32)
        yield tf.constant(pixels), tf.constant(labels)


def batch_norm_statistics(model):
    return [v.numpy() for v in model.weights if "moving_" in v.path]


def run_mode(demo, mode):
    """(weights before, after, BN statistics before, after, hold-out mIoU per step, losses) of 3
    generator steps at learning rate 0 in `mode`."""
    num_classes = demo.info.num_classes
    model, discriminator = generator_and_discriminator(num_classes)
    trainer = steps.GeneratorTrainer(model, discriminator, steps.generator_optimizer(0.0),
                                     tf.distribute.get_strategy(), num_classes,
                                     model_training=steps.GENERATOR_MODES[mode])
    holdout = HoldoutEvaluator(model, demo, demo.examples("val"), 4, (48, 64))
    weights, stats = model.get_weights(), batch_norm_statistics(model)
    mious, losses = [holdout.mean_iou()], []
    for pixels, labels in batches(num_classes):
        losses.append(float(trainer.step(pixels, labels)))
        mious.append(holdout.mean_iou())
    return weights, model.get_weights(), stats, batch_norm_statistics(model), mious, losses


def test_frozen_generator_steps_at_lr_zero_change_nothing(demo):
    before, after, stats_before, stats_after, mious, _ = run_mode(demo, "frozen")
    assert stats_before, "the model has BatchNorm statistics"
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)
    assert len(set(mious)) == 1, mious


def test_train_mode_generator_steps_move_batch_norm_statistics_only(demo):
    before, after, stats_before, stats_after, mious, _ = run_mode(demo, "train")
    assert any(not np.array_equal(a, b) for a, b in zip(stats_before, stats_after))
    trainable_paths = [not ("moving_" in v.path) for v in
                       generator_and_discriminator(demo.info.num_classes)[0].weights]
    for a, b, trainable in zip(before, after, trainable_paths):
        if trainable:
            np.testing.assert_array_equal(a, b)


def test_frozen_mode_has_no_dropout_train_mode_has():
    """The generator's maps of one batch, twice: frozen gives the same D inputs; train mode's
    dropout (and batch statistics) change them."""
    model, discriminator = generator_and_discriminator(3)
    pixels, labels = next(batches(3))
    for mode, same in (("frozen", True), ("train", False)):
        trainer = steps.GeneratorTrainer(model, discriminator, steps.generator_optimizer(0.0),
                                         tf.distribute.get_strategy(), 3, map_encoding="soft",
                                         model_training=steps.GENERATOR_MODES[mode])
        first = trainer.discriminator_inputs(pixels, labels).numpy()
        second = trainer.discriminator_inputs(pixels, labels).numpy()
        assert np.array_equal(first, second) == same, mode


def test_newest_set_holdout_maps_are_scored_as_fakes(demo, tmp_path):
    """D's early stopping pools g_s's hold-out fakes with the newest set's generator's: with
    that generator's maps equal to the ground truth (D's real inputs), their fake accuracy is
    exactly 1 - the real accuracy, and the pooled fake accuracy is the mean of the two parts."""
    num_classes = demo.info.num_classes
    model, discriminator = generator_and_discriminator(num_classes)
    trainer = steps.DiscriminatorTrainer(discriminator, steps.discriminator_optimizer(1e-2, "adam"),
                                         tf.distribute.get_strategy(), num_classes)
    holdout = HoldoutEvaluator(model, demo, demo.examples("val"), 4, (48, 64))
    triples = list(holdout.examples_with_maps())
    set_dir = str(tmp_path / "set_0001_end_g0_1")
    (tmp_path / "set_0001_end_g0_1").mkdir()
    map_sets.write_holdout_maps(set_dir, [label for _, label, _ in triples], "g_end", "ckpt_9")
    source, stored = map_sets.read_holdout_maps(set_dir)
    assert source == {"tag": "g_end", "snapshot": "ckpt_9", "count": len(triples)}
    newest = [(image, label, m) for (image, label, _), m in zip(triples, stored)]
    real = map_sets.in_memory_examples(triples, CROP, real=True)
    g_s_fake = map_sets.in_memory_examples(triples, CROP, real=False)
    newest_fake = map_sets.in_memory_examples(newest, CROP, real=False)
    # D learns to call the random generator's maps fake; ground-truth "fakes" then look real.
    result = steps.fit_discriminator(trainer, real, [g_s_fake], real, g_s_fake, batch_size=4,
                                     max_epochs=12, patience=12, batch_norm_batches=2,
                                     extra_holdout_fakes={"newest_set": newest_fake})
    assert result["fake_accuracy_newest_set"] == pytest.approx(1.0 - result["real_accuracy"])
    assert result["fake_accuracy"] == pytest.approx(
        0.5 * (result["fake_accuracy_g_s"] + result["fake_accuracy_newest_set"]))
    assert result["accuracy"] == pytest.approx(
        0.5 * (result["real_accuracy"] + result["fake_accuracy"]))
    assert result["fake_accuracy_newest_set"] != pytest.approx(result["fake_accuracy_g_s"])
    only_g_s = trainer.evaluate_accuracy(steps.discriminator_dataset(
        real, [g_s_fake], 4, shuffle=False, balance=False))
    assert only_g_s["fake_accuracy"] == pytest.approx(result["fake_accuracy_g_s"])
    assert map_sets.read_holdout_maps(str(tmp_path)) is None


def test_hooks_add_the_newest_set_only_when_another_generator_wrote_it(demo, tmp_path):
    from deeplab_load.errors import DamagedFileError
    from deeplab_load.training.load_hooks import newest_set_holdout_fakes

    model, _ = generator_and_discriminator(demo.info.num_classes)
    triples = list(HoldoutEvaluator(model, demo, demo.examples("val"), 4,
                                    (48, 64)).examples_with_maps())
    labels = [label for _, label, _ in triples]
    sets = []
    for name, snapshot in (("set_0000_peak_g0", "gen/ckpt_000001/ckpt"),
                           ("set_0001_end_g0_1", "gen/ckpt_000004/ckpt")):
        (tmp_path / name).mkdir()
        map_sets.write_holdout_maps(str(tmp_path / name), labels, "g_end", snapshot)
        sets.append(str(tmp_path / name))
    assert newest_set_holdout_fakes([], triples, "gen/ckpt_000001/ckpt", CROP, 0) == {}
    # The newest set came from g_s itself (e.g. the initial set): nothing added.
    assert newest_set_holdout_fakes(sets[:1], triples, "gen/ckpt_000001/ckpt", CROP, 0) == {}
    added = newest_set_holdout_fakes(sets, triples, "gen/ckpt_000001/ckpt", CROP, 0)
    stored = [m.numpy() for _, m, _ in added["newest_set"]]
    expected = [m.numpy() for _, m, _ in map_sets.in_memory_examples(
        [(image, label, label) for image, label, _ in triples], CROP, real=False, seed=0)]
    assert len(stored) == len(triples)
    for a, b in zip(stored, expected):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(DamagedFileError, match="hold-out maps do not fit"):
        newest_set_holdout_fakes(sets, triples[:2], "gen/ckpt_000001/ckpt", CROP, 0)
