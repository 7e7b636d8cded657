import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from PIL import Image

from deeplab_load import inference, prediction, visualize
from deeplab_load.checkpoints.restore import restore_checkpoint
from deeplab_load.errors import UserError
from deeplab_load.data import cityscapes as cityscapes_data
from deeplab_load.data import get_dataset
from deeplab_load.data import voc as voc_data
from deeplab_load.data.cityscapes import TRAIN_ID_TO_LABEL_ID
from deeplab_load.models.deeplab import DeepLabConfig, build_deeplab
from fake_datasets import make_fake_cityscapes, make_fake_voc

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def tf1_checkpoint(make_golden_checkpoint):
    return make_golden_checkpoint("manifest_mobilenetv2_voc_os16.json")


def _model(num_classes, checkpoint):
    keras.utils.set_random_seed(0)  # logits of a 19-class model are not in the VOC checkpoint
    model = build_deeplab(DeepLabConfig("mobilenet_v2", num_classes, 16, (), None))
    restore_checkpoint(model, checkpoint)
    return model


@pytest.fixture(scope="module")
def voc_model(tf1_checkpoint):
    return _model(21, tf1_checkpoint)


# --- visualize ---------------------------------------------------------------------------------

def test_voc_palette_bit_pattern():
    palette = visualize.voc_palette()
    assert palette.shape == (256, 3)
    np.testing.assert_array_equal(palette[[0, 1, 2, 3, 15, 20, 255]],
                                  [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0],
                                   [192, 128, 128], [0, 64, 128], [224, 224, 192]])
    assert len({tuple(c) for c in palette}) == 256


def test_cityscapes_palette_and_fallback():
    palette = visualize.palette_for("cityscapes")
    assert palette.shape == (19, 3) and tuple(palette[0]) == (128, 64, 128)
    np.testing.assert_array_equal(visualize.palette_for("stanford-like"), visualize.voc_palette())
    with pytest.raises(ValueError, match="19 colours, need 21"):
        visualize.palette_for("cityscapes", num_classes=21)


def test_colorize_and_overlay():
    palette = np.array([[0, 0, 0], [200, 100, 50]], np.uint8)
    labels = np.array([[0, 1], [255, 1]])
    colors = visualize.colorize(labels, palette)
    np.testing.assert_array_equal(colors[0, 1], [200, 100, 50])
    np.testing.assert_array_equal(colors[1, 0], [255, 255, 255])  # ignore
    image = np.full((2, 2, 3), 100, np.uint8)
    blended = visualize.overlay(image, labels, palette, alpha=0.5)
    np.testing.assert_array_equal(blended[0, 1], [150, 100, 75])
    np.testing.assert_array_equal(blended[1, 0], [100, 100, 100])  # ignore pixels untouched
    with pytest.raises(ValueError, match="differ in size"):
        visualize.overlay(image[:1], labels, palette)


# --- formats -----------------------------------------------------------------------------------

def test_voc_submission_is_indexed_png_with_voc_palette(voc_model, tmp_path):
    make_fake_voc(tmp_path / "voc", num_train=1, num_val=1, num_test=2, seed=2)
    dataset = get_dataset("voc", str(tmp_path / "voc"))
    out = tmp_path / "out"
    paths = prediction.predict_examples(voc_model, prediction.dataset_examples(dataset, "test"),
                                     dataset.info, str(out), "voc_submission", (81, 113))
    assert len(paths) == 2
    for ref, path in zip(dataset.examples("test"), paths):
        assert path == str(out / "results/VOC2012/Segmentation/comp6_test_cls" / (ref.id + ".png"))
        with Image.open(path) as png:
            assert png.mode == "P"
            np.testing.assert_array_equal(np.array(png.getpalette()[:21 * 3]).reshape(21, 3),
                                          visualize.voc_palette()[:21])
            written = np.array(png)
        image, _ = dataset.load(ref)
        expected = inference.predict_labels(voc_model, image[None], (81, 113)).numpy()[0]
        np.testing.assert_array_equal(written, expected)
    assert len(np.unique(written)) >= 3


def test_cityscapes_submission_writes_label_ids(tf1_checkpoint, tmp_path):
    model = _model(19, tf1_checkpoint)
    make_fake_cityscapes(tmp_path / "cs", num_train=1, num_val=2, seed=3)
    dataset = get_dataset("cityscapes", str(tmp_path / "cs"))
    paths = prediction.predict_examples(model, prediction.dataset_examples(dataset, "val"),
                                     dataset.info, str(tmp_path / "out"),
                                     "cityscapes_submission", None)
    ref = dataset.examples("val")[0]
    city = ref.id.split("_")[0]
    assert paths[0] == str(tmp_path / "out" / city / f"{ref.id}_pred_labelIds.png")
    written = np.array(Image.open(paths[0]))
    image, _ = dataset.load(ref)
    train_ids = inference.predict_labels(model, image[None]).numpy()[0]
    np.testing.assert_array_equal(written, TRAIN_ID_TO_LABEL_ID[train_ids])
    assert set(np.unique(written)) <= set(TRAIN_ID_TO_LABEL_ID.tolist())


