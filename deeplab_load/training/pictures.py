"""Pictures of what a run did, next to its numbers.

- At every LoAd cycle end, TensorBoard image summaries of a fixed handful of hold-out images:
  one strip per image, [image | ground truth | g_s | generator at the cycle end]
  (`cycle_end_strips`, written by `training/load_hooks.py`).
- After the final evaluation, ``changes.png`` in the run dir: the val images whose label maps
  the final model changed most against the baseline, one row each:
  [image | ground truth | baseline | LoAd | diff] (`write_changes_png`).

Label maps are integer [H, W] (255: ignore); images and panels uint8 [H, W, 3] RGB. Maps are
coloured with the data set's palette (`visualize.palette_for`).
"""
import heapq
import io

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from deeplab_load import visualize
from deeplab_load.data import pipeline
from deeplab_load.data.batches import Batches
from deeplab_load.inference import label_map_function
from deeplab_load.atomic_files import write_file_atomic

HOLDOUT_PICTURES = 4      # hold-out images shown at every cycle end
CHANGED_PICTURES = 6      # rows of changes.png
MAX_PANEL_SIDE = 400      # larger panels are scaled down (pixels)
GAP = 4                   # white pixels between panels
TEXT_ROW = 16             # height of a line of text (titles, captions, legend)
MIN_CHANGES_WIDTH = 760   # changes.png is at least this wide, so its text fits
GAIN_COLOR = (0, 200, 0)          # LoAd right, baseline wrong
LOSS_COLOR = (230, 30, 30)        # baseline right, LoAd wrong
OTHER_CHANGE_COLOR = (250, 200, 0)  # changed, both wrong
UNCHANGED_DIM = 0.35      # unchanged pixels: the image in grey, darkened to this share
CHANGES_COLUMNS = ("image", "ground truth", "baseline", "LoAd", "diff")
CHANGES_LEGEND = ("diff: green = gained (LoAd right, baseline wrong), red = lost (baseline "
                  "right, LoAd wrong), yellow = changed but both wrong, grey = unchanged")


def _fit(panel, nearest):
    """Scales a uint8 [H, W, 3] panel down so its longer side is at most MAX_PANEL_SIDE."""
    height, width = panel.shape[:2]
    scale = MAX_PANEL_SIDE / max(height, width)
    if scale >= 1:
        return panel
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resample = Image.NEAREST if nearest else Image.BILINEAR
    return np.asarray(Image.fromarray(panel).resize(size, resample))


def strip(panels):
    """uint8 [H, W_1 + GAP + W_2 + ..., 3]: same-height panels side by side, white gaps."""
    height = panels[0].shape[0]
    gap = np.full((height, GAP, 3), 255, np.uint8)
    pieces = []
    for panel in panels:
        if panel.shape[0] != height:
            raise ValueError(f"panel heights differ: {[p.shape[0] for p in panels]}")
        pieces += [panel, gap]
    return np.concatenate(pieces[:-1], axis=1)


def diff_panel(image, labels, baseline, final):
    """uint8 [H, W, 3]: gains (final right, baseline wrong) in GAIN_COLOR, losses in LOSS_COLOR,
    other changes in OTHER_CHANGE_COLOR, over the darkened grey image; pixels labelled 255 count
    as neither gain nor loss."""
    grey = np.asarray(image, np.float32).mean(axis=-1, keepdims=True) * UNCHANGED_DIM
    panel = np.repeat(grey, 3, axis=-1).astype(np.uint8)
    changed = baseline != final
    labelled = labels != visualize.IGNORE_LABEL
    gains = changed & labelled & (final == labels)
    losses = changed & labelled & (baseline == labels)
    panel[changed & ~gains & ~losses] = OTHER_CHANGE_COLOR
    panel[gains] = GAIN_COLOR
    panel[losses] = LOSS_COLOR
    return panel


def changed_pixels(baseline, final):
    """Number of pixels whose label differs between two [H, W] maps."""
    return int(np.count_nonzero(np.asarray(baseline) != np.asarray(final)))


class MostChanged:
    """Keeps the `count` examples with the most changed pixels among those added (ties: the
    earlier one), without holding the others."""

    def __init__(self, count):
        self.count = count
        self._heap = []        # (changed, -order, order, example): smallest first
        self._added = 0

    def add(self, example_id, image, labels, baseline, final):
        changed = changed_pixels(baseline, final)
        entry = (changed, -self._added, self._added,
                 dict(id=example_id, image=image, labels=labels, baseline=baseline, final=final,
                      changed=changed))
        self._added += 1
        if len(self._heap) < self.count:
            heapq.heappush(self._heap, entry)
        elif entry[:2] > self._heap[0][:2]:
            heapq.heapreplace(self._heap, entry)

    def examples(self):
        """The kept examples, most changed first: dicts id, image, labels, baseline, final,
        changed."""
        return [entry[-1] for entry in sorted(self._heap, key=lambda e: (-e[0], e[2]))]


