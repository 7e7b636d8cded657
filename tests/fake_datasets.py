"""Tiny fake PASCAL VOC, Cityscapes and Stanford Background trees in the real on-disk layouts.

Each `make_fake_*` writes a deterministic tree (from `seed`) under `root` and returns a
`FakeTree`: the directory to pass to `get_dataset(name, data_dir)`, and the label every example
must load as (uint8 train ids, ignore 255) by split and id. Images are random block pictures
(PNG for Cityscapes, JPEG otherwise); labels are blocks of classes with some ignore pixels.
"""
import dataclasses
import hashlib
import os
from typing import Dict

import numpy as np
from PIL import Image


@dataclasses.dataclass
class FakeTree:
    data_dir: str
    labels: Dict[str, Dict[str, np.ndarray]]  # split -> id -> expected uint8 label [H, W]

    def ids(self, split):
        return sorted(self.labels[split])


def _blocks(rng, size, values, block=8):
    """uint8 [H, W] of `block`-sized tiles, each a random choice from `values`."""
    height, width = size
    tiles = rng.choice(np.asarray(values), size=(-(-height // block), -(-width // block)))
    return np.kron(tiles, np.ones((block, block), np.int64))[:height, :width].astype(np.uint8)


def _image(rng, size):
    height, width = size
    base = _blocks(rng, size, np.arange(0, 256, 16)).astype(np.int64)
    noise = rng.integers(0, 30, size=(height, width, 3))
    return np.clip(base[..., None] + noise, 0, 255).astype(np.uint8)


def _save(path, array, mode, palette=None, fmt=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    img = Image.fromarray(array, mode=mode)
    if palette is not None:
        img = img.convert("P")
        img.putpalette(np.asarray(palette, np.uint8).reshape(-1).tolist())
    img.save(path, format=fmt)


def voc_palette_bytes():
    """The VOC colour map ([256, 3] uint8), computed here independently of the package."""
    palette = np.zeros((256, 3), np.uint8)
    for index in range(256):
        value, r, g, b = index, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= (value & 1) << shift
            g |= ((value >> 1) & 1) << shift
            b |= ((value >> 2) & 1) << shift
            value >>= 3
        palette[index] = (r, g, b)
    return palette


def make_fake_voc(root, num_train=3, num_val=3, size=(65, 97), seed=0, num_test=1,
                  num_aug_extra=0):
    """VOCdevkit/VOC2012 with JPEGImages, palette SegmentationClass PNGs and the split lists.

    With `num_aug_extra` > 0 also SegmentationClassAug (grayscale PNGs) for every train id plus
    that many extra ids, without a train_aug.txt (the loader derives the list).
    """
    rng = np.random.default_rng(seed)
    voc = os.path.join(str(root), "VOCdevkit", "VOC2012")
    splits = {"train": [f"2007_{i:06d}" for i in range(num_train)],
              "val": [f"2008_{i:06d}" for i in range(num_val)],
              "test": [f"2009_{i:06d}" for i in range(num_test)]}
    aug_ids = [f"2010_{i:06d}" for i in range(num_aug_extra)]
    labels = {"train": {}, "val": {}, "test": {}, "train_aug": {}}
    palette = voc_palette_bytes()
    for split, ids in list(splits.items()) + [("aug", aug_ids)]:
        for example_id in ids:
            _save(os.path.join(voc, "JPEGImages", example_id + ".jpg"), _image(rng, size),
                  "RGB", fmt="JPEG")
            if split == "test":
                labels["test"][example_id] = None
                continue
            label = _blocks(rng, size, list(range(21)) + [255, 0, 0])
            if split != "aug":
                labels[split][example_id] = label
                _save(os.path.join(voc, "SegmentationClass", example_id + ".png"), label, "L",
                      palette=palette)
            if num_aug_extra and split in ("train", "aug"):
                labels["train_aug"][example_id] = label
                _save(os.path.join(voc, "SegmentationClassAug", example_id + ".png"), label, "L")
    lists = os.path.join(voc, "ImageSets", "Segmentation")
    os.makedirs(lists, exist_ok=True)
    splits["trainval"] = splits["train"] + splits["val"]
    labels["trainval"] = {**labels["train"], **labels["val"]}
    for split, ids in splits.items():
        with open(os.path.join(lists, split + ".txt"), "w") as f:
            f.write("".join(i + "\n" for i in ids))
    if not num_aug_extra:
        del labels["train_aug"]
    return FakeTree(str(root), labels)


def _cityscapes_train_ids(label_ids):
    from cityscapesscripts.helpers.labels import labels as cs_labels
    table = np.full(256, 255, np.uint8)
    for label in cs_labels:
        if 0 <= label.id < 256 and 0 <= label.trainId < 255:
            table[label.id] = label.trainId
    return table[label_ids]


def _cityscapes_files(root, split, city, example_id):
    """(leftImg8bit image path, gtFine labelIds path) of one Cityscapes example."""
    return (os.path.join(str(root), "leftImg8bit", split, city, f"{example_id}_leftImg8bit.png"),
            os.path.join(str(root), "gtFine", split, city, f"{example_id}_gtFine_labelIds.png"))


def make_fake_cityscapes(root, num_train=2, num_val=2, size=(65, 97), seed=0, num_test=1,
                         cities=("aachen", "bremen")):
    """leftImg8bit/{split}/{city}/*_leftImg8bit.png and gtFine/.../*_gtFine_labelIds.png
    (label ids 0..33; expected train ids from cityscapesscripts' own table)."""
    rng = np.random.default_rng(seed)
    labels = {}
    for split, count in (("train", num_train), ("val", num_val), ("test", num_test)):
        labels[split] = {}
        for i in range(count):
            city = cities[i % len(cities)]
            example_id = f"{city}_{i:06d}_{19 + i:06d}"
            image_path, label_path = _cityscapes_files(root, split, city, example_id)
            _save(image_path, _image(rng, size), "RGB")
            if split == "test":
                labels[split][example_id] = None
                continue
            label_ids = _blocks(rng, size, np.arange(34))
            _save(label_path, label_ids, "L")
            labels[split][example_id] = _cityscapes_train_ids(label_ids)
    return FakeTree(str(root), labels)


def write_regions(path, values):
    """A Stanford `*.regions.txt` from an int array (-1 = unknown)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        for row in np.asarray(values):
            f.write(" ".join(str(int(v)) for v in row) + "\n")


def make_fake_stanford(root, num_images=10, size=(60, 80), seed=0):
    """iccv09Data/images/*.jpg + labels/*.regions.txt (values -1..7; no split files).

    `labels` holds everything under the key "all"; the split is made by the loader.
    """
    rng = np.random.default_rng(seed)
    base = os.path.join(str(root), "iccv09Data")
    labels = {"all": {}}
    for i in range(num_images):
        example_id = f"{i * 37 + 1000:07d}"
        _save(os.path.join(base, "images", example_id + ".jpg"), _image(rng, size), "RGB",
              fmt="JPEG")
        regions = _blocks(rng, size, np.arange(9)).astype(np.int64) - 1
        write_regions(os.path.join(base, "labels", example_id + ".regions.txt"), regions)
        labels["all"][example_id] = np.where(regions < 0, 255, regions).astype(np.uint8)
    return FakeTree(str(root), labels)



# The demo's classes as Cityscapes label ids: road, car, building, vegetation, person, sky.
DEMO_AS_CITYSCAPES_IDS = (7, 26, 11, 21, 24, 23)


def cityscapes_tree_from(dataset, root, splits=("train", "val")):
    """A Cityscapes-layout tree (leftImg8bit + gtFine_labelIds, city "demo") holding the images
    and labels of `dataset` (6 classes, e.g. the demo); its ignore pixels become label id 0."""
    to_id = np.zeros(256, np.uint8)
    to_id[:len(DEMO_AS_CITYSCAPES_IDS)] = DEMO_AS_CITYSCAPES_IDS
    for split in splits:
        for index, ref in enumerate(dataset.examples(split)):
            image, label = dataset.load(ref)
            image_path, label_path = _cityscapes_files(root, split, "demo",
                                                       f"demo_{index:06d}_000019")
            _save(image_path, image, "RGB")
            _save(label_path, to_id[label], "L")
    return str(root)


def tree_digest(root):
    """sha1 over every file under `root` (relative path + bytes), in a fixed order."""
    sha = hashlib.sha1()
    for base, _, names in sorted(os.walk(root)):
        for name in sorted(names):
            path = os.path.join(base, name)
            sha.update(os.path.relpath(path, root).encode())
            with open(path, "rb") as f:
                sha.update(f.read())
    return sha.hexdigest()
