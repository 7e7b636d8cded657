"""The tools are modules of their own package (`python -m deeplab_load_tools.<name>`, console scripts
from setup.py) that leave sys.path alone; the benchmark builds its models from the zoo table."""
import ast
import json
import os
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
TOOLS = ROOT / "deeplab_load_tools"


def tool_modules():
    names = sorted(p.stem for p in TOOLS.glob("*.py") if p.stem != "__init__")
    assert names, f"no tools in {TOOLS}"
    return names


def test_tools_leave_sys_path_alone_and_have_an_entry_point():
    assert not (ROOT / "tools").exists(), "tools/ moved into deeplab_load_tools/"
    for name in tool_modules():
        tree = ast.parse((TOOLS / f"{name}.py").read_text())
        assert "sys.path" not in ast.unparse(tree), name
        functions = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
        assert {"main", "run"} <= functions, name


def test_every_tool_is_a_console_script():
    setup = (ROOT / "setup.py").read_text()
    listed = re.search(r'for name in \((.*?)\)\n', setup, re.S).group(1)
    names = sorted(re.findall(r'"(\w+)"', listed))
    assert names == tool_modules()
    assert 'f"deeplab-load-{name.replace(\'_\', \'-\')}=deeplab_load_tools.{name}:run"' in setup


def test_benchmark_models_come_from_the_zoo_table():
    """Run as `python -m` (the way its per-case child processes start): its cases list, and each
    benchmark model's configuration is the zoo entry's at that output stride."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    listed = subprocess.run([sys.executable, "-m", "deeplab_load_tools.benchmark",
                             "--list_cases"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300)
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert "forward_xception65_os8" in listed.stdout and "forward_mnv2_os16" in listed.stdout
    probe = (
        "import dataclasses, json, sys\n"
        "sys.argv = ['benchmark']\n"
        "from deeplab_load_tools import benchmark\n"
        "from deeplab_load.checkpoints import zoo\n"
        "print(json.dumps({key: [name, stride, dataclasses.asdict(benchmark.config_of(key)),\n"
        "                        dataclasses.asdict(zoo.get_entry(name).config)]\n"
        "                  for key, (name, stride) in benchmark.MODELS.items()}))\n")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    models = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(models) == {"xception65_os16", "xception65_os8", "mnv2_os16", "mnv2_os8"}
    for key, (name, stride, config, entry) in models.items():
        assert config["output_stride"] == stride and config["backbone"] == entry["backbone"]
        assert config["decoder_output_stride"] == entry["decoder_output_stride"]
        scale = entry["output_stride"] // stride
        assert config["atrous_rates"] == [r * scale for r in entry["atrous_rates"]], key
    assert models["xception65_os8"][2]["atrous_rates"] == [12, 24, 36]


def test_ablation_flags_come_from_its_config_classes():
    """The ablation tool defines no flag by hand: TrainConfig's and AblationConfig's fields."""
    from deeplab_load import config_fields
    from deeplab_load.experiments.ablation.config import AblationConfig
    source = (TOOLS / "ablation.py").read_text()
    assert "DEFINE_" not in source and "define_flags(AblationConfig)" in source
    flags = [leaf.flag for leaf in config_fields.leaves(AblationConfig)]
    assert flags == ["arms", "num_seeds", "arm_steps", "hybrid_weights", "bootstrap_resamples",
                     "bootstrap_confidence", "ablation_dir"]
    assert config_fields.from_flags(AblationConfig, num_seeds=5, arms=("load",)).num_seeds == 5


def test_holdout_tools_take_evaluates_model_flags():
    """holdout_dtype and load_phases define their model source from `ModelSource`, as evaluate
    does (--run_dir, --checkpoint, ...), and say so when --run_dir is missing; no TensorFlow is
    imported for either."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    for name in ("holdout_dtype", "load_phases"):
        source = (TOOLS / f"{name}.py").read_text()
        assert "define_flags(ModelSource)" in source and '"run_dir"' not in source, name
        helpfull = subprocess.run([sys.executable, "-m", f"deeplab_load_tools.{name}",
                                   "--helpfull"], cwd=ROOT, env=env, capture_output=True,
                                  text=True, timeout=120)
        assert helpfull.returncode in (0, 1), helpfull.stderr[-2000:]   # absl: 1 after help
        for flag in ("--run_dir:", "--checkpoint:", "--checkpoint_tag:", "--train_images:"):
            assert flag in helpfull.stdout, (name, flag)
        missing = subprocess.run([sys.executable, "-m", f"deeplab_load_tools.{name}",
                                  "--checkpoint=runs/x/stage1"], cwd=ROOT, env=env,
                                 capture_output=True, text=True, timeout=120)
        assert missing.returncode == 2, (name, missing.stderr[-2000:])
        assert "error: --run_dir is required" in missing.stderr, (name, missing.stderr[-2000:])
        assert "Traceback" not in missing.stderr, name
