"""The bench data set: generated scenes where an object's class is decided far from most of
its pixels (docs/BENCH.md).

Five object classes in two families whose members look the same locally:
- sticks: a thin straight shaft; a `bar` is the shaft alone, a `lollipop` ends in a disk, a
  `hammer` in a crossbar. Shafts of all three share one length and width distribution, so a
  patch of shaft far from its end is the same for every class;
- rings: a thin annulus; a `ring` is closed, an `arc` has a gap. Away from the gap an arc is a
  piece of ring with the same radius and thickness distribution.
Colours and textures are drawn from one pool for every class (and for the background-labelled
distractor blobs), so they carry no class information. Later objects and blobs occlude earlier
ones but never an object's evidence (the part that decides its class: a lollipop's disk, a
hammer's crossbar, a bar's two ends, an arc's gap ends, a whole ring). Labels have no ignore
pixels; `SegmentationObject/<id>.png` holds each object's visible pixels (1..n in drawing
order, 0 elsewhere), as VOC's instance PNGs.

The set is a pure function of (num_train, num_val, num_test, image_size, seed), cached like the
demo (`$DEEPLAB_LOAD_CACHE/bench`, `bench_<parameters>` for non-default parameters). Splits:
train, val (the hold-out is taken from it) and test (>= 1000 images by default), disjoint.
"""
import dataclasses
import os

import numpy as np

from deeplab_load.data.common import DatasetInfo, ExampleRef, as_size, decode_index_png, \
    encode_index_png, read_bytes, write_id_list_atomic
from deeplab_load.data.generated import cache_root, ensure_generated, voc_folders, \
    write_voc_example
from deeplab_load.data.voc import PALETTE_256, VocDataset

GENERATOR_VERSION = 1
CLASS_NAMES = ("background", "bar", "lollipop", "hammer", "ring", "arc")
BAR, LOLLIPOP, HAMMER, RING, ARC = 1, 2, 3, 4, 5
STICK_CLASSES = (BAR, LOLLIPOP, HAMMER)
RING_CLASSES = (RING, ARC)
DEFAULT_NUM_TRAIN = 320
DEFAULT_NUM_VAL = 160
DEFAULT_NUM_TEST = 1000
DEFAULT_IMAGE_SIZE = (81, 81)
SPLITS = ("train", "val", "test")
INSTANCE_FOLDER = "SegmentationObject"
TEXTURES = ("flat", "hstripes", "checker", "dots", "noise")
TEXTURE_AMPLITUDE = 30.0
NOISE_STD = 10.0
MIN_CONTRAST = 70.0  # min RGB distance of an object colour from both background colours
REFERENCE_SIDE = 81.0  # the geometry ranges below are in pixels at this image side
SHAFT_LENGTH = (40.0, 68.0)
SHAFT_WIDTH = (3.0, 5.0)
DISK_RADIUS = (4.5, 7.0)
CROSSBAR_LENGTH = (14.0, 22.0)
RING_RADIUS = (13.0, 22.0)  # outer radius
RING_THICKNESS = (3.0, 5.0)
ARC_GAP_DEGREES = (50.0, 90.0)
END_EVIDENCE = 4.0  # a bar's ends and an arc's gap ends: pixels within this distance
PLACEMENT_TRIES = 30


@dataclasses.dataclass
class SceneObject:
    """One object of a scene: class id, full mask and evidence mask (bool [H, W]; the part
    that decides the class), RGB colour, texture name, the shaft / ring geometry in pixels
    (length and width, or outer radius and thickness) and the texture frame."""
    cls: int
    mask: np.ndarray
    evidence: np.ndarray
    color: np.ndarray
    texture: str
    size: float
    thickness: float
    frame: tuple  # ((y, x) centre, angle in radians) of the object's texture frame


