"""Pictures of a run: the cycle-end hold-out strips in TensorBoard and changes.png."""
import io
import os
import types

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from deeplab_load import visualize
from deeplab_load.data import get_dataset
from deeplab_load.training import pictures
from deeplab_load.checkpoints.store import CheckpointStore, variable_table
from deeplab_load.training.holdout import HoldoutEvaluator
from deeplab_load.training.load_hooks import LoAdTrainingHooks, working_tag
from fake_datasets import make_fake_voc

SIZE = (33, 41)


def test_most_changed_keeps_the_images_with_most_changed_pixels():
    rng = np.random.default_rng(0)
    counts = [5, 40, 0, 40, 17, 3, 29, 40, 1]           # ties at 40: the earlier ones first
    picks = pictures.MostChanged(4)
    for index, count in enumerate(counts):
        baseline = rng.integers(0, 5, (9, 11))
        final = baseline.copy()
        where = rng.choice(baseline.size, count, replace=False)
        final.reshape(-1)[where] = (baseline.reshape(-1)[where] + 1) % 5
        picks.add(f"id{index}", np.zeros((9, 11, 3), np.uint8), baseline, baseline, final)
    kept = picks.examples()
    assert [example["id"] for example in kept] == ["id1", "id3", "id7", "id6"]
    assert [example["changed"] for example in kept] == [40, 40, 40, 29]
    assert pictures.MostChanged(20).examples() == []


def test_diff_panel_colours_gains_losses_and_other_changes():
    image = np.full((1, 5, 3), 200, np.uint8)
    labels = np.array([[1, 1, 1, 1, 255]])
    baseline = np.array([[1, 2, 1, 3, 0]])
    final = np.array([[1, 1, 2, 4, 1]])    # same, gain, loss, both wrong, ignore-labelled change
    panel = pictures.diff_panel(image, labels, baseline, final)
    grey = round(200 * pictures.UNCHANGED_DIM)
    assert panel[0].tolist() == [[grey] * 3, list(pictures.GAIN_COLOR),
                                 list(pictures.LOSS_COLOR), list(pictures.OTHER_CHANGE_COLOR),
                                 list(pictures.OTHER_CHANGE_COLOR)]


def tiny_model(seed, like=None, kernel_std=0.05, bias_std=0.05):
    """A 1x1 convolution: logits [B,H,W,21] of pixels [B,H,W,3]; seeded weights, or those of
    `like` plus seeded noise."""
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(21, 1)(inputs))
    rng = np.random.default_rng(seed)
    kernel, bias = like.get_weights() if like is not None else [0 * w for w in
                                                                model.get_weights()]
    model.set_weights([kernel + rng.normal(0, kernel_std, kernel.shape).astype(np.float32),
                       bias + rng.normal(0, bias_std, bias.shape).astype(np.float32)])
    return model


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    tree = make_fake_voc(tmp_path_factory.mktemp("voc"), num_train=2, num_val=7, size=SIZE)
    return get_dataset("voc", tree.data_dir)


