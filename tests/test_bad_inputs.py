"""Corpus of bad inputs (issue 11): each case makes one mistake a user can make and checks

- the error class (a UserError the CLIs print in one or two lines, no traceback),
- that the message names the bad file (or split-file line),
- that the message is at most two lines,
- that nothing was written outside the case's output folder (every file under the test's
  tmp folder is compared before and after),
- that nothing half-written is left unmarked: no `*.tmp` file anywhere, and an output folder
  with files in it also holds an `INCOMPLETE` marker.

Add a case: a row in CASES -- `Case(name, setup, action, error)`; `setup(tmp)` builds the bad
input and returns a dict with "named" (text the message must contain) and optionally "output"
(the folder the action may write into); `action(ctx)` runs the library call that must fail.
Process behaviour (hangs, exit codes) is covered by test_no_hang.py.
"""
import dataclasses
import functools
import io
import json
import logging as std_logging
import os
from typing import Callable

import keras
import numpy as np
import pytest
from PIL import Image

import tensorflow as tf

from deeplab_load import prediction as predict
from deeplab_load.checkpoints import model_spec, tf1, zoo
from deeplab_load.data import BadExampleError, get_dataset, pipeline, tfrecords
from deeplab_load.data.batches import Batches
from deeplab_load.data.common import BadIdListError, decode_image
from deeplab_load.errors import DamagedFileError, UserError
from deeplab_load.lookahead import buffer, controller
from deeplab_load.checkpoints.model_loading import load_model
from deeplab_load.checkpoints.model_source import ModelSource
from deeplab_load.models.deeplab import checkpoint_variables
from deeplab_load.output_folder import INCOMPLETE_FILE, OutsideOutputFolderError
from deeplab_load.training import map_sets, run as train_run
from deeplab_load.training.config import TrainConfig
from deeplab_load.training.segmentor import deeplab_segmentor
from fake_datasets import make_fake_cityscapes, make_fake_stanford, make_fake_voc, write_regions
from test_download_checkpoint import make_tarball, tool as download_tool

SIZE = (33, 41)


# ----------------------------------------------------------------------------------------------
# Building blocks


def voc(tmp, num_train=3, num_val=2):
    tree = make_fake_voc(tmp / "data", num_train=num_train, num_val=num_val, size=SIZE)
    return get_dataset("voc", tree.data_dir)


def voc_lists(ds):
    return os.path.join(ds.root, "ImageSets", "Segmentation")


def append_id(list_path, bad_id):
    with open(list_path, "a") as f:
        f.write(bad_id + "\n")
    with open(list_path) as f:
        return f"{list_path}:{len(f.read().splitlines())}"


def save_label(path, array, mode="L"):
    Image.fromarray(array, mode=mode).save(path, format="PNG")


def drain(dataset):
    for _ in Batches(dataset):
        pass


def eval_all(ds, split="val", crop=SIZE):
    drain(pipeline.eval_dataset(ds, split, 2, crop))


def tiny_model(num_classes):
    """A 1x1 convolution: logits [B,H,W,K] of pixels [B,H,W,3] (enough to write predictions)."""
    inputs = keras.Input((None, None, 3))
    return keras.Model(inputs, keras.layers.Conv2D(num_classes, 1)(inputs))


def png16(array):
    """PNG bytes of a uint16 [H, W] (grayscale) or [H, W, 3] (RGB) array, 16 bits per value."""
    import struct
    import zlib
    array = np.asarray(array, np.uint16)
    height, width = array.shape[:2]
    color_type = 2 if array.ndim == 3 else 0
    rows = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


# ----------------------------------------------------------------------------------------------
# Cases: (setup, action) pairs


def split_id_case(bad_id, split="val"):
    def setup(tmp):
        ds = voc(tmp)
        return {"ds": ds, "named": append_id(os.path.join(voc_lists(ds), f"{split}.txt"), bad_id)}
    return setup, lambda ctx: ctx["ds"].examples(split)


