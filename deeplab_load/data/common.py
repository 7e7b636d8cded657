"""Shared data-set structures: example references, data-set info, decoding and validation.

Every data set turns its on-disk layout into `ExampleRef`s and decodes one example into
`(image uint8 [H, W, 3], label uint8 [H, W])` with ignore = 255. Decoding goes through Pillow
(a dependency of matplotlib, which the package requires), because TensorFlow's PNG decoder
expands palette PNGs to RGB and the PASCAL VOC labels are palette indices.
"""
import abc
import dataclasses
import io
import os
import threading
from typing import Optional, Sequence, Tuple

import numpy as np
from absl import logging
from PIL import Image, UnidentifiedImageError

from deeplab_load.atomic_files import write_text_atomic
from deeplab_load.errors import UserError
from deeplab_load.models.ops import IGNORE_LABEL


class DataDirError(UserError, FileNotFoundError):
    """--dataset_dir does not hold the data set's layout; the message says what was expected."""


class SplitError(UserError, ValueError):
    """A split name the data set does not have (the message lists the ones it has)."""


class BadExampleError(UserError, ValueError):
    """A corrupt file, out-of-range label values or an image/label size mismatch.

    `path` is the offending file; the message always starts with it.
    """

    def __init__(self, path, reason):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclasses.dataclass(frozen=True)