def test_changes_png_shows_the_val_images_changed_most(voc, tmp_path):
    baseline = tiny_model(1)
    final = tiny_model(2, like=baseline, kernel_std=0.01, bias_std=0.2)  # some pixels change
    examples = pictures.most_changed_examples(baseline, final, voc, "val", 3, SIZE, count=3)
    # The same choice from every val image's maps, computed here directly.
    changed = {}
    for ref in voc.examples("val"):
        image, _ = voc.load(ref)
        pixels = image[None].astype(np.float32)
        maps = [np.argmax(m(pixels).numpy()[0], -1) for m in (baseline, final)]
        changed[ref.id] = np.count_nonzero(maps[0] != maps[1])
    expected = sorted(changed, key=lambda i: (-changed[i], i))[:3]
    assert [e["id"] for e in examples] == expected
    assert [e["changed"] for e in examples] == [changed[i] for i in expected]
    assert len(set(changed.values())) > 3          # the choice is not a tie

    path = pictures.write_changes_png(str(tmp_path / "changes.png"), examples,
                                      visualize.palette_for(voc.info, 21))
    picture = np.asarray(Image.open(path))
    panel_row = 5 * SIZE[1] + 4 * pictures.GAP
    assert picture.shape == (16 + 3 * (16 + SIZE[0]) + 16, max(panel_row, 760), 3)
    first_row = picture[32:32 + SIZE[0], :panel_row]
    np.testing.assert_array_equal(first_row[:, :SIZE[1]], examples[0]["image"])
    baseline_panel = first_row[:, 2 * (SIZE[1] + pictures.GAP):][:, :SIZE[1]]
    np.testing.assert_array_equal(
        baseline_panel, visualize.colorize(examples[0]["baseline"], voc.info.palette))


def png_summaries(log_dir):
    """{tag: [(step, uint8 image)]} of the image summaries under `log_dir`."""
    found = {}
    for name in os.listdir(log_dir):
        for record in tf.compat.v1.train.summary_iterator(os.path.join(log_dir, name)):
            for value in record.summary.value:
                if value.metadata.plugin_data.plugin_name == "images":
                    encoded = tf.make_ndarray(value.tensor)[2]
                    image = np.asarray(Image.open(io.BytesIO(encoded)))
                    found.setdefault(value.tag, []).append((record.step, image))
    return found


def test_cycle_end_writes_strips_of_g_s_and_the_cycle_end_generator(voc, tmp_path):
    """Read from their snapshots; the working generator is left as it was."""
    model = tiny_model(3)
    store = CheckpointStore(str(tmp_path / "generator"), model=model)
    weights = {}
    for seed, tag in ((4, "g_s"), (5, working_tag(6))):
        weights[tag] = tiny_model(seed).get_weights()
        model.set_weights(weights[tag])
        store.save(tag)
    model.set_weights(tiny_model(6).get_weights())       # what the working generator holds
    before = [v.numpy() for v in variable_table(model).values()]
    refs = voc.examples("val")
    hooks = LoAdTrainingHooks.__new__(LoAdTrainingHooks)
    hooks.generator = types.SimpleNamespace(model=model)
    hooks.generator_store, hooks.ds = store, voc
    hooks.holdout = HoldoutEvaluator(model, voc, refs, 2, SIZE)
    hooks.summary_writer = tf.summary.create_file_writer(str(tmp_path / "tb"))
    hooks._write_cycle_pictures({"kind": "cycle_end", "propagation": 6, "label": "g0_0"})
    hooks.summary_writer.flush()

    for variable, value in zip(variable_table(model).values(), before):
        np.testing.assert_array_equal(variable.numpy(), value)
    found = png_summaries(str(tmp_path / "tb"))
    assert sorted(found) == [f"cycle_end/holdout_{i}" for i in range(pictures.HOLDOUT_PICTURES)]
    palette = visualize.palette_for(voc.info, 21)
    for index, ref in enumerate(refs[:pictures.HOLDOUT_PICTURES]):
        [(step, strip)] = found[f"cycle_end/holdout_{index}"]
        assert step == 6 and strip.shape == (SIZE[0], 4 * SIZE[1] + 3 * pictures.GAP, 3)
        image, labels = voc.load(ref)
        panels = [strip[:, i * (SIZE[1] + pictures.GAP):][:, :SIZE[1]] for i in range(4)]
        np.testing.assert_array_equal(panels[1], visualize.colorize(labels, palette))
        for panel, tag in zip(panels[2:], ("g_s", working_tag(6))):
            other = tiny_model(0)
            other.set_weights(weights[tag])
            expected = np.argmax(other(image[None].astype(np.float32)).numpy()[0], -1)
            np.testing.assert_array_equal(panel, visualize.colorize(expected, palette))
