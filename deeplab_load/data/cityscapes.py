"""Cityscapes: `leftImg8bit/{split}/{city}/*_leftImg8bit.png` with
`gtFine/{split}/{city}/*_gtFine_labelIds.png`, label ids mapped to the 19 train ids."""
import glob
import io
import os

import numpy as np
from PIL import Image

from deeplab_load.data.common import IGNORE_LABEL, BadExampleError, DataDirError, Dataset, \
    DatasetInfo, ExampleRef, SplitError, decode_index_png, read_bytes

# (train id, label id, name, RGB colour) of the 19 evaluated classes.
_TRAIN_CLASSES = (
    (0, 7, "road", (128, 64, 128)),
    (1, 8, "sidewalk", (244, 35, 232)),
    (2, 11, "building", (70, 70, 70)),
    (3, 12, "wall", (102, 102, 156)),
    (4, 13, "fence", (190, 153, 153)),
    (5, 17, "pole", (153, 153, 153)),
    (6, 19, "traffic light", (250, 170, 30)),
    (7, 20, "traffic sign", (220, 220, 0)),
    (8, 21, "vegetation", (107, 142, 35)),
    (9, 22, "terrain", (152, 251, 152)),
    (10, 23, "sky", (70, 130, 180)),
    (11, 24, "person", (220, 20, 60)),
    (12, 25, "rider", (255, 0, 0)),
    (13, 26, "car", (0, 0, 142)),
    (14, 27, "truck", (0, 0, 70)),
    (15, 28, "bus", (0, 60, 100)),
    (16, 31, "train", (0, 80, 100)),
    (17, 32, "motorcycle", (0, 0, 230)),
    (18, 33, "bicycle", (119, 11, 32)),
)
NUM_LABEL_IDS = 34  # label ids 0..33 occur in *_labelIds.png; all but the above are ignored.

CLASS_NAMES = tuple(name for _, _, name, _ in _TRAIN_CLASSES)
PALETTE = np.array([color for _, _, _, color in _TRAIN_CLASSES], np.uint8)
TRAIN_ID_TO_LABEL_ID = np.array([label_id for _, label_id, _, _ in _TRAIN_CLASSES], np.uint8)
"""uint8 [19]: train id -> label id (for test-server PNGs)."""

LABEL_ID_TO_TRAIN_ID = np.full(256, IGNORE_LABEL, np.uint8)
"""uint8 [256]: label id -> train id, 255 for every non-evaluated id."""
LABEL_ID_TO_TRAIN_ID[TRAIN_ID_TO_LABEL_ID] = np.arange(len(_TRAIN_CLASSES), dtype=np.uint8)

INFO = DatasetInfo(name="cityscapes", num_classes=19, class_names=CLASS_NAMES,
                   crop_size=(513, 513), eval_crop_size=(1025, 2049), palette=PALETTE)

_IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_IDS_SUFFIX = "_gtFine_labelIds.png"
INSTANCE_IDS_SUFFIX = "_gtFine_instanceIds.png"


def label_ids_to_train_ids(label_ids: np.ndarray, path="<labelIds>") -> np.ndarray:
    """uint8 label ids [H, W] -> uint8 train ids [H, W]; BadExampleError on ids > 33."""
    label_ids = np.asarray(label_ids, np.uint8)
    if label_ids.size and label_ids.max() >= NUM_LABEL_IDS:
        bad = np.unique(label_ids[label_ids >= NUM_LABEL_IDS])
        raise BadExampleError(path, f"label ids {bad[:10].tolist()} are not Cityscapes "
                                    f"label ids (0..{NUM_LABEL_IDS - 1})")
    return LABEL_ID_TO_TRAIN_ID[label_ids]


class CityscapesDataset(Dataset):
    """Splits train / val / test (test labels are not used: label_path None)."""

    info = INFO

    def __init__(self, data_dir):
        """data_dir: the Cityscapes root (with leftImg8bit/ and gtFine/)."""
        super().__init__(data_dir)
        if not os.path.isdir(os.path.join(self.data_dir, "leftImg8bit")):
            raise DataDirError(f"--dataset_dir {self.data_dir} holds no leftImg8bit/; pass the "
                               f"Cityscapes root (with leftImg8bit/ and gtFine/)")

    @property
    def splits(self):
        return ("train", "val", "test", "train_extra")

    def examples(self, split):
        self.check_split(split)
        image_dir = os.path.join(self.data_dir, "leftImg8bit", split)
        if not os.path.isdir(image_dir):
            raise SplitError(f"Cityscapes split {split!r} not found: {image_dir}")
        label_root = "gtCoarse" if split == "train_extra" else "gtFine"
        label_suffix = LABEL_IDS_SUFFIX.replace("gtFine", label_root)
        refs = []
        for image_path in sorted(glob.glob(os.path.join(image_dir, "*", "*" + _IMAGE_SUFFIX))):
            city = os.path.basename(os.path.dirname(image_path))
            example_id = os.path.basename(image_path)[:-len(_IMAGE_SUFFIX)]
            label_path = None
            if split != "test":
                label_path = os.path.join(self.data_dir, label_root, split, city,
                                          example_id + label_suffix)
            refs.append(ExampleRef(example_id, image_path, label_path))
        if not refs:
            raise SplitError(f"no *{_IMAGE_SUFFIX} images under {image_dir}/<city>/")
        return refs

    def decode_label(self, data, path):
        return label_ids_to_train_ids(decode_index_png(data, path), path)

    def instance_png(self, ref, size):
        """Bytes of the ref's ``*_gtFine_instanceIds.png`` (checked to decode to ``size`` =
        (height, width)), or None when it has none (test split, coarse labels, not downloaded)."""
        if ref.label_path is None or not ref.label_path.endswith(LABEL_IDS_SUFFIX):
            return None
        path = instance_ids_path(ref.label_path)
        if not os.path.isfile(path):
            return None
        data = read_bytes(path)
        ids = decode_instance_ids(data, path)
        if ids.shape != tuple(size):
            raise BadExampleError(path, f"instance ids {ids.shape[0]}x{ids.shape[1]} differ from "
                                        f"the image size {size[0]}x{size[1]}")
        return data


def instance_ids_path(label_path):
    """``*_gtFine_labelIds.png`` -> the ``*_gtFine_instanceIds.png`` beside it."""
    label_path = os.fspath(label_path)
    if not label_path.endswith(LABEL_IDS_SUFFIX):
        raise ValueError(f"not a Cityscapes fine label file: {label_path}")
    return label_path[:-len(LABEL_IDS_SUFFIX)] + INSTANCE_IDS_SUFFIX


def decode_instance_ids(data, name):
    """int64 [H, W] instance ids of ``*_instanceIds.png`` bytes (16-bit); BadExampleError
    names ``name``."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            values = np.asarray(img)
    except Exception as err:  # Pillow raises several unrelated types for corrupt data.
        raise BadExampleError(name, f"cannot decode instance-id PNG ({err})") from err
    if values.ndim != 2:
        raise BadExampleError(name, f"instance ids must be one channel, got shape {values.shape}")
    return values.astype(np.int64)


def read_instance_ids(path):
    """int64 [H, W] instance ids of a ``*_instanceIds.png`` file."""
    return decode_instance_ids(read_bytes(path), path)