class ExampleRef:
    """One example on disk; `label_path` is None for unlabelled (test) splits."""
    id: str
    image_path: str
    label_path: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a data set. Sizes are (height, width) in pixels; `palette` is
    uint8 [num_classes, 3] RGB colours per train id."""
    name: str
    num_classes: int
    class_names: Tuple[str, ...]
    crop_size: Tuple[int, int]
    eval_crop_size: Tuple[int, int]
    palette: np.ndarray = dataclasses.field(repr=False, compare=False, default=None)
    ignore_label: int = IGNORE_LABEL


def as_size(size) -> Tuple[int, int]:
    """An int or (height, width) pair as a (height, width) tuple of ints."""
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    height, width = size
    return int(height), int(width)


def read_bytes(path) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as err:
        raise BadExampleError(path, f"cannot read file ({err})") from err


_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_sixteen_bit_noted = threading.Event()


def _note_sixteen_bit(path):
    """Logs once per process that 16-bit images are scaled to 8 bits (naming the first)."""
    if not _sixteen_bit_noted.is_set():
        _sixteen_bit_noted.set()
        logging.warning("%s: 16-bit image scaled to 8 bits (value // 256); other 16-bit "
                        "images are converted the same way without a further note", path)


def _sixteen_bit_gray_to_rgb(img, path) -> np.ndarray:
    """A 16-bit grayscale image -> uint8 [H, W, 3] (the high byte, as Pillow does for 16-bit
    RGB); BadExampleError for a 32-bit integer image with values outside 0..65535."""
    values = np.asarray(img)
    if values.size and (values.min() < 0 or values.max() > 65535):
        raise BadExampleError(path, f"{img.mode} image with values {values.min()}..{values.max()}"
                              " is not 8- or 16-bit; convert it to 8-bit RGB")
    _note_sixteen_bit(path)
    gray = (values.astype(np.uint32) >> 8).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=-1)


def decode_image(data: bytes, path) -> np.ndarray:
    """JPEG/PNG bytes -> uint8 [H, W, 3] RGB; BadExampleError(path) if undecodable.

    Images with 16 bits per channel are scaled to 8 bits (the high byte of each value) with a
    logged note, never clipped; 32-bit float images are refused.
    """
    try:
        with Image.open(io.BytesIO(data)) as img:
            sixteen_bit = any(";16" in str(tile.args) for tile in img.tile)
            img.load()
            if img.mode == "F":
                raise BadExampleError(path, "32-bit float image; convert it to 8-bit RGB")
            if img.mode in _SIXTEEN_BIT_MODES:
                return _sixteen_bit_gray_to_rgb(img, path)
            if sixteen_bit:
                _note_sixteen_bit(path)  # Pillow already keeps the high byte of 16-bit RGB
            rgb = img.convert("RGB")
    except BadExampleError:
        raise
    except UnidentifiedImageError as err:
        raise BadExampleError(path, "cannot decode image (not a format Pillow reads, or "
                                    "damaged)") from err
    except Exception as err:  # Pillow raises several unrelated types for corrupt data.
        raise BadExampleError(path, f"cannot decode image ({err})") from err
    return np.asarray(rgb, dtype=np.uint8)


def decode_index_png(data: bytes, path) -> np.ndarray:
    """An indexed (palette) or grayscale PNG -> its raw uint8 values [H, W].

    Palette PNGs give the palette INDICES, not colours.
    """
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            mode = img.mode
            values = np.asarray(img)
    except Exception as err:
        raise BadExampleError(path, f"cannot decode label PNG ({err})") from err
    if mode not in ("P", "L"):
        raise BadExampleError(
            path, f"label PNG must be indexed or 8-bit grayscale, got mode {mode!r}")
    return values.astype(np.uint8)


def encode_index_png(label: np.ndarray, palette: Optional[np.ndarray] = None) -> bytes:
    """uint8 [H, W] -> PNG bytes, indexed with `palette` ([K, 3] uint8) or grayscale."""
    img = Image.fromarray(np.asarray(label, dtype=np.uint8), mode="L")
    if palette is not None:
        img = img.convert("P")
        flat = np.zeros((256, 3), np.uint8)
        flat[:len(palette)] = palette
        img.putpalette(flat.reshape(-1).tolist())
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def encode_image(image: np.ndarray, fmt: str = "PNG", quality: int = 95) -> bytes:
    """uint8 [H, W, 3] -> encoded bytes ("PNG" or "JPEG")."""
    buf = io.BytesIO()
    kwargs = {"quality": quality} if fmt == "JPEG" else {}
    Image.fromarray(np.asarray(image, dtype=np.uint8), mode="RGB").save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def check_example(image: np.ndarray, label: np.ndarray, num_classes: int,
                  label_path, image_path) -> None:
    """Raises BadExampleError unless sizes match and label values are classes or ignore."""
    if image.shape[:2] != label.shape[:2]:
        raise BadExampleError(
            label_path, f"label size {label.shape[0]}x{label.shape[1]} differs from image "
            f"{image_path} size {image.shape[0]}x{image.shape[1]}")
    values = np.unique(label)
    invalid = values[(values >= num_classes) & (values != IGNORE_LABEL)]
    if invalid.size:
        raise BadExampleError(
            label_path, f"label values {invalid[:10].tolist()} are neither a class "
            f"(0..{num_classes - 1}) nor ignore ({IGNORE_LABEL})")


class BadIdListError(UserError, ValueError):
    """An id list (split file, hold-out list, TFRecord metadata) holds an id that is a path."""


def check_example_id(example_id: str, where) -> str:
    """`example_id` if it is a plain file name; BadIdListError naming `where` (e.g.
    "train.txt:3") otherwise. Ids become output file names (`<id>.png`), so a folder part,
    `..` or an absolute path would put files outside their output folder."""
    if (not example_id or "/" in example_id or "\\" in example_id or "\0" in example_id
            or example_id in (".", "..") or os.path.isabs(example_id)):
        raise BadIdListError(f"{where}: example id {example_id!r} is not a plain file name "
                             "(no '/', '\\', '..' or absolute paths); fix that line")
    return example_id


def read_id_list(path) -> list:
    """Non-empty stripped lines of a text file (first whitespace-separated field), each a
    plain file name (`check_example_id`; the error names the file and line)."""
    ids = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                ids.append(check_example_id(line.split()[0], f"{path}:{number}"))
    return ids


def write_id_list_atomic(path, ids: Sequence[str]) -> None:
    """Writes one id per line atomically (`atomic_files`; several processes may write the same
    list), so readers never see half."""
    write_text_atomic(path, "".join(f"{i}\n" for i in ids), unique=True)


class Dataset(abc.ABC):
    """Base class: subclasses set `info` and implement `splits`, `examples` and `decode_label`."""

    info: DatasetInfo

    def __init__(self, data_dir):
        self.data_dir = os.path.abspath(os.path.expanduser(str(data_dir)))
        if not os.path.isdir(self.data_dir):
            raise DataDirError(f"--dataset_dir {self.data_dir} does not exist "
                               f"({self.info.name} data set)")

    @property
    @abc.abstractmethod
    def splits(self) -> Tuple[str, ...]:
        """Names of the splits this data set has."""

    @abc.abstractmethod
    def examples(self, split: str) -> list:
        """list[ExampleRef] of a split, in a fixed (sorted or list-file) order."""

    @abc.abstractmethod
    def decode_label(self, data: bytes, path) -> np.ndarray:
        """Label file bytes -> uint8 [H, W] train ids with ignore 255 (unvalidated)."""

    def load(self, ref: ExampleRef):
        """(image uint8 [H, W, 3], label uint8 [H, W]); label is None without label_path.

        Raises BadExampleError naming the file for corrupt or inconsistent data.
        """
        image = decode_image(read_bytes(ref.image_path), ref.image_path)
        if ref.label_path is None:
            return image, None
        label = self.decode_label(read_bytes(ref.label_path), ref.label_path)
        check_example(image, label, self.info.num_classes, ref.label_path, ref.image_path)
        return image, label

    def available(self, split: str) -> bool:
        """True when `split` can be read from the files present (default: a known split)."""
        return split in self.splits

    def check_split(self, split: str) -> None:
        if split not in self.splits:
            raise SplitError(f"unknown {self.info.name} split {split!r}; "
                             f"expected one of {list(self.splits)}")

    def __repr__(self):
        return f"{type(self).__name__}({self.data_dir!r})"
