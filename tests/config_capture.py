"""What a command's flags look like from outside: the flag list of ``--helpfull`` and the flat
{flag name: value} configuration a train command line parses to.

tests/data/configs/*.json were written by ``python tests/config_capture.py <checkout>`` on the
checkout before the configs were grouped (commit 8e05a28, flat TrainConfig); test_config_groups
compares today's commands with them. Flags added since then were added to them with their values
from today's commands: train --holdout_dtype (float32 in every recorded configuration), evaluate
and predict --strategy.
"""
import json
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data", "configs")

# Commands whose --helpfull is recorded: name -> argv after the interpreter.
COMMANDS = {
    "train": ["-m", "deeplab_load.train"],
    "evaluate": ["-m", "deeplab_load.evaluate"],
    "export": ["-m", "deeplab_load.export"],
    "predict": ["-m", "deeplab_load.predict"],
}

# Train command lines whose configuration is recorded: case name -> flags (flags/*.cfg of the
# checkout are added by `train_cases`).
FIXED_CASES = {
    "no_flags": [],
    "voc_no_demo_profile": ["--dataset=voc", "--seed=2"],
    "demo_with_overrides": ["--gamma_max=5", "--atrous_rates=6,12", "--crop_size=65",
                            "--nofine_tune_batch_norm", "--stage1=on"],
    # Two real runs' flags.txt: the demo at 930c12d (before the learning-rate policy flags)
    # and a bench sweep run at 8e05a28's parent.
    "old_run_demo_930c12d": [f"--flagfile={DATA}/old_run_demo_930c12d_flags.txt"],
    "old_run_bench_sweep": [f"--flagfile={DATA}/old_run_bench_sweep_flags.txt"],
}

_FLAG_LINE = re.compile(r"^  (?:-\S+,)?--(\[no\])?([\w.]+):(?: <([^>]*)>:)?")
_DEFAULT = re.compile(r"^\(default: '(.*)'\)$")
_KIND = re.compile(r"^\((an? [\w ,;\[\]-]+)\)$")


def parse_helpfull(text):
    """{flag name: {"default": printed default or None, "bool": whether --[no]name, "choices":
    an enum's "a|b|c" or None, "kind": e.g. "an integer", "a comma separated list" or None,
    "module": the module that defined it}} of absl's --helpfull text."""
    flags, name, module = {}, None, None
    for line in text.splitlines():
        match = _FLAG_LINE.match(line)
        if match:
            name = match.group(2)
            flags[name] = {"default": None, "bool": bool(match.group(1)),
                           "choices": match.group(3), "kind": None, "module": module}
            continue
        if line and not line.startswith(" ") and line.endswith(":"):
            module = re.sub(r"^.*/(deeplab_load/)", r"\1", line[:-1])
        if name is not None and line.startswith("    "):
            default, kind = _DEFAULT.match(line.strip()), _KIND.match(line.strip())
            if default:
                flags[name]["default"] = default.group(1)
            elif kind:
                flags[name]["kind"] = kind.group(1)
        elif not line.startswith("    "):
            name = None
    return flags


def helpfull_flags(command, cwd):
    """parse_helpfull of `python <COMMANDS[command]> --helpfull` run in `cwd`."""
    result = subprocess.run([sys.executable, *COMMANDS[command], "--helpfull"], cwd=cwd,
                            capture_output=True, text=True, timeout=300)
    assert "flags:" in result.stdout, result.stderr   # (absl exits 1 after the help)
    return parse_helpfull(result.stdout)


def train_cases(cwd):
    cases = dict(FIXED_CASES)
    for name in sorted(os.listdir(os.path.join(cwd, "flags"))):
        if name.endswith(".cfg"):
            cases[f"flagfile_{name[:-4]}"] = [f"--flagfile=flags/{name}"]
    return cases


# Run inside the checkout: the flat configuration (and the demo profile applied) of one command
# line, as JSON; before the grouping TrainConfig's fields were the flag names.
_PARSE = """
import dataclasses, json, sys
from absl import flags
from deeplab_load import train
flags.FLAGS(["train", *sys.argv[1:]])
config, applied = train.config_from_flags()
values = (config.flag_values() if hasattr(config, "flag_values")
          else dataclasses.asdict(config))
print(json.dumps({"config": values, "demo_profile": applied}, sort_keys=True))
"""


def parsed_train_config(args, cwd):
    """{"config": {flag name: value}, "demo_profile": {...}} that `args` give the train command
    (JSON types: tuples are lists)."""
    result = subprocess.run([sys.executable, "-c", _PARSE, *args], cwd=cwd, capture_output=True,
                            text=True, timeout=300, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def capture(checkout):
    os.makedirs(DATA, exist_ok=True)
    for command in COMMANDS:
        with open(os.path.join(DATA, f"helpfull_{command}.json"), "w", encoding="utf-8") as out:
            json.dump(helpfull_flags(command, checkout), out, indent=1, sort_keys=True)
    parsed = {name: parsed_train_config(args, checkout)
              for name, args in train_cases(checkout).items()}
    with open(os.path.join(DATA, "train_configs.json"), "w", encoding="utf-8") as out:
        json.dump(parsed, out, indent=1, sort_keys=True)


if __name__ == "__main__":
    capture(os.path.abspath(sys.argv[1]))
