"""Loaders of VOC, Cityscapes and Stanford Background on fake trees; validation errors."""
import os

import numpy as np
import pathlib
import shutil

import pytest
from PIL import Image

from deeplab_load.data import BadExampleError, ExampleRef, get_dataset
from deeplab_load.data import cityscapes, stanford, voc
from fake_datasets import make_fake_cityscapes, make_fake_stanford, make_fake_voc, \
    voc_palette_bytes, write_regions


def _assert_loads_expected(ds, tree, split):
    refs = ds.examples(split)
    assert sorted(r.id for r in refs) == tree.ids(split)
    for ref in refs:
        image, label = ds.load(ref)
        expected = tree.labels[split][ref.id]
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        if expected is None:
            assert label is None and ref.label_path is None
        else:
            assert label.dtype == np.uint8
            np.testing.assert_array_equal(label, expected)


# ---- PASCAL VOC ----

def test_voc_palette_matches_independent_colour_map():
    np.testing.assert_array_equal(voc.PALETTE_256, voc_palette_bytes())
    assert voc.PALETTE[15].tolist() == [192, 128, 128]  # person
    assert voc.INFO.num_classes == 21 and len(voc.INFO.class_names) == 21


@pytest.mark.parametrize("split", ["train", "val", "trainval", "test"])
def test_voc_reads_palette_indices_not_colours(tmp_path, split):
    tree = make_fake_voc(tmp_path, num_train=2, num_val=2)
    ds = get_dataset("voc", tree.data_dir)
    assert Image.open(ds.examples("train")[0].label_path).mode == "P"
    _assert_loads_expected(ds, tree, split)
    assert ds.info.crop_size == (513, 513) and ds.info.ignore_label == 255


def test_voc_train_aug_derives_list_without_val(tmp_path):
    tree = make_fake_voc(tmp_path, num_train=2, num_val=2, num_aug_extra=2)
    ds = get_dataset("voc", tree.data_dir)
    _assert_loads_expected(ds, tree, "train_aug")
    assert all("SegmentationClassAug" in r.label_path for r in ds.examples("train_aug"))


def test_voc_train_aug_uses_list_file_when_present(tmp_path):
    tree = make_fake_voc(tmp_path, num_train=2, num_val=1, num_aug_extra=2)
    chosen = tree.ids("train_aug")[:2]
    lists = os.path.join(tree.data_dir, "VOCdevkit", "VOC2012", "ImageSets", "Segmentation")
    with open(os.path.join(lists, "train_aug.txt"), "w") as f:
        f.write("\n".join(chosen) + "\n")
    assert [r.id for r in get_dataset("voc", tree.data_dir).examples("train_aug")] == chosen


def test_voc_missing_tree_and_unknown_split(tmp_path):
    with pytest.raises(FileNotFoundError, match="JPEGImages"):
        get_dataset("voc", tmp_path)
    ds = get_dataset("voc", make_fake_voc(tmp_path / "v", 1, 1).data_dir)
    with pytest.raises(ValueError, match="unknown voc split 'bogus'"):
        ds.examples("bogus")
    with pytest.raises(ValueError, match="--dataset 'imagenet' is unknown"):
        get_dataset("imagenet", tmp_path)


def test_voc_dataset_dir_forms_and_train_aug_availability(tmp_path):
    """The folder holding VOCdevkit, VOCdevkit and VOC2012 all open the same tree; train_aug is
    available only with SBD's SegmentationClassAug."""
    ds = get_dataset("voc", make_fake_voc(tmp_path, 2, 1, num_aug_extra=1).data_dir)
    root = pathlib.Path(ds.root)
    forms = [root.parent.parent, root.parent, root]
    assert [pathlib.Path(get_dataset("voc", form).root) for form in forms] == [root] * 3
    assert ds.available("train") and ds.available("val")
    assert ds.available("train_aug")
    shutil.rmtree(root / "SegmentationClassAug")
    assert not get_dataset("voc", root).available("train_aug")


# ---- Cityscapes ----

def test_cityscapes_tables_match_cityscapesscripts():
    from cityscapesscripts.helpers.labels import labels, trainId2label
    for label in labels:
        if label.id < 0:
            continue
        expected = label.trainId if 0 <= label.trainId < 255 else 255
        assert cityscapes.LABEL_ID_TO_TRAIN_ID[label.id] == expected, label.name
    for train_id in range(19):
        official = trainId2label[train_id]
        assert cityscapes.TRAIN_ID_TO_LABEL_ID[train_id] == official.id
        assert cityscapes.CLASS_NAMES[train_id] == official.name
        assert tuple(cityscapes.PALETTE[train_id]) == official.color
    assert (cityscapes.LABEL_ID_TO_TRAIN_ID[34:] == 255).all()


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_cityscapes_loader_maps_label_ids(tmp_path, split):
    tree = make_fake_cityscapes(tmp_path, num_train=3, num_val=2)
    ds = get_dataset("cityscapes", tree.data_dir)
    _assert_loads_expected(ds, tree, split)
    assert ds.info.eval_crop_size == (1025, 2049) and ds.info.num_classes == 19


