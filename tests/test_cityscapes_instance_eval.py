"""Cityscapes nIoU and category IoU / nIoU equal the official evaluator's functions.

The official command (`evalPixelLevelSemanticLabeling.main`) fails on numpy >= 2.4 because
`evaluatePair` calls the removed `np.in1d`; the reference script below runs the official
per-image accumulation (`evaluatePair`, `generateMatrix`, `generateInstanceStats`) and scores
(`getIouScoreForLabel`, `getInstanceIouScoreForLabel`, `getIouScoreForCategory`,
`getInstanceIouScoreForCategory`, `getScoreAverage`) with `np.in1d` supplied by `np.isin` when
it is missing. It runs in a subprocess (module globals, sys.exit on errors).

Skipped without cityscapesscripts (the `test` extra installs it), except under CI=true.
"""
import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

if importlib.util.find_spec("cityscapesscripts") is None:
    if os.environ.get("CI", "").lower() == "true":
        raise ImportError("cityscapesscripts is required under CI (pip install -e .[test])")
    pytest.skip("cityscapesscripts not installed (pip install -e .[test])",
                allow_module_level=True)

from deeplab_load import cityscapes_metrics, evaluation, metrics, prediction  # noqa: E402
from deeplab_load.data import get_dataset  # noqa: E402
from deeplab_load.data.cityscapes import (CLASS_NAMES, LABEL_ID_TO_TRAIN_ID,  # noqa: E402
                                         instance_ids_path, read_instance_ids)
from fake_datasets import make_fake_cityscapes  # noqa: E402

INSTANCE_LABEL_IDS = np.arange(24, 34)  # person .. bicycle, caravan 29 and trailer 30 included

REFERENCE_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as ev
    if not hasattr(np, "in1d"):  # removed in numpy 2.4; evaluatePair still calls it
        ev.np.in1d = lambda a, b, invert=False: np.isin(np.ravel(a), b, invert=invert)
    pairs = json.load(open(sys.argv[1]))
    args = ev.args
    args.evalInstLevelScore, args.evalPixelAccuracy, args.quiet = True, False, True
    matrix = ev.generateMatrix(args)
    stats = ev.generateInstanceStats(args)
    for prediction, ground_truth in pairs:
        ev.evaluatePair(prediction, ground_truth, matrix, stats, {}, args)
    names = {label: ev.id2label[label].name for label in args.evalLabels}
    iou = {names[l]: ev.getIouScoreForLabel(l, matrix, args) for l in args.evalLabels}
    niou = {names[l]: ev.getInstanceIouScoreForLabel(l, matrix, stats, args)
            for l in args.evalLabels}
    categories = list(ev.category2labels)
    cat_iou = {c: ev.getIouScoreForCategory(c, matrix, args) for c in categories}
    cat_niou = {c: ev.getInstanceIouScoreForCategory(c, matrix, stats, args) for c in categories}
    json.dump({"iou": iou, "niou": niou, "category_iou": cat_iou, "category_niou": cat_niou,
               "mean_iou": ev.getScoreAverage(iou, args),
               "mean_niou": ev.getScoreAverage(niou, args),
               "mean_category_iou": ev.getScoreAverage(cat_iou, args),
               "mean_category_niou": ev.getScoreAverage(cat_niou, args)},
              open(sys.argv[2], "w"))
