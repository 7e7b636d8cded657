"""TrainConfig: every bad value refused together, before any work, with its valid range."""
import os
import subprocess
import sys

import pytest

from deeplab_load.errors import FlagError
from deeplab_load.training.config import DEMO_PROFILE, FIELD_RULES, TrainConfig

# One value outside the valid range per rule.
BAD_VALUES = {
    "num_classes": 0, "output_stride": 12, "atrous_rates": (6, 0), "decoder_output_stride": 8,
    "batch_norm_decay": 1.0, "worker_timeout_s": 0.5, "collective_timeout_s": -1.0,
    "demo_num_train": 0, "demo_num_val": 1, "demo_image_size": (20, 97),
    "crop_size": (0, 65), "eval_crop_size": (65,), "min_scale_factor": 0.0,
    "stage1_weighted_epochs": -1.0, "stage1_plain_epochs": -0.5, "stage1_batch_size": 0,
    "stage1_learning_rate": 0.0, "stage1_momentum": 1.0, "stage1_learning_power": 0.0,
    "stage1_end_learning_rate": -1e-4, "stage1_learning_rate_decay_step": 0,
    "stage1_learning_rate_decay_factor": 1.5, "stage1_slow_start_step": -1,
    "stage1_slow_start_learning_rate": -0.1, "min_class_weight": 0.0,
    "checkpoint_every": 0, "weight_decay": -4e-5, "beta_l": 2.0, "beta_u": -0.5, "gamma_max": 0, "psi_max": -1,
    "omega_max": -1, "buffer_max": 1, "max_propagations": -1, "holdout_fraction": 0.0,
    "adv_batch_size": -1, "adv_learning_rate": -1e-3, "adv_momentum": 1.5, "disc_batch_size": 0,
    "disc_learning_rate": 0.0, "disc_input_size": 16, "disc_max_epochs": 0, "disc_patience": -1,
    "disc_min_epochs": -1, "disc_bn_batches": 0, "disc_target_accuracy": 1.5,
    "eval_batch_size": 0, "map_batch_size": 0,
}


def test_defaults_and_demo_profile_are_valid():
    assert TrainConfig().validate() == TrainConfig()
    config, applied = TrainConfig().with_demo_profile(given={"seed"})
    assert applied == DEMO_PROFILE and config.validate().load.gamma_max == DEMO_PROFILE["gamma_max"]
    kept, applied = TrainConfig.from_flags(gamma_max=5).with_demo_profile(given={"gamma_max"})
    assert kept.load.gamma_max == 5 and "gamma_max" not in applied
    voc = TrainConfig.from_flags(dataset="voc")
    assert voc.with_demo_profile() == (voc, {})


def test_every_rule_has_a_bad_value_and_each_is_refused_alone():
    assert set(BAD_VALUES) == {name for name, _, _ in FIELD_RULES}
    for name, value in BAD_VALUES.items():
        with pytest.raises(FlagError, match=f"--{name}="):
            TrainConfig.from_flags(**{name: value}).validate()


def test_all_bad_values_are_listed_in_one_error():
    with pytest.raises(FlagError) as error:
        TrainConfig.from_flags(**BAD_VALUES).validate()
    message = str(error.value)
    assert message.startswith(f"{len(BAD_VALUES)} invalid flag(s)")
    assert all(f"--{name}=" in message for name in BAD_VALUES)
    assert "\n" not in message


def test_adversarial_learning_rate_zero_is_valid_and_negative_names_the_range():
    """lr 0 is the selection-only null arm: allowed; a negative one says >= 0."""
    assert TrainConfig.from_flags(adv_learning_rate=0.0).validate().generator.learning_rate == 0.0
    with pytest.raises(FlagError, match=r"--adv_learning_rate=-0.001 must be >= 0 \(0: the "):
        TrainConfig.from_flags(adv_learning_rate=-1e-3).validate()


def test_learning_policy_and_generator_mode_are_choices():
    with pytest.raises(FlagError, match="--stage1_learning_policy=cosine must be one of "
                                        "constant, poly, step"):
        TrainConfig.from_flags(stage1_learning_policy="cosine").validate()
    with pytest.raises(FlagError, match="--adv_generator_mode=eval must be one of frozen, train"):
        TrainConfig.from_flags(adv_generator_mode="eval").validate()
    assert TrainConfig().stage1.learning_policy == "constant"
    assert TrainConfig().generator.mode == "frozen"
    # the demo keeps the constant rate: poly over its 12 epochs ended 14 points lower
    assert TrainConfig().with_demo_profile()[0].stage1.learning_policy == "constant"


def test_cross_field_and_choice_rules():
    with pytest.raises(FlagError, match="--min_scale_factor=2.0 must be <= --max_scale_factor"):
        TrainConfig.from_flags(min_scale_factor=2.0, max_scale_factor=1.5).validate()
    with pytest.raises(FlagError, match="--disc_optimizer=sgd must be one of adagrad, adam"):
        TrainConfig().with_flags(disc_optimizer="sgd").validate()


@pytest.mark.slow
def test_train_command_refuses_bad_flags_before_writing_anything(tmp_path):
    """The command exits 2 in seconds with one line naming every bad flag; no run dir, no
    demo data, no traceback."""
    run_dir = tmp_path / "run"
    env = dict(os.environ, DEEPLAB_LOAD_CACHE=str(tmp_path / "cache"))
    proc = subprocess.run(
        [sys.executable, "-m", "deeplab_load.train", f"--run_dir={run_dir}", "--gamma_max=0",
         "--psi_max=-1", "--buffer_max=1", "--beta_l=2", "--beta_u=-0.5",
         "--holdout_fraction=0", "--adv_batch_size=-1", "--crop_size=0,65"],
        capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: 8 invalid flag(s)"), proc.stderr
    for name in ("gamma_max", "psi_max", "buffer_max", "beta_l", "beta_u", "holdout_fraction",
                 "adv_batch_size", "crop_size"):
        assert f"--{name}=" in lines[0]
    assert "Traceback" not in proc.stderr
    assert not run_dir.exists() and not (tmp_path / "cache").exists()


def test_resume_with_changed_flags_logs_old_and_new_values(tmp_path, caplog):
    from deeplab_load.training.run import changed_flags, prepare_run_dir
    old = TrainConfig.from_flags(adv_learning_rate=1e-3).to_flagfile()
    new = TrainConfig.from_flags(adv_learning_rate=5e-4, fine_tune_batch_norm=True).to_flagfile()
    assert changed_flags(old, new) == {"adv_learning_rate": ("0.001", "0.0005"),
                                       "fine_tune_batch_norm": ("false", "true")}
    assert changed_flags(old, old) == {}
    run_dir = str(tmp_path / "run")
    assert not prepare_run_dir(TrainConfig.from_flags(adv_learning_rate=1e-3), run_dir)
    with caplog.at_level("WARNING"):
        assert prepare_run_dir(TrainConfig.from_flags(adv_learning_rate=1e-3), run_dir)
        assert not [r for r in caplog.records if "changed flags" in r.getMessage()]
        assert prepare_run_dir(TrainConfig.from_flags(adv_learning_rate=5e-4), run_dir)
    messages = [r.getMessage() for r in caplog.records if "changed flags" in r.getMessage()]
    assert len(messages) == 1 and "--adv_learning_rate 0.001 -> 0.0005" in messages[0]
    assert sorted(os.listdir(run_dir)) == ["flags.txt", "flags_resume_1.txt",
                                           "flags_resume_2.txt"]