def setup_stanford_id(tmp):
    tree = make_fake_stanford(tmp / "data", num_images=6, size=SIZE)
    ds = get_dataset("stanford", tree.data_dir)
    ds.examples("train")  # writes the split files
    return {"ds": ds, "named": append_id(ds.split_path("test"), "..")}


def setup_holdout_id(tmp):
    ds = voc(tmp)
    run_dir = tmp / "run"
    run_dir.mkdir()
    (run_dir / pipeline.HOLDOUT_FILE).write_text(f"{ds.examples('val')[0].id}\n../escape\n")
    return {"ds": ds, "run_dir": str(run_dir),
            "named": f"{run_dir / pipeline.HOLDOUT_FILE}:2"}


def setup_tfrecord_ids(tmp):
    ds = voc(tmp)
    out = tmp / "records"
    metadata = tfrecords.write_split(ds, "val", str(out), 1)
    metadata["ids"][1] = "/etc/passwd"
    path = tfrecords.metadata_path(str(out), "val")
    with open(path, "w") as f:
        json.dump(metadata, f)
    return {"out": str(out), "named": path}


def setup_tfrecord_json(tmp):
    ds = voc(tmp)
    out = tmp / "records"
    tfrecords.write_split(ds, "val", str(out), 1)
    path = tfrecords.metadata_path(str(out), "val")
    with open(path, "r+") as f:
        f.truncate(20)
    return {"out": str(out), "named": path}


def setup_predict_ids(bad_id, fmt="raw"):
    def setup(tmp):
        ds = voc(tmp)
        ref = ds.examples("val")[0]
        out = tmp / "out"
        examples = [(ref.id, lambda: decode_image(open(ref.image_path, "rb").read(), "x")),
                    (bad_id, lambda: decode_image(open(ref.image_path, "rb").read(), "x"))]
        return {"ds": ds, "examples": examples, "output": str(out), "fmt": fmt,
                "named": str(out)}
    return setup


def run_predict(ctx):
    predict.predict_examples(tiny_model(ctx["ds"].info.num_classes), ctx["examples"],
                             ctx["ds"].info, ctx["output"], ctx["fmt"], None)


def setup_predict_symlinked_folder(tmp):
    ctx = setup_predict_ids("2008_000000")(tmp)
    outside = tmp / "elsewhere"
    outside.mkdir()
    os.makedirs(os.path.join(ctx["output"], "results"))
    os.symlink(outside, os.path.join(ctx["output"], "results", "VOC2012"))
    ctx["examples"] = ctx["examples"][:1]
    ctx["fmt"] = "voc_submission"
    return ctx


def setup_predict_bad_image(tmp):
    ds = voc(tmp, num_val=3)
    refs = ds.examples("val")
    with open(refs[1].image_path, "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 broken")
    return {"ds": ds, "examples": predict.dataset_examples(ds, "val"), "fmt": "color",
            "output": str(tmp / "out"), "named": refs[1].image_path}


def setup_map_id(tmp):
    ds = voc(tmp)
    return {"ds": ds, "output": str(tmp / "set"), "named": "../outside"}


def setup_tfrecords_bad_label(tmp):
    ds = voc(tmp, num_train=4)
    ref = ds.examples("train")[2]
    save_label(ref.label_path, np.full(SIZE, 99, np.uint8))
    return {"ds": ds, "output": str(tmp / "records"), "named": ref.label_path}


def label_case(make_label, split="val", mode="L"):
    def setup(tmp):
        ds = voc(tmp)
        ref = ds.examples(split)[1]
        save_label(ref.label_path, make_label(), mode)
        return {"ds": ds, "named": ref.label_path}
    return setup


def image_case(data):
    def setup(tmp):
        ds = voc(tmp)
        ref = ds.examples("train")[1]
        content = data(ref) if callable(data) else data
        with open(ref.image_path, "wb") as f:
            f.write(content)
        return {"ds": ds, "named": ref.image_path}
    return setup


def float_tiff(ref):
    buf = io.BytesIO()
    Image.fromarray(np.ones(SIZE, np.float32)).save(buf, format="TIFF")
    return buf.getvalue()


