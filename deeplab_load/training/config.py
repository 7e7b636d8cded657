"""TrainConfig: everything a training run (stage 1 + LoAd) is told, with the paper's defaults,
grouped by concern: model, data, run, stage1, load (Algorithm 3), generator, discriminator.

``python -m deeplab_load.train`` defines one flag per leaf field (the names of the flat
configuration before the grouping: ``--stage1_batch_size`` is ``stage1.batch_size``, see
`deeplab_load.config_fields`) and builds a TrainConfig from them; Python users build one
directly or from flag names:

    from deeplab_load.training.config import TrainConfig
    from deeplab_load.training.run import run_training
    config, _ = TrainConfig.from_flags(dataset="demo", run_dir="runs/demo").with_demo_profile()
    summary = run_training(config)

Sizes are (H, W) tuples in pixels; None means "the data set's".
"""
import dataclasses
from typing import Optional

from deeplab_load import config_fields
from deeplab_load.checkpoints.model_source import ModelArchitecture
from deeplab_load.config_fields import group, option, size
from deeplab_load.dataset_names import DATASET_NAMES, DATASET_NAMES_TEXT
from deeplab_load.errors import FlagError
from deeplab_load.lookahead.controller import LoAdConfig

# Algorithm 3's defaults (the paper's), kept by the TF-free controller.
_ALGORITHM = LoAdConfig()


def _at_least(low, note=""):
    return (lambda v: v >= low, f">= {low}{note}")


def _above(low):
    return (lambda v: v > low, f"> {low}")


def _fraction(closed_low=True, closed_high=False, note=""):
    """0 <= v < 1 style rules; the brackets say which ends are valid."""
    def test(v):
        return (v >= 0 if closed_low else v > 0) and (v <= 1 if closed_high else v < 1)
    return (test, f"in {'[' if closed_low else '('}0, 1{']' if closed_high else ')'}{note}")


def _positive_size(value):
    return value is None or (len(value) == 2 and min(value) >= 1)


@dataclasses.dataclass(frozen=True)
class ModelConfig(ModelArchitecture):
    """The generator's architecture (`ModelArchitecture`), its starting weights and what
    training changes in it besides the weights' gradients."""
    initial_checkpoint: Optional[str] = option(
        None, "Starting weights: official TF1 zoo checkpoint (prefix or folder) or one of ours. "
        "None: random initialisation.")
    fine_tune_batch_norm: bool = option(
        False, "Update BatchNorm statistics while training (DeepLab's default is off for small "
        "batches).")
    batch_norm_decay: float = option(
        0.9997, "Moving-average decay of BatchNorm statistics (DeepLab: 0.9997); matters with "
        "--fine_tune_batch_norm.", valid=_fraction(closed_low=False))
    weight_decay: float = option(
        4e-5, "L2 weight decay of stage 1 and the generator steps, as research/deeplab: "
        "weight_decay * sum(w^2) / 2 over the regular conv kernels, not depthwise ones (original "
        "default 4e-5; 0: off).", valid=_at_least(0, " (0: off)"))


