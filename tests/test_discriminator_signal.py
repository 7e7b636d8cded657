"""The adversarial signal: D's inference mode means something, D sees one geometry, G reads
the configured training split."""
import numpy as np
import tensorflow as tf

from deeplab_load.data import pipeline
from deeplab_load.models import discriminator as disc
from deeplab_load.training import load_hooks, map_sets, steps
from deeplab_load.training.config import TrainConfig
from test_map_sets_holdout import demo, model  # noqa: F401  (shared module fixtures)

K = 3
SIZE = 32


def synthetic_pair(count, seed, noisy):
    """Class-split data of two distributions: clean rectangles (real) or the same with 30% of
    pixels relabelled at random (fake); images are uniform noise, so only the maps differ."""
    rng = np.random.default_rng(seed)
    pixels = rng.uniform(0, 255, (count, SIZE, SIZE, 3)).astype(np.float32)
    labels = np.zeros((count, SIZE, SIZE), np.int32)
    for i in range(count):
        top, left = rng.integers(0, SIZE // 2, 2)
        height, width = rng.integers(8, SIZE // 2, 2)
        labels[i, top:top + height, left:left + width] = rng.integers(1, K)
        if noisy:
            flip = rng.random((SIZE, SIZE)) < 0.3
            labels[i][flip] = rng.integers(0, K, flip.sum())
    if noisy:
        return tf.data.Dataset.from_tensor_slices((pixels, labels, labels == 255))
    return tf.data.Dataset.from_tensor_slices((pixels, labels))


def fit_synthetic(recompute_batch_norm):
    tf.keras.utils.set_random_seed(0)
    trainer = steps.DiscriminatorTrainer(disc.build_discriminator(K, input_size=SIZE),
                                         steps.discriminator_optimizer(),
                                         tf.distribute.get_strategy(), K)
    epochs = []
    result = steps.fit_discriminator(
        trainer, synthetic_pair(128, 1, False), [synthetic_pair(128, 2, True)],
        synthetic_pair(32, 3, False), synthetic_pair(32, 4, True), batch_size=16, max_epochs=4,
        patience=10, recompute_batch_norm=recompute_batch_norm,
        log=lambda epoch, values: epochs.append(values))
    return trainer, result, epochs


def test_inference_mode_separates_what_training_mode_separates():
    _, result, epochs = fit_synthetic(recompute_batch_norm=True)
    assert epochs[-1]["train_accuracy"] >= 0.85, epochs
    assert result["accuracy"] >= 0.9, result
    assert result["real_accuracy"] >= 0.85 and result["fake_accuracy"] >= 0.85, result
    assert [e["accuracy"] for e in result["history"]] == [e["accuracy"] for e in epochs]


def test_without_recomputed_statistics_inference_mode_sits_at_chance():
    """The control arm: Keras' moving averages after a few dozen steps call every input one
    side (what the runs showed before the fix), while training accuracy climbs."""
    _, result, epochs = fit_synthetic(recompute_batch_norm=False)
    assert epochs[-1]["train_accuracy"] >= 0.85, epochs
    assert all(e["accuracy"] <= 0.55 for e in epochs), epochs


def test_recomputed_statistics_are_the_average_batch_moments():
    tf.keras.utils.set_random_seed(1)
    trainer = steps.DiscriminatorTrainer(disc.build_discriminator(K, input_size=SIZE),
                                         steps.discriminator_optimizer(),
                                         tf.distribute.get_strategy(), K)
    data = steps.discriminator_dataset(synthetic_pair(8, 5, False), [synthetic_pair(8, 6, True)],
                                       batch_size=8, shuffle=False)
    assert trainer.recompute_batch_norm_statistics(data) == 16
    layers, probe = disc.batch_norm_probe(trainer.discriminator)
    assert len(layers) == 27
    batches = [trainer.inputs(p, m, i) for p, m, i, _, _ in data]
    for index in (0, 13, 26):
        moments = [tf.nn.moments(probe(b, training=True)[index], [0, 1, 2]) for b in batches]
        np.testing.assert_allclose(layers[index].moving_mean.numpy(),
                                   np.mean([m[0].numpy() for m in moments], 0), rtol=1e-4,
                                   atol=1e-5)
        np.testing.assert_allclose(layers[index].moving_variance.numpy(),
                                   np.mean([m[1].numpy() for m in moments], 0), rtol=1e-4,
                                   atol=1e-5)


# One geometry for D (the tiny demo set and generator of test_map_sets_holdout).


def test_discriminator_crops_are_the_generators_training_crops(demo):
    """Scale, pad, crop and flip of D's data equal those of G's adversarial batch."""
    refs = demo.examples("train")
    crop, seed, scale = (37, 37), 11, (0.75, 1.25)
    image, label = demo.load(refs[2])
    g_pixels, g_labels = pipeline.augment(image, label, 5, seed, crop, scale)
    label_map = (label + 1) % demo.info.num_classes
    pixels, cropped_map, ignore = map_sets.discriminator_view(image, label, label_map, 5, seed,
                                                              crop, scale)
    np.testing.assert_array_equal(pixels.numpy(), g_pixels.numpy())
    np.testing.assert_array_equal(ignore.numpy(), g_labels.numpy() == 255)
    expected_map = pipeline.augment(image, label_map.astype(np.uint8), 5, seed, crop, scale)[1]
    np.testing.assert_array_equal(cropped_map.numpy(), expected_map.numpy())


def test_training_and_scoring_inputs_of_one_crop_and_map_are_identical(demo, model):
    """D's input of a generated map: the same tensor whether D trains on it (buffer set, D
    step, hold-out) or scores it (generator step, straight-through forward value)."""
    refs = demo.examples("train")[:2]
    crop = (33, 33)
    batch = [pipeline.augment(*demo.load(ref), position, 0, crop) for position, ref in
             enumerate(refs)]
    pixels = tf.stack([p for p, _ in batch])
    labels = tf.stack([l for _, l in batch])
    strategy = tf.distribute.get_strategy()
    d_model = disc.build_discriminator(demo.info.num_classes, input_size=SIZE)
    generator = model
    g_trainer = steps.GeneratorTrainer(generator, d_model, steps.generator_optimizer(), strategy,
                                       demo.info.num_classes, model_training=False)
    d_trainer = steps.DiscriminatorTrainer(d_model, steps.discriminator_optimizer(), strategy,
                                           demo.info.num_classes)
    scored = g_trainer.discriminator_inputs(pixels, labels).numpy()
    logits = disc.resize_bilinear_align_corners(generator(pixels, training=False), crop)
    label_map = tf.argmax(logits, -1, output_type=tf.int32)
    trained = d_trainer.inputs(pixels, label_map, tf.equal(labels, 255)).numpy()
    np.testing.assert_array_equal(scored, trained)
    assert scored.shape == (2, SIZE, SIZE, 3 * demo.info.num_classes)
    # The hold-out examples of D are that geometry too: one crop per image.
    triples = [(*demo.load(ref), np.zeros_like(demo.load(ref)[1])) for ref in refs]
    fake = list(map_sets.in_memory_examples(triples, crop, real=False, seed=0))
    real = list(map_sets.in_memory_examples(triples, crop, real=True, seed=0))
    for position, ((f_pixels, _, f_ignore), (r_pixels, r_labels)) in enumerate(zip(fake, real)):
        g_pixels, g_labels = pipeline.augment(*demo.load(refs[position]), position, 0, crop)
        np.testing.assert_array_equal(f_pixels.numpy(), g_pixels.numpy())
        np.testing.assert_array_equal(r_pixels.numpy(), g_pixels.numpy())
        np.testing.assert_array_equal(r_labels.numpy(), g_labels.numpy())
        np.testing.assert_array_equal(f_ignore.numpy(), g_labels.numpy() == 255)


# --train_split for the generator.

class RecordingTrainer:
    """Stands in for GeneratorTrainer: records the batches the hooks feed it."""

    def __init__(self):
        self.batches = []

    def distribute(self, dataset):
        return dataset

    def step(self, pixels, labels):
        self.batches.append((pixels.numpy(), labels.numpy()))
        return 0.0


def test_generator_batches_come_from_the_configured_train_split(demo, tmp_path):
    split = "val"         # any configured split other than "train"
    config = TrainConfig.from_flags(adv_batch_size=2, seed=4)
    data = load_hooks.HookData(train_split=split, crop_size=(33, 33), eval_crop_size=(33, 33))
    trainer = RecordingTrainer()
    hooks = load_hooks.LoAdTrainingHooks(trainer, None, None, None, None, demo,
                                         demo.examples(split), config, data, str(tmp_path))
    hooks.adversarial_step(1)
    hooks.adversarial_step(2)
    expected = list(pipeline.train_dataset(demo, split, 2, (33, 33), 4).take(2))
    other = next(iter(pipeline.train_dataset(demo, "train", 2, (33, 33), 4)))
    for (pixels, labels), (want_pixels, want_labels) in zip(trainer.batches, expected):
        np.testing.assert_array_equal(pixels, want_pixels.numpy())
        np.testing.assert_array_equal(labels, want_labels.numpy())
    assert not np.array_equal(trainer.batches[0][0], other[0].numpy())


def test_patience_waits_for_min_epochs():
    tf.keras.utils.set_random_seed(2)
    trainer = steps.DiscriminatorTrainer(disc.build_discriminator(K, input_size=SIZE),
                                         steps.discriminator_optimizer(),
                                         tf.distribute.get_strategy(), K)
    data = (synthetic_pair(16, 1, False), [synthetic_pair(16, 2, True)],
            synthetic_pair(8, 3, False), synthetic_pair(8, 4, True))
    eager = steps.fit_discriminator(trainer, *data, batch_size=16, max_epochs=4, patience=0)
    assert eager["epochs"] == 1 and eager["stopped"] == "patience"
    waited = steps.fit_discriminator(trainer, *data, batch_size=16, max_epochs=4, patience=0,
                                     min_epochs=3)
    assert waited["epochs"] == 3 and waited["stopped"] == "patience"
    assert len(waited["history"]) == 3