""")


def add_instance_ids(tree, split, seed):
    """Writes a 16-bit *_gtFine_instanceIds.png beside every label: pixels of classes with
    instances get label_id * 1000 + k (k from 16-px tiles, several instances per class), some
    tiles stay a bare label id (a crowd region, not an instance); other pixels their label id."""
    rng = np.random.default_rng(seed)
    dataset = get_dataset("cityscapes", tree.data_dir)
    for ref in dataset.examples(split):
        label_ids = np.array(Image.open(ref.label_path)).astype(np.int32)
        height, width = label_ids.shape
        tiles = rng.integers(-1, 4, size=(-(-height // 16), -(-width // 16)))
        k = np.kron(tiles, np.ones((16, 16), np.int64))[:height, :width]
        instance = np.isin(label_ids, INSTANCE_LABEL_IDS) & (k >= 0)
        ids = np.where(instance, label_ids * 1000 + k, label_ids).astype(np.uint16)
        Image.fromarray(ids).save(instance_ids_path(ref.label_path))
    return dataset


def run_reference(pairs, tmp_path):
    pairs_path, out, script = tmp_path / "pairs.json", tmp_path / "ref.json", tmp_path / "ref.py"
    pairs_path.write_text(json.dumps(pairs))
    script.write_text(REFERENCE_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), str(pairs_path), str(out)],
                          capture_output=True, text=True, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return json.loads(out.read_text())


def assert_scores_equal(ours, official):
    """Every score equal to 1e-12 (None = the official NaN); means likewise."""
    def same(mine, theirs, what):
        if mine is None:
            assert np.isnan(theirs), what
        else:
            assert theirs == pytest.approx(mine, abs=1e-12), what

    for name in CLASS_NAMES:
        same(ours["per_class_iou"][name], official["iou"][name], f"IoU {name}")
        same(ours["per_class_niou"][name], official["niou"][name], f"nIoU {name}")
    assert set(official["category_iou"]) - set(ours["category_iou"]) == {"void"}
    assert np.isnan(official["category_iou"]["void"])
    for category in ours["category_iou"]:
        same(ours["category_iou"][category], official["category_iou"][category], category)
        same(ours["category_niou"][category], official["category_niou"][category], category)
    for key, official_key in (("miou", "mean_iou"), ("mean_niou", "mean_niou"),
                              ("mean_category_iou", "mean_category_iou"),
                              ("mean_category_niou", "mean_category_niou")):
        same(ours[key], official[official_key], key)


def test_scores_equal_official_functions(tmp_path):
    """Noisy predictions (wrong classes, and confusions within a category such as
    person -> rider) scored by our accumulation and by the official functions."""
    tree = make_fake_cityscapes(tmp_path / "cs", num_train=0, num_val=3, num_test=0, seed=21)
    dataset = add_instance_ids(tree, "val", seed=5)
    rng = np.random.default_rng(1)
    stream, stats, pairs = metrics.StreamingConfusionMatrix(19), cityscapes_metrics.InstanceStats(), []
    same_category = np.array([1, 0, 3, 4, 2, 6, 7, 5, 9, 8, 10, 12, 11, 14, 15, 16, 17, 18, 13])
    for ref in dataset.examples("val"):
        train_ids = LABEL_ID_TO_TRAIN_ID[np.array(Image.open(ref.label_path))]
        predictions = np.where(train_ids == 255, rng.integers(0, 19, train_ids.shape), train_ids)
        noise = rng.random(train_ids.shape)
        predictions = np.where(noise < 0.2, same_category[predictions], predictions)
        predictions = np.where(noise > 0.85, rng.integers(0, 19, train_ids.shape), predictions)
        pairs.append([prediction.write_prediction("cityscapes_submission", str(tmp_path / "pred"),
                                               ref.id, None, predictions, dataset.info),
                      ref.label_path])
        stream.update(train_ids, predictions)
        stats.add(predictions, read_instance_ids(
            instance_ids_path(ref.label_path)))
    ours = metrics.results_dict(stream.matrix, CLASS_NAMES)
    ours.update(cityscapes_metrics.instance_scores(stream.matrix, stats))
    assert stats.num_instances > 20
    assert sum(v is not None for v in ours["per_class_niou"].values()) == 8
    # nIoU weights instances: it differs from the IoU of the same class.
    assert ours["per_class_niou"]["car"] != pytest.approx(ours["per_class_iou"]["car"], abs=1e-3)
    # Confusions inside a category count as hits for the category scores.
    assert ours["category_niou"]["human"] > max(ours["per_class_niou"]["person"],
                                                ours["per_class_niou"]["rider"])
    assert_scores_equal(ours, run_reference(pairs, tmp_path))


def test_average_sizes_are_the_official_ones():
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as ev
    official = {name: size for name, size in ev.args.avgClassSize.items()
                if name not in ("caravan", "trailer")}
    assert cityscapes_metrics.AVERAGE_INSTANCE_SIZE == official


def color_oracle_model():
    """A 1x1 conv whose argmax is round(red / 13): logit_k = 26 k red - 169 k^2 (the shared
    -red^2 of -(red - 13 k)^2 dropped), so images whose red channel encodes train ids give
    controllable predictions."""
    import keras
    inputs = keras.Input((None, None, 3))
    conv = keras.layers.Conv2D(19, 1)
    model = keras.Model(inputs, conv(inputs))
    k = np.arange(19, dtype=np.float32)
    kernel = np.zeros((1, 1, 3, 19), np.float32)
    kernel[0, 0, 0] = 26 * k
    conv.set_weights([kernel, -169 * k ** 2])
    return model


def encode_predictions_in_images(dataset, split, seed, noise=0.3):
    """Rewrites each image's red channel as 13 * (train id), a random class where the ground
    truth is ignored and on a `noise` fraction of pixels; returns id -> expected predictions."""
    rng = np.random.default_rng(seed)
    expected = {}
    for ref in dataset.examples(split):
        image, label = dataset.load(ref)
        wanted = np.where(label == 255, rng.integers(0, 19, label.shape), label)
        wanted = np.where(rng.random(label.shape) < noise, rng.integers(0, 19, label.shape),
                          wanted)
        image = image.copy()
        image[..., 0] = (13 * wanted).astype(np.uint8)
        Image.fromarray(image).save(ref.image_path)
        expected[ref.id] = wanted
    return expected


def test_evaluate_reports_niou_equal_to_official(tmp_path):
    """evaluate() on a tree with instance ids: results.json / results.md carry nIoU and the
    category scores, equal to the official functions on the same predictions."""
    tree = make_fake_cityscapes(tmp_path / "cs", num_train=0, num_val=3, num_test=0, seed=22,
                                size=(49, 65))
    dataset = add_instance_ids(tree, "val", seed=6)
    expected = encode_predictions_in_images(dataset, "val", seed=7)
    results = evaluation.evaluate(color_oracle_model(), dataset, "val", batch_size=2,
                                eval_crop_size=(65, 97))
    assert results["num_instances"] > 10
    assert 0.2 < results["mean_niou"] < 0.95 and results["category_niou"]["vehicle"] > 0.2
    pairs = [[prediction.write_prediction("cityscapes_submission", str(tmp_path / "pred"), ref.id,
                                       None, expected[ref.id], dataset.info), ref.label_path]
             for ref in dataset.examples("val")]
    assert_scores_equal(results, run_reference(pairs, tmp_path))
    _, markdown = evaluation.write_results(results, str(tmp_path / "out"))
    text = open(markdown).read()
    assert "nIoU (%)" in text and "| vehicle |" in text
    saved = json.load(open(tmp_path / "out" / "results.json"))
    assert saved["mean_niou"] == results["mean_niou"] and "category_niou" in saved


def test_evaluate_without_instance_ids_reports_category_iou_only(tmp_path):
    tree = make_fake_cityscapes(tmp_path / "cs", num_train=0, num_val=2, num_test=0, seed=23,
                                size=(33, 49))
    dataset = get_dataset("cityscapes", tree.data_dir)
    encode_predictions_in_images(dataset, "val", seed=8)
    results = evaluation.evaluate(color_oracle_model(), dataset, "val", eval_crop_size=(33, 49))
    assert "per_class_niou" not in results
    assert results["category_iou"] == cityscapes_metrics.instance_scores(
        np.array(results["confusion_matrix"]))["category_iou"]
    assert results["mean_category_iou"] > results["miou"]  # merging classes removes errors


def test_niou_from_our_tfrecords_without_the_tree(tmp_path):
    """deeplab_load_tools/build_tfrecords.py keeps the instance ids in the records: the scores from the
    records alone equal those from the files."""
    import shutil
    from deeplab_load.data import tfrecords
    tree = make_fake_cityscapes(tmp_path / "cs", num_train=0, num_val=3, num_test=0, seed=24,
                                size=(33, 49))
    dataset = add_instance_ids(tree, "val", seed=9)
    encode_predictions_in_images(dataset, "val", seed=10)
    model = color_oracle_model()
    from_files = evaluation.evaluate(model, dataset, "val", eval_crop_size=(33, 49))
    out = str(tmp_path / "records")
    tfrecords.write_split(dataset, "val", out, num_shards=2)
    shutil.rmtree(tree.data_dir)
    records = get_dataset("cityscapes", None, tfrecord_dir=out)
    assert sorted(tfrecords.instance_pngs(out, "val", "cityscapes")) == tree.ids("val")
    from_records = evaluation.evaluate(model, records, "val", batch_size=2, eval_crop_size=(33, 49))
    assert from_files["num_instances"] > 5
    for key in ("category_iou", "num_instances", "confusion_matrix"):
        assert from_records[key] == from_files[key], key
    # Records come in shard order, so the weighted sums are added in another order.
    for key in ("per_class_niou", "category_niou"):
        assert from_records[key] == pytest.approx(from_files[key], abs=1e-12), key
    assert from_records["mean_niou"] == pytest.approx(from_files["mean_niou"], abs=1e-12)
