"""User mistakes end in one or two lines naming the flag or file and the fix, without a
traceback; the library raises UserErrors, the commands print them."""
import dataclasses
import json
import os
import subprocess
import sys

import pytest

from deeplab_load import cli
from deeplab_load.errors import FlagError, UserError
from deeplab_load.evaluation import run_evaluation
from deeplab_load.inference_configs import EvaluateConfig, ExportConfig, PredictConfig
from deeplab_load.checkpoints.model_source import ModelSource
from deeplab_load.checkpoints.model_spec import ModelSpec, write_model_spec
from deeplab_load.models.deeplab import DeepLabConfig, build_deeplab
from deeplab_load.prediction import run_prediction
from deeplab_load.serving import run_export
from deeplab_load.checkpoints.store import CheckpointStore

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = DeepLabConfig(backbone="mobilenet_v2", num_classes=6, output_stride=8, atrous_rates=(),
                     decoder_output_stride=None)


@pytest.fixture(scope="module")
def checkpoint_folder(tmp_path_factory):
    """A run-like checkpoint folder (tags.json + model.json) of a tiny demo-sized model."""
    folder = tmp_path_factory.mktemp("run") / "generator"
    CheckpointStore(str(folder), model=build_deeplab(TINY)).save("final")
    write_model_spec(str(folder), ModelSpec(config=TINY, dataset="demo",
                                            eval_crop_size=(49, 65)))
    return folder


def test_model_flags_that_contradict_model_json_name_the_fields(checkpoint_folder):
    source = ModelSource(checkpoint=str(checkpoint_folder), model_variant="xception_65",
                         output_stride=16)
    with pytest.raises(UserError) as error:
        run_export(ExportConfig(model=source, export_dir="/nonexistent/never_written"))
    message = str(error.value)
    assert "backbone (flags 'xception_65', model.json 'mobilenet_v2')" in message
    assert "output_stride (flags 16, model.json 8)" in message and "model.json" in message
    assert len(message.splitlines()) <= 2


def test_checkpoint_without_spec_and_wrong_flags_suggests_run_dir(checkpoint_folder, tmp_path):
    os.makedirs(tmp_path / "bare")
    prefix = CheckpointStore(str(tmp_path / "bare"), model=build_deeplab(TINY))
    prefix.save("final")
    with pytest.raises(UserError, match="pass --run_dir"):
        run_export(ExportConfig(model=ModelSource(checkpoint=str(tmp_path / "bare")),
                                export_dir=str(tmp_path / "x"), dataset="demo"))
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("make_config, pattern", [
    (lambda t: EvaluateConfig(model=ModelSource()), "--run_dir or --checkpoint is required"),
    (lambda t: EvaluateConfig(model=ModelSource(checkpoint=str(t / "missing"))),
     "no TF checkpoint at .*missing.*deeplab_load_tools.download_checkpoint"),
    (lambda t: EvaluateConfig(model=ModelSource(run_dir=str(t / "no_run"))),
     "--run_dir .*no_run does not exist"),
    (lambda t: EvaluateConfig(model=ModelSource(run_dir=str(t))),
     "holds no checkpoints .*training run directory"),
    (lambda t: EvaluateConfig(model=ModelSource(checkpoint="x"), dataset="voc",
                              dataset_dir=str(t)),
     "--dataset_dir .* holds no VOC2012/JPEGImages; pass the folder holding VOCdevkit"),
    (lambda t: EvaluateConfig(model=ModelSource(checkpoint="x"), dataset="cityscapes",
                              dataset_dir=str(t)), "--dataset_dir .* holds no leftImg8bit"),
    (lambda t: EvaluateConfig(model=ModelSource(checkpoint="x"), dataset="kitti"),
     "--dataset 'kitti' is unknown"),
    (lambda t: EvaluateConfig(model=ModelSource(checkpoint="x"), dataset="voc"),
     "--dataset=voc needs --dataset_dir"),
    (lambda t: PredictConfig(model=ModelSource(checkpoint="x"), output_dir=str(t / "o"),
                             fmt="voc_submission"), "voc_submission needs the 21 VOC classes"),
    (lambda t: PredictConfig(model=ModelSource(checkpoint="x"), output_dir=str(t / "o"),
                             input_dir=str(t), dataset="demo"), "--input_dir .* holds no images"),
    (lambda t: PredictConfig(model=ModelSource(checkpoint="x")), "--output_dir is required"),
    (lambda t: ExportConfig(model=ModelSource(checkpoint="x")), "--export_dir is required"),
], ids=["no_model", "missing_checkpoint", "missing_run_dir", "not_a_run_dir", "voc_dir",
        "cityscapes_dir", "unknown_dataset", "no_dataset_dir", "submission_format",
        "empty_input_dir", "no_output_dir", "no_export_dir"])
