import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from deeplab_load import inference, serving
from deeplab_load.checkpoints.restore import restore_checkpoint
from deeplab_load.models.deeplab import DeepLabConfig, build_deeplab

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MNV2_VOC = DeepLabConfig("mobilenet_v2", 21, 16, (), None)
SIZES = [(65, 97), (64, 96), (33, 50), (1, 1)]

# Runs in a fresh interpreter: TensorFlow only, never deeplab_load.
RELOAD_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import tensorflow as tf
    export_dir, inputs, outputs = sys.argv[1:4]
    loaded = tf.saved_model.load(export_dir)
    serving = loaded.signatures["serving_default"]
    arrays = dict(np.load(inputs))
    results = {}
    for key, images in arrays.items():
        try:
            out = serving(images=tf.constant(images))
        except tf.errors.InvalidArgumentError as err:
            results[key + "/error"] = np.array(err.message)
            continue
        for name, value in out.items():
            results[key + "/" + name] = value.numpy()
    assert not any(m.startswith("deeplab_load") for m in sys.modules), "deeplab_load imported"
    np.savez(outputs, **results)
""")


@pytest.fixture(scope="module")
def model(make_golden_checkpoint):
    model = build_deeplab(MNV2_VOC)
    restore_checkpoint(model, make_golden_checkpoint("manifest_mobilenetv2_voc_os16.json"))
    return model


def _images(sizes, batch=2, seed=0):
    rng = np.random.default_rng(seed)
    return {f"{h}x{w}": rng.integers(0, 256, (batch, h, w, 3), dtype=np.uint8) for h, w in sizes}


def _reload_and_run(export_dir, images, tmp_path):
    inputs, outputs = tmp_path / "inputs.npz", tmp_path / "outputs.npz"
    np.savez(inputs, **images)
    script = tmp_path / "reload.py"
    script.write_text(RELOAD_SCRIPT)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([sys.executable, str(script), str(export_dir), str(inputs), str(outputs)],
                          capture_output=True, text=True, env=env, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(np.load(outputs))


@pytest.mark.slow
def test_fresh_process_matches_keras_any_size(model, tmp_path):
    export_dir = tmp_path / "export"
    serving.export_saved_model(model, export_dir, with_probabilities=True,
                              class_names=[f"c{i}" for i in range(21)])
    images = _images(SIZES)
    served = _reload_and_run(export_dir, images, tmp_path)
    for key, batch in images.items():
        labels = inference.predict_labels(model, batch).numpy()
        assert served[key + "/labels"].dtype == np.int32
        np.testing.assert_array_equal(served[key + "/labels"], labels)
        probabilities = served[key + "/probabilities"]
        assert probabilities.shape == batch.shape[:3] + (21,)
        expected = inference.predict_logits(model, batch).numpy()
        expected = np.exp(expected - expected.max(-1, keepdims=True))
        np.testing.assert_allclose(probabilities, expected / expected.sum(-1, keepdims=True),
                                   atol=1e-5)
    assert len(np.unique(served["65x97/labels"])) >= 3
    metadata = json.loads((export_dir / serving.METADATA_FILE).read_text())
    assert metadata["config"]["backbone"] == "mobilenet_v2" and metadata["eval_crop_size"] is None


@pytest.mark.slow
def test_eval_crop_padding_matches_predict_labels(model, tmp_path):
    export_dir = tmp_path / "export_crop"
    serving.export_saved_model(model, export_dir, eval_crop_size=(81, 113))
    images = _images([(65, 97), (80, 112), (81, 114)], batch=1, seed=1)
    served = _reload_and_run(export_dir, images, tmp_path)
    for key in ("65x97", "80x112"):
        expected = inference.predict_labels(model, images[key], (81, 113)).numpy()
        np.testing.assert_array_equal(served[key + "/labels"], expected)
        assert "probabilities" not in " ".join(served)
    # the padding matters: without it the label map differs
    assert not np.array_equal(served["65x97/labels"],
                              inference.predict_labels(model, images["65x97"]).numpy())
    assert "larger than the eval crop size" in str(served["81x114/error"]), served["81x114/error"]


def test_export_never_clobbers_half_way(model, tmp_path):
    export_dir = tmp_path / "export"
    export_dir.mkdir()
    (export_dir / "keep.txt").write_text("old")
    with pytest.raises(FileExistsError, match="export"):
        serving.export_saved_model(model, export_dir, overwrite=False)
    assert (export_dir / "keep.txt").read_text() == "old"

    class Broken:  # fails while saving: the old export must survive untouched
        weights = []

        def __call__(self, *args, **kwargs):
            raise RuntimeError("boom")

    with pytest.raises(Exception, match="boom"):
        serving.export_saved_model(Broken(), export_dir, overwrite=True)
    assert (export_dir / "keep.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # no temp folders left

    serving.export_saved_model(model, export_dir)  # replaces by default, once complete
    assert (export_dir / "saved_model.pb").exists() and not (export_dir / "keep.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


@pytest.mark.slow
def test_command_line(make_golden_checkpoint, tmp_path):
    export_dir = tmp_path / "voc_export"
    command = [sys.executable, "-m", "deeplab_load.export", "--dataset=voc",
               "--zoo_name=mobilenetv2_coco_voc_trainaug", f"--export_dir={export_dir}",
               f"--checkpoint={make_golden_checkpoint('manifest_mobilenetv2_voc_os16.json')}"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO)
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metadata = json.loads((export_dir / serving.METADATA_FILE).read_text())
    assert metadata["eval_crop_size"] == [513, 513]  # the VOC default, as the original export
    assert metadata["class_names"][15] == "person"
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    assert proc.returncode != 0 and "--overwrite" in proc.stderr


@pytest.mark.slow
def test_export_reproduces_original_export_model_labels(model, golden, golden_index, tmp_path):
    """The original export_model.py's SemanticPredictions (golden, MobileNetV2 OS16, a 300x400
    image padded to 513x513) from our SavedModel in a fresh process (golden tolerance:
    at most 0.1% of the pixels differ)."""
    case = golden_index["configs"]["mobilenetv2_voc_os16"]["cases"]["export_300x400"]
    image = np.load(golden / case["input"])
    expected = np.load(golden / case["arrays"]["labels"]["file"])
    export_dir = tmp_path / "export_513"
    serving.export_saved_model(model, export_dir, eval_crop_size=(513, 513))
    served = _reload_and_run(export_dir, {"golden": image}, tmp_path)["golden/labels"]
    assert served.shape == expected.shape
    assert np.mean(served != expected) <= 1e-3