def default_cache_dir(num_train=DEFAULT_NUM_TRAIN, num_val=DEFAULT_NUM_VAL,
                      num_test=DEFAULT_NUM_TEST, image_size=DEFAULT_IMAGE_SIZE, seed=0) -> str:
    """`<cache>/bench` for the default parameters, `<cache>/bench_<params>` for others."""
    name = "bench"
    if (num_train, num_val, num_test, as_size(image_size), seed) != (
            DEFAULT_NUM_TRAIN, DEFAULT_NUM_VAL, DEFAULT_NUM_TEST, DEFAULT_IMAGE_SIZE, 0):
        height, width = as_size(image_size)
        name = f"bench_{num_train}_{num_val}_{num_test}_{height}x{width}_seed{seed}"
    return os.path.join(cache_root(), name)


def _frame(grid, center, angle):
    """Offsets (u along `angle`, v across it) of every pixel from `center` (y, x)."""
    yy, xx = grid
    dy, dx = yy - center[0], xx - center[1]
    return np.cos(angle) * dx + np.sin(angle) * dy, -np.sin(angle) * dx + np.cos(angle) * dy


def _stick(rng, grid, cls, scale, center, angle):
    """(mask, evidence, length, width) of a bar / lollipop / hammer: the shaft runs along u
    from -length/2 to +length/2; the class part sits at the +u end."""
    length = rng.uniform(*SHAFT_LENGTH) * scale
    width = rng.uniform(*SHAFT_WIDTH) * scale
    u, v = _frame(grid, center, angle)
    shaft = (np.abs(u) <= length / 2) & (np.abs(v) <= width / 2)
    end = length / 2
    if cls == BAR:
        evidence = shaft & (np.abs(u) >= end - END_EVIDENCE * scale)
        return shaft, evidence, length, width
    if cls == LOLLIPOP:
        radius = rng.uniform(*DISK_RADIUS) * scale
        part = np.hypot(u - end, v) <= radius
    else:
        half = rng.uniform(*CROSSBAR_LENGTH) * scale / 2
        part = (np.abs(u - (end - width / 2)) <= width / 2) & (np.abs(v) <= half)
    return shaft | part, part, length, width


def _ring(rng, grid, cls, scale, center, angle):
    """(mask, evidence, outer radius, thickness) of a ring / arc; an arc's gap is centred at
    `angle`."""
    radius = rng.uniform(*RING_RADIUS) * scale
    thickness = rng.uniform(*RING_THICKNESS) * scale
    u, v = _frame(grid, center, angle)
    distance = np.hypot(u, v)
    annulus = (distance <= radius) & (distance >= radius - thickness)
    if cls == RING:
        return annulus, annulus.copy(), radius, thickness
    half_gap = np.deg2rad(rng.uniform(*ARC_GAP_DEGREES)) / 2
    bearing = np.abs(np.arctan2(v, u))  # 0 at the gap's centre
    arc = annulus & (bearing > half_gap)
    # pixels of the arc within END_EVIDENCE of the gap (measured along the ring's mid-line)
    mid_radius = radius - thickness / 2
    evidence = arc & ((bearing - half_gap) * mid_radius <= END_EVIDENCE * scale)
    return arc, evidence, radius, thickness


def _object_color(rng, background_colors):
    """A colour from the shared pool with enough contrast to both background colours."""
    while True:
        color = rng.uniform(30, 225, size=3)
        if np.linalg.norm(background_colors - color, axis=1).min() >= MIN_CONTRAST:
            return color


def _texture(kind, grid, center, angle, rng):
    """Brightness modulation in [-1, 1] over the whole image, in a frame of the object."""
    if kind == "flat":
        return np.zeros(grid[0].shape)
    if kind == "noise":
        return np.clip(rng.normal(0, 0.6, size=grid[0].shape), -1, 1)
    period = rng.uniform(4.0, 7.0)
    u, v = _frame(grid, center, angle)
    if kind == "hstripes":
        return np.sign(np.sin(2 * np.pi * v / period))
    if kind == "checker":
        return np.where((np.floor(u / period) + np.floor(v / period)) % 2 == 0, 1.0, -1.0)
    return np.where(np.hypot(u % period - period / 2, v % period - period / 2) < period / 4,
                    1.0, -0.3)


