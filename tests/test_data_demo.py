"""The generated demo data set: determinism, regeneration, layout, content."""
import json
import os

import numpy as np
import pytest

from fake_datasets import tree_digest

from deeplab_load.data import demo, generated, get_dataset




def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a = demo.ensure_demo(tmp_path / "a", num_train=4, num_val=2, image_size=(33, 49), seed=3)
    b = demo.ensure_demo(tmp_path / "b", num_train=4, num_val=2, image_size=(33, 49), seed=3)
    c = demo.ensure_demo(tmp_path / "c", num_train=4, num_val=2, image_size=(33, 49), seed=4)
    assert tree_digest(a) == tree_digest(b) != tree_digest(c)


def test_default_set_generates_and_loads(tmp_path, monkeypatch):
    # No bound on its generation time: a loaded 2-core machine took 7.2 s, and speed goals are
    # measured side by side, not asserted.
    monkeypatch.setenv("DEEPLAB_LOAD_CACHE", str(tmp_path / "cache"))
    ds = get_dataset("demo")
    assert ds.data_dir == str(tmp_path / "cache" / "demo")
    train, val = ds.examples("train"), ds.examples("val")
    assert (len(train), len(val)) == (demo.DEFAULT_NUM_TRAIN, demo.DEFAULT_NUM_VAL)
    assert not {r.id for r in train} & {r.id for r in val}
    assert ds.info.num_classes == len(demo.CLASS_NAMES) == 6
    assert ds.info.eval_crop_size == demo.DEFAULT_IMAGE_SIZE
    assert ds.info.crop_size == (97, 97)
    counts = np.zeros(256, np.int64)
    for ref in train:
        image, label = ds.load(ref)
        assert image.shape == demo.DEFAULT_IMAGE_SIZE + (3,)
        counts += np.bincount(label.ravel(), minlength=256)
    # Every class appears, borders are ignore, the background is not overwhelming.
    assert (counts[:6] > 0).all() and counts[255] > 0
    assert counts[0] < 0.8 * counts[:6].sum()


def test_regenerated_when_parameters_change(tmp_path):
    root = tmp_path / "d"
    demo.ensure_demo(root, num_train=3, num_val=2, image_size=(33, 49), seed=0)
    stamp = os.path.getmtime(root / generated.MANIFEST)
    demo.ensure_demo(root, num_train=3, num_val=2, image_size=(33, 49), seed=0)
    assert os.path.getmtime(root / generated.MANIFEST) == stamp  # reused
    ds = get_dataset("demo", root, num_train=5, num_val=1, image_size=(41, 41), seed=0)
    assert len(ds.examples("train")) == 5 and len(ds.examples("val")) == 1
    assert ds.load(ds.examples("val")[0])[0].shape == (41, 41, 3)
    assert json.load(open(root / generated.MANIFEST))["num_train"] == 5
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".demo_tmp_")]


def test_refuses_to_overwrite_foreign_directory(tmp_path):
    (tmp_path / "mine.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="not a demo data set"):
        demo.ensure_demo(tmp_path, num_train=2, num_val=1, image_size=(17, 17))
    assert (tmp_path / "mine.txt").read_text() == "precious"


def test_voc_layout_with_palette_labels(tmp_path):
    root = demo.ensure_demo(tmp_path / "d", num_train=2, num_val=1, image_size=(33, 33))
    voc_root = os.path.join(root, "VOCdevkit", "VOC2012")
    ds = get_dataset("voc", root)  # the plain VOC loader reads it too
    assert [r.id for r in ds.examples("trainval")] == ["demo_00000", "demo_00001", "demo_00002"]
    from PIL import Image
    assert Image.open(os.path.join(voc_root, "SegmentationClass", "demo_00000.png")).mode == "P"


def test_cache_dirs_differ_by_parameters(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPLAB_LOAD_CACHE", str(tmp_path))
    assert demo.default_cache_dir() == str(tmp_path / "demo")
    small = get_dataset("demo", num_train=3, num_val=2, image_size=(17, 25), seed=1)
    assert small.data_dir == str(tmp_path / "demo_3_2_17x25_seed1")
    assert len(small.examples("train")) == 3 and not (tmp_path / "demo").exists()
