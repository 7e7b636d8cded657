"""The hybrid generator step CE + lambda adv (Luc et al. 2016): both terms move the weights."""
import numpy as np
import pytest
import tensorflow as tf

import multiworker_worker as tiny
from deeplab_load.training import steps

K = tiny.NUM_CLASSES
LR = 1.0   # large: the weight change is the update, not float32 rounding of the weights


@pytest.fixture(scope="module")
def models(make_golden_checkpoint):
    model = tiny.tiny_deeplab(make_golden_checkpoint("manifest_mobilenetv2_voc_os16.json"))
    discriminator = tiny.tiny_discriminator(tiny.calibrated_discriminator_weights(model))
    return model, discriminator, model.get_weights()


def update(models, make_trainer):
    """Weight change of one step from the same start on the same batch (SGD, no momentum:
    -LR * gradient)."""
    model, discriminator, start = models
    model.set_weights(start)
    trainer = make_trainer(model, discriminator, keras_sgd())
    pixels, labels = next(iter(tiny.make_batches(1, seed=3)))
    trainer.step(pixels, labels)
    return np.concatenate([(after - before).ravel()
                           for after, before in zip(model.get_weights(), start)])


def keras_sgd():
    return steps.generator_optimizer(learning_rate=LR, momentum=0.0)


def generator(hybrid_weights):
    def make(model, discriminator, optimizer):
        return steps.GeneratorTrainer(model, discriminator, optimizer,
                                      tf.distribute.get_strategy(), K, model_training=False,
                                      hybrid_weights=hybrid_weights)
    return make


def cross_entropy(model, discriminator, optimizer):
    return steps.Stage1Trainer(model, optimizer, tf.distribute.get_strategy(), K,
                               model_training=False)


def test_both_terms_give_gradients_and_lambda_zero_is_cross_entropy(models):
    hybrid = update(models, generator((1.0, 0.5)))
    no_adversarial = update(models, generator((1.0, 0.0)))
    no_cross_entropy = update(models, generator((0.0, 0.5)))
    scale = np.abs(hybrid).max()
    assert scale > 0
    # Zeroing either weight changes the update: both terms reach the weights.
    assert np.abs(hybrid - no_adversarial).max() > 1e-3 * scale
    assert np.abs(hybrid - no_cross_entropy).max() > 1e-3 * scale
    # One step of the sum is the sum of the steps (plain SGD): the terms add, once each.
    np.testing.assert_allclose(hybrid, no_adversarial + no_cross_entropy, atol=1e-5 * scale)
    # lambda 0 is Stage1Trainer's plain CE; (0, 1) is the pure adversarial step.
    np.testing.assert_allclose(no_adversarial, update(models, cross_entropy), atol=1e-5 * scale)
    np.testing.assert_allclose(update(models, generator((0.0, 1.0))),
                               update(models, generator(None)), atol=1e-5 * scale)


def test_hybrid_weights_are_checked(models):
    model, discriminator, _ = models
    with pytest.raises(ValueError, match="hybrid_weights"):
        generator((1.0, -0.1))(model, discriminator, keras_sgd())