@dataclasses.dataclass(frozen=True)
class DataConfig:
    dataset: str = option("demo", f"{DATASET_NAMES_TEXT} (generated: docs/BENCH.md).",
                          DATASET_NAMES)
    dataset_dir: Optional[str] = option(
        None, "Data set root: the folder holding VOCdevkit (or VOCdevkit, or VOC2012), the "
        "Cityscapes root (with leftImg8bit/, gtFine/), the folder holding iccv09Data; demo, "
        "bench: the cache dir by default.")
    tfrecord_dir: Optional[str] = option(
        None, "Read the splits from TFRecords (ours, or research/deeplab's build_*_data.py "
        "output).")
    train_split: Optional[str] = option(
        None, "Training split (default: train_aug for VOC when SBD's SegmentationClassAug is "
        "present, else train).")
    eval_split: str = option("val", "Split of the baseline/final evaluation and the hold-out.")
    demo_num_train: int = option(256, "Demo: training images.", valid=_at_least(1))
    demo_num_val: int = option(120, "Demo: validation images (30% of them are the hold-out).",
                               valid=_at_least(2, " (the hold-out is a part of it)"))
    demo_image_size: tuple = option((97, 129), "Demo: image H,W.", parse=size,
                                    valid=(lambda v: len(v) == 2 and min(v) >= 33, "H,W >= 33"))
    demo_data_seed: int = option(0, "Demo: seed of the generated images (apart from --seed, so "
                                 "runs with several seeds share one data set).")
    crop_size: Optional[tuple] = option(
        None, "Training crop H,W (default: the data set's: 513 VOC and Cityscapes, 321 "
        "Stanford).", parse=size, valid=(_positive_size, "H,W >= 1"))
    eval_crop_size: Optional[tuple] = option(
        None, "Evaluation padding H,W (default: the data set's).", parse=size,
        valid=(_positive_size, "H,W >= 1"))
    min_scale_factor: float = option(1.0, "Random scale augmentation: minimum.",
                                     valid=_above(0))
    max_scale_factor: float = option(1.0, "Random scale augmentation: maximum.")
    skip_bad_examples: bool = option(False, "Skip (and count) corrupt or invalid examples "
                                     "instead of stopping with an error naming the file.")

    @property
    def random_scale(self):
        return (self.min_scale_factor, self.max_scale_factor)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    run_dir: Optional[str] = option(None, "Run directory (default: "
                                    "runs/<dataset>_<model_variant>).")
    resume: bool = option(True, "Continue the run found in --run_dir; with --noresume an "
                          "existing run is an error (nothing is overwritten).")
    seed: int = option(0, "Seed of data order, augmentation, initialisation and splits.")
    mixed_precision: str = option("float32", "Keras dtype policy (mixed_bfloat16: bfloat16 "
                                  "compute, float32 weights).", ("float32", "mixed_bfloat16"))
    strategy: str = option("auto", "tf.distribute strategy.",
                           ("auto", "default", "mirrored", "multi_worker"))
    worker_timeout_s: float = option(
        30.0, "Multi-worker runs (TF_CONFIG): seconds without a heartbeat from a worker (dead, "
        "or stopped by SIGSTOP) before every other worker stops with an error naming it "
        "(TensorFlow's coordination service; its own default is 10).", valid=_at_least(1))
    collective_timeout_s: float = option(
        0.0, "Multi-worker runs: abort any collective op that waits longer than this for its "
        "peers (a worker alive but stuck outside TensorFlow); 0: off. Each collective op then "
        "holds two threads for this long, so keep it off or short.",
        valid=_at_least(0, " (0: off)"))
    export: bool = option(True, "Export the final generator as a SavedModel into the run dir.")
    eval_batch_size: int = option(4, "Batch of hold-out / validation evaluation.",
                                  valid=_at_least(1))


@dataclasses.dataclass(frozen=True)
class Stage1Config:
    """Stage 1: pixel-wise cross-entropy (flags --stage1_<field> unless named)."""
    mode: str = option("auto", "Pixel-wise CE before LoAd; auto: when there is no initial "
                       "checkpoint or its logits did not fit the data set.",
                       ("auto", "on", "off"), flag="stage1")
    weighted_epochs: float = option(4.0, "Epochs of class-weighted CE (paper: 4).",
                                    valid=_at_least(0))
    plain_epochs: float = option(8.0, "Epochs of plain CE afterwards (paper: 8).",
                                 valid=_at_least(0))
    batch_size: int = option(7, "Stage-1 global batch (paper: 7).", valid=_at_least(1))
    learning_rate: float = option(1e-4, "Stage-1 (base) learning rate (paper: 1e-4, "
                                  "constant).", valid=_above(0))
    learning_policy: str = option(
        "constant", "Stage-1 learning policy, as research/deeplab: constant (the paper's), poly "
        "(base * (1 - t / T) ** --stage1_learning_power down to --stage1_end_learning_rate at "
        "T, stage 1's step budget) or step (base * --stage1_learning_rate_decay_factor every "
        "--stage1_learning_rate_decay_step steps).", ("constant", "poly", "step"))
    learning_power: float = option(0.9, "Poly policy: power (research/deeplab: 0.9).",
                                   valid=_above(0))
    end_learning_rate: float = option(0.0, "Poly policy: learning rate after the last step "
                                      "(research/deeplab: 0).", valid=_at_least(0))
    learning_rate_decay_step: int = option(2000, "Step policy: steps between decays "
                                           "(research/deeplab: 2000).", valid=_at_least(1))
    learning_rate_decay_factor: float = option(
        0.1, "Step policy: decay factor (research/deeplab: 0.1).",
        valid=_fraction(closed_low=False, closed_high=True))
    slow_start_step: int = option(
        0, "Stage-1 steps at --stage1_slow_start_learning_rate before the policy starts (0: "
        "none); poly then decays over the remaining steps.",
        valid=_at_least(0, " (0: no slow start)"))
    slow_start_learning_rate: float = option(1e-4, "Learning rate of the slow start "
                                             "(research/deeplab: 1e-4).", valid=_at_least(0))
    momentum: float = option(0.9, "Stage-1 momentum (original DeepLab).", valid=_fraction())
    min_class_weight: float = option(0.1, "Weighted CE: lower clip of pixel weights.",
                                     valid=_above(0), flag="min_class_weight")
    max_class_weight: float = option(10.0, "Weighted CE: upper clip of pixel weights.",
                                     flag="max_class_weight")
    checkpoint_every: int = option(100, "Stage-1 steps between resumable checkpoints.",
                                   valid=_at_least(1), flag="checkpoint_every")


