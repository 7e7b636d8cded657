"""Palettes, colour label maps, overlays and PNG writing.

Label maps are integer ``[H, W]`` arrays of train ids with 255 = ignore; images and colour maps are
uint8 ``[H, W, 3]`` RGB; palettes are uint8 ``[N, 3]`` RGB per class id.
"""
import os

import numpy as np
from PIL import Image

from deeplab_load.atomic_files import replacing
from deeplab_load.data import cityscapes
from deeplab_load.models.ops import IGNORE_LABEL


def voc_palette(num_colors=256):
    """PASCAL VOC's bit-pattern palette: uint8 ``[num_colors, 3]``.

    Bit ``j`` of the class id's three lowest bit groups goes to bit ``7 - k`` of R, G, B for
    ``k = j // 3``, so 0 is black, 1 dark red, 2 dark green, ... and 255 is VOC's boundary colour.
    """
    palette = np.zeros((num_colors, 3), np.uint8)
    for class_id in range(num_colors):
        value, shift = class_id, 7
        while value:
            for channel in range(3):
                palette[class_id, channel] |= ((value >> channel) & 1) << shift
            value >>= 3
            shift -= 1
    return palette


def cityscapes_palette():
    """The 19 Cityscapes train-id colours, uint8 ``[19, 3]``."""
    return np.asarray(cityscapes.PALETTE, np.uint8)


def palette_for(info_or_name, num_classes=None):
    """Palette for a DatasetInfo (its own palette if it has one) or a data-set name.

    Cityscapes gets its official colours, everything else VOC's bit-pattern palette.
    """
    palette = getattr(info_or_name, "palette", None)
    name = getattr(info_or_name, "name", info_or_name)
    if palette is None:
        palette = cityscapes_palette() if name == "cityscapes" else voc_palette()
    palette = np.asarray(palette, np.uint8)
    if num_classes is not None and len(palette) < num_classes:
        raise ValueError(f"palette of {name!r} has {len(palette)} colours, need {num_classes}")
    return palette


def full_palette(palette, ignore_color=(255, 255, 255)):
    """``[256, 3]`` palette: the class colours, then black, with ``ignore_color`` at 255.

    A 256-entry palette (like VOC's) keeps its own colour for 255.
    """
    palette = np.asarray(palette, np.uint8)
    if len(palette) >= 256:
        return palette[:256].copy()
    full = np.zeros((256, 3), np.uint8)
    full[:len(palette)] = palette
    full[IGNORE_LABEL] = ignore_color
    return full


def colorize(label_map, palette):
    """Integer ``[H, W]`` label map -> uint8 ``[H, W, 3]`` colours (255: see full_palette)."""
    label_map = np.asarray(label_map)
    if label_map.ndim != 2:
        raise ValueError(f"label map must be [H, W], got shape {label_map.shape}")
    if label_map.size and (label_map.min() < 0 or label_map.max() > 255):
        raise ValueError("label values must be in 0..255")
    return full_palette(palette)[label_map.astype(np.uint8)]


def overlay(image, label_map, palette, alpha=0.5):
    """Blends the colourised label map over a uint8 ``[H, W, 3]`` image; ignore pixels untouched.

    ``alpha`` is the weight of the label colours (0 = image only, 1 = colours only).
    """
    image = np.asarray(image, np.uint8)
    label_map = np.asarray(label_map)
    if image.shape[:2] != label_map.shape:
        raise ValueError(f"image {image.shape[:2]} and label map {label_map.shape} differ in size")
    colors = colorize(label_map, palette).astype(np.float32)
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * colors
    blended = np.where((label_map == IGNORE_LABEL)[..., None], image, blended)
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)


def _save(img, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with replacing(path) as tmp:
        img.save(tmp, format="PNG")


def save_label_png(path, label_map, palette=None):
    """Writes a uint8 label map as a PNG whose pixel values ARE the ids.

    With ``palette`` an indexed (mode "P") PNG with that palette (VOC test-server format),
    otherwise 8-bit grayscale. Written to a temporary name first, then renamed.
    """
    label_map = np.asarray(label_map)
    if label_map.ndim != 2 or (label_map.size and (label_map.min() < 0 or label_map.max() > 255)):
        raise ValueError(f"{path}: label map must be [H, W] with values 0..255")
    img = Image.fromarray(label_map.astype(np.uint8), mode="L")
    if palette is not None:
        img = img.convert("P")  # keeps the values as indices
        img.putpalette(full_palette(palette).reshape(-1).tolist())
    _save(img, path)


def save_rgb_png(path, image):
    """Writes a uint8 ``[H, W, 3]`` image as an RGB PNG (temporary name, then rename)."""
    image = np.asarray(image, np.uint8)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"{path}: image must be [H, W, 3], got shape {image.shape}")
    _save(Image.fromarray(image, mode="RGB"), path)
