"""tf.data pipelines: shapes, augmentation, determinism, resume, sharding, eval, hold-out."""
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from deeplab_load.data import get_dataset, pipeline
from fake_datasets import make_fake_voc

SIZE = (33, 49)


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    return get_dataset("demo", root, num_train=6, num_val=10, image_size=SIZE, seed=0)


def _batches(dataset, count):
    return [(x.numpy(), y.numpy()) for x, y in dataset.take(count)]


def _assert_same(batches_a, batches_b):
    assert len(batches_a) == len(batches_b)
    for (xa, ya), (xb, yb) in zip(batches_a, batches_b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def test_train_shapes_types_and_values(ds):
    x, y = _batches(pipeline.train_dataset(ds, "train", 4, 25, seed=0,
                                           random_scale=(0.5, 2.0)), 1)[0]
    assert x.shape == (4, 25, 25, 3) and x.dtype == np.float32
    assert y.shape == (4, 25, 25) and y.dtype == np.int32
    assert 0 <= x.min() and x.max() <= 255
    assert set(np.unique(y)) <= set(range(6)) | {255}


def test_pads_with_mean_pixel_and_ignore_when_crop_exceeds_image(ds):
    x, y = _batches(pipeline.train_dataset(ds, "train", 2, (41, 57), seed=0, flip=False), 1)[0]
    # The image is 33x49 and padded bottom/right: the crop always ends in padding.
    assert (y[:, -1, :] == 255).all() and (y[:, :, -1] == 255).all()
    assert (x[:, -1, :, :] == 127.5).all() and (x[:, :, -1, :] == 127.5).all()


def test_scale_down_then_pad(ds):
    x, y = _batches(pipeline.train_dataset(ds, "train", 2, SIZE, seed=0, flip=False,
                                           random_scale=(0.5, 0.5), shuffle=False), 1)[0]
    # A 0.5 scale of 33x49 is 16x24; the rest of the full-size crop is padding.
    assert (y[:, 16:, :] == 255).all() and (y[:, :, 24:] == 255).all()
    assert (x[:, 16:, :, :] == 127.5).all()
    assert (y[:, :16, :24] != 255).any()


def test_unshuffled_unaugmented_batches_are_the_examples_in_order(ds):
    refs = ds.examples("train")
    batches = _batches(pipeline.train_dataset(ds, "train", 3, SIZE, seed=0, flip=False,
                                              shuffle=False, repeat=False), 10)
    assert len(batches) == 2
    for i, ref in enumerate(refs):
        image, label = ds.load(ref)
        np.testing.assert_array_equal(batches[i // 3][0][i % 3], image.astype(np.float32))
        np.testing.assert_array_equal(batches[i // 3][1][i % 3], label)


def test_each_epoch_is_a_permutation_and_flip_mirrors(ds):
    loaded = [ds.load(r) for r in ds.examples("train")]
    data = pipeline.train_dataset(ds, "train", 1, SIZE, seed=5)
    flips, orders = [], []
    for x, y in _batches(data, 12):
        matches = [(i, False) for i, (_, lab) in enumerate(loaded) if np.array_equal(y[0], lab)]
        matches += [(i, True) for i, (_, lab) in enumerate(loaded)
                    if np.array_equal(y[0], lab[:, ::-1])]
        assert matches, "a full-size crop must be an example or its mirror"
        orders.append(matches[0][0])
        flips.append(matches[0][1])
    assert sorted(orders[:6]) == sorted(orders[6:]) == list(range(6))
    assert orders[:6] != orders[6:]  # reshuffled per epoch
    assert any(flips) and not all(flips)


def test_deterministic_given_seed_and_differs_across_seeds(ds):
    def make(seed):
        return pipeline.train_dataset(ds, "train", 2, 25, seed=seed, random_scale=(0.75, 1.5))
    first, again, other = _batches(make(7), 5), _batches(make(7), 5), _batches(make(8), 5)
    _assert_same(first, again)
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(first, other))


def test_resume_at_step_sees_the_uninterrupted_batches(ds):
    # 6 examples, batch 4: steps 3..6 cross epoch boundaries.
    def make(start):
        return pipeline.train_dataset(ds, "train", 4, 25, seed=11, random_scale=(0.75, 1.5),
                                      start_step=start)
    full = _batches(make(0), 7)
    _assert_same(full[3:], _batches(make(3), 4))


def test_input_context_shards_the_global_batch(ds):
    single = _batches(pipeline.train_dataset(ds, "train", 4, 25, seed=2), 3)
    # Two workers, one replica each: each pipeline gives half of every global batch.
    halves = []
    for pipeline_id in range(2):
        ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline_id,
                                         num_replicas_in_sync=2)
        halves.append(_batches(pipeline.train_dataset(ds, "train", 4, 25, seed=2,
                                                      input_context=ctx), 3))
    for step, (x, y) in enumerate(single):
        np.testing.assert_array_equal(x, np.concatenate([halves[0][step][0], halves[1][step][0]]))
        np.testing.assert_array_equal(y, np.concatenate([halves[0][step][1], halves[1][step][1]]))
    # One worker, two replicas: consecutive per-replica batches make up a global batch.
    ctx = tf.distribute.InputContext(num_input_pipelines=1, input_pipeline_id=0,
                                     num_replicas_in_sync=2)
    per_replica = _batches(pipeline.train_dataset(ds, "train", 4, 25, seed=2,
                                                  input_context=ctx), 6)
    for step, (x, _) in enumerate(single):
        np.testing.assert_array_equal(
            x, np.concatenate([per_replica[2 * step][0], per_replica[2 * step + 1][0]]))
    with pytest.raises(ValueError, match="divisible"):
        pipeline.train_dataset(ds, "train", 5, 25, seed=2, input_context=ctx)


def test_mirrored_strategy_distributes_from_function(ds):
    strategy = tf.distribute.get_strategy()
    dist = strategy.distribute_datasets_from_function(
        lambda ctx: pipeline.train_dataset(ds, "train", 2, 25, seed=0, input_context=ctx))
    x, y = next(iter(dist))
    assert x.shape == (2, 25, 25, 3) and y.shape == (2, 25, 25)


def _break_label(ref, value=30):
    label = np.full(SIZE, value, np.uint8)
    Image.fromarray(label, mode="L").save(ref.label_path)


@pytest.fixture
def voc_with_bad(tmp_path):
    tree = make_fake_voc(tmp_path, num_train=4, num_val=4, size=SIZE)
    voc = get_dataset("voc", tree.data_dir)
    bad_train, bad_val = voc.examples("train")[1], voc.examples("val")[2]
    _break_label(bad_train)
    with open(bad_val.image_path, "wb") as f:
        f.write(b"garbage")
    return voc, bad_train, bad_val


def test_bad_example_stops_training_with_file_name(voc_with_bad):
    voc, bad_train, _ = voc_with_bad
    data = pipeline.train_dataset(voc, "train", 4, 25, seed=0, shuffle=False)
    with pytest.raises(tf.errors.OpError, match=bad_train.label_path):
        _batches(data, 1)


def test_skip_bad_examples_counts_and_keeps_the_rest(voc_with_bad):
    voc, bad_train, bad_val = voc_with_bad
    log = pipeline.BadExampleLog()
    data = pipeline.train_dataset(voc, "train", 3, 25, seed=0, skip_bad_examples=True,
                                  repeat=False, bad_example_log=log)
    assert len(_batches(data, 5)) == 1 and log.count == 1
    assert bad_train.label_path in log.messages[0]
    eval_log = pipeline.BadExampleLog()
    ids = [b["ids"] for b in pipeline.eval_dataset(voc, "val", 2, SIZE, skip_bad_examples=True,
                                                   bad_example_log=eval_log)]
    assert sorted(np.concatenate(ids).astype(str)) == sorted(
        r.id for r in voc.examples("val") if r.id != bad_val.id)
    assert eval_log.count == 1 and bad_val.image_path in eval_log.messages[0]
    with pytest.raises(tf.errors.OpError, match=bad_val.image_path):
        list(pipeline.eval_dataset(voc, "val", 2, SIZE))


def test_eval_pads_and_reports_sizes_and_ids(ds):
    refs = ds.examples("val")
    batches = list(pipeline.eval_dataset(ds, "val", 4, (41, 57)))
    assert [len(b["ids"]) for b in batches] == [4, 4, 2]
    first = batches[0]
    assert first["pixels"].shape == (4, 41, 57, 3) and first["pixels"].dtype == tf.float32
    assert first["labels"].shape == (4, 41, 57) and first["labels"].dtype == tf.int32
    np.testing.assert_array_equal(first["sizes"], [SIZE] * 4)
    assert [i.decode() for i in first["ids"].numpy()] == [r.id for r in refs[:4]]
    image, label = ds.load(refs[0])
    np.testing.assert_array_equal(first["pixels"][0, :33, :49], image.astype(np.float32))
    np.testing.assert_array_equal(first["labels"][0, :33, :49], label)
    assert (first["labels"][:, 33:] == 255).numpy().all()
    assert (first["pixels"][:, :, 49:] == 127.5).numpy().all()


def test_eval_on_refs_cached_and_too_small_crop(ds):
    refs = ds.examples("val")[3:5]
    data = pipeline.eval_dataset(ds, refs, 8, None, cache=True)
    first, second = list(data), list(data)
    assert [i.decode() for i in first[0]["ids"].numpy()] == [r.id for r in refs]
    assert first[0]["pixels"].shape == (2,) + SIZE + (3,)
    np.testing.assert_array_equal(first[0]["pixels"], second[0]["pixels"])
    with pytest.raises(tf.errors.OpError, match="larger than eval_crop_size 21x21"):
        list(pipeline.eval_dataset(ds, refs, 1, 21))


def test_holdout_ids_written_once_and_reused(ds, tmp_path):
    ids = pipeline.holdout_ids(ds, tmp_path, fraction=0.3, seed=0)
    val_ids = [r.id for r in ds.examples("val")]
    assert len(ids) == 3 and set(ids) <= set(val_ids)
    path = tmp_path / pipeline.HOLDOUT_FILE
    assert path.read_text().split() == ids
    assert pipeline.holdout_ids(ds, tmp_path, fraction=0.5, seed=9) == ids  # file wins
    assert pipeline.holdout_ids(ds, tmp_path / "other", seed=0) == ids  # same seed, same ids
    assert pipeline.select_refs(ds, "val", ids)[0].id == ids[0]
    path.write_text("demo_99999\n")
    with pytest.raises(ValueError, match=rf"{path}.*demo_99999"):
        pipeline.holdout_ids(ds, tmp_path)
    with pytest.raises(KeyError, match="demo_99999"):
        pipeline.select_refs(ds, "val", ["demo_99999"])
    assert os.path.isfile(path)
