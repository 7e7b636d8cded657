"""Grouped configs keep the commands' flags: the same names, defaults, kinds and choices as the
flat configs had (captured before the grouping, tests/data/configs), every flagfile and old run's
flags.txt parses to the same configuration, and the groups map onto what they feed."""
import dataclasses
import json
import os

import pytest

from config_capture import COMMANDS, DATA, helpfull_flags, parsed_train_config, train_cases
from deeplab_load import config_fields
from deeplab_load.checkpoints.model_source import ModelArchitecture, ModelSource
from deeplab_load.errors import FlagError
from deeplab_load.inference_configs import EvaluateConfig
from deeplab_load.lookahead.controller import LoAdConfig
from deeplab_load.training.config import LookaheadConfig, ModelConfig, TrainConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def captured(name):
    with open(os.path.join(DATA, name), encoding="utf-8") as f:
        return json.load(f)


# Flags of modules that importing TensorFlow defines (its own and absl.testing's): predict's
# --help listed them before only because predict imported TensorFlow at start-up.
TENSORFLOW_MODULES = ("tensorflow", "absl.testing")


def flag_facts(flags):
    """{name: (default, bool, choices, kind)}: what a flag is, not where --help groups it."""
    return {name: (f["default"], f["bool"], f["choices"], f["kind"])
            for name, f in flags.items() if not f["module"].startswith(TENSORFLOW_MODULES)}


# Train flags added after the capture (8e05a28), with their facts and defaults: the multi-worker
# timeouts (issue 20 item 4). No captured case sets them, so each parses to its default.
ADDED_AFTER_CAPTURE = {"worker_timeout_s": ("30.0", False, None, "a number", 30.0),
                       "collective_timeout_s": ("0.0", False, None, "a number", 0.0)}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_helpfull_lists_the_same_flags_with_the_same_defaults(command):
    before = flag_facts(captured(f"helpfull_{command}.json"))
    if command == "train":
        before.update({name: facts[:4] for name, facts in ADDED_AFTER_CAPTURE.items()})
    now = flag_facts(helpfull_flags(command, REPO))
    assert sorted(now) == sorted(before)
    differing = {name: (before[name], now[name]) for name in before if before[name] != now[name]}
    assert not differing


def test_every_flagfile_and_old_runs_flags_parse_to_the_same_configuration():
    before = captured("train_configs.json")
    cases = train_cases(REPO)
    assert set(cases) == set(before)            # a new flagfile needs a captured value
    for name, args in cases.items():
        now = parsed_train_config(args, REPO)
        before[name]["config"].update({flag: facts[4]
                                       for flag, facts in ADDED_AFTER_CAPTURE.items()})
        assert now == before[name], name


def test_the_capture_covers_every_flagfile_and_the_old_runs():
    names = set(captured("train_configs.json"))
    assert {"flagfile_demo", "flagfile_bench", "flagfile_voc_xception65",
            "old_run_demo_930c12d", "old_run_bench_sweep", "no_flags"} <= names


def test_flag_names_map_to_group_paths():
    config = TrainConfig.from_flags(stage1_batch_size=3, buffer_max=4, adv_generator_mode="train",
                                    disc_target_accuracy=0.8, stage1="off", output_stride=8)
    assert config.stage1.batch_size == 3 and config.stage1.mode == "off"
    assert config.load.b_max == 4 and config.generator.mode == "train"
    assert config.discriminator.target == 0.8 and TrainConfig().discriminator.target is None
    assert config.model.output_stride == 8
    assert config.flag_values()["buffer_max"] == 4
    assert TrainConfig.from_flags(**config.flag_values()) == config
    with pytest.raises(TypeError, match="no flag"):
        TrainConfig.from_flags(batch_size=3)


def test_load_group_builds_the_controllers_config_by_field_name():
    fields = {field.name for field in dataclasses.fields(LookaheadConfig)}
    assert {field.name for field in dataclasses.fields(LoAdConfig)} <= fields
    assert LoAdConfig() == LookaheadConfig().controller_config()   # same defaults, no cap
    group = TrainConfig.from_flags(beta_l=0.1, beta_u=0.01, gamma_max=4, psi_max=2, omega_max=1,
                                   buffer_max=5, max_propagations=7).load
    assert group.controller_config() == LoAdConfig(beta_l=0.1, beta_u=0.01, gamma_max=4,
                                                   psi_max=2, omega_max=1, b_max=5,
                                                   max_propagations=7)
    assert group.controller_config(max_propagations=None).max_propagations is None


def test_model_flags_are_written_once():
    architecture = [field.name for field in dataclasses.fields(ModelArchitecture)]
    for cls in (ModelConfig, ModelSource):
        names = [field.name for field in dataclasses.fields(cls)]
        assert names[:len(architecture)] == architecture
        own = names[len(architecture):]
        assert not set(own) & set(architecture)


def test_inference_config_from_its_flags():
    values = {leaf.flag: leaf.default for leaf in config_fields.leaves(EvaluateConfig)}
    by_flag = {leaf.flag: leaf for leaf in config_fields.leaves(EvaluateConfig)}
    values.update(run_dir="runs/x", eval_batch_size=2,
                  atrous_rates=by_flag["atrous_rates"].parse_list(["none"]),
                  eval_crop_size=by_flag["eval_crop_size"].parse_list(["65"]),
                  eval_scales=by_flag["eval_scales"].parse_list(["0.5", "1"]))
    config = config_fields.from_flags(EvaluateConfig, **values)
    assert config.model == ModelSource(run_dir="runs/x", atrous_rates=())
    assert (config.batch_size, config.eval_crop_size, config.eval_scales) == (2, (65, 65),
                                                                              (0.5, 1.0))
    with pytest.raises(FlagError, match="--eval_scales must be positive"):
        by_flag["eval_scales"].parse_list(["0"])
    with pytest.raises(FlagError, match="--atrous_rates must be integers or none"):
        by_flag["atrous_rates"].parse_list(["6", "x"])
    with pytest.raises(FlagError, match="--eval_crop_size=65,65,65 must be H,W"):
        config_fields.from_flags(EvaluateConfig, eval_crop_size=(65, 65, 65))


def test_a_flag_name_used_twice_is_refused():
    @dataclasses.dataclass(frozen=True)
    class Twice:
        a: ModelSource = config_fields.group(ModelSource)
        b: ModelSource = config_fields.group(ModelSource)

    with pytest.raises(TypeError, match="flag names used twice"):
        config_fields.leaves(Twice)