@dataclasses.dataclass(frozen=True)
class LookaheadConfig:
    """Stage 2, LoAd: Algorithm 3's parameters (`LoAdConfig`'s fields and defaults) and its
    hold-out and map sets."""
    beta_l: float = option(_ALGORITHM.beta_l, "Divergence margin below mu_s that ends a cycle.",
                           valid=_fraction(note=" (mIoU is a fraction)"))
    beta_u: float = option(_ALGORITHM.beta_u, "Minimum mIoU gain over mu_s for a peak.",
                           valid=_fraction(note=" (mIoU is a fraction)"))
    gamma_max: int = option(_ALGORITHM.gamma_max, "Divergence patience Gamma (propagations).",
                            valid=_at_least(1))
    psi_max: int = option(_ALGORITHM.psi_max, "Cycles without a new peak before stopping (Psi).",
                          valid=_at_least(1))
    omega_max: int = option(_ALGORITHM.omega_max, "Peak-finder patience Omega.",
                            valid=_at_least(0))
    b_max: int = option(_ALGORITHM.b_max, "Map-aggregation buffer size B_max (label-map sets).",
                        flag="buffer_max",
                        valid=_at_least(2, " (the ground set and at least one generated set)"))
    max_propagations: int = option(0, "Safety cap on propagations (0: none).",
                                   valid=_at_least(0, " (0: no cap)"))
    holdout_fraction: float = option(0.3, "Share of the eval split used as hold-out set.",
                                     valid=_fraction(closed_low=False))
    map_batch_size: int = option(4, "Batch of label-map set generation.", valid=_at_least(1))
    holdout_dtype: str = option("float32", "Compute dtype of LoAd's hold-out evaluations and "
                                "label-map sets (bfloat16: a bfloat16 copy of the generator "
                                "that takes its weights before every use; docs/SCALING.md "
                                "gives its label agreement).", ("float32", "bfloat16"))

    def controller_config(self, **overrides):
        """The controller's `LoAdConfig` of these settings (its fields, by name; the cap 0 is
        None), ``overrides`` (e.g. ``max_propagations=``) replacing them."""
        values = {field.name: getattr(self, field.name)
                  for field in dataclasses.fields(LoAdConfig)}
        values["max_propagations"] = self.max_propagations or None
        values.update(overrides)
        return LoAdConfig(**values)


@dataclasses.dataclass(frozen=True)
class GeneratorConfig:
    """The generator's adversarial steps (flags --adv_<field> unless named)."""
    batch_size: int = option(5, "Generator (adversarial) global batch (paper: 5).",
                             valid=_at_least(1))
    learning_rate: float = option(5e-6, "Generator learning rate (paper: 5e-6).",
                                  valid=(lambda v: v >= 0, ">= 0 (0: the generator does not "
                                         "move, LoAd only selects)"))
    momentum: float = option(0.95, "Generator momentum (paper: 0.95).", valid=_fraction())
    mode: str = option(
        "frozen", "The generator's mode in adversarial steps. frozen: inference mode -- "
        "BatchNorm normalises with its moving statistics and leaves them unchanged, no dropout "
        "(research/deeplab's fine_tune_batch_norm=False), so the steps see the maps inference, "
        "the buffer and the hold-out mIoU see, and a step at learning rate 0 changes nothing. "
        "train: training mode as in stage 1 -- dropout on, and with --fine_tune_batch_norm "
        "batch statistics whose moving averages every step updates.", ("frozen", "train"),
        flag="adv_generator_mode")
    map_encoding: str = option("straight_through", "Generated maps fed to D: one-hot forward / "
                               "softmax backward, or softmax.", ("straight_through", "soft"),
                               flag="map_encoding")


