"""atomic_files: a write replaces the file whole or leaves the old one, and no temporary file."""
import json
import os

import pytest

from deeplab_load import atomic_files
from deeplab_load.errors import DamagedFileError


def test_json_round_trip_replaces_a_symlink_instead_of_following_it(tmp_path):
    target = tmp_path / "elsewhere.json"
    target.write_text("{}")
    link = tmp_path / "state.json"
    link.symlink_to(target)
    atomic_files.write_json_atomic(link, {"b": 1, "a": [2]})
    assert not link.is_symlink() and target.read_text() == "{}"
    assert link.read_text() == json.dumps({"a": [2], "b": 1}, indent=1, sort_keys=True)
    assert atomic_files.read_json(link) == {"a": [2], "b": 1}
    assert sorted(os.listdir(tmp_path)) == ["elsewhere.json", "state.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary_one(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    atomic_files.write_json_atomic(path, {"old": True})

    def no_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", no_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_files.write_text_atomic(path, "new", unique=True)
    with pytest.raises(OSError, match="disk full"):
        atomic_files.write_json_atomic(path, {"new": True})
    assert atomic_files.read_json(path) == {"old": True}
    assert os.listdir(tmp_path) == ["results.json"]


def test_replacing_renames_on_success_and_cleans_up_on_error(tmp_path):
    path = tmp_path / "plot.png"
    with atomic_files.replacing(path) as tmp:
        assert tmp == atomic_files.temporary_path(path) == f"{path}.tmp"
        with open(tmp, "wb") as f:
            f.write(b"png")
    assert path.read_bytes() == b"png"
    with pytest.raises(RuntimeError):
        with atomic_files.replacing(path) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"half")
            raise RuntimeError("writer failed")
    assert path.read_bytes() == b"png" and os.listdir(tmp_path) == ["plot.png"]


def test_unique_temporary_paths_name_the_process(tmp_path):
    assert atomic_files.temporary_path(tmp_path / "ids.txt", unique=True) == \
        f"{tmp_path / 'ids.txt'}.tmp.{os.getpid()}"


def test_a_damaged_json_file_names_itself_and_the_fix(tmp_path):
    path = tmp_path / "state.json"
    path.write_text('{"half": ')
    with pytest.raises(DamagedFileError, match=f"{path}: damaged.*delete it"):
        atomic_files.read_json(path, fix="delete it")
