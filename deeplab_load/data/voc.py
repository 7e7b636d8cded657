"""PASCAL VOC 2012: `VOCdevkit/VOC2012/{JPEGImages, SegmentationClass, ImageSets/Segmentation}`.

`train_aug` reads `SegmentationClassAug` (grayscale index PNGs) with the list
`ImageSets/Segmentation/train_aug.txt`, or, without that list, every id that has an Aug label
and a JPEG, minus the val ids. Other splits read `SegmentationClassRaw` (index PNGs made by the
original `remove_gt_colormap.py`) when present, else the palette PNGs of `SegmentationClass`.
"""
import os

import numpy as np

from deeplab_load.data.common import DataDirError, Dataset, DatasetInfo, ExampleRef, \
    SplitError, decode_index_png, read_id_list

CLASS_NAMES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)


def voc_palette(num_colors: int = 256) -> np.ndarray:
    """uint8 [num_colors, 3]: the PASCAL VOC colour map.

    The bits of a class index are spread over the colour channels: bit 3k of the index goes to
    the red channel's bit (7 - k), bit 3k+1 to green, bit 3k+2 to blue.
    """
    index = np.arange(num_colors)
    palette = np.zeros((num_colors, 3), np.int64)
    for k in range(8):
        for channel in range(3):
            bit = (index >> (3 * k + channel)) & 1
            palette[:, channel] |= bit << (7 - k)
    return palette.astype(np.uint8)


PALETTE_256 = voc_palette(256)
"""uint8 [256, 3]: the full palette written into VOC label / submission PNGs (255 = cream)."""
PALETTE = PALETTE_256[:len(CLASS_NAMES)]

INFO = DatasetInfo(name="voc", num_classes=len(CLASS_NAMES), class_names=CLASS_NAMES,
                   crop_size=(513, 513), eval_crop_size=(513, 513), palette=PALETTE)


class VocDataset(Dataset):
    """Splits train / val / trainval / test (unlabelled) / train_aug."""

    info = INFO

    def __init__(self, data_dir):
        """data_dir: the folder holding VOCdevkit (research/deeplab's pascal_voc_seg),
        VOCdevkit itself, or VOC2012."""
        super().__init__(data_dir)
        candidates = [os.path.join(self.data_dir, "VOCdevkit", "VOC2012"),
                      os.path.join(self.data_dir, "VOC2012"), self.data_dir]
        self.root = next((c for c in candidates if os.path.isdir(os.path.join(c, "JPEGImages"))),
                         None)
        if self.root is None:
            raise DataDirError(
                f"--dataset_dir {self.data_dir} holds no VOC2012/JPEGImages; pass the folder "
                f"holding VOCdevkit, VOCdevkit itself, or VOC2012")

    @property
    def splits(self):
        return ("train", "val", "trainval", "test", "train_aug")

    def available(self, split):
        """train_aug needs SBD's SegmentationClassAug; the other splits their list files."""
        if split == "train_aug":
            return os.path.isdir(os.path.join(self.root, "SegmentationClassAug"))
        return os.path.isfile(self._list_path(split))

    def _list_path(self, split):
        return os.path.join(self.root, "ImageSets", "Segmentation", f"{split}.txt")

    def _read_list(self, split):
        path = self._list_path(split)
        if not os.path.isfile(path):
            raise SplitError(f"VOC split list not found: {path}")
        return read_id_list(path)

    def _train_aug_ids(self, aug_dir):
        if os.path.isfile(self._list_path("train_aug")):
            return self._read_list("train_aug")
        val = set(self._read_list("val"))
        ids = []
        for name in sorted(os.listdir(aug_dir)):
            stem, ext = os.path.splitext(name)
            if ext == ".png" and stem not in val and os.path.isfile(
                    os.path.join(self.root, "JPEGImages", stem + ".jpg")):
                ids.append(stem)
        return ids

    def examples(self, split):
        self.check_split(split)
        images = os.path.join(self.root, "JPEGImages")
        if split == "train_aug":
            label_dir = os.path.join(self.root, "SegmentationClassAug")
            if not os.path.isdir(label_dir):
                raise SplitError(f"split train_aug needs SBD's SegmentationClassAug: {label_dir} "
                                 f"is missing (use --train_split=train without SBD)")
            ids = self._train_aug_ids(label_dir)
        else:
            label_dir = os.path.join(self.root, "SegmentationClassRaw")
            if not os.path.isdir(label_dir):
                label_dir = os.path.join(self.root, "SegmentationClass")
            ids = self._read_list(split)
        return [ExampleRef(i, os.path.join(images, i + ".jpg"),
                           None if split == "test" else os.path.join(label_dir, i + ".png"))
                for i in ids]

    def decode_label(self, data, path):
        return decode_index_png(data, path)
