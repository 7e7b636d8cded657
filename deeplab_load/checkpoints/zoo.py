"""The official DeepLab model-zoo checkpoints.

``ZOO`` lists the PASCAL VOC, Cityscapes and ImageNet checkpoints of research/deeplab's
``g3doc/model_zoo.md`` for Xception-65 and MobileNetV2 (``tf1.load_checkpoint`` reads them).
"""
import dataclasses

from deeplab_load.models.deeplab import DeepLabConfig, build_deeplab

ZOO_BASE_URL = "http://download.tensorflow.org/models/"
VOC_EVAL_CROP = (513, 513)
CITYSCAPES_EVAL_CROP = (1025, 2049)

_XCEPTION_VOC = DeepLabConfig("xception_65", 21, 16, (6, 12, 18), 4)
_XCEPTION_CITYSCAPES = DeepLabConfig("xception_65", 19, 16, (6, 12, 18), 4)
_MOBILENET_VOC = DeepLabConfig("mobilenet_v2", 21, 16, (), None)
_MOBILENET_CITYSCAPES = DeepLabConfig("mobilenet_v2", 19, 16, (), None)
# ImageNet checkpoints hold only the backbone (plus its classifier); the head here is a placeholder
# that tf1.load_checkpoint(..., backbone_only=True) leaves untouched.
_XCEPTION_IMAGENET = DeepLabConfig("xception_65", 1000, 16, (6, 12, 18), 4)
_MOBILENET_IMAGENET = DeepLabConfig("mobilenet_v2", 1000, 16, (), None)


@dataclasses.dataclass(frozen=True)
class ZooEntry:
    """One official checkpoint.

    config: the training configuration (output stride 16 for all of them).
    eval_output_stride / eval_scales / published_miou / miou_split: the zoo table's row whose
      numbers were obtained with single-scale, unflipped inference where the zoo gives one
      (published_miou is None for ImageNet backbones).
    eval_crop_size: the eval.py padding size of the data set (None for ImageNet).
    backbone_only: an ImageNet checkpoint: load with
      ``tf1.load_checkpoint(..., backbone_only=True)``.
    sha256: of the tarball when known; None means the download tool verifies the unpacked
      checkpoint's variables instead.
    """
    name: str
    url: str
    config: DeepLabConfig
    dataset: str
    eval_output_stride: int | None = None
    eval_scales: tuple = (1.0,)
    published_miou: float | None = None
    miou_split: str | None = None
    eval_crop_size: tuple | None = None
    backbone_only: bool = False
    sha256: str | None = None
    note: str = ""

    @property
    def val_miou(self):
        """The published mIoU (percent) if it was measured on the val split, else None."""
        return self.published_miou if self.miou_split == "val" else None


def _zoo(*entries):
    return {entry.name: entry for entry in entries}


ZOO = _zoo(
    ZooEntry("mobilenetv2_coco_voc_trainaug",
             ZOO_BASE_URL + "deeplabv3_mnv2_pascal_train_aug_2018_01_29.tar.gz",
             _MOBILENET_VOC, "pascal_voc", 16, (1.0,), 75.32, "val", VOC_EVAL_CROP),
    ZooEntry("mobilenetv2_coco_voc_trainval",
             ZOO_BASE_URL + "deeplabv3_mnv2_pascal_trainval_2018_01_29.tar.gz",
             _MOBILENET_VOC, "pascal_voc", 8, (0.5, 0.75, 1.0, 1.25, 1.5, 1.75), 80.25, "test",
             VOC_EVAL_CROP, note="published number: multi-scale + flip, VOC test server"),
    ZooEntry("xception65_coco_voc_trainaug",
             ZOO_BASE_URL + "deeplabv3_pascal_train_aug_2018_01_04.tar.gz",
             _XCEPTION_VOC, "pascal_voc", 16, (1.0,), 82.20, "val", VOC_EVAL_CROP,
             note="83.58% val at OS 8, scales 0.5:0.25:1.75 + flip"),
    ZooEntry("xception65_coco_voc_trainval",
             ZOO_BASE_URL + "deeplabv3_pascal_trainval_2018_01_04.tar.gz",
             _XCEPTION_VOC, "pascal_voc", 8, (0.5, 0.75, 1.0, 1.25, 1.5, 1.75), 87.80, "test",
             VOC_EVAL_CROP, note="published number: multi-scale + flip, VOC test server"),
    ZooEntry("mobilenetv2_coco_cityscapes_trainfine",
             ZOO_BASE_URL + "deeplabv3_mnv2_cityscapes_train_2018_02_05.tar.gz",
             _MOBILENET_CITYSCAPES, "cityscapes", 16, (1.0,), 70.71, "val", CITYSCAPES_EVAL_CROP,
             note="73.57% val at OS 8, scales 0.75:0.25:1.25 + flip"),
    ZooEntry("xception65_cityscapes_trainfine",
             ZOO_BASE_URL + "deeplabv3_cityscapes_train_2018_02_06.tar.gz",
             _XCEPTION_CITYSCAPES, "cityscapes", 16, (1.0,), 78.79, "val", CITYSCAPES_EVAL_CROP,
             note="80.42% val at OS 8, scales 0.75:0.25:1.25 + flip"),
    ZooEntry("xception65_imagenet",
             ZOO_BASE_URL + "deeplabv3_xception_2018_01_04.tar.gz",
             _XCEPTION_IMAGENET, "imagenet", backbone_only=True),
    ZooEntry("xception65_imagenet_coco",
             ZOO_BASE_URL + "xception_65_coco_pretrained_2018_10_02.tar.gz",
             _XCEPTION_IMAGENET, "imagenet+coco", backbone_only=True),
    ZooEntry("mobilenetv2_imagenet",
             "https://storage.googleapis.com/mobilenet_v2/checkpoints/mobilenet_v2_1.0_224.tgz",
             _MOBILENET_IMAGENET, "imagenet", backbone_only=True,
             note="the zoo refers to the slim MobileNet-V2 release for this checkpoint"),
)


def get_entry(name):
    """The ZooEntry called ``name``; ValueError listing the known names otherwise."""
    if name not in ZOO:
        raise ValueError(f"unknown zoo checkpoint {name!r}; known: {', '.join(sorted(ZOO))}")
    return ZOO[name]


def zoo_config(name, num_classes=None, output_stride=None):
    """The DeepLabConfig of a zoo entry, with optional class count / output stride overrides.

    Changing the output stride scales the atrous rates like the zoo does (6,12,18 at OS 16 ->
    12,24,36 at OS 8).
    """
    config = get_entry(name).config
    changes = {}
    if num_classes is not None:
        changes["num_classes"] = num_classes
    if output_stride is not None and output_stride != config.output_stride:
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride!r}")
        changes["output_stride"] = output_stride
        changes["atrous_rates"] = tuple(r * config.output_stride // output_stride
                                        for r in config.atrous_rates)
    return dataclasses.replace(config, **changes)


def build_from_zoo(name, num_classes=None, output_stride=None, crop_size=None):
    """An (untrained) model with the configuration of zoo entry ``name``."""
    return build_deeplab(zoo_config(name, num_classes, output_stride), crop_size=crop_size)
