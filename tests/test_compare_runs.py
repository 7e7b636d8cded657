import json
import os
import subprocess
import sys

import numpy as np
import pytest

from deeplab_load import comparison as compare_runs
from deeplab_load import metrics

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _results(matrix, names=("road", "car", "sky")):
    return metrics.results_dict(np.asarray(matrix), list(names), dataset="toy")


BASE = [[8, 2, 0], [1, 9, 0], [0, 0, 10]]
BOOSTED = [[9, 1, 0], [2, 8, 0], [0, 0, 10]]


def test_rows_and_marks():
    rows = compare_runs.compare(_results(BASE), _results(BOOSTED))
    names = [row[0] for row in rows]
    assert names == ["road", "car", "sky", "mIoU"]
    road = rows[0]
    assert road[1] == pytest.approx(100 * 8 / 11)
    assert road[2] == pytest.approx(100 * 9 / 12)
    assert compare_runs.better(road[1], road[2]) == 1
    assert compare_runs.better(rows[1][1], rows[1][2]) == 0
    assert compare_runs.better(rows[2][1], rows[2][2]) is None  # sky: tie, nobody marked
    markdown = compare_runs.format_markdown(rows, ["DLv3+", "DLv3+&LoAd"], columns_per_block=2)
    assert "| DLv3+&LoAd | **75.00** | 72.73 |" in markdown
    assert "| DLv3+ | 72.73 | **75.00** |" in markdown
    assert markdown.count("| Method |") == 2  # wrapped into two blocks like the paper
    assert "| DLv3+ | 100.00 | 82.58 |" in markdown and "**100.00**" not in markdown
    text = compare_runs.format_text(rows, ["base", "boost"])
    assert "75.00*" in text and "+2.27" in text


def test_different_class_lists_are_an_error():
    with pytest.raises(ValueError, match="only in B: \\['bus'\\]"):
        compare_runs.compare(_results(BASE), _results(BASE, ("road", "car", "bus")))


def test_command_line(tmp_path):
    for name, matrix in (("base", BASE), ("boost", BOOSTED)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(_results(matrix)))
    out = tmp_path / "table.md"
    proc = subprocess.run(
        [sys.executable, "-m", "deeplab_load_tools.compare_runs",
         str(tmp_path / "base" / "results.json"), str(tmp_path / "boost" / "results.json"),
         f"--markdown={out}"], capture_output=True, text=True, check=True, cwd=REPO)
    assert "base" in proc.stdout.splitlines()[0] and "boost" in proc.stdout.splitlines()[0]
    assert "**75.00**" in out.read_text()