def test_user_mistakes_are_user_errors_naming_the_fix(make_config, pattern, tmp_path):
    config = make_config(tmp_path)
    runner = {EvaluateConfig: run_evaluation, PredictConfig: run_prediction,
              ExportConfig: run_export}[type(config)]
    with pytest.raises(UserError, match=pattern) as error:
        runner(config)
    assert len(str(error.value).splitlines()) <= 2
    assert not (tmp_path / "o").exists()


def test_report_user_error_prints_at_most_two_lines(capsys):
    cli.report_user_error(FlagError("first\nsecond\nthird\nfourth"))
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["error: first", "second (and 2 more lines with --verbosity=1)"]


def run_command(*args, verbosity=None):
    argv = [sys.executable, "-m", *args] + ([f"--verbosity={verbosity}"] if verbosity else [])
    return subprocess.run(argv, cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO),
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_command_prints_the_error_alone_without_tensorflow_noise(tmp_path):
    proc = run_command("deeplab_load.evaluate", f"--checkpoint={tmp_path / 'missing'}")
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        f"error: no TF checkpoint at {tmp_path / 'missing'} (neither a directory nor a prefix "
        f"with {tmp_path / 'missing'}.index); official zoo checkpoints are fetched with "
        f"`python -m deeplab_load_tools.download_checkpoint <zoo_name>`"], proc.stderr
    noisy = run_command("deeplab_load.evaluate", f"--checkpoint={tmp_path / 'missing'}",
                        verbosity=1)
    assert noisy.returncode == 1 and "oneDNN" in noisy.stderr  # --verbosity keeps TF's lines


@pytest.mark.slow
def test_predict_help_lists_its_own_and_the_model_flags():
    proc = run_command("deeplab_load.predict", "--help")  # absl exits 1 after --help
    for name in ("--format", "--input_dir", "--output_dir", "--run_dir", "--checkpoint",
                 "--model_variant", "--eval_crop_size", "--split"):
        assert name in proc.stdout, name
    assert "Label maps of a data-set split or a folder of images" in proc.stdout


@pytest.mark.slow
def test_export_of_a_bare_checkpoint_for_the_demo_data_set(tmp_path):
    """export --dataset=demo (refused before): the demo's class names and eval crop size."""
    from deeplab_load.data import demo
    CheckpointStore(str(tmp_path / "bare"), model=build_deeplab(TINY)).save("final")
    source = ModelSource(checkpoint=str(tmp_path / "bare"), model_variant="mobilenet_v2",
                         output_stride=8, atrous_rates=(), decoder_output_stride=0)
    path, crop, _ = run_export(ExportConfig(model=source, dataset="demo",
                                            export_dir=str(tmp_path / "x")))
    assert crop == tuple(demo.DEFAULT_IMAGE_SIZE)
    spec = ModelSpec.from_dict(json.load(open(os.path.join(path, "model.json"))))
    assert spec.class_names == tuple(demo.CLASS_NAMES) and spec.config == TINY


def test_predict_skip_bad_examples_reaches_the_library(checkpoint_folder, tmp_path):
    """PredictConfig.skip_bad_examples (the --skip_bad_examples flag): a corrupt image in the
    folder is skipped and counted instead of stopping the run."""
    import numpy as np
    from PIL import Image
    os.makedirs(tmp_path / "in")
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(tmp_path / "in" / "good.png")
    (tmp_path / "in" / "broken.jpg").write_bytes(b"not a jpeg")
    config = PredictConfig(model=ModelSource(checkpoint=str(checkpoint_folder)),
                           output_dir=str(tmp_path / "out"), fmt="raw",
                           input_dir=str(tmp_path / "in"))
    with pytest.raises(UserError, match="broken.jpg"):
        run_prediction(config)
    paths, _ = run_prediction(dataclasses.replace(config, skip_bad_examples=True))
    assert [os.path.basename(p) for p in paths] == ["good.png"]
    assert not (tmp_path / "out" / "INCOMPLETE").exists()


