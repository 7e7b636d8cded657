"""The original's L2 weight decay on a tiny MobileNetV2 DeepLab (golden weights, 3 classes)."""
import numpy as np
import pytest
import tensorflow as tf

import multiworker_worker as tiny
from deeplab_load import losses
from deeplab_load.models.ops import resize_bilinear_align_corners
from deeplab_load.models.deeplab import checkpoint_variables
from deeplab_load.training import steps
from deeplab_load.training.weight_decay import decayed_kernels, weight_decay_loss

K = tiny.NUM_CLASSES
DECAY = 1e-2     # large, so the term stands well above float32 rounding of the CE


@pytest.fixture(scope="module")
def models(make_golden_checkpoint):
    model = tiny.tiny_deeplab(make_golden_checkpoint("manifest_mobilenetv2_voc_os16.json"))
    discriminator = tiny.tiny_discriminator(tiny.calibrated_discriminator_weights(model))
    return model, discriminator, model.get_weights()


@pytest.fixture
def fresh(models):
    model, discriminator, weights = models
    model.set_weights(weights)
    return model, discriminator


def hand_l2(model):
    """0.5 * sum(w^2) over the TF1 `weights` (regular conv kernels), not `depthwise_weights`."""
    return sum(0.5 * float(np.sum(np.square(v.numpy().astype(np.float64))))
               for name, v in checkpoint_variables(model).items() if name.endswith("/weights"))


def test_decayed_kernels_are_the_regular_conv_kernels(fresh):
    model, _ = fresh
    table = checkpoint_variables(model)
    expected = {name for name in table if name.endswith("/weights")}
    by_id = {id(v): name for name, v in table.items()}
    assert {by_id[id(k)] for k in decayed_kernels(model)} == expected
    assert "logits/semantic/weights" in expected
    assert not any("depthwise" in by_id[id(k)] for k in decayed_kernels(model))
    value = float(weight_decay_loss(decayed_kernels(model), DECAY))
    np.testing.assert_allclose(value, DECAY * hand_l2(model), rtol=1e-5)
    assert float(weight_decay_loss(decayed_kernels(model), 0.0)) == 0.0
    with pytest.raises(ValueError, match="weight_decay"):
        weight_decay_loss(decayed_kernels(model), -1.0)


def stage1_loss(model, weight_decay, learning_rate=0.0):
    trainer = steps.Stage1Trainer(model, steps.stage1_optimizer(learning_rate, momentum=0.0),
                                  tf.distribute.get_strategy(), K, model_training=False,
                                  weight_decay=weight_decay)
    pixels, labels = next(iter(tiny.make_batches(1, seed=3)))
    return float(trainer.step(pixels, labels)), (pixels, labels)


def test_stage1_loss_carries_the_term_and_its_gradient(fresh, models):
    model, _ = fresh
    plain, (pixels, labels) = stage1_loss(model, 0.0)
    logits = resize_bilinear_align_corners(model(pixels, training=False), tf.shape(labels)[1:3])
    total, count = losses.cross_entropy_sum_and_count(labels, logits)
    np.testing.assert_allclose(plain, float(total / count), rtol=1e-5)   # absent at 0
    decayed, _ = stage1_loss(model, DECAY)
    np.testing.assert_allclose(decayed - plain, DECAY * hand_l2(model), rtol=1e-4)

    # one SGD step (lr 1, no momentum) with and without decay: the kernels differ by lr*wd*w
    start = models[2]
    stage1_loss(model, 0.0, learning_rate=1.0)
    no_decay = {n: v.numpy() for n, v in checkpoint_variables(model).items()}
    model.set_weights(start)
    initial = {n: v.numpy() for n, v in checkpoint_variables(model).items()}
    stage1_loss(model, DECAY, learning_rate=1.0)
    for name, variable in checkpoint_variables(model).items():
        expected_shift = -DECAY * initial[name] if name.endswith("/weights") else 0.0
        np.testing.assert_allclose(variable.numpy() - no_decay[name], expected_shift,
                                   atol=1e-6, err_msg=name)


def test_generator_loss_carries_the_term(fresh):
    model, discriminator = fresh
    pixels, labels = next(iter(tiny.make_batches(1, seed=4)))
    values = {}
    for decay in (0.0, DECAY):
        trainer = steps.GeneratorTrainer(model, discriminator,
                                         steps.generator_optimizer(0.0, momentum=0.0),
                                         tf.distribute.get_strategy(), K, model_training=False,
                                         weight_decay=decay)
        values[decay] = float(trainer.step(pixels, labels))
    np.testing.assert_allclose(values[DECAY] - values[0.0], DECAY * hand_l2(model), rtol=1e-4)
