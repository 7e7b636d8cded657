"""LoAd on a segmentor that is not DeepLab: a small U-Net of plain Keras layers runs stage 1 and
LoAd propagations through `run_training`, and the segmentor contract fails with named errors."""
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplab_load.checkpoints.restore import tagged_prefix
from deeplab_load.checkpoints.store import list_checkpoint
from deeplab_load.errors import FlagError, UserError
from deeplab_load.training import run, segmentor as segmentor_module
from deeplab_load.training.config import TrainConfig
from deeplab_load.training.segmentor import Segmentor, SegmentorContractError, check_segmentor


class MatchSize(keras.layers.Layer):
    """Resizes the first input to the spatial size of the second (the skip connection's)."""

    def call(self, inputs):
        image, like = inputs
        return tf.image.resize(image, tf.shape(like)[1:3], method="bilinear")


def build_unet(num_classes, prefix="unet"):
    """Raw pixels 0..255 -> logits at stride 2: two levels down, one up with a skip."""
    pixels = keras.Input((None, None, 3), name=f"{prefix}_pixels")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name=f"{prefix}_scale")(pixels)
    skip = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu",
                               name=f"{prefix}_down1")(x)
    bottom = keras.layers.Conv2D(16, 3, strides=2, padding="same", name=f"{prefix}_down2")(skip)
    bottom = keras.layers.BatchNormalization(name=f"{prefix}_bn")(bottom)
    bottom = keras.layers.ReLU(name=f"{prefix}_relu")(bottom)
    up = MatchSize(name=f"{prefix}_up")([bottom, skip])
    x = keras.layers.Concatenate(name=f"{prefix}_concat")([up, skip])
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name=f"{prefix}_fuse")(x)
    logits = keras.layers.Conv2D(num_classes, 1, name=f"{prefix}_logits")(x)
    return keras.Model(pixels, logits, name=prefix)


class RecordingBuilder:
    """A U-Net builder that keeps every model it built and the first one's initial weights."""

    def __init__(self):
        self.models, self.initial_weights = [], None

    def __call__(self, num_classes):
        model = build_unet(num_classes)
        if not self.models:
            self.initial_weights = [w.copy() for w in model.get_weights()]
        self.models.append(model)
        return model


TINY = dict(dataset="demo", demo_num_train=12, demo_num_val=8, demo_image_size=(49, 65),
            stage1_weighted_epochs=1.0, stage1_plain_epochs=2.0, stage1_batch_size=4,
            stage1_learning_rate=0.05, gamma_max=3, psi_max=2, omega_max=1, max_propagations=6,
            adv_batch_size=4, adv_learning_rate=5e-3, disc_input_size=32, disc_max_epochs=2,
            disc_min_epochs=0, eval_batch_size=4, map_batch_size=4, seed=3, weight_decay=0.0)


def test_unet_runs_stage1_and_load_propagations(tmp_path, monkeypatch):
    def no_deeplab(*args, **kwargs):
        raise AssertionError("the DeepLab builder was called for a run given a U-Net")
    monkeypatch.setattr(segmentor_module, "build_deeplab", no_deeplab)
    monkeypatch.setattr(run, "config_segmentor", no_deeplab)
    builder = RecordingBuilder()
    unet = Segmentor(build=builder, output_stride=2, name="unet")
    config, _ = TrainConfig.from_flags(
        dataset_dir=str(tmp_path / "demo"), run_dir=str(tmp_path / "run"),
        **TINY).with_demo_profile(set(TINY) | {"dataset_dir", "run_dir"})
    summary = run.run_training(config, segmentor=unet)

    run_dir = str(tmp_path / "run")
    trained = builder.models[0]
    # Stage 1 and LoAd trained the U-Net: its weights moved from their initialisation.
    moved = [not np.allclose(a, b) for a, b in zip(builder.initial_weights, trained.get_weights())]
    assert sum(moved) >= 4, moved
    # Its BatchNorm keeps its own momentum (--batch_norm_decay is DeepLab's).
    assert trained.get_layer("unet_bn").momentum == 0.99
    # The checkpoints hold the U-Net's variables, nothing of DeepLab's.
    with open(os.path.join(run_dir, "generator", "tags.json"), encoding="utf-8") as f:
        tags = json.load(f)
    assert tags
    stored = list_checkpoint(tagged_prefix(os.path.join(run_dir, "stage1"), "stage1"))
    assert any("unet_logits" in name for name in stored), sorted(stored)[:5]
    assert not any("xception" in name or "MobilenetV2" in name for name in stored)
    # Stage 1 ran to its end, then LoAd propagations with the adversarial step.
    with open(os.path.join(run_dir, "stage1_state.json"), encoding="utf-8") as f:
        assert json.load(f)["done"]
    assert summary["propagations"] >= 3, summary
    with open(os.path.join(run_dir, "events.jsonl"), encoding="utf-8") as f:
        events = [json.loads(line) for line in f if line.strip()]
    assert any(event.get("losses") for event in events), events[:3]
    assert 0.0 <= summary["final_miou"] <= 1.0
    # No DeepLab model.json; the SavedModel of the U-Net serves label maps.
    assert not os.path.exists(os.path.join(run_dir, "generator", "model.json"))
    assert not os.path.exists(os.path.join(run_dir, "export", "model.json"))
    serving = tf.saved_model.load(os.path.join(run_dir, "export")).signatures["serving_default"]
    images = np.full((1, 49, 65, 3), 90, np.uint8)
    assert serving(images=tf.constant(images))["labels"].shape == (1, 49, 65)


