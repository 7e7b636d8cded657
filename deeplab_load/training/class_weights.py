"""Training-set class pixel statistics for the paper's weighted cross entropy (Stage 1).

The paper weighs a pixel of class c by "the average number of pixels per class computed over the
entire training dataset" divided by "the number of pixels per class in the image". We read the
average over the (image, class present in the image) pairs and store it as a fraction of the
image's valid pixels (`mean_class_fraction`), so it applies unchanged to random crops; see
`losses.class_balanced_pixel_weights`. Since an image's class fractions sum to 1, that mean is
num_images / number of (image, present class) pairs, i.e. 1 / mean classes per image.
"""
import dataclasses
import json

import numpy as np

from deeplab_load.atomic_files import write_text_atomic
from deeplab_load.models.ops import IGNORE_LABEL


@dataclasses.dataclass
class ClassPixelStats:
    """Pixel counts of a label set.

    num_images: images counted (those with at least one valid pixel).
    class_pixels: [K] total pixels of each class.
    class_images: [K] number of images containing each class.
    """
    num_classes: int
    num_images: int
    class_pixels: list
    class_images: list

    @property
    def num_class_occurrences(self):
        return int(sum(self.class_images))

    @property
    def mean_class_fraction(self):
        """Mean fraction of an image's valid pixels taken by one of its classes."""
        if self.num_class_occurrences == 0:
            raise ValueError("no labelled pixels were counted: cannot derive class weights")
        return self.num_images / self.num_class_occurrences

    @property
    def mean_pixels_per_class(self):
        """Mean pixels per (image, present class) pair: the paper's numerator in pixels."""
        if self.num_class_occurrences == 0:
            raise ValueError("no labelled pixels were counted: cannot derive class weights")
        return float(sum(self.class_pixels)) / self.num_class_occurrences

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), indent=1)

    @classmethod
    def from_json(cls, text):
        data = json.loads(text)
        stats = cls(**data)
        if len(stats.class_pixels) != stats.num_classes or len(stats.class_images) != stats.num_classes:
            raise ValueError("class statistics: list lengths differ from num_classes")
        return stats


def compute_class_pixel_stats(label_maps, num_classes, ignore_label=IGNORE_LABEL):
    """Counts class pixels over an iterable of label maps (uint8/int arrays [H,W]).

    Values other than 0..num_classes-1 and `ignore_label` raise ValueError naming the map's index.
    """
    class_pixels = np.zeros(num_classes, np.int64)
    class_images = np.zeros(num_classes, np.int64)
    num_images = 0
    for index, label in enumerate(label_maps):
        label = np.asarray(label)
        values = label[label != ignore_label].astype(np.int64)
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f"label map #{index}: values outside 0..{num_classes - 1} "
                             f"and not ignore ({ignore_label})")
        if values.size == 0:
            continue
        counts = np.bincount(values, minlength=num_classes)
        class_pixels += counts
        class_images += counts > 0
        num_images += 1
    return ClassPixelStats(num_classes=num_classes, num_images=num_images,
                           class_pixels=class_pixels.tolist(), class_images=class_images.tolist())


def save_class_pixel_stats(stats, path):
    """Writes the statistics as JSON (atomically, `atomic_files`)."""
    write_text_atomic(path, stats.to_json())


def load_class_pixel_stats(path, num_classes=None):
    """Reads statistics written by `save_class_pixel_stats`; errors name the file."""
    try:
        with open(path) as f:
            stats = ClassPixelStats.from_json(f.read())
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise ValueError(f"{path}: cannot read class pixel statistics: {error}") from error
    if num_classes is not None and stats.num_classes != num_classes:
        raise ValueError(f"{path}: statistics are for {stats.num_classes} classes, "
                         f"expected {num_classes}")
    return stats
