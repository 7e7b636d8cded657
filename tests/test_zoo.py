"""Zoo registry and the TF1 checkpoint loader (on the golden Xception-65 checkpoint)."""
import dataclasses
import gc
import os
import weakref

import numpy as np
import pytest
import tensorflow as tf

from deeplab_load.checkpoints import tf1, zoo
from deeplab_load.models.deeplab import DeepLabConfig, build_deeplab, checkpoint_variables

XCEPTION_MANIFEST = "manifest_xception65_voc_os16.json"
XCEPTION_VOC = DeepLabConfig("xception_65", 21, 16, (6, 12, 18), 4)
DELETED = ("xception_65/middle_flow/block1/unit_7/xception_module/"
           "separable_conv2_pointwise/BatchNorm/gamma")
RESHAPED = "aspp0/weights"


def write_checkpoint(prefix, tensors):
    """Writes {TF1 name: array} as a V2 checkpoint under those exact names."""
    names = sorted(tensors)
    tf.raw_ops.SaveV2(prefix=str(prefix), tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(tensors[name]) for name in names])
    return str(prefix)


def read_checkpoint(prefix):
    reader = tf.train.load_checkpoint(prefix)
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


@pytest.fixture(scope="module")
def xception_model():
    return build_deeplab(XCEPTION_VOC)


@pytest.fixture(scope="module")
def golden_xception_checkpoint(make_golden_checkpoint):
    return make_golden_checkpoint(XCEPTION_MANIFEST)


def test_registry_lists_the_official_checkpoints():
    expected = {"mobilenetv2_coco_voc_trainaug", "mobilenetv2_coco_voc_trainval",
                "xception65_coco_voc_trainaug", "xception65_coco_voc_trainval",
                "mobilenetv2_coco_cityscapes_trainfine", "xception65_cityscapes_trainfine",
                "xception65_imagenet", "xception65_imagenet_coco", "mobilenetv2_imagenet"}
    assert set(zoo.ZOO) == expected
    for name, entry in zoo.ZOO.items():
        assert entry.name == name
        assert entry.url.endswith((".tar.gz", ".tgz"))
        if entry.backbone_only:
            assert entry.published_miou is None
        else:
            assert entry.url.startswith(zoo.ZOO_BASE_URL)
            assert entry.config.num_classes == {"pascal_voc": 21, "cityscapes": 19}[entry.dataset]
            assert 60 < entry.published_miou < 90
            assert entry.miou_split in ("val", "test")
    voc = zoo.ZOO["xception65_coco_voc_trainaug"]
    assert voc.url.endswith("deeplabv3_pascal_train_aug_2018_01_04.tar.gz")
    assert voc.config == XCEPTION_VOC and voc.val_miou == voc.published_miou == 82.20
    assert zoo.ZOO["xception65_coco_voc_trainval"].val_miou is None  # published on test
    assert zoo.ZOO["mobilenetv2_coco_voc_trainaug"].config.decoder_output_stride is None
    assert zoo.ZOO["mobilenetv2_coco_voc_trainaug"].config.atrous_rates == ()


def test_zoo_config_overrides_scale_atrous_rates():
    config = zoo.zoo_config("xception65_cityscapes_trainfine", num_classes=8, output_stride=8)
    assert config == dataclasses.replace(zoo.ZOO["xception65_cityscapes_trainfine"].config,
                                         num_classes=8, output_stride=8, atrous_rates=(12, 24, 36))
    with pytest.raises(ValueError, match="unknown zoo checkpoint 'nope'.*xception65_imagenet"):
        zoo.get_entry("nope")


def test_build_from_zoo_mobilenet_has_no_aspp_or_decoder():
    model = zoo.build_from_zoo("mobilenetv2_coco_cityscapes_trainfine")
    names = checkpoint_variables(model)
    assert not any(n.startswith(("aspp1", "decoder/")) for n in names)
    assert names["logits/semantic/weights"].shape == (1, 1, 256, 19)


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="output_stride"):
        DeepLabConfig(output_stride=12)
    with pytest.raises(ValueError, match="backbone"):
        DeepLabConfig(backbone="resnet_50")
    with pytest.raises(ValueError, match="decoder_output_stride"):
        DeepLabConfig(decoder_output_stride=2)
    with pytest.raises(ValueError, match="atrous_rates"):
        DeepLabConfig(atrous_rates=(6, 0))


def test_ignored_names():
    for name in ["global_step", "aspp0/weights/Momentum", "a/b/Adam_1", "x/weights/RMSProp",
                 "x/BatchNorm/gamma/ExponentialMovingAverage", "beta1_power"]:
        assert tf1.is_ignored_checkpoint_name(name), name
    for name in ["aspp0/weights", "logits/semantic/biases", "x/BatchNorm/moving_mean"]:
        assert not tf1.is_ignored_checkpoint_name(name), name


def test_extras_checkpoint_loads_from_directory(xception_model, make_golden_checkpoint):
    prefix = make_golden_checkpoint(XCEPTION_MANIFEST, extras=True)
    report = tf1.load_checkpoint(xception_model, os.path.dirname(prefix))
    reader = tf.train.load_checkpoint(prefix)
    shapes = reader.get_variable_to_shape_map()
    assert "global_step" in shapes and any(n.endswith("/Momentum") for n in shapes)
    assert report.loaded == 732 and report.skipped == []
    assert report.ignored == len(shapes) - 732
    table = checkpoint_variables(xception_model)
    for name in ["xception_65/entry_flow/conv1_1/weights", "logits/semantic/biases",
                 "decoder/decoder_conv1_pointwise/BatchNorm/moving_variance"]:
        np.testing.assert_array_equal(table[name].numpy(), reader.get_tensor(name))