def truncated_jpeg(ref):
    with open(ref.image_path, "rb") as f:
        return f.read()[:200]


def setup_cityscapes_ids(tmp):
    tree = make_fake_cityscapes(tmp / "data", num_train=2, num_val=0, num_test=0, size=SIZE)
    ds = get_dataset("cityscapes", tree.data_dir)
    ref = ds.examples("train")[0]
    save_label(ref.label_path, np.full(SIZE, 40, np.uint8))
    return {"ds": ds, "named": ref.label_path}


def setup_stanford_value(tmp):
    tree = make_fake_stanford(tmp / "data", num_images=6, size=SIZE)
    ds = get_dataset("stanford", tree.data_dir)
    ref = ds.examples("train")[0]
    write_regions(ref.label_path, np.full(SIZE, 9))
    return {"ds": ds, "named": ref.label_path}


def setup_map_set(kind):
    def setup(tmp):
        ds = voc(tmp)
        refs = ds.examples("train")
        set_dir = tmp / "set"
        set_dir.mkdir()
        for ref in refs:
            save_label(map_sets.map_path(str(set_dir), ref.id), np.zeros(SIZE, np.uint8))
        target = map_sets.map_path(str(set_dir), refs[1].id)
        if kind == "missing":
            os.remove(target)
        else:
            save_label(target, np.zeros((SIZE[0] + 2, SIZE[1]), np.uint8))
        return {"ds": ds, "set": str(set_dir), "named": target}
    return setup


def damaged_file(name, content):
    """setup: a run file `name` holding `content` (bytes) in <tmp>/run."""
    def setup(tmp):
        path = tmp / "run" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        return {"path": str(path), "named": str(path)}
    return setup


def run_tfrecords(ctx):
    tfrecords.write_split(ctx["ds"], "train", ctx["output"], 2)


# Official TF1 checkpoints that are cut short or do not fit, through every path that reads them.
ZOO_NAME = "mobilenetv2_coco_voc_trainaug"
RESHAPED_VARIABLE = "MobilenetV2/Conv/weights"          # [3, 3, 3, 32]
DELETED_VARIABLES = ("MobilenetV2/expanded_conv_3/depthwise/depthwise_weights",
                     "MobilenetV2/expanded_conv_3/project/weights", "aspp0/weights",
                     "image_pooling/weights", "logits/semantic/biases")
REFETCH = f"python -m deeplab_load_tools.download_checkpoint {ZOO_NAME} --force"


@functools.cache
def zoo_tensors():
    """{TF1 name: array} of a seeded model with the zoo entry's architecture, plus the
    global_step every official checkpoint holds."""
    keras.utils.set_random_seed(0)
    tensors = {name: variable.numpy() for name, variable in
               checkpoint_variables(zoo.build_from_zoo(ZOO_NAME)).items()}
    tensors["global_step"] = np.array(30000, np.int64)
    return tensors


