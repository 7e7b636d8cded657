"""Every flagfile in flags/ parses against the train command's flags; demo.cfg equals the demo
profile that a flag-less run applies."""
import glob
import os

import pytest
from absl import flags

from deeplab_load import train  # noqa: F401  (defines the train flags)
from deeplab_load.training.config import DEMO_PROFILE, TrainConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGFILES = sorted(glob.glob(os.path.join(REPO, "flags", "*.cfg")))


def parse_flagfile(path):
    """{flag name: parsed value} of a flagfile, through the real flag parsers."""
    values = {}
    for arg in flags.FLAGS.read_flags_from_files([f"--flagfile={path}"], force_gnu=True):
        name, _, raw = arg[2:].partition("=")
        if "=" not in arg and name.startswith("no") and name[2:] in flags.FLAGS:
            name, raw = name[2:], "false"
        elif "=" not in arg:
            raw = "true"
        assert name in flags.FLAGS, f"{path}: unknown flag --{name}"
        flag = flags.FLAGS[name]
        values[name] = flag.parser.parse(raw) if raw != "" or flag.flag_type() != "list" else []
    return values


def test_flagfiles_exist_for_every_paper_experiment():
    names = {os.path.basename(p) for p in FLAGFILES}
    assert {"voc_xception65.cfg", "voc_mnv2.cfg", "cityscapes_mnv2.cfg", "stanford_xception65.cfg",
            "demo.cfg"} <= names


@pytest.mark.parametrize("path", FLAGFILES, ids=os.path.basename)
def test_flagfile_parses(path):
    assert parse_flagfile(path)


def test_demo_flagfile_equals_the_demo_profile():
    values = parse_flagfile(os.path.join(REPO, "flags", "demo.cfg"))
    assert values.pop("dataset") == "demo"
    values = {name: tuple(int(v) for v in value if v.lower() != "none")
              if isinstance(value, list) else value for name, value in values.items()}
    assert values == DEMO_PROFILE


def test_run_flagfile_round_trips():
    """A run's flags.txt (TrainConfig.to_flagfile) parses back into the same TrainConfig."""
    from deeplab_load.config_fields import leaves
    config = TrainConfig.from_flags(seed=3, crop_size=(65, 97), atrous_rates=(),
                                    fine_tune_batch_norm=True,
                                    initial_checkpoint="ckpt/x").with_demo_profile()[0]
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"run_flags_{os.getpid()}.txt")
    with open(path, "w", encoding="utf-8") as f:
        f.write(config.to_flagfile())
    values = parse_flagfile(path)
    os.remove(path)
    parsed = {}
    for leaf in leaves(TrainConfig):
        value = values.get(leaf.flag, leaf.default)
        if isinstance(value, list):
            value = tuple(int(v) for v in value if v.lower() != "none")
        parsed[leaf.flag] = value
    assert TrainConfig.from_flags(**parsed) == config