def _place(rng, grid, shape, scale, protected):
    """(mask, evidence, size, thickness, center, angle) of a random placement of `shape` inside
    the image that covers no `protected` pixel (up to PLACEMENT_TRIES tries), or None."""
    height, width = grid[0].shape
    for _ in range(PLACEMENT_TRIES):
        center = (rng.uniform(0, height), rng.uniform(0, width))
        angle = rng.uniform(0, 2 * np.pi)
        mask, evidence, size, thickness = shape(rng, grid, scale, center, angle)
        touches_border = (mask[0].any() or mask[-1].any() or mask[:, 0].any()
                          or mask[:, -1].any())
        if evidence.any() and not touches_border and not (mask & protected).any():
            return mask, evidence, size, thickness, center, angle
    return None


def sample_scene(rng: np.random.Generator, height: int, width: int):
    """The objects of one scene before painting: (background colours float [2, 3], list of
    SceneObject in drawing order, list of distractor placements drawn last (`_place`'s
    tuples: mask bool [H, W] first), the pixel grid float [2, H, W] of (y, x))."""
    grid = np.mgrid[0:height, 0:width].astype(np.float64)
    scale = min(height, width) / REFERENCE_SIDE
    background_colors = rng.uniform(60, 170, size=(2, 3))
    protected = np.zeros((height, width), bool)
    objects = []
    for _ in range(rng.integers(2, 5)):
        cls = int(rng.integers(1, len(CLASS_NAMES)))
        build = _stick if cls in STICK_CLASSES else _ring
        placed = _place(rng, grid, lambda r, g, s, c, a: build(r, g, cls, s, c, a), scale,
                        protected)
        if placed is None:
            continue
        mask, evidence, size, thickness, center, angle = placed
        objects.append(SceneObject(cls, mask, evidence, _object_color(rng, background_colors),
                                   TEXTURES[rng.integers(len(TEXTURES))], size, thickness,
                                   (center, angle)))
        protected |= evidence
    distractors = []
    for _ in range(rng.integers(0, 3)):
        def blob(r, g, s, c, a):
            axes = r.uniform(4.0, 9.0, size=2) * s
            u, v = _frame(g, c, a)
            mask = (u / axes[0]) ** 2 + (v / axes[1]) ** 2 <= 1
            return mask, mask, 0.0, 0.0
        placed = _place(rng, grid, blob, scale, protected)
        if placed is not None:
            distractors.append(placed)
    return background_colors, objects, distractors, grid


def render_scene(rng: np.random.Generator, height: int, width: int):
    """One scene: (image uint8 [H, W, 3], label uint8 [H, W], instances uint8 [H, W]:
    1..n = the n objects' visible pixels in drawing order, 0 elsewhere)."""
    background_colors, objects, distractors, grid = sample_scene(rng, height, width)
    yy, xx = grid
    direction = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(direction) * xx / width + np.sin(direction) * yy / height + 1) / 2
    image = (background_colors[0] * (1 - ramp[..., None])
             + background_colors[1] * ramp[..., None])
    label = np.zeros((height, width), np.uint8)
    instances = np.zeros((height, width), np.uint8)
    for number, item in enumerate(objects, 1):
        texture = _texture(item.texture, grid, *item.frame, rng)
        image[item.mask] = item.color + TEXTURE_AMPLITUDE * texture[item.mask][:, None]
        label[item.mask] = item.cls
        instances[item.mask] = number
    for mask, _, _, _, center, angle in distractors:
        color = _object_color(rng, background_colors)
        texture = _texture(TEXTURES[rng.integers(len(TEXTURES))], grid, center, angle, rng)
        image[mask] = color + TEXTURE_AMPLITUDE * texture[mask][:, None]
        label[mask] = 0
        instances[mask] = 0
    image += rng.normal(0, NOISE_STD, size=image.shape)
    return np.clip(np.round(image), 0, 255).astype(np.uint8), label, instances


def split_ids(num_train, num_val, num_test):
    """{split: ids}; ids are numbered across splits, so no image is in two splits."""
    ids = [f"bench_{i:05d}" for i in range(num_train + num_val + num_test)]
    return {"train": ids[:num_train], "val": ids[num_train:num_train + num_val],
            "test": ids[num_train + num_val:]}


