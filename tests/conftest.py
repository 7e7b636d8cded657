"""Shared fixtures: the golden reference folder and synthetic TF1 checkpoints made from it."""
import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def golden_dir():
    """The golden folder (`DEEPLAB_LOAD_GOLDEN` or `../shared/golden`), or None if absent."""
    env = os.environ.get("DEEPLAB_LOAD_GOLDEN")
    candidates = [pathlib.Path(env)] if env else [REPO.parent / "shared" / "golden"]
    for path in candidates:
        if (path / "index.json").is_file():
            return path
    return None


@pytest.fixture(scope="session")
def golden():
    """Path of the golden folder; skips without it, but fails under CI=true."""
    path = golden_dir()
    if path is None:
        msg = "golden folder not found (set DEEPLAB_LOAD_GOLDEN or place it at ../shared/golden)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def golden_index(golden):
    return json.loads((golden / "index.json").read_text())


@pytest.fixture(scope="session")
def make_golden_checkpoint(golden, tmp_path_factory):
    """Returns f(manifest_name, extras=False) -> checkpoint prefix, written once per session
    by the golden folder's own make_checkpoint.py (not copied into this project)."""
    cache = {}

    def make(manifest, extras=False, manifest_path=None):
        key = (manifest, extras, str(manifest_path))
        if key not in cache:
            out = tmp_path_factory.mktemp("ckpt") / "model.ckpt"
            cmd = [sys.executable, str(golden / "make_checkpoint.py"),
                   str(manifest_path or golden / manifest), str(out), "--seed", "0"]
            if extras:
                cmd.append("--extras")
            subprocess.run(cmd, check=True, capture_output=True)
            cache[key] = str(out)
        return cache[key]

    return make