def tf1_checkpoint(damage, tarball=False):
    """setup: a TF1 checkpoint of ZOO_NAME's architecture with one `damage` ("truncated": .data
    cut in half, "reshaped": one variable of another shape, "missing": 5 variables deleted) at
    <tmp>/zoo/model.ckpt, or packed as a zoo tarball <tmp>/zoo.tar.gz (download tool's output:
    <tmp>/checkpoints). "named": what the message must hold: the file, what is wrong, the fix."""
    def setup(tmp):
        tensors = dict(zoo_tensors())
        named = []
        if damage == "reshaped":
            tensors[RESHAPED_VARIABLE] = tensors[RESHAPED_VARIABLE][..., :16]
            named = [f"1 mis-shaped ({RESHAPED_VARIABLE}: checkpoint [3, 3, 3, 16] vs model "
                     f"[3, 3, 3, 32])"]
        elif damage == "missing":
            for name in DELETED_VARIABLES:
                del tensors[name]
            shown = sorted(DELETED_VARIABLES)[:3]
            named = [f"5 missing in the checkpoint ({', '.join(shown)}, ... (2 more))"]
        os.makedirs(tmp / "zoo")
        prefix = str(tmp / "zoo" / "model.ckpt")
        names = sorted(tensors)
        tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                          tensors=[tf.constant(tensors[name]) for name in names])
        data_file = prefix + ".data-00000-of-00001"
        if damage == "truncated":
            with open(data_file, "r+b") as f:
                f.truncate(os.path.getsize(data_file) // 2)
            named = ["is damaged/truncated", "bytes, the index lists"]
        if not tarball:
            file = data_file if damage == "truncated" else prefix
            return {"prefix": prefix, "named": [file] + named}
        path = make_tarball(tmp / "zoo.tar.gz", prefix, folder="deeplabv3_mnv2")
        member = "deeplabv3_mnv2/model.ckpt" + (".data-00000-of-00001"
                                                if damage == "truncated" else "")
        return {"tarball": path, "output": str(tmp / "checkpoints"),
                "named": [f"{member} in {path}"] + named +
                         ["download it again" if damage == "truncated" else
                          f"it is not the checkpoint of {ZOO_NAME}"]}
    return setup


def load_with_zoo_name(ctx):
    load_model(ModelSource(checkpoint=ctx["prefix"], zoo_name=ZOO_NAME))


def load_with_model_flags(ctx):
    load_model(ModelSource(checkpoint=ctx["prefix"], model_variant="mobilenet_v2",
                           num_classes=21, output_stride=16, atrous_rates=(),
                           decoder_output_stride=0))


def load_initial_checkpoint(ctx):
    config = TrainConfig.from_flags(zoo_name=ZOO_NAME, initial_checkpoint=ctx["prefix"])
    train_run.load_initial_weights(zoo.build_from_zoo(ZOO_NAME), config,
                                   deeplab_segmentor(zoo.zoo_config(ZOO_NAME)))


def fetch_tarball(ctx):
    download_tool.fetch_checkpoint(ZOO_NAME, ctx["output"], tarball=ctx["tarball"],
                                 stream=io.StringIO())


def with_fix(setup, *fix, zoo_name_given=False):
    """setup whose message must also hold the texts `fix` (and not the hint for a checkpoint
    of unknown architecture when --zoo_name was given)."""
    def extended(tmp):
        ctx = setup(tmp)
        ctx["named"] = list(ctx["named"]) + list(fix)
        if zoo_name_given:
            ctx["absent"] = ["no model.json beside", "pass --run_dir"]
        return ctx
    return extended


@dataclasses.dataclass
class Case:
    name: str
    setup: Callable
    action: Callable
    error: type


CASES = [
    # Ids are file names (item 2).
    Case("split id with ../", *split_id_case("../../../escape"), BadIdListError),
    Case("split id absolute", *split_id_case("/tmp/escape"), BadIdListError),
    Case("split id with a folder", *split_id_case("sub/dir", split="train"), BadIdListError),
    Case("split id with a backslash", *split_id_case("a\\b"), BadIdListError),
    Case("split id '..'", *split_id_case(".."), BadIdListError),
    Case("stanford split id '..'", setup_stanford_id, lambda ctx: ctx["ds"].examples("test"),
         BadIdListError),
    Case("hold-out list id with ../", setup_holdout_id,
         lambda ctx: pipeline.holdout_ids(ctx["ds"], ctx["run_dir"]), BadIdListError),
    Case("tfrecord metadata absolute id", setup_tfrecord_ids,
         lambda ctx: tfrecords.read_metadata(ctx["out"], "val"), BadIdListError),
    Case("tfrecord metadata truncated", setup_tfrecord_json,
         lambda ctx: tfrecords.read_metadata(ctx["out"], "val"), DamagedFileError),
    # Writers stay inside their output folder (item 2).
    Case("predict id with ../", setup_predict_ids("../escape"), run_predict,
         OutsideOutputFolderError),
    Case("predict absolute id", setup_predict_ids("/tmp/escape"), run_predict,
         OutsideOutputFolderError),
    Case("predict into a symlinked folder", setup_predict_symlinked_folder, run_predict,
         OutsideOutputFolderError),
    Case("map set id with ../", setup_map_id,
         lambda ctx: map_sets.map_path(ctx["output"], "../outside"), OutsideOutputFolderError),
    # Failed runs leave nothing half-written unmarked (item 2).
    Case("predict stops at a bad JPEG", setup_predict_bad_image, run_predict, BadExampleError),
    Case("build_tfrecords stops at a bad label", setup_tfrecords_bad_label, run_tfrecords,
         BadExampleError),
    # Bad examples give the named error through the pipelines (items 1, 7).
    Case("label value neither class nor 255", label_case(lambda: np.full(SIZE, 77, np.uint8)),
         lambda ctx: eval_all(ctx["ds"]), BadExampleError),
    Case("RGB label PNG", label_case(lambda: np.zeros(SIZE + (3,), np.uint8), mode="RGB"),
         lambda ctx: eval_all(ctx["ds"]), BadExampleError),
    Case("label size differs from image", label_case(lambda: np.zeros((SIZE[0], 7), np.uint8)),
         lambda ctx: eval_all(ctx["ds"]), BadExampleError),
    Case("bad label in training", label_case(lambda: np.full(SIZE, 30, np.uint8), "train"),
         lambda ctx: drain(pipeline.train_dataset(ctx["ds"], "train", 3, 17, seed=0,
                                                  repeat=False)), BadExampleError),
    Case("garbage JPEG in training", image_case(b"garbage"),
         lambda ctx: drain(pipeline.train_dataset(ctx["ds"], "train", 3, 17, seed=0,
                                                  repeat=False)), BadExampleError),
    Case("truncated JPEG", image_case(truncated_jpeg),
         lambda ctx: eval_all(ctx["ds"], "train"), BadExampleError),
    Case("empty image file", image_case(b""), lambda ctx: eval_all(ctx["ds"], "train"),
         BadExampleError),
    Case("32-bit float image", image_case(float_tiff), lambda ctx: eval_all(ctx["ds"], "train"),
         BadExampleError),
    Case("image larger than eval_crop_size",
         lambda tmp: (lambda ds: {"ds": ds, "named": ds.examples("val")[0].image_path})(voc(tmp)),
         lambda ctx: eval_all(ctx["ds"], crop=(SIZE[0] - 1, SIZE[1])), BadExampleError),
    Case("cityscapes label id 40", setup_cityscapes_ids,
         lambda ctx: drain(pipeline.eval_dataset(ctx["ds"], "train", 1, SIZE)),
         BadExampleError),
    Case("stanford region value 9", setup_stanford_value,
         lambda ctx: drain(pipeline.eval_dataset(ctx["ds"], "train", 1, SIZE)),
         BadExampleError),
    Case("map set PNG missing", setup_map_set("missing"),
         lambda ctx: drain(map_sets.fake_examples(ctx["ds"], ctx["ds"].examples("train"),
                                                  ctx["set"], 17, seed=0)), BadExampleError),
    Case("map set PNG of the wrong size", setup_map_set("size"),
         lambda ctx: drain(map_sets.fake_examples(ctx["ds"], ctx["ds"].examples("train"),
                                                  ctx["set"], 17, seed=0)), BadExampleError),
    # Damaged run files name themselves and the fix (item 4).
    Case("truncated LoAd state.json", damaged_file("state.json", b'{"version": 1, "pha'),
         lambda ctx: controller.load_state(ctx["path"]), DamagedFileError),
    Case("state.json of another program", damaged_file("state.json", b'{"phase": "x"}'),
         lambda ctx: controller.load_state(ctx["path"]), DamagedFileError),
    Case("model.json that is not a model spec", damaged_file("generator/model.json", b"[1, 2]"),
         lambda ctx: model_spec.read_model_spec(ctx["path"]), DamagedFileError),
    Case("buffer index.json with bytes that are not UTF-8",
         damaged_file("buffer/index.json", b"\xff\xfe{"),
         lambda ctx: buffer.read_json(ctx["path"]), DamagedFileError),
    # Official checkpoints: truncated, a variable mis-shaped, variables missing (issue 20).
    Case("--zoo_name checkpoint with a truncated .data",
         with_fix(tf1_checkpoint("truncated"), "deeplab_load_tools.download_checkpoint <zoo_name> --force",
                  zoo_name_given=True), load_with_zoo_name, DamagedFileError),
    Case("--checkpoint with a truncated .data", tf1_checkpoint("truncated"),
         load_with_model_flags, DamagedFileError),
    Case("--initial_checkpoint with a truncated .data", tf1_checkpoint("truncated"),
         load_initial_checkpoint, DamagedFileError),
    Case("download_checkpoint tarball with a truncated .data",
         tf1_checkpoint("truncated", tarball=True), fetch_tarball, DamagedFileError),
    Case("--zoo_name checkpoint with a mis-shaped variable",
         with_fix(tf1_checkpoint("reshaped"), f"--checkpoint is not a checkpoint of "
                  f"--zoo_name={ZOO_NAME}", REFETCH, zoo_name_given=True),
         load_with_zoo_name, UserError),
    Case("--checkpoint with a mis-shaped variable",
         with_fix(tf1_checkpoint("reshaped"), "pass --run_dir", "--zoo_name for an official"),
         load_with_model_flags, UserError),
    Case("--initial_checkpoint with a mis-shaped variable",
         with_fix(tf1_checkpoint("reshaped"), "--initial_checkpoint is not a checkpoint of "
                  f"--zoo_name={ZOO_NAME}", REFETCH, zoo_name_given=True),
         load_initial_checkpoint, tf1.CheckpointMismatchError),
    Case("download_checkpoint tarball with a mis-shaped variable",
         tf1_checkpoint("reshaped", tarball=True), fetch_tarball, tf1.CheckpointMismatchError),
    Case("--zoo_name checkpoint with variables missing",
         with_fix(tf1_checkpoint("missing"), REFETCH, zoo_name_given=True), load_with_zoo_name,
         UserError),
    Case("--checkpoint with variables missing",
         with_fix(tf1_checkpoint("missing"), "pass --run_dir"), load_with_model_flags, UserError),
    Case("--initial_checkpoint with variables missing",
         with_fix(tf1_checkpoint("missing"), REFETCH, zoo_name_given=True),
         load_initial_checkpoint, tf1.CheckpointMismatchError),
    Case("download_checkpoint tarball with variables missing",
         tf1_checkpoint("missing", tarball=True), fetch_tarball, tf1.CheckpointMismatchError),
]


def snapshot(root):
    state = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            stat = os.lstat(path)
            state[path] = (stat.st_size, stat.st_mtime_ns)
    return state


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input(case, tmp_path):
    ctx = case.setup(tmp_path)
    output = ctx.get("output")
    before = snapshot(tmp_path)
    with pytest.raises(UserError) as excinfo:
        case.action(ctx)
    error = excinfo.value
    message = str(error)
    assert isinstance(error, case.error), f"{type(error).__name__}: {message}"
    named = [ctx["named"]] if isinstance(ctx["named"], str) else ctx["named"]
    for text in named:
        assert text in message, f"{text!r} not in {message!r}"
    for text in ctx.get("absent", ()):
        assert text not in message, message
    assert len(message.splitlines()) <= 2, message
    after = snapshot(tmp_path)
    changed = sorted(p for p in after if before.get(p) != after[p])
    outside = [p for p in changed
               if output is None or os.path.commonpath([output, p]) != output]
    assert outside == [], f"written outside {output}: {outside}"
    assert [p for p in after if ".tmp" in os.path.basename(p)] == []
    if output is not None and os.path.isdir(output):
        files = [p for p in after if p.startswith(output + os.sep)]
        assert not files or os.path.join(output, INCOMPLETE_FILE) in files, files


def test_corpus_size():
    assert len(CASES) >= 30


# ----------------------------------------------------------------------------------------------
# What happens around the errors


def test_failed_predict_marks_its_folder_and_a_rerun_clears_it(tmp_path):
    ctx = setup_predict_bad_image(tmp_path)
    with pytest.raises(BadExampleError):
        run_predict(ctx)
    marker = os.path.join(ctx["output"], INCOMPLETE_FILE)
    text = open(marker).read()
    assert "BadExampleError" in text and ctx["named"] in text and "partial" in text
    first = ctx["ds"].examples("val")[0].id
    assert os.listdir(ctx["output"]) == sorted([INCOMPLETE_FILE, first + ".png"]) or \
        sorted(os.listdir(ctx["output"])) == sorted([INCOMPLETE_FILE, first + ".png"])
    log = pipeline.BadExampleLog()
    model = tiny_model(ctx["ds"].info.num_classes)
    paths = predict.predict_examples(model, ctx["examples"], ctx["ds"].info, ctx["output"],
                                     "color", None, skip_bad_examples=True, bad_example_log=log)
    assert log.count == 1 and ctx["named"] in log.messages[0] and len(paths) == 2
    assert not os.path.exists(marker)


def test_predict_replaces_a_symlink_instead_of_writing_through_it(tmp_path):
    ctx = setup_predict_ids("2008_000000")(tmp_path)
    ctx["examples"] = ctx["examples"][:1]
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    os.makedirs(ctx["output"])
    link = os.path.join(ctx["output"], "2008_000000.png")
    os.symlink(victim, link)
    run_predict(ctx)
    assert victim.read_text() == "keep me" and not os.path.islink(link)
    Image.open(link).verify()


def test_tfrecords_failure_keeps_earlier_shards_and_skip_counts(tmp_path):
    ctx = setup_tfrecords_bad_label(tmp_path)
    good = voc(tmp_path / "other")
    tfrecords.write_split(good, "train", ctx["output"], 2)
    before = snapshot(ctx["output"])
    with pytest.raises(BadExampleError):
        run_tfrecords(ctx)
    assert snapshot(ctx["output"]) == before
    log = pipeline.BadExampleLog()
    metadata = tfrecords.write_split(ctx["ds"], "train", ctx["output"], 3, skip_bad_examples=True,
                                     bad_example_log=log)
    assert metadata["num_examples"] == 3 and len(metadata["skipped"]) == 1 and log.count == 1
    assert sorted(os.listdir(ctx["output"])) == ["train-00000-of-00003.tfrecord",
                                                 "train-00001-of-00003.tfrecord",
                                                 "train-00002-of-00003.tfrecord", "train.json"]


def test_sixteen_bit_images_are_scaled_not_clipped(caplog):
    values = np.arange(SIZE[0] * SIZE[1], dtype=np.uint32).reshape(SIZE) * 47 % 65536
    from deeplab_load.data import common
    common._sixteen_bit_noted.clear()
    with caplog.at_level(std_logging.WARNING):
        gray = decode_image(png16(values), "gray16.png")
        rgb = decode_image(png16(np.stack([values, 65535 - values, values], -1)), "rgb16.png")
    expected = (values >> 8).astype(np.uint8)
    np.testing.assert_array_equal(gray, np.repeat(expected[..., None], 3, -1))
    np.testing.assert_array_equal(rgb[..., 0], expected)
    np.testing.assert_array_equal(rgb[..., 1], ((65535 - values) >> 8).astype(np.uint8))
    assert (gray == 255).mean() < 0.01  # clipping would make most pixels 255
    notes = [r.getMessage() for r in caplog.records if "16-bit" in r.getMessage()]
    assert len(notes) == 1 and "gray16.png" in notes[0]


def test_sixteen_bit_label_png_is_refused(tmp_path):
    ds = voc(tmp_path)
    ref = ds.examples("val")[0]
    with open(ref.label_path, "wb") as f:
        f.write(png16(np.ones(SIZE)))
    with pytest.raises(BadExampleError, match=f"{ref.label_path}: .*mode 'I;16"):
        ds.load(ref)