def _manifest(num_train, num_val, num_test, image_size, seed):
    return {"generator_version": GENERATOR_VERSION, "num_train": int(num_train),
            "num_val": int(num_val), "num_test": int(num_test),
            "image_size": list(as_size(image_size)), "seed": int(seed)}


def write_bench(root, num_train, num_val, num_test, image_size, seed):
    """Writes the whole set (without its manifest) into `root` in the VOC layout, with
    instance PNGs in SegmentationObject/."""
    height, width = as_size(image_size)
    voc = voc_folders(root, extra=(INSTANCE_FOLDER,))
    splits = split_ids(num_train, num_val, num_test)
    all_ids = [i for split in SPLITS for i in splits[split]]
    for index, example_id in enumerate(all_ids):
        image, label, instances = render_scene(np.random.default_rng([seed, index]),
                                               height, width)
        write_voc_example(voc, example_id, image, label, PALETTE_256, jpeg_quality=95)
        with open(os.path.join(voc, INSTANCE_FOLDER, example_id + ".png"), "wb") as f:
            f.write(encode_index_png(instances, PALETTE_256))
    lists = os.path.join(voc, "ImageSets", "Segmentation")
    for split in SPLITS:
        write_id_list_atomic(os.path.join(lists, f"{split}.txt"), splits[split])


def ensure_bench(root=None, num_train=DEFAULT_NUM_TRAIN, num_val=DEFAULT_NUM_VAL,
                 num_test=DEFAULT_NUM_TEST, image_size=DEFAULT_IMAGE_SIZE, seed=0) -> str:
    """The bench root directory, (re)generated unless its manifest matches the parameters."""
    for name, value, least in (("num_train", num_train, 1), ("num_val", num_val, 2),
                               ("num_test", num_test, 1)):
        if int(value) < least:
            raise ValueError(f"bench {name} must be >= {least}, got {value}")
    if min(as_size(image_size)) < 33:
        raise ValueError(f"bench image_size must be >= 33 pixels a side, got {image_size}")
    return ensure_generated(
        root or default_cache_dir(num_train, num_val, num_test, image_size, seed),
        _manifest(num_train, num_val, num_test, image_size, seed),
        lambda folder: write_bench(folder, num_train, num_val, num_test, image_size, seed),
        "bench")


def info_for(image_size=DEFAULT_IMAGE_SIZE) -> DatasetInfo:
    """The DatasetInfo of a bench set of `image_size` (crop and eval crop = the image)."""
    size = as_size(image_size)
    return DatasetInfo(name="bench", num_classes=len(CLASS_NAMES), class_names=CLASS_NAMES,
                       crop_size=size, eval_crop_size=size,
                       palette=PALETTE_256[:len(CLASS_NAMES)])


INFO = info_for()


class BenchDataset(VocDataset):
    """The generated set read with the VOC loader; splits train / val / test, all labelled;
    `load_instances(ref)` gives the instance map of an example."""

    def __init__(self, data_dir=None, num_train=DEFAULT_NUM_TRAIN, num_val=DEFAULT_NUM_VAL,
                 num_test=DEFAULT_NUM_TEST, image_size=DEFAULT_IMAGE_SIZE, seed=0):
        root = ensure_bench(data_dir, num_train, num_val, num_test, image_size, seed)
        self.info = info_for(image_size)
        super().__init__(root)

    @property
    def splits(self):
        return SPLITS

    def examples(self, split):
        self.check_split(split)
        images = os.path.join(self.root, "JPEGImages")
        labels = os.path.join(self.root, "SegmentationClass")
        return [ExampleRef(i, os.path.join(images, i + ".jpg"), os.path.join(labels, i + ".png"))
                for i in self._read_list(split)]

    def instance_path(self, ref) -> str:
        return os.path.join(self.root, INSTANCE_FOLDER, ref.id + ".png")

    def load_instances(self, ref) -> np.ndarray:
        """uint8 [H, W]: object number per pixel (1..n), 0 where no object is visible."""
        path = self.instance_path(ref)
        return decode_index_png(read_bytes(path), path)