def most_changed_examples(baseline_model, final_model, ds, split, batch_size, eval_crop_size,
                          count=CHANGED_PICTURES, skip_bad_examples=False):
    """The `count` examples of `split` where the two models' label maps differ most."""
    baseline_maps = label_map_function(baseline_model)
    final_maps = label_map_function(final_model)
    picks = MostChanged(count)
    dataset = pipeline.eval_dataset(ds, split, batch_size, eval_crop_size,
                                    skip_bad_examples=skip_bad_examples,
                                    bad_example_log=pipeline.BadExampleLog())
    with Batches(dataset) as batches:
        for batch in batches:
            pixels = batch["pixels"]
            baseline, final = baseline_maps(pixels).numpy(), final_maps(pixels).numpy()
            images, labels = pixels.numpy().astype(np.uint8), batch["labels"].numpy()
            for i, (height, width) in enumerate(batch["sizes"].numpy()):
                crop = (i, slice(0, height), slice(0, width))
                picks.add(batch["ids"][i].numpy().decode(), images[crop], labels[crop],
                          baseline[crop], final[crop])
    return picks.examples()


def _text_row(text, width, font):
    row = Image.new("RGB", (width, TEXT_ROW), (255, 255, 255))
    ImageDraw.Draw(row).text((2, 2), text, fill=(0, 0, 0), font=font)
    return np.asarray(row)


def _pad_to(panel, height, width):
    """A panel padded with white at the bottom / right to [height, width, 3]."""
    return np.pad(panel, ((0, height - panel.shape[0]), (0, width - panel.shape[1]), (0, 0)),
                  constant_values=255)


def changes_rows(examples, palette):
    """(one uint8 strip per example: image, ground truth, baseline, LoAd, diff; the width of a
    panel cell). Panels of different sizes are padded to a common cell."""
    panels = [[_fit(example["image"], nearest=False)] +
              [_fit(visualize.colorize(example[key], palette), True)
               for key in ("labels", "baseline", "final")] +
              [_fit(diff_panel(example["image"], example["labels"], example["baseline"],
                               example["final"]), True)] for example in examples]
    height = max((p.shape[0] for row in panels for p in row), default=0)
    width = max((p.shape[1] for row in panels for p in row), default=0)
    return [strip([_pad_to(p, height, width) for p in row]) for row in panels], width


def _text_width(text, font):
    return int(np.ceil(font.getlength(text))) + 4


def write_changes_png(path, examples, palette):
    """Writes the changes picture of `most_changed_examples` to `path` (atomically): column
    titles, per row the example id and its changed / gained / lost pixel counts, the legend."""
    rows, cell_width = changes_rows(examples, palette)
    font = ImageFont.load_default()
    captions = []
    for example in examples:
        labelled = example["labels"] != visualize.IGNORE_LABEL
        changed = example["baseline"] != example["final"]
        gained = np.count_nonzero(changed & labelled & (example["final"] == example["labels"]))
        lost = np.count_nonzero(changed & labelled & (example["baseline"] == example["labels"]))
        captions.append(f"{example['id']}:  changed {example['changed']} pixels,  gained "
                        f"{gained},  lost {lost}")
    width = max([MIN_CHANGES_WIDTH] + [row.shape[1] for row in rows] +
                [_text_width(text, font) for text in captions + [CHANGES_LEGEND]])
    pad = lambda block: np.pad(block, ((0, 0), (0, width - block.shape[1]), (0, 0)),
                               constant_values=255)
    blocks = []
    if rows:
        titles = Image.new("RGB", (width, TEXT_ROW), (255, 255, 255))
        draw = ImageDraw.Draw(titles)
        for column, title in enumerate(CHANGES_COLUMNS):
            draw.text((column * (cell_width + GAP) + 2, 2), title, fill=(0, 0, 0), font=font)
        blocks.append(np.asarray(titles))
    for caption, row in zip(captions, rows):
        blocks += [_text_row(caption, width, font), pad(row)]
    if not rows:
        blocks.append(_text_row("no images", width, font))
    blocks.append(_text_row(CHANGES_LEGEND, width, font))
    out = io.BytesIO()
    Image.fromarray(np.concatenate(blocks, axis=0)).save(out, format="PNG")
    return write_file_atomic(path, out.getvalue())


def cycle_end_strips(holdout_examples, start_maps, current_maps, palette):
    """uint8 strips [image | ground truth | g_s | current generator], one per hold-out example.

    holdout_examples: (image uint8 [h,w,3], labels [h,w]) pairs; start_maps / current_maps: the
    two generators' label maps of the same images, in the same order."""
    return [strip([_fit(image, nearest=False), _fit(visualize.colorize(labels, palette), True),
                   _fit(visualize.colorize(start, palette), True),
                   _fit(visualize.colorize(current, palette), True)])
            for (image, labels), start, current in zip(holdout_examples, start_maps,
                                                       current_maps)]