@dataclasses.dataclass(frozen=True)
class DiscriminatorConfig:
    """The discriminator and its fit loop (flags --disc_<field>)."""
    batch_size: int = option(16, "Discriminator global batch (paper: 16).", valid=_at_least(1))
    optimizer: str = option("adagrad", "Discriminator optimizer (paper: Adagrad).",
                            ("adagrad", "adam"))
    learning_rate: float = option(0.01, "Discriminator learning rate (paper: 0.01).",
                                  valid=_above(0))
    input_size: int = option(224, "Discriminator input size (MobileNet-224).",
                             valid=_at_least(32, " (MobileNet downsamples by 32)"))
    max_epochs: int = option(20, "Discriminator epochs per cycle, at most.", valid=_at_least(1))
    patience: int = option(3, "Epochs without hold-out accuracy gain before D stops.",
                           valid=_at_least(0))
    min_epochs: int = option(0, "Epochs before patience may stop D (a D trained from scratch "
                             "can sit near chance for its first epochs).", valid=_at_least(0))
    bn_batches: int = option(100, "Batches of D's training data over which its BatchNorm "
                             "statistics are recomputed after every D epoch.",
                             valid=_at_least(1))
    target_accuracy: float = option(0.0, "Stop D at this hold-out accuracy (0: none).",
                                    valid=_fraction(closed_high=True, note=" (0: no target)"))

    @property
    def target(self):
        """The hold-out accuracy that stops D, or None."""
        return self.target_accuracy or None


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    model: ModelConfig = group(ModelConfig)
    data: DataConfig = group(DataConfig)
    run: RunConfig = group(RunConfig)
    stage1: Stage1Config = group(Stage1Config, prefix="stage1_")
    load: LookaheadConfig = group(LookaheadConfig)
    generator: GeneratorConfig = group(GeneratorConfig, prefix="adv_")
    discriminator: DiscriminatorConfig = group(DiscriminatorConfig, prefix="disc_")

    @classmethod
    def from_flags(cls, **values):
        """The defaults with the flags named in ``values`` (e.g. ``gamma_max=5``) replaced."""
        return config_fields.from_flags(cls, **values)

    def with_flags(self, **values):
        """A copy with the flags named in ``values`` replaced."""
        return config_fields.with_flags(self, **values)

    def flag_values(self):
        """{flag name: value} of every field."""
        return config_fields.flag_values(self)

    def with_demo_profile(self, given=()):
        """(config, applied): DEMO_PROFILE's values for the flags not in ``given`` (names set
        explicitly), for the demo data set only."""
        if self.data.dataset != "demo":
            return self, {}
        applied = {name: value for name, value in DEMO_PROFILE.items() if name not in given}
        return self.with_flags(**applied), applied

    def to_flagfile(self):
        """``--name=value`` lines that give this config to ``python -m deeplab_load.train``."""
        return config_fields.to_flagfile(self)

    def validate(self):
        """Raises FlagError listing every field outside its valid range (before any work)."""
        problems = config_fields.problems(self)
        data, stage1 = self.data, self.stage1
        if data.min_scale_factor > data.max_scale_factor:
            problems.append(f"--min_scale_factor={data.min_scale_factor} must be <= "
                            f"--max_scale_factor={data.max_scale_factor}")
        if stage1.min_class_weight > stage1.max_class_weight:
            problems.append(f"--min_class_weight={stage1.min_class_weight} must be <= "
                            f"--max_class_weight={stage1.max_class_weight}")
        if problems:
            raise FlagError(f"{len(problems)} invalid flag(s): " + "; ".join(problems))
        return self


# (flag, test of its value, the valid range as the error states it) of every checked field.
FIELD_RULES = tuple((leaf.flag, *leaf.valid) for leaf in config_fields.leaves(TrainConfig)
                    if leaf.valid)

# The demo data set: settings (by flag name) that make the whole job fit a CPU in minutes
# (flags/demo.cfg spells them out).
DEMO_PROFILE = {
    "model_variant": "mobilenet_v2", "output_stride": 8, "atrous_rates": (),
    "decoder_output_stride": 0, "fine_tune_batch_norm": True, "batch_norm_decay": 0.9,
    "stage1_weighted_epochs": 4.0, "stage1_plain_epochs": 8.0, "stage1_batch_size": 8,
    "stage1_learning_rate": 0.05,
    "gamma_max": 8, "psi_max": 3, "omega_max": 2, "max_propagations": 80,
    "adv_learning_rate": 5e-4, "adv_batch_size": 8,
    "disc_optimizer": "adam", "disc_learning_rate": 1e-3, "disc_input_size": 96,
    "disc_max_epochs": 40, "disc_min_epochs": 20, "disc_patience": 3,
    "disc_target_accuracy": 0.9, "disc_bn_batches": 16,
    "eval_batch_size": 8, "map_batch_size": 8,
}