def test_cityscapes_label_id_out_of_range_names_file(tmp_path):
    tree = make_fake_cityscapes(tmp_path, num_train=1, num_val=0, num_test=0)
    ref = get_dataset("cityscapes", tree.data_dir).examples("train")[0]
    bad = np.full((65, 97), 40, np.uint8)
    Image.fromarray(bad, mode="L").save(ref.label_path)
    with pytest.raises(BadExampleError, match=r"labelIds\.png.*\[40\]"):
        get_dataset("cityscapes", tree.data_dir).load(ref)


# ---- Stanford Background ----

def test_stanford_split_sizes_scale_from_paper():
    assert stanford.split_sizes(715) == (400, 172, 143)
    for n in (1, 10, 37, 100):
        assert sum(stanford.split_sizes(n)) == n


def test_stanford_split_written_once_and_reused(tmp_path):
    tree = make_fake_stanford(tmp_path, num_images=14)
    ds = get_dataset("stanford", tree.data_dir)
    parts = {s: [r.id for r in ds.examples(s)] for s in ("train", "val", "test")}
    assert [len(parts[s]) for s in ("train", "val", "test")] == list(stanford.split_sizes(14))
    assert sorted(sum(parts.values(), [])) == tree.ids("all")
    split_file = ds.split_path("train")
    assert os.path.isfile(split_file)
    # A later run reuses the file even if it was edited (the file is the source of truth).
    with open(split_file, "w") as f:
        f.write(parts["train"][0] + "\n")
    again = get_dataset("stanford", tree.data_dir)
    assert [r.id for r in again.examples("train")] == [parts["train"][0]]
    # The same seed gives the same split in a fresh copy.
    other = make_fake_stanford(tmp_path / "copy", num_images=14)
    assert [r.id for r in get_dataset("stanford", other.data_dir).examples("val")] == parts["val"]


def test_stanford_loader_maps_unknown_to_ignore(tmp_path):
    tree = make_fake_stanford(tmp_path, num_images=6)
    ds = get_dataset("stanford", tree.data_dir)
    for ref in ds.examples("train"):
        image, label = ds.load(ref)
        np.testing.assert_array_equal(label, tree.labels["all"][ref.id])
        assert image.shape[:2] == label.shape
    assert 255 in np.concatenate([ds.load(r)[1].ravel() for r in ds.examples("train")])


# ---- bad examples, each kind ----

def _voc_with_one_train(tmp_path):
    tree = make_fake_voc(tmp_path, num_train=1, num_val=1)
    ds = get_dataset("voc", tree.data_dir)
    return ds, ds.examples("train")[0]


def test_corrupt_image_names_file(tmp_path):
    ds, ref = _voc_with_one_train(tmp_path)
    with open(ref.image_path, "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    with pytest.raises(BadExampleError) as err:
        ds.load(ref)
    assert err.value.path == ref.image_path and ref.image_path in str(err.value)


def test_truncated_image_names_file(tmp_path):
    ds, ref = _voc_with_one_train(tmp_path)
    data = open(ref.image_path, "rb").read()
    with open(ref.image_path, "wb") as f:
        f.write(data[:len(data) // 2])
    with pytest.raises(BadExampleError, match=ref.image_path):
        ds.load(ref)


def test_label_values_outside_classes_name_file(tmp_path):
    ds, ref = _voc_with_one_train(tmp_path)
    label = np.zeros((65, 97), np.uint8)
    label[3, 4] = 21
    Image.fromarray(label, mode="L").save(ref.label_path)
    with pytest.raises(BadExampleError, match=rf"{ref.label_path}.*\[21\]"):
        ds.load(ref)


def test_size_mismatch_names_file(tmp_path):
    ds, ref = _voc_with_one_train(tmp_path)
    Image.fromarray(np.zeros((64, 97), np.uint8), mode="L").save(ref.label_path)
    with pytest.raises(BadExampleError, match=rf"{ref.label_path}: label size 64x97 differs"):
        ds.load(ref)


def test_rgb_label_png_and_missing_file_name_file(tmp_path):
    ds, ref = _voc_with_one_train(tmp_path)
    Image.fromarray(np.zeros((65, 97, 3), np.uint8), mode="RGB").save(ref.label_path)
    with pytest.raises(BadExampleError, match=f"{ref.label_path}.*mode 'RGB'"):
        ds.load(ref)
    missing = ExampleRef("x", ref.image_path, ref.label_path + ".gone")
    with pytest.raises(BadExampleError, match=r"\.gone: cannot read"):
        ds.load(missing)


def test_stanford_bad_regions_name_file(tmp_path):
    tree = make_fake_stanford(tmp_path, num_images=3, size=(20, 30))
    ds = get_dataset("stanford", tree.data_dir)
    ref = ds.examples("train")[0]
    write_regions(ref.label_path, np.full((20, 30), 8))
    with pytest.raises(BadExampleError, match=rf"{ref.label_path}.*\[8\]"):
        ds.load(ref)
    write_regions(ref.label_path, np.full((20, 30), -3))
    with pytest.raises(BadExampleError, match=rf"{ref.label_path}.*\[-3\]"):
        ds.load(ref)
    with open(ref.label_path, "w") as f:
        f.write("1 2 3\n1 2\n")
    with pytest.raises(BadExampleError, match=rf"{ref.label_path}: cannot parse"):
        ds.load(ref)