def test_contract_violations_are_named():
    sizes = [(33, 45)]
    with pytest.raises(SegmentorContractError, match=r"expected \[1, 17, 23, 5\]"):
        check_segmentor(Segmentor(build=build_unet, output_stride=2), build_unet(4), 5, sizes)
    with pytest.raises(SegmentorContractError, match="output_stride 4"):
        check_segmentor(Segmentor(build=build_unet, output_stride=4), build_unet(5), 5, sizes)
    model = build_unet(5)
    with pytest.raises(SegmentorContractError, match="same model twice"):
        check_segmentor(Segmentor(build=lambda n: model, output_stride=2), model, 5, sizes)

    def unnamed(num_classes):
        pixels = keras.Input((None, None, 3))
        return keras.Model(pixels, keras.layers.Conv2D(num_classes, 1)(pixels))
    with pytest.raises(SegmentorContractError, match="name every layer"):
        check_segmentor(Segmentor(build=unnamed, output_stride=1), unnamed(5), 5, sizes)
    with pytest.raises(SegmentorContractError, match="not a keras.Model"):
        check_segmentor(Segmentor(build=build_unet, output_stride=2), object(), 5, sizes)
    fixed = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Reshape((32, 32, 3)),
                              keras.layers.Conv2D(5, 1, name="c")], name="fixed")
    with pytest.raises(SegmentorContractError, match="fails on pixels"):
        check_segmentor(Segmentor(build=lambda n: fixed, output_stride=1,
                                  fixed_variable_paths=True), fixed, 5, sizes)
    good = Segmentor(build=build_unet, output_stride=2)
    assert check_segmentor(good, build_unet(5), 5, sizes + [(32, 32)]) is not None
    with pytest.raises(ValueError, match="output_stride"):
        Segmentor(build=build_unet, output_stride=0)


def test_weight_decay_needs_the_segmentors_table():
    model = build_unet(3)
    plain = Segmentor(build=build_unet, output_stride=2, name="unet")
    assert plain.weight_decay_kernels(model, 0.0) == []
    with pytest.raises(FlagError, match="weight_decay=4e-05.*'unet'"):
        plain.weight_decay_kernels(model, 4e-5)
    tabled = Segmentor(build=build_unet, output_stride=2,
                       decayed_kernels=lambda m: [m.get_layer("unet_logits").kernel])
    assert len(tabled.weight_decay_kernels(model, 4e-5)) == 1


def test_default_restore_reads_our_formats_and_refuses_tf1(tmp_path, make_golden_checkpoint):
    unet = Segmentor(build=build_unet, output_stride=2, name="unet")
    source, target = build_unet(5), build_unet(5)
    source.save_weights(str(tmp_path / "unet.weights.h5"))
    assert "Keras weights" in unet.restore_weights(target, str(tmp_path / "unet.weights.h5"))
    assert all(np.array_equal(a, b) for a, b in zip(source.get_weights(), target.get_weights()))
    checkpoint = make_golden_checkpoint("manifest_mobilenetv2_voc_os16.json")
    with pytest.raises(UserError, match="official TF1 DeepLab checkpoint"):
        unet.restore_weights(target, checkpoint)