def test_raw_color_overlay_from_image_folder(voc_model, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(4)
    Image.fromarray(rng.integers(0, 256, (33, 50, 3), dtype=np.uint8)).save(folder / "a.png")
    Image.fromarray(rng.integers(0, 256, (40, 41, 3), dtype=np.uint8)).save(folder / "b.jpg")
    (folder / "notes.txt").write_text("not an image")
    info = voc_data.INFO
    examples = prediction.folder_examples(str(folder))
    assert [example_id for example_id, _ in examples] == ["a", "b"]
    raw = prediction.predict_examples(voc_model, examples, info, str(tmp_path / "raw"), "raw")
    image = np.array(Image.open(folder / "a.png"))
    labels = inference.predict_labels(voc_model, image[None]).numpy()[0]
    with Image.open(raw[0]) as png:
        assert png.mode == "L"
        np.testing.assert_array_equal(np.array(png), labels)
    color = prediction.predict_examples(voc_model, examples, info, str(tmp_path / "color"), "color")
    np.testing.assert_array_equal(np.array(Image.open(color[0])),
                                  visualize.colorize(labels, info.palette))
    overlay = prediction.predict_examples(voc_model, examples, info, str(tmp_path / "ov"), "overlay")
    np.testing.assert_array_equal(np.array(Image.open(overlay[0])),
                                  visualize.overlay(image, labels, info.palette))


def test_folder_info_without_a_data_set():
    info = prediction.folder_info(num_classes=4)
    assert info.class_names == ("class_0", "class_1", "class_2", "class_3")
    np.testing.assert_array_equal(info.palette, visualize.voc_palette()[:4])
    assert prediction.folder_info("cityscapes").num_classes == 19
    assert prediction.folder_info("demo").class_names[0] == "background"
    with pytest.raises(ValueError, match="--num_classes"):
        prediction.folder_info()


def test_bad_requests_are_clear_errors(tmp_path):
    info = cityscapes_data.INFO
    with pytest.raises(ValueError, match="voc_submission needs the 21 VOC classes"):
        prediction.check_format("voc_submission", info)
    with pytest.raises(ValueError, match="not a Cityscapes"):
        prediction.output_path("cityscapes_submission", "out", "2007_000033")
    with pytest.raises(UserError, match="--input_dir .*empty_dir holds no images"):
        prediction.image_folder_examples(str(tmp_path / "empty_dir"))


@pytest.mark.slow
def test_command_line_voc_submission(voc_model, tf1_checkpoint, tmp_path):
    make_fake_voc(tmp_path / "voc", num_train=1, num_val=1, num_test=1, seed=5)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO)
    proc = subprocess.run(
        [sys.executable, "-m", "deeplab_load.predict", "--dataset=voc",
         f"--dataset_dir={tmp_path / 'voc'}", "--split=test", f"--checkpoint={tf1_checkpoint}",
         "--zoo_name=mobilenetv2_coco_voc_trainaug", "--format=voc_submission",
         f"--output_dir={tmp_path / 'out'}"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    dataset = get_dataset("voc", str(tmp_path / "voc"))
    ref = dataset.examples("test")[0]
    written = np.array(Image.open(prediction.output_path("voc_submission", str(tmp_path / "out"),
                                                      ref.id)))
    image, _ = dataset.load(ref)
    # default padding: the data set's eval crop size, 513x513
    np.testing.assert_array_equal(
        written, inference.predict_labels(voc_model, image[None], (513, 513)).numpy()[0])


@pytest.mark.slow
def test_command_line_image_folder(tf1_checkpoint, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    image = np.random.default_rng(6).integers(0, 256, (37, 52, 3), dtype=np.uint8)
    Image.fromarray(image).save(folder / "street.png")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO)
    proc = subprocess.run(
        [sys.executable, "-m", "deeplab_load.predict", f"--input_dir={folder}",
         f"--checkpoint={tf1_checkpoint}", "--zoo_name=mobilenetv2_coco_voc_trainaug",
         "--format=overlay", f"--output_dir={tmp_path / 'out'}"],
        capture_output=True, text=True, env=env, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = np.array(Image.open(tmp_path / "out" / "street.png"))
    assert written.shape == (37, 52, 3) and not np.array_equal(written, image)
