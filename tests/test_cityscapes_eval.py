"""Our mIoU equals the official Cityscapes evaluator's on PNGs our predict command wrote.

The evaluator (`cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling`) runs in a
subprocess because it keeps its settings in module globals and calls sys.exit on errors. It finds
the ground truth through CITYSCAPES_DATASET and the predictions through CITYSCAPES_RESULTS. We
switch off its instance-level scores (nIoU; they need *_instanceIds.png files the fake tree does
not have; test_cityscapes_instance_eval.py compares ours with its functions). Conventions that must agree (and do):
  - confusion rows are ground-truth label ids; pixels whose ground truth is not one of the 19
    evaluated classes are not counted as false positives of any class (our ignore 255);
  - a class with TP + FP + FN = 0 gets NaN and is left out of the average (ours: null, excluded).
"""
import glob
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from PIL import Image

from deeplab_load import evaluation, metrics, prediction
from deeplab_load.checkpoints.restore import restore_checkpoint
from deeplab_load.data import get_dataset
from deeplab_load.data.cityscapes import CLASS_NAMES, LABEL_ID_TO_TRAIN_ID
from deeplab_load.models.deeplab import DeepLabConfig, build_deeplab
from fake_datasets import make_fake_cityscapes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_LABEL_ID = 31  # the Cityscapes class "train"

EVALUATOR_SCRIPT = textwrap.dedent("""
    import glob, json, sys
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as ev
    ev.args.evalInstLevelScore = False
    ev.args.JSONOutput = False
    ev.args.quiet = True
    ground_truth = sorted(glob.glob(ev.args.groundTruthSearch))
    predictions = [ev.getPrediction(ev.args, gt) for gt in ground_truth]
    result = ev.evaluateImgLists(predictions, ground_truth, ev.args)
    with open(sys.argv[1], "w") as f:
        json.dump({"miou": result["averageScoreClasses"], "class_iou": result["classScores"],
                   "num_images": len(ground_truth), "predictions": predictions}, f)
""")


def run_official_evaluator(dataset_dir, results_dir, tmp_path):
    out = tmp_path / "official.json"
    script = tmp_path / "official_eval.py"
    script.write_text(EVALUATOR_SCRIPT)
    env = dict(os.environ, CITYSCAPES_DATASET=str(dataset_dir), CITYSCAPES_RESULTS=str(results_dir),
               CITYSCAPES_EXPORT_DIR=str(tmp_path))
    proc = subprocess.run([sys.executable, str(script), str(out)], capture_output=True, text=True,
                          env=env, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return json.loads(out.read_text())


def assert_same_scores(ours, official):
    assert official["miou"] == pytest.approx(ours["miou"], abs=1e-4)
    for name in CLASS_NAMES:
        theirs, mine = official["class_iou"][name], ours["per_class_iou"][name]
        if mine is None:
            assert np.isnan(theirs), name
        else:
            assert theirs == pytest.approx(mine, abs=1e-4), name


@pytest.fixture(scope="module")
def cityscapes_model(make_golden_checkpoint, tmp_path_factory):
    """A 19-class MobileNetV2 DeepLab (VOC golden weights, seeded logits) and its weights file."""
    keras.utils.set_random_seed(0)
    model = build_deeplab(DeepLabConfig("mobilenet_v2", 19, 16, (), None))
    restore_checkpoint(model, make_golden_checkpoint("manifest_mobilenetv2_voc_os16.json"))
    path = str(tmp_path_factory.mktemp("weights") / "model.weights.h5")
    model.save_weights(path)
    return model, path


@pytest.mark.slow
def test_predict_command_pngs_score_the_same_with_the_official_evaluator(cityscapes_model,
                                                                        tmp_path):
    model, weights = cityscapes_model
    tree = make_fake_cityscapes(tmp_path / "cityscapes", num_train=1, num_val=3, seed=11)
    results_dir = tmp_path / "results"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO)
    proc = subprocess.run(
        [sys.executable, "-m", "deeplab_load.predict", "--dataset=cityscapes",
         f"--dataset_dir={tree.data_dir}", "--split=val", f"--checkpoint={weights}",
         "--model_variant=mobilenet_v2", "--atrous_rates=", "--decoder_output_stride=0",
         "--eval_crop_size=81,113", "--format=cityscapes_submission",
         f"--output_dir={results_dir}"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(glob.glob(str(results_dir / "*" / "*_pred_labelIds.png"))) == 3

    ours = evaluation.evaluate(model, get_dataset("cityscapes", tree.data_dir), "val",
                             eval_crop_size=(81, 113))
    official = run_official_evaluator(tree.data_dir, results_dir, tmp_path)
    assert official["num_images"] == 3
    assert len([v for v in ours["per_class_iou"].values() if v]) >= 3  # not a degenerate model
    print(f"ours {ours['miou']:.6f} official {official['miou']:.6f}")
    assert_same_scores(ours, official)


def test_absent_class_convention_matches_the_official_evaluator(tmp_path):
    """Ground truth without the class "train", predictions that never say "train", some
    predictions of classes absent from the ground truth, and ignored ground truth."""
    tree = make_fake_cityscapes(tmp_path / "cityscapes", num_train=0, num_val=3, seed=12)
    stream = metrics.StreamingConfusionMatrix(19)
    dataset = get_dataset("cityscapes", tree.data_dir)
    rng = np.random.default_rng(0)
    for ref in dataset.examples("val"):
        label_ids = np.array(Image.open(ref.label_path))
        label_ids[label_ids == TRAIN_LABEL_ID] = 0  # "unlabeled"
        Image.fromarray(label_ids).save(ref.label_path)
        train_ids = LABEL_ID_TO_TRAIN_ID[label_ids]
        predictions = np.where(train_ids == 255, rng.integers(0, 19, train_ids.shape), train_ids)
        flip = rng.random(train_ids.shape) < 0.3
        predictions = np.where(flip, rng.integers(0, 19, train_ids.shape), predictions)
        predictions[predictions == 16] = 0  # never predict "train"
        prediction.write_prediction("cityscapes_submission", str(tmp_path / "results"), ref.id,
                                 None, predictions, dataset.info)
        stream.update(train_ids, predictions)
    ours = metrics.results_dict(stream.matrix, CLASS_NAMES)
    assert ours["per_class_iou"]["train"] is None
    official = run_official_evaluator(tree.data_dir, tmp_path / "results", tmp_path)
    print(f"ours {ours['miou']:.6f} official {official['miou']:.6f}")
    assert_same_scores(ours, official)
