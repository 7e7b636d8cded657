"""Same machine, same results: a tiny stage 1 gives bit-identical weights with a CPU hog beside it."""
import os
import subprocess
import sys

import pytest

from deeplab_load_tools import stage1_digest

HOG = "import time\nend = time.time() + 900\nwhile time.time() < end:\n    pass\n"


@pytest.mark.slow
def test_tiny_stage1_gives_the_same_weights_with_a_cpu_hog_beside_it():
    quiet = stage1_digest.measure({})
    hogs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(os.cpu_count() or 2)]
    try:
        loaded = stage1_digest.measure({})
        assert all(hog.poll() is None for hog in hogs)      # the hogs ran throughout
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    assert quiet["final_loss"] is not None
    assert loaded["digest"] == quiet["digest"], (quiet, loaded)
    assert loaded["final_loss"] == quiet["final_loss"]
