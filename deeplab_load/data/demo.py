"""The demo data set: procedurally generated scenes in the PASCAL VOC layout.

Each image shows a smooth, noisy background with 0-2 distractor blobs and 2-4 shapes drawn in
random order, so later shapes occlude earlier ones. Every class has its own hue and texture
(stripes, checkers, dots, ...), but only as a hint: some objects take a random colour or another
class's texture, so shape matters too. Object borders are 1 px of ignore (255) as in VOC. The set
is a pure function of (num_train, num_val, image_size, seed): it is written to a cache dir
(`$DEEPLAB_LOAD_CACHE/demo` or `~/.cache/deeplab_load/demo`; `demo_<parameters>` next to it
for non-default parameters) with a `manifest.json`, and regenerated when absent or made with
other parameters.

    python -m deeplab_load_tools.make_demo_data --num_train=500 --num_val=100 --output_dir=/tmp/demo500
"""
import os

import numpy as np

from deeplab_load.data.common import IGNORE_LABEL, DatasetInfo, as_size, write_id_list_atomic
from deeplab_load.data.generated import cache_root, ensure_generated, voc_folders, \
    write_voc_example
from deeplab_load.data.voc import PALETTE_256, VocDataset

GENERATOR_VERSION = 3
CLASS_NAMES = ("background", "disk", "square", "triangle", "ring", "cross")
DEFAULT_NUM_TRAIN = 256
DEFAULT_NUM_VAL = 120
DEFAULT_IMAGE_SIZE = (97, 129)
COLOR_HINT = 0.85  # probability that an object has its class colour (else a random one)
TEXTURE_HINT = 0.9  # probability that an object has its class texture
NOISE_STD = 12.0  # pixel noise, in 0..255 units

# Per shape class: base RGB colour and texture kind.
_CLASS_STYLE = {
    1: ((210, 60, 50), "hstripes"),
    2: ((50, 90, 210), "checker"),
    3: ((60, 180, 70), "dots"),
    4: ((230, 200, 40), "gradient"),
    5: ((160, 60, 190), "dstripes"),
}
_TEXTURES = tuple(kind for _, kind in _CLASS_STYLE.values())


def default_cache_dir(num_train=DEFAULT_NUM_TRAIN, num_val=DEFAULT_NUM_VAL,
                      image_size=DEFAULT_IMAGE_SIZE, seed=0) -> str:
    """`<cache>/demo` for the default parameters, `<cache>/demo_<params>` for others, so sets
    of different sizes (e.g. benchmark variants) do not overwrite each other."""
    name = "demo"
    if (num_train, num_val, as_size(image_size), seed) != (
            DEFAULT_NUM_TRAIN, DEFAULT_NUM_VAL, DEFAULT_IMAGE_SIZE, 0):
        height, width = as_size(image_size)
        name = f"demo_{num_train}_{num_val}_{height}x{width}_seed{seed}"
    return os.path.join(cache_root(), name)


def _shape_mask(kind, u, v, radius):
    """Boolean mask of a shape in its own rotated frame (u, v: pixel offsets from the centre)."""
    dist = np.hypot(u, v)
    if kind == 1:
        return dist <= radius
    if kind == 2:
        return (np.abs(u) <= 0.8 * radius) & (np.abs(v) <= 0.8 * radius)
    if kind == 3:
        inside = np.ones_like(u, bool)
        for angle in (np.pi / 2, np.pi / 2 + 2 * np.pi / 3, np.pi / 2 + 4 * np.pi / 3):
            inside &= u * np.cos(angle) + v * np.sin(angle) <= 0.5 * radius
        return inside
    if kind == 4:
        return (dist <= radius) & (dist >= 0.55 * radius)
    arm = radius / 3
    return ((np.abs(u) <= radius) & (np.abs(v) <= arm)) | ((np.abs(v) <= radius) & (np.abs(u) <= arm))


def _texture(kind, u, v, rng):
    """Brightness modulation in [-1, 1] for a texture kind at shape-frame offsets (u, v)."""
    period = rng.uniform(4.0, 7.0)
    if kind == "hstripes":
        return np.sign(np.sin(2 * np.pi * v / period))
    if kind == "checker":
        return np.where((np.floor(u / period) + np.floor(v / period)) % 2 == 0, 1.0, -1.0)
    if kind == "dots":
        return np.where(np.hypot(u % period - period / 2, v % period - period / 2)
                        < period / 4, 1.0, -0.3)
    if kind == "gradient":
        return np.clip(u / (np.abs(u).max(initial=0) + 1e-6), -1, 1)
    return np.sign(np.sin(2 * np.pi * (u + v) / period))


def _instance_frame(rng, xx, yy, height, width):
    """Pixel offsets (u, v) from a random centre in a randomly rotated frame."""
    cy, cx = rng.uniform(0, height), rng.uniform(0, width)
    angle = rng.uniform(0, 2 * np.pi)
    u = np.cos(angle) * (xx - cx) + np.sin(angle) * (yy - cy)
    v = -np.sin(angle) * (xx - cx) + np.cos(angle) * (yy - cy)
    return u, v


