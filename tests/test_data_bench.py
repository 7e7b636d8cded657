"""The generated bench data set: determinism, splits, counts, labels, instance maps, the cache,
and the property it is built for (class decided far from most pixels; looks shared)."""
import json
import os

import numpy as np
import pytest

from fake_datasets import tree_digest

from deeplab_load.data import DATASET_NAMES, bench, dataset_info, get_dataset

SMALL = dict(num_train=6, num_val=4, num_test=5, image_size=(49, 57))




@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return get_dataset("bench", str(tmp_path_factory.mktemp("bench") / "b"), **SMALL)


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a = bench.ensure_bench(tmp_path / "a", seed=3, **SMALL)
    b = bench.ensure_bench(tmp_path / "b", seed=3, **SMALL)
    c = bench.ensure_bench(tmp_path / "c", seed=4, **SMALL)
    assert tree_digest(a) == tree_digest(b) != tree_digest(c)


def test_splits_disjoint_with_the_asked_counts_and_sizes(small):
    refs = {split: small.examples(split) for split in ("train", "val", "test")}
    assert [len(refs[s]) for s in ("train", "val", "test")] == [6, 4, 5]
    ids = [ref.id for split in refs.values() for ref in split]
    assert len(set(ids)) == 15
    images = set()
    for split in refs.values():
        for ref in split:
            image, label = small.load(ref)  # validated: classes 0..5 or 255
            assert image.shape == (49, 57, 3) and label.shape == (49, 57)
            assert label.max() < len(bench.CLASS_NAMES)  # no ignore pixels in the bench
            images.add(image.tobytes())
    assert len(images) == 15  # no image is in two splits


def test_default_set_has_a_test_split_of_1000_images():
    counts = bench.split_ids(bench.DEFAULT_NUM_TRAIN, bench.DEFAULT_NUM_VAL,
                             bench.DEFAULT_NUM_TEST)
    assert len(counts["test"]) >= 1000
    assert bench.DEFAULT_NUM_TRAIN <= 500  # a few hundred: minutes on 2 CPU cores
    assert not set(counts["test"]) & (set(counts["train"]) | set(counts["val"]))
    info = dataset_info("bench")
    assert "bench" in DATASET_NAMES and info.num_classes == 6
    assert info.crop_size == info.eval_crop_size == bench.DEFAULT_IMAGE_SIZE


def test_instance_maps_hold_each_object_with_one_class(small):
    objects = 0
    for ref in small.examples("train") + small.examples("test"):
        _, label = small.load(ref)
        instances = small.load_instances(ref)
        assert instances.shape == label.shape
        assert ((instances > 0) == (label > 0)).all()
        for number in np.unique(instances[instances > 0]):
            assert len(np.unique(label[instances == number])) == 1
            objects += 1
    assert objects >= 2 * 11


def test_cached_set_is_reused_and_regenerated_for_other_parameters(tmp_path):
    root = tmp_path / "b"
    bench.ensure_bench(root, **SMALL)
    manifest = root / "manifest.json"
    stamp = os.path.getmtime(manifest)
    get_dataset("bench", str(root), **SMALL)
    assert os.path.getmtime(manifest) == stamp
    other = dict(SMALL, num_test=3)
    ds = get_dataset("bench", str(root), **other)
    assert len(ds.examples("test")) == 3 and json.load(open(manifest))["num_test"] == 3
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".bench_tmp_")]


def test_refuses_a_foreign_directory(tmp_path):
    (tmp_path / "mine.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="not a bench data set"):
        bench.ensure_bench(tmp_path, **SMALL)


def test_cache_dir_names_the_parameters(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPLAB_LOAD_CACHE", str(tmp_path))
    assert bench.default_cache_dir() == str(tmp_path / "bench")
    ds = get_dataset("bench", **SMALL)
    assert ds.data_dir == str(tmp_path / "bench_6_4_5_49x57_seed0")


def _scene_objects(count, size=bench.DEFAULT_IMAGE_SIZE):
    objects = []
    for index in range(count):
        _, scene, _, _ = bench.sample_scene(np.random.default_rng([7, index]), *size)
        objects += scene
    return objects


def test_colours_and_textures_carry_no_class():
    """Every class draws colour and texture from one pool: per-class colour means and texture
    frequencies agree within sampling error."""
    objects = _scene_objects(400)
    classes = np.array([item.cls for item in objects])
    colors = np.array([item.color for item in objects])
    overall = colors.mean(axis=0)
    for cls in range(1, len(bench.CLASS_NAMES)):
        mine = colors[classes == cls]
        assert len(mine) > 100
        stderr = colors.std(axis=0) / np.sqrt(len(mine))
        assert (np.abs(mine.mean(axis=0) - overall) < 4 * stderr).all(), cls
        textures = np.array([bench.TEXTURES.index(item.texture)
                             for item in objects if item.cls == cls])
        share = np.bincount(textures, minlength=len(bench.TEXTURES)) / len(textures)
        assert np.abs(share - 1 / len(bench.TEXTURES)).max() < 0.1, (cls, share)


def _distance_to(mask, targets):
    """Euclidean distance from each pixel of `mask` to the nearest `targets` pixel."""
    ys, xs = np.nonzero(mask)
    ty, tx = np.nonzero(targets)
    return np.sqrt(((ys[:, None] - ty[None]) ** 2 + (xs[:, None] - tx[None]) ** 2).min(axis=1))


def test_class_is_decided_far_from_most_pixels():
    """Within a family the look of a part (width / thickness, length / radius) has one
    distribution for all members, and most of a stick's or an arc's pixels lie more than 12 px
    (a 25 px patch) from the part that decides its class."""
    objects = _scene_objects(300)
    by_class = {cls: [item for item in objects if item.cls == cls]
                for cls in range(1, len(bench.CLASS_NAMES))}
    for family in (bench.STICK_CLASSES, bench.RING_CLASSES):
        for attribute in ("size", "thickness"):
            means = [np.mean([getattr(item, attribute) for item in by_class[cls]])
                     for cls in family]
            assert max(means) - min(means) < 0.1 * np.mean(means), (family, attribute, means)
    for cls in (bench.LOLLIPOP, bench.HAMMER, bench.BAR, bench.ARC):
        far = [np.mean(_distance_to(item.mask & ~item.evidence, item.evidence) > 12)
               * (item.mask & ~item.evidence).sum() / item.mask.sum()
               for item in by_class[cls]]
        assert np.mean(far) > 0.3, (bench.CLASS_NAMES[cls], np.mean(far))


def test_evidence_is_never_occluded():
    for index in range(60):
        rng = np.random.default_rng([0, index])
        _, objects, distractors, _ = bench.sample_scene(rng, *bench.DEFAULT_IMAGE_SIZE)
        for number, item in enumerate(objects):
            later = [other.mask for other in objects[number + 1:]] + [d[0] for d in distractors]
            for mask in later:
                assert not (mask & item.evidence).any()
