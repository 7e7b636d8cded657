"""The benchmark's LoAd-cycle rows (variants, before/after library, per-phase table) and the cost
model's predictions from them (issue 19 item 4).

The tools define absl flags at import (several with the same names), so, as in test_tools.py,
each check imports them in a child process."""
import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PRELUDE = '''
import os, subprocess, sys
import pytest
from absl import flags
from deeplab_load_tools import benchmark, scaling_model
flags.FLAGS(["probe"])

def fake_row(scale=1.0, library="/lib"):
    phases = {"generator_step": 1.0, "holdout_eval": 0.5, "checkpoint_write": 0.2,
              "map_set_write": 1.5, "d_epoch": 10.0}
    images = {"generator_step": 8, "holdout_eval": 5, "checkpoint_write": 1,
              "map_set_write": 6, "d_epoch": 12}
    return {"phases": {p: {"median_s": t * scale, "min_s": t * scale * 0.9,
                           "max_s": t * scale * 1.1, "images": images[p]}
                       for p, t in phases.items()},
            "sizes": {"holdout": 5, "eval_batch": 2, "train": 6, "map_batch": 4},
            "cycle": {"gamma": 3, "map_sets": 2, "d_epochs": 4},
            "median_s": 1.0, "min_s": 1.0, "max_s": 1.0, "library": library}
'''


def probe(body, tmp_path=None):
    """Runs PRELUDE + body in a child process from the repository root; it must print PROBE OK."""
    code = PRELUDE + textwrap.dedent(body) + "\nprint('PROBE OK')\n"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PROBE_TMP=str(tmp_path or ""))
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0 and "PROBE OK" in proc.stdout, proc.stderr[-3000:]


def test_replicated_images_counts_groups_and_dummy_images():
    probe('''
    # 5 images at batch 2: batches 2, 2, 1; on 2 replicas groups (2, 2) and (1, dummy 1)
    assert scaling_model.batch_sizes(5, 2) == [2, 2, 1]
    assert scaling_model.replicated_images(5, 2, 2, shared=True) == 6
    assert scaling_model.replicated_images(5, 2, 2, shared=False) == 3
    assert scaling_model.replicated_images(5, 2, 1, shared=True) == 5
    assert scaling_model.replicated_images(8, 2, 4, shared=False) == 2
    ''')


def test_prediction_for_one_replica_is_the_measurement_and_devices_divide_the_model_work():
    probe('''
    row = fake_row()
    one = scaling_model.predict_phases(row, 1, shared=False)
    for phase, timed in row["phases"].items():
        assert one[phase] == pytest.approx(timed["median_s"]), phase
    two = scaling_model.predict_phases(row, 2, shared=False)
    assert two["generator_step"] == pytest.approx(0.5)
    assert two["d_epoch"] == pytest.approx(5.0)
    assert two["holdout_eval"] == pytest.approx(0.1 * 3)          # groups (2,2), (1,1)
    assert two["checkpoint_write"] == pytest.approx(0.2)            # host: does not divide
    shared = scaling_model.predict_phases(row, 2, shared=True)
    assert shared["generator_step"] == pytest.approx(1.0)
    assert shared["holdout_eval"] == pytest.approx(0.1 * 6)         # a dummy image added
    assert scaling_model.compose_cycle(one, row["cycle"]) == pytest.approx(
        3 * 1.7 + 2 * 1.5 + 4 * 10.0)
    ''')


def test_measured_tables_set_prediction_beside_measurement():
    probe('''
    report = {"results": {"load_cycle_demo": {"float32": fake_row(),
                                              "float32 x2": fake_row(1.2)}}}
    text = "\\n".join(scaling_model.measured_tables(report, [1, 2]))
    assert ("| phase | measured x1 | predicted x2, shared CPU | measured x2 | "
            "predicted x2 devices |") in text, text
    assert "| d_epoch | 10.000 | 10.000 | 12.000 | 5.000 |" in text, text
    ''')


def test_variants_interleave_the_baseline_libraries_and_replicas_only_for_cycle_cases():
    probe('''
    flags.FLAGS.dtypes = ["float32", "bfloat16"]
    flags.FLAGS.baseline_libraries = ["/work/old/", "/work/older"]
    cycle = benchmark.variants("load_cycle_demo", [1, 2])
    forward = benchmark.variants("forward_mnv2_os16", [1, 2])
    assert [v[0] for v in cycle] == ["float32", "float32 @old", "float32 @older", "float32 x2",
                                     "bfloat16", "bfloat16 @old", "bfloat16 @older",
                                     "bfloat16 x2"], cycle
    assert ("float32 @older", "float32", 1, "/work/older") in cycle
    assert [v[0] for v in forward] == ["float32", "float32 @old", "float32 @older", "bfloat16",
                                       "bfloat16 @old", "bfloat16 @older"], forward
    ''')


def test_phase_table_has_every_phase_and_names_both_libraries():
    probe('''
    table = benchmark.phase_table({"float32": fake_row(library="/new"),
                                   "float32 @old": fake_row(2.0, library="/old")})
    for phase in benchmark.CYCLE_PHASES:
        assert f"| {phase} |" in table, table
    assert "| d_epoch | 12 | 10.000 [9.000-11.000] | 20.000 [18.000-22.000] |" in table, table
    assert "float32 = /new" in table and "float32 @old = /old" in table, table
    ''')


def test_baseline_library_child_imports_the_library_from_that_checkout(tmp_path):
    package = tmp_path / "deeplab_load"
    package.mkdir()
    (package / "__init__.py").write_text("MARK = 'baseline'\n")
    probe('''
    tmp = os.environ["PROBE_TMP"]
    command, env = benchmark.child_command(tmp)
    assert command[1] == os.path.abspath(benchmark.__file__)
    child = subprocess.run([sys.executable, "-c", "import deeplab_load, deeplab_load_tools; "
                            "print(deeplab_load.__file__, deeplab_load_tools.__file__)"],
                           env=env, capture_output=True, text=True, timeout=120, cwd="/")
    assert child.returncode == 0, child.stderr
    library_file, tools_file = child.stdout.split()
    assert library_file == os.path.join(tmp, "deeplab_load", "__init__.py"), library_file
    assert tools_file.startswith(benchmark.REPO), tools_file
    ''', tmp_path)