def _paint(image, mask, color, texture_kind, u, v, rng):
    """Fills `mask` of float image [H, W, 3] with a colour modulated by a texture."""
    texture = _texture(texture_kind, u[mask], v[mask], rng)
    image[mask] = np.clip(color, 0, 255) + 35 * texture[:, None]


def render_scene(rng: np.random.Generator, height: int, width: int):
    """One scene: (image uint8 [H, W, 3], label uint8 [H, W] with class ids and 255 borders)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    # Background: a smooth two-colour gradient with low-frequency blotches.
    colors = rng.uniform(60, 170, size=(2, 3))
    direction = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(direction) * xx / width + np.sin(direction) * yy / height + 1) / 2
    image = colors[0] * (1 - ramp[..., None]) + colors[1] * ramp[..., None]
    freq = rng.uniform(0.05, 0.15, size=2)
    image += 15 * (np.sin(freq[0] * xx + rng.uniform(0, 6)) *
                   np.cos(freq[1] * yy + rng.uniform(0, 6)))[..., None]
    label = np.zeros((height, width), np.uint8)
    scale = min(height, width)
    # Distractors: background-labelled ellipses with random colours and class textures.
    for _ in range(rng.integers(0, 3)):
        u, v = _instance_frame(rng, xx, yy, height, width)
        axes = rng.uniform(0.06, 0.14, size=2) * scale
        mask = (u / axes[0]) ** 2 + (v / axes[1]) ** 2 <= 1
        _paint(image, mask, rng.uniform(40, 220, size=3), _TEXTURES[rng.integers(5)], u, v, rng)
    for _ in range(rng.integers(2, 5)):
        cls = int(rng.integers(1, len(CLASS_NAMES)))
        u, v = _instance_frame(rng, xx, yy, height, width)
        mask = _shape_mask(cls, u, v, rng.uniform(0.15, 0.32) * scale)
        base, texture_kind = _CLASS_STYLE[cls]
        # Colour and texture are only hints: some instances borrow another look, so the
        # shape must be recognised too.
        color = (np.array(base) + rng.uniform(-25, 25, size=3) if rng.random() < COLOR_HINT
                 else rng.uniform(40, 220, size=3))
        if rng.random() >= TEXTURE_HINT:
            texture_kind = _TEXTURES[rng.integers(5)]
        _paint(image, mask, color, texture_kind, u, v, rng)
        label[mask] = cls
    image += rng.normal(0, NOISE_STD, size=image.shape)
    border = np.zeros_like(label, bool)
    border[1:] |= label[1:] != label[:-1]
    border[:-1] |= label[:-1] != label[1:]
    border[:, 1:] |= label[:, 1:] != label[:, :-1]
    border[:, :-1] |= label[:, :-1] != label[:, 1:]
    label[border] = IGNORE_LABEL
    return np.clip(np.round(image), 0, 255).astype(np.uint8), label


def _manifest(num_train, num_val, image_size, seed):
    return {"generator_version": GENERATOR_VERSION, "num_train": int(num_train),
            "num_val": int(num_val), "image_size": list(as_size(image_size)), "seed": int(seed)}


def write_demo(root, num_train, num_val, image_size, seed):
    """Writes the whole set (without its manifest) into `root`, a new or empty directory, in
    the VOC layout."""
    height, width = as_size(image_size)
    voc = voc_folders(root)
    ids = [f"demo_{i:05d}" for i in range(num_train + num_val)]
    for index, example_id in enumerate(ids):
        image, label = render_scene(np.random.default_rng([seed, index]), height, width)
        write_voc_example(voc, example_id, image, label, PALETTE_256)
    lists = os.path.join(voc, "ImageSets", "Segmentation")
    write_id_list_atomic(os.path.join(lists, "train.txt"), ids[:num_train])
    write_id_list_atomic(os.path.join(lists, "val.txt"), ids[num_train:])
    write_id_list_atomic(os.path.join(lists, "trainval.txt"), ids)


def ensure_demo(root=None, num_train=DEFAULT_NUM_TRAIN, num_val=DEFAULT_NUM_VAL,
                image_size=DEFAULT_IMAGE_SIZE, seed=0) -> str:
    """The demo root directory, (re)generated unless its manifest matches the parameters
    (`generated.ensure_generated`: written aside and renamed into place; a non-empty `root`
    without a manifest is never deleted)."""
    return ensure_generated(
        root or default_cache_dir(num_train, num_val, image_size, seed),
        _manifest(num_train, num_val, image_size, seed),
        lambda folder: write_demo(folder, num_train, num_val, image_size, seed), "demo")


class DemoDataset(VocDataset):
    """The generated set read with the VOC loader; splits train / val / trainval."""

    def __init__(self, data_dir=None, num_train=DEFAULT_NUM_TRAIN, num_val=DEFAULT_NUM_VAL,
                 image_size=DEFAULT_IMAGE_SIZE, seed=0):
        height, width = as_size(image_size)
        root = ensure_demo(data_dir, num_train, num_val, (height, width), seed)
        side = min(height, width)
        self.info = DatasetInfo(
            name="demo", num_classes=len(CLASS_NAMES), class_names=CLASS_NAMES,
            crop_size=(side, side), eval_crop_size=(height, width),
            palette=PALETTE_256[:len(CLASS_NAMES)])
        super().__init__(root)

    @property
    def splits(self):
        return ("train", "val", "trainval")