def test_commands_refuse_a_model_with_non_finite_weights(tmp_path):
    """evaluate / export / predict load through load_model, which refuses NaN weights naming the
    checkpoint (their argmax would otherwise give an ordinary-looking mIoU)."""
    import numpy as np
    from deeplab_load.errors import NonFiniteError
    from deeplab_load.checkpoints.model_loading import load_model
    model = build_deeplab(TINY)
    kernel = next(v for v in model.weights if v.path.endswith("kernel"))
    kernel.assign(np.full(kernel.shape, np.nan, np.float32))
    CheckpointStore(str(tmp_path / "nan"), model=model).save("final")
    write_model_spec(str(tmp_path / "nan"), ModelSpec(config=TINY, dataset="demo"))
    with pytest.raises(NonFiniteError, match=f"{tmp_path / 'nan'}: the model has NaN"):
        load_model(ModelSource(checkpoint=str(tmp_path / "nan")))
    with pytest.raises(NonFiniteError):
        run_export(ExportConfig(model=ModelSource(checkpoint=str(tmp_path / "nan")),
                                export_dir=str(tmp_path / "x")))
    assert not (tmp_path / "x").exists()


def test_a_command_that_fails_at_once_prints_exactly_its_error():
    """The stderr filter's copier owns its copy of the real stderr: a command that fails before
    the copier thread first runs (a bad flag value: no TensorFlow import) still prints its error
    and nothing else. Repeated because the lost line was a race."""
    for _ in range(8):
        proc = run_command("deeplab_load.evaluate", "--max_images=0")
        assert proc.returncode == 1
        assert proc.stderr.splitlines() == [
            "FATAL Flags parsing error: flag --max_images=0: 0 is not a positive integer",
            "Pass --helpshort or --helpfull to see help on flags."], proc.stderr


EXIT_RIGHT_AFTER_WRITING = """
import os, sys
import deeplab_load.cli
for i in range(2000):
    print(f"line {i}", file=sys.stderr)
os.write(2, b"I0000 00:00:1700000000.000000   123 cpu_feature_guard.cc:210] noise\\n")
if sys.argv[1] == "exit":
    sys.exit(3)
raise RuntimeError("uncaught")
"""


@pytest.mark.parametrize("how", ["exit", "raise"])
def test_every_stderr_line_written_before_exit_reaches_the_terminal(how):
    for _ in range(4):
        proc = subprocess.run([sys.executable, "-c", EXIT_RIGHT_AFTER_WRITING, how], cwd=REPO,
                              env=dict(os.environ, PYTHONPATH=REPO), capture_output=True,
                              text=True, timeout=60)
        lines = proc.stderr.splitlines()
        assert lines[:2000] == [f"line {i}" for i in range(2000)], proc.stderr[-500:]
        assert "noise" not in proc.stderr and "Exception in thread" not in proc.stderr
        if how == "exit":
            assert proc.returncode == 3 and len(lines) == 2000
        else:
            assert proc.returncode == 1 and lines[-1] == "RuntimeError: uncaught"


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncated", "reshaped"])
def test_damaged_zoo_checkpoint_is_one_named_error_without_traceback(damage, tmp_path):
    """The issue's case: --zoo_name with a cut-short or mis-shaped official checkpoint (it was
    an IndexError traceback, or a summary without the variable and a wrong hint)."""
    from test_bad_inputs import ZOO_NAME, tf1_checkpoint
    ctx = tf1_checkpoint(damage)(tmp_path)
    proc = run_command("deeplab_load.export", f"--zoo_name={ZOO_NAME}",
                       f"--checkpoint={ctx['prefix']}", f"--export_dir={tmp_path / 'x'}")
    lines = proc.stderr.splitlines()
    assert proc.returncode == 1 and 1 <= len(lines) <= 2, proc.stderr
    assert lines[0].startswith("error: checkpoint ") and "Traceback" not in proc.stderr
    for text in ctx["named"]:
        assert text in proc.stderr, proc.stderr
    assert "pass --run_dir" not in proc.stderr and not (tmp_path / "x").exists()