def test_deleted_and_reshaped_variables_fail_naming_both(xception_model, golden_xception_checkpoint,
                                                         tmp_path):
    tensors = read_checkpoint(golden_xception_checkpoint)
    del tensors[DELETED]
    tensors[RESHAPED] = tensors[RESHAPED][:, :, :, :128]
    tensors["extra_head/weights"] = np.zeros((3,), np.float32)
    prefix = write_checkpoint(tmp_path / "broken.ckpt", tensors)
    del tensors
    table = checkpoint_variables(xception_model)
    before = table["xception_65/entry_flow/conv1_1/weights"].numpy().copy()
    table["xception_65/entry_flow/conv1_1/weights"].assign(np.zeros_like(before))
    with pytest.raises(tf1.CheckpointMismatchError) as error:
        tf1.load_checkpoint(xception_model, prefix)
    summary, fix = str(error.value).splitlines()
    assert summary == (f"checkpoint {prefix} does not fit the model: 1 mis-shaped ({RESHAPED}: "
                       f"checkpoint [1, 1, 2048, 128] vs model [1, 1, 2048, 256]); 1 missing in "
                       f"the checkpoint ({DELETED}); 1 unexpected in it (extra_head/weights)")
    assert fix == tf1.MISMATCH_FIX
    details = error.value.details()
    assert f"missing in checkpoint: {DELETED}" in details
    assert f"shape mismatch: {RESHAPED}: checkpoint [1, 1, 2048, 128] vs model [1, 1, 2048, 256]" \
        in details
    assert "unexpected in checkpoint: extra_head/weights" in details
    assert error.value.missing == [DELETED]
    assert list(error.value.mismatched) == [RESHAPED]
    # Nothing was assigned before the error.
    assert not table["xception_65/entry_flow/conv1_1/weights"].numpy().any()
    table["xception_65/entry_flow/conv1_1/weights"].assign(before)


def test_21_class_checkpoint_into_19_class_model(golden_xception_checkpoint, caplog):
    model = build_deeplab(dataclasses.replace(XCEPTION_VOC, num_classes=19))
    logits_before = checkpoint_variables(model)["logits/semantic/weights"].numpy().copy()
    with pytest.raises(tf1.CheckpointMismatchError, match="logits/semantic/weights"):
        tf1.load_checkpoint(model, golden_xception_checkpoint, skip_mismatched_logits=False)
    with caplog.at_level("WARNING"):
        report = tf1.load_checkpoint(model, golden_xception_checkpoint)
    assert "has 21 classes, the model 19" in caplog.text
    assert report.loaded == 730
    assert report.skipped == ["logits/semantic/biases", "logits/semantic/weights"]
    table = checkpoint_variables(model)
    np.testing.assert_array_equal(table["logits/semantic/weights"].numpy(), logits_before)
    reader = tf.train.load_checkpoint(golden_xception_checkpoint)
    np.testing.assert_array_equal(table["concat_projection/weights"].numpy(),
                                  reader.get_tensor("concat_projection/weights"))


def test_backbone_only_loads_backbone_and_ignores_classifier(golden_xception_checkpoint, tmp_path):
    tensors = read_checkpoint(golden_xception_checkpoint)
    backbone = {n: v for n, v in tensors.items() if n.startswith("xception_65/")}
    del tensors
    backbone["xception_65/logits/weights"] = np.zeros((1, 1, 2048, 1001), np.float32)
    prefix = write_checkpoint(tmp_path / "imagenet.ckpt", backbone)
    model = zoo.build_from_zoo("xception65_imagenet", num_classes=5)
    with pytest.raises(tf1.CheckpointMismatchError,
                       match=r"72 missing in the checkpoint \(aspp0/BatchNorm/beta, "):
        tf1.load_checkpoint(model, prefix)
    report = tf1.load_checkpoint(model, prefix, backbone_only=True)
    assert report.loaded == len(backbone) - 1
    assert "logits/semantic/weights" in report.skipped and "aspp0/weights" in report.skipped


def test_missing_path_is_named(xception_model, tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere"):
        tf1.load_checkpoint(xception_model, tmp_path / "nothere" / "model.ckpt")
    with pytest.raises(FileNotFoundError, match="exactly one checkpoint"):
        tf1.load_checkpoint(xception_model, tmp_path)


class TrackingReader:
    """Wraps a CheckpointReader and keeps weak references to every array it hands out."""

    def __init__(self, reader):
        self.reader = reader
        self.handed_out = []
        self.max_alive = 0

    def alive(self):
        return sum(ref() is not None for ref in self.handed_out)

    def get_variable_to_shape_map(self):
        return self.reader.get_variable_to_shape_map()

    def get_variable_to_dtype_map(self):
        return self.reader.get_variable_to_dtype_map()

    def get_tensor(self, name):
        value = self.reader.get_tensor(name)
        self.handed_out.append(weakref.ref(value))
        self.max_alive = max(self.max_alive, self.alive())
        return value


def test_loading_keeps_no_second_copy_of_the_weights(xception_model, golden_xception_checkpoint,
                                                     monkeypatch):
    """Every array read from the checkpoint is dropped right after its assignment: at most two
    are alive at once while loading, none once load_checkpoint returns."""
    readers = []
    open_checkpoint = tf.train.load_checkpoint

    def tracking_load_checkpoint(prefix):
        readers.append(TrackingReader(open_checkpoint(prefix)))
        return readers[-1]

    monkeypatch.setattr(tf.train, "load_checkpoint", tracking_load_checkpoint)
    report = tf1.load_checkpoint(xception_model, golden_xception_checkpoint)
    gc.collect()
    (reader,) = readers
    assert len(reader.handed_out) == report.loaded == 732
    assert reader.max_alive <= 2
    assert reader.alive() == 0
