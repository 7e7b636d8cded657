"""`python -m deeplab_load_tools.download_checkpoint` with local tarballs and fake openers (no
network)."""
import io
import os
import pathlib
import subprocess
import sys
import tarfile
import urllib.error

import pytest
import tensorflow as tf

from deeplab_load.checkpoints import tf1, zoo
from deeplab_load_tools import download_checkpoint as tool

NAME = "mobilenetv2_coco_voc_trainaug"  # its config is the golden mobilenetv2_voc_os16 one
MANIFEST = "manifest_mobilenetv2_voc_os16.json"
REPO = pathlib.Path(__file__).resolve().parents[1]




def make_tarball(path, prefix, folder="deeplabv3_mnv2_pascal_train_aug", extra_members=()):
    """A zoo-like tarball: <folder>/model.ckpt.{index,data-*} (+ extra (name, TarInfo-type))."""
    with tarfile.open(path, "w:gz") as archive:
        for suffix in (".index", ".data-00000-of-00001"):
            archive.add(prefix + suffix, arcname=f"{folder}/model.ckpt{suffix}")
        for member in extra_members:
            archive.addfile(member, io.BytesIO(b"x" * member.size) if member.isfile() else None)
    return str(path)


@pytest.fixture(scope="module")
def good_tarball(make_golden_checkpoint, tmp_path_factory):
    prefix = make_golden_checkpoint(MANIFEST, extras=True)
    return make_tarball(tmp_path_factory.mktemp("tar") / "good.tar.gz", prefix)


class FakeResponse(io.BytesIO):
    def __init__(self, data):
        super().__init__(data)
        self.headers = {"Content-Length": str(len(data))}


def test_local_tarball_is_unpacked_verified_and_loadable(good_tarball, tmp_path):
    dest = tmp_path / "checkpoints"
    prefix = tool.fetch_checkpoint(NAME, str(dest), tarball=good_tarball, stream=io.StringIO())
    assert prefix == str(dest / NAME / "deeplabv3_mnv2_pascal_train_aug" / "model.ckpt")
    assert sorted(os.listdir(dest)) == [NAME]  # no temporary files left
    report = tf1.load_checkpoint(zoo.build_from_zoo(NAME), dest / NAME)
    assert report.loaded == 272
    with pytest.raises(FileExistsError, match="--force"):
        tool.fetch_checkpoint(NAME, str(dest), tarball=good_tarball, stream=io.StringIO())


def test_download_streams_with_progress_through_the_opener(good_tarball, tmp_path):
    data = open(good_tarball, "rb").read()
    requested = []

    def opener(url, timeout):
        requested.append(url)
        return FakeResponse(data)

    progress = io.StringIO()
    prefix = tool.fetch_checkpoint(NAME, str(tmp_path), opener=opener, stream=progress)
    assert requested == [zoo.ZOO[NAME].url]
    assert "100.0%" in progress.getvalue() and os.path.exists(prefix + ".index")


def test_offline_fails_naming_the_url(tmp_path):
    def offline(url, timeout):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    url = zoo.ZOO[NAME].url
    with pytest.raises(tool.DownloadError, match=f"could not download {url}.*offline"):
        tool.fetch_checkpoint(NAME, str(tmp_path), opener=offline, stream=io.StringIO())
    assert os.listdir(tmp_path) == []


def test_cli_offline_exit_code_and_message(tmp_path):
    url = "http://127.0.0.1:9/deeplab.tar.gz"  # nothing listens on the discard port
    result = subprocess.run(
        [sys.executable, "-m", "deeplab_load_tools.download_checkpoint", NAME, f"--url={url}",
         f"--dest={tmp_path}", "--timeout=5"],
        capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), cwd=REPO)
    assert result.returncode == 1
    assert f"could not download {url}" in result.stderr


@pytest.mark.parametrize("member_name,kind", [("../evil.txt", tarfile.REGTYPE),
                                              ("/tmp/evil.txt", tarfile.REGTYPE),
                                              ("deeplab/link", tarfile.SYMTYPE)])
def test_unsafe_members_are_refused(make_golden_checkpoint, tmp_path, member_name, kind):
    member = tarfile.TarInfo(member_name)
    member.type = kind
    if kind == tarfile.SYMTYPE:
        member.linkname = "../../etc/passwd"
    else:
        member.size = 3
    tarball = make_tarball(tmp_path / "evil.tar.gz", make_golden_checkpoint(MANIFEST),
                           extra_members=[member])
    dest = tmp_path / "checkpoints"
    with pytest.raises(tool.UnsafeTarballError, match=member_name):
        tool.fetch_checkpoint(NAME, str(dest), tarball=tarball)
    assert not (tmp_path / "evil.txt").exists()
    assert os.listdir(dest) == []


def test_wrong_checkpoint_fails_verification(make_golden_checkpoint, tmp_path):
    reader = tf.train.load_checkpoint(make_golden_checkpoint(MANIFEST))
    names = sorted(n for n in reader.get_variable_to_shape_map() if n != "aspp0/weights")
    prefix = str(tmp_path / "partial" / "model.ckpt")
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[reader.get_tensor(n) for n in names])
    tarball = make_tarball(tmp_path / "partial.tar.gz", prefix)
    dest = tmp_path / "checkpoints"
    with pytest.raises(tf1.CheckpointMismatchError) as error:
        tool.fetch_checkpoint(NAME, str(dest), tarball=tarball)
    assert str(error.value).splitlines() == [
        f"checkpoint deeplabv3_mnv2_pascal_train_aug/model.ckpt in {tarball} does not fit the "
        f"model: 1 missing in the checkpoint (aspp0/weights)",
        f"it is not the checkpoint of {NAME}: check NAME, --tarball and --url"]
    assert os.listdir(dest) == []


def test_truncated_tarball_is_named_and_nothing_is_left(good_tarball, tmp_path):
    data = open(good_tarball, "rb").read()
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(data[:len(data) // 2])
    dest = tmp_path / "checkpoints"
    with pytest.raises(tool.UnsafeTarballError, match="truncated.tar.gz: not a readable tarball, "
                                                      "truncated or damaged"):
        tool.fetch_checkpoint(NAME, str(dest), tarball=str(truncated), stream=io.StringIO())
    assert os.listdir(dest) == []  # no half checkpoint, no temporary folder
