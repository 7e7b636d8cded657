"""Convergence graph: a PNG of the expected size with the run drawn on it."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from deeplab_load.lookahead import LoAdConfig
from deeplab_load.lookahead.convergence_plot import convergence_series, plot_convergence
from test_lookahead_controller import run_loaded, scripted

FIG1_SCRIPT = {1: 0.49, 2: 0.48, 3: 0.47, 4: 0.52, 5: 0.51, 6: 0.49, 7: 0.50, 8: 0.46,
               9: 0.55, 10: 0.53, 11: 0.50, 12: 0.54, 13: 0.53, 14: 0.52, 15: 0.49}


@pytest.fixture(scope="module")
def fig1_state(tmp_path_factory):
    root = tmp_path_factory.mktemp("fig1")
    config = LoAdConfig(gamma_max=3, psi_max=2, omega_max=10, b_max=3)
    _, state, _, _ = run_loaded(root, config, scripted(0.5, FIG1_SCRIPT))
    return root / "state.json", state


def png_size(path):
    with open(path, "rb") as f:
        header = f.read(24)
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")


def test_series_follow_the_cycles(fig1_state):
    _, state = fig1_state
    segments, (mu_s_x, mu_s_y), markers, boundaries = convergence_series(state["history"])
    # Six cycles, each starting from its start model: the revert back to g_s.
    assert boundaries == [0, 3, 6, 8, 11, 14]
    assert [s["peak"] for s in segments] == [0, 0, 1, 1, 2, 2]
    assert segments[1]["x"] == [3, 4, 5, 6]
    assert segments[1]["y"] == pytest.approx([50, 52, 51, 49])
    assert segments[2]["y"][0] == pytest.approx(52)  # cycle (1,0) starts from g1
    assert [(x, label) for x, _, label in markers["peak"]] == [(4, "g1"), (9, "g2")]
    assert [label for _, _, label in markers["cycle_end"]] == [
        "g0_0", "g0_1", "g1_0", "g1_1", "g2_0", "g2_1"]
    assert max(mu_s_y) == pytest.approx(55)


def test_png_written_with_expected_size_and_content(fig1_state, tmp_path):
    state_path, state = fig1_state
    out = plot_convergence(state["history"], tmp_path / "plots" / "convergence.png",
                           figsize=(8, 3), dpi=100)
    assert os.path.getsize(out) > 5000
    assert png_size(out) == (800, 300)
    import matplotlib.image
    pixels = matplotlib.image.imread(out)[..., :3]
    assert (pixels < 0.9).any(axis=-1).mean() > 0.02  # lines and text, not a blank canvas
    peak_red = np.all(np.abs(pixels - np.array([0xd6, 0x27, 0x28]) / 255) < 0.05, axis=-1)
    assert peak_red.sum() > 20  # the peak stars are drawn
    assert not os.path.exists(str(out) + ".tmp")


def test_plot_from_state_file_and_command_line(fig1_state, tmp_path):
    state_path, _ = fig1_state
    assert png_size(plot_convergence(state_path, tmp_path / "a.png")) == (1000, 450)
    out = tmp_path / "b.png"
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run([sys.executable, "-m", "deeplab_load_tools.plot_convergence",
                    f"--state={state_path}", f"--out={out}"], check=True, capture_output=True,
                   cwd=repo)
    assert png_size(out) == (1000, 450)


def test_bad_history_is_reported(tmp_path):
    with pytest.raises(ValueError, match="no 'start' event"):
        plot_convergence([], tmp_path / "x.png")
    bad = tmp_path / "state.json"
    bad.write_text(json.dumps({"phase": "init"}))
    with pytest.raises(ValueError, match="state.json"):
        plot_convergence(bad, tmp_path / "x.png")
