"""TrainConfig: everything a training run (stage 1 + LoAd) is told, with the paper's defaults.

``python -m deeplab_load.train`` defines one flag per field (same name, the field's help) and
builds a TrainConfig from them; Python users build one directly:

    from deeplab_load.training.config import TrainConfig
    from deeplab_load.training.run import run_training
    config, _ = TrainConfig(dataset="demo", run_dir="runs/demo").with_demo_profile()
    summary = run_training(config)

Sizes are (H, W) tuples in pixels; None means "the data set's".
"""
import dataclasses
from typing import Optional

from deeplab_load.errors import FlagError


def option(default, help, choices=None):  # pylint: disable=redefined-builtin
    """A field with a flag help text (and the enum values of an enum flag)."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices})


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    # Model.
    zoo_name: Optional[str] = option(None, "Official zoo entry whose architecture is the "
                                     "default (e.g. xception65_coco_voc_trainaug).")
    model_variant: Optional[str] = option(None, "Backbone (default: --zoo_name's, else "
                                          "xception_65).", ("xception_65", "mobilenet_v2"))
    num_classes: Optional[int] = option(None, "Classes (default: the data set's).")
    output_stride: Optional[int] = option(None, "Output stride 8/16/32 (default: 16).")
    atrous_rates: Optional[tuple] = option(None, "ASPP atrous rates; 'none' for no atrous "
                                           "branches (default: --zoo_name's, else 6,12,18 "
                                           "scaled to the output stride).")
    decoder_output_stride: Optional[int] = option(None, "4 for the decoder, 0 for none "
                                                  "(default: --zoo_name's, else 4).")
    initial_checkpoint: Optional[str] = option(None, "Starting weights: official TF1 zoo "
                                               "checkpoint (prefix or folder) or one of ours. "
                                               "None: random initialisation.")
    fine_tune_batch_norm: bool = option(False, "Update BatchNorm statistics while training "
                                        "(DeepLab's default is off for small batches).")
    batch_norm_decay: float = option(0.9997, "Moving-average decay of BatchNorm statistics "
                                     "(DeepLab: 0.9997); matters with --fine_tune_batch_norm.")
    # Data.
    dataset: str = option("demo", "voc, cityscapes, stanford, demo or bench (generated: "
                          "docs/BENCH.md).", ("voc", "cityscapes", "stanford", "demo", "bench"))
    dataset_dir: Optional[str] = option(None, "Data set root: the folder holding VOCdevkit "
                                        "(or VOCdevkit, or VOC2012), the Cityscapes root (with "
                                        "leftImg8bit/, gtFine/), the folder holding iccv09Data; "
                                        "demo, bench: the cache dir by default.")
    tfrecord_dir: Optional[str] = option(None, "Read the splits from TFRecords (ours, or "
                                         "research/deeplab's build_*_data.py output).")
    train_split: Optional[str] = option(None, "Training split (default: train_aug for VOC "
                                        "when SBD's SegmentationClassAug is present, else "
                                        "train).")
    eval_split: str = option("val", "Split of the baseline/final evaluation and the hold-out.")
    demo_num_train: int = option(256, "Demo: training images.")
    demo_num_val: int = option(120, "Demo: validation images (30% of them are the hold-out).")
    demo_image_size: tuple = option((97, 129), "Demo: image H,W.")
    demo_data_seed: int = option(0, "Demo: seed of the generated images (apart from --seed, so "
                                 "runs with several seeds share one data set).")
    crop_size: Optional[tuple] = option(None, "Training crop H,W (default: the data set's: 513 "
                                        "VOC and Cityscapes, 321 Stanford).")
    eval_crop_size: Optional[tuple] = option(None, "Evaluation padding H,W (default: the data "
                                             "set's).")
    min_scale_factor: float = option(1.0, "Random scale augmentation: minimum.")
    max_scale_factor: float = option(1.0, "Random scale augmentation: maximum.")
    skip_bad_examples: bool = option(False, "Skip (and count) corrupt or invalid examples "
                                     "instead of stopping with an error naming the file.")
    # Run.
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
        "(TensorFlow's coordination service; its own default is 10).")
    collective_timeout_s: float = option(
        0.0, "Multi-worker runs: abort any collective op that waits longer than this for its "
        "peers (a worker alive but stuck outside TensorFlow); 0: off. Each collective op then "
        "holds two threads for this long, so keep it off or short.")
    export: bool = option(True, "Export the final generator as a SavedModel into the run dir.")
    # Stage 1.
    stage1: str = option("auto", "Pixel-wise CE before LoAd; auto: when there is no initial "
                         "checkpoint or its logits did not fit the data set.",
                         ("auto", "on", "off"))
    stage1_weighted_epochs: float = option(4.0, "Epochs of class-weighted CE (paper: 4).")
    stage1_plain_epochs: float = option(8.0, "Epochs of plain CE afterwards (paper: 8).")
    stage1_batch_size: int = option(7, "Stage-1 global batch (paper: 7).")
    stage1_learning_rate: float = option(1e-4, "Stage-1 (base) learning rate (paper: 1e-4, "
                                         "constant).")
    stage1_learning_policy: str = option(
        "constant", "Stage-1 learning policy, as research/deeplab: constant (the paper's), poly "
        "(base * (1 - t / T) ** --stage1_learning_power down to --stage1_end_learning_rate at "
        "T, stage 1's step budget) or step (base * --stage1_learning_rate_decay_factor every "
        "--stage1_learning_rate_decay_step steps).", ("constant", "poly", "step"))
    stage1_learning_power: float = option(0.9, "Poly policy: power (research/deeplab: 0.9).")
    stage1_end_learning_rate: float = option(0.0, "Poly policy: learning rate after the last "
                                             "step (research/deeplab: 0).")
    stage1_learning_rate_decay_step: int = option(2000, "Step policy: steps between decays "
                                                  "(research/deeplab: 2000).")
    stage1_learning_rate_decay_factor: float = option(0.1, "Step policy: decay factor "
                                                      "(research/deeplab: 0.1).")
    stage1_slow_start_step: int = option(0, "Stage-1 steps at --stage1_slow_start_learning_rate "
                                         "before the policy starts (0: none); poly then decays "
                                         "over the remaining steps.")
    stage1_slow_start_learning_rate: float = option(1e-4, "Learning rate of the slow start "
                                                    "(research/deeplab: 1e-4).")
    stage1_momentum: float = option(0.9, "Stage-1 momentum (original DeepLab).")
    min_class_weight: float = option(0.1, "Weighted CE: lower clip of pixel weights.")
    max_class_weight: float = option(10.0, "Weighted CE: upper clip of pixel weights.")
    checkpoint_every: int = option(100, "Stage-1 steps between resumable checkpoints.")
    weight_decay: float = option(4e-5, "L2 weight decay of stage 1 and the generator steps, as "
                                 "research/deeplab: weight_decay * sum(w^2) / 2 over the regular "
                                 "conv kernels, not depthwise ones (original default 4e-5; 0: off).")
    # Stage 2: LoAd (Algorithm 3).
    beta_l: float = option(0.05, "Divergence margin below mu_s that ends a cycle.")
    beta_u: float = option(0.001, "Minimum mIoU gain over mu_s for a peak.")
    gamma_max: int = option(50, "Divergence patience Gamma (propagations).")
    psi_max: int = option(50, "Cycles without a new peak before stopping (Psi).")
    omega_max: int = option(10, "Peak-finder patience Omega.")
    buffer_max: int = option(3, "Map-aggregation buffer size B_max (label-map sets).")
    max_propagations: int = option(0, "Safety cap on propagations (0: none).")
    holdout_fraction: float = option(0.3, "Share of the eval split used as hold-out set.")
    adv_batch_size: int = option(5, "Generator (adversarial) global batch (paper: 5).")
    adv_learning_rate: float = option(5e-6, "Generator learning rate (paper: 5e-6).")
    adv_momentum: float = option(0.95, "Generator momentum (paper: 0.95).")
    adv_generator_mode: str = option(
        "frozen", "The generator's mode in adversarial steps. frozen: inference mode -- "
        "BatchNorm normalises with its moving statistics and leaves them unchanged, no dropout "
        "(research/deeplab's fine_tune_batch_norm=False), so the steps see the maps inference, "
        "the buffer and the hold-out mIoU see, and a step at learning rate 0 changes nothing. "
        "train: training mode as in stage 1 -- dropout on, and with --fine_tune_batch_norm "
        "batch statistics whose moving averages every step updates.", ("frozen", "train"))
    map_encoding: str = option("straight_through", "Generated maps fed to D: one-hot forward / "
                               "softmax backward, or softmax.", ("straight_through", "soft"))
    disc_batch_size: int = option(16, "Discriminator global batch (paper: 16).")
    disc_optimizer: str = option("adagrad", "Discriminator optimizer (paper: Adagrad).",
                                 ("adagrad", "adam"))
    disc_learning_rate: float = option(0.01, "Discriminator learning rate (paper: 0.01).")
    disc_input_size: int = option(224, "Discriminator input size (MobileNet-224).")
    disc_max_epochs: int = option(20, "Discriminator epochs per cycle, at most.")
    disc_patience: int = option(3, "Epochs without hold-out accuracy gain before D stops.")
    disc_min_epochs: int = option(0, "Epochs before patience may stop D (a D trained from "
                                  "scratch can sit near chance for its first epochs).")
    disc_bn_batches: int = option(100, "Batches of D's training data over which its BatchNorm "
                                  "statistics are recomputed after every D epoch.")
    disc_target_accuracy: float = option(0.0, "Stop D at this hold-out accuracy (0: none).")
    eval_batch_size: int = option(4, "Batch of hold-out / validation evaluation.")
    map_batch_size: int = option(4, "Batch of label-map set generation.")

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def with_demo_profile(self, given=()):
        """(config, applied): DEMO_PROFILE's values for the fields not in ``given`` (names set
        explicitly), for the demo data set only."""
        if self.dataset != "demo":
            return self, {}
        applied = {name: value for name, value in DEMO_PROFILE.items() if name not in given}
        return self.replace(**applied), applied

    def to_flagfile(self):
        """``--name=value`` lines that give this config to ``python -m deeplab_load.train``."""
        lines = []
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is None:
                continue
            if isinstance(value, bool):
                lines.append(f"--{'' if value else 'no'}{field.name}")
            elif isinstance(value, tuple):
                lines.append(f"--{field.name}={','.join(map(str, value)) or 'none'}")
            else:
                lines.append(f"--{field.name}={value}")
        return "\n".join(lines) + "\n"

    def validate(self):
        """Raises FlagError listing every field outside its valid range (before any work)."""
        problems = [f"--{name}={_shown(getattr(self, name))} must be {valid}"
                    for name, ok, valid in FIELD_RULES if not ok(getattr(self, name))]
        for field in dataclasses.fields(self):
            choices = field.metadata.get("choices")
            value = getattr(self, field.name)
            if choices and value is not None and value not in choices:
                problems.append(f"--{field.name}={getattr(self, field.name)} must be one of "
                                f"{', '.join(choices)}")
        if self.min_scale_factor > self.max_scale_factor:
            problems.append(f"--min_scale_factor={self.min_scale_factor} must be <= "
                            f"--max_scale_factor={self.max_scale_factor}")
        if self.min_class_weight > self.max_class_weight:
            problems.append(f"--min_class_weight={self.min_class_weight} must be <= "
                            f"--max_class_weight={self.max_class_weight}")
        if problems:
            raise FlagError(f"{len(problems)} invalid flag(s): " + "; ".join(problems))
        return self


def _shown(value):
    return ",".join(map(str, value)) if isinstance(value, tuple) else value


def _positive_size(value):
    return value is None or (len(value) == 2 and min(value) >= 1)


# (field, test of its value, the valid range as the error states it)
FIELD_RULES = (
    ("num_classes", lambda v: v is None or v >= 1, ">= 1"),
    ("output_stride", lambda v: v is None or v in (8, 16, 32), "8, 16 or 32"),
    ("atrous_rates", lambda v: v is None or all(r >= 1 for r in v), "positive integers"),
    ("decoder_output_stride", lambda v: v is None or v in (0, 4), "0 or 4"),
    ("batch_norm_decay", lambda v: 0.0 < v < 1.0, "in (0, 1)"),
    ("worker_timeout_s", lambda v: v >= 1, ">= 1"),
    ("collective_timeout_s", lambda v: v >= 0, ">= 0 (0: off)"),
    ("demo_num_train", lambda v: v >= 1, ">= 1"),
    ("demo_num_val", lambda v: v >= 2, ">= 2 (the hold-out is a part of it)"),
    ("demo_image_size", lambda v: len(v) == 2 and min(v) >= 33, "H,W >= 33"),
    ("crop_size", _positive_size, "H,W >= 1"),
    ("eval_crop_size", _positive_size, "H,W >= 1"),
    ("min_scale_factor", lambda v: v > 0, "> 0"),
    ("stage1_weighted_epochs", lambda v: v >= 0, ">= 0"),
    ("stage1_plain_epochs", lambda v: v >= 0, ">= 0"),
    ("stage1_batch_size", lambda v: v >= 1, ">= 1"),
    ("stage1_learning_rate", lambda v: v > 0, "> 0"),
    ("stage1_momentum", lambda v: 0.0 <= v < 1.0, "in [0, 1)"),
    ("stage1_learning_power", lambda v: v > 0, "> 0"),
    ("stage1_end_learning_rate", lambda v: v >= 0, ">= 0"),
    ("stage1_learning_rate_decay_step", lambda v: v >= 1, ">= 1"),
    ("stage1_learning_rate_decay_factor", lambda v: 0.0 < v <= 1.0, "in (0, 1]"),
    ("stage1_slow_start_step", lambda v: v >= 0, ">= 0 (0: no slow start)"),
    ("stage1_slow_start_learning_rate", lambda v: v >= 0, ">= 0"),
    ("min_class_weight", lambda v: v > 0, "> 0"),
    ("checkpoint_every", lambda v: v >= 1, ">= 1"),
    ("weight_decay", lambda v: v >= 0, ">= 0 (0: off)"),
    ("beta_l", lambda v: 0.0 <= v < 1.0, "in [0, 1) (mIoU is a fraction)"),
    ("beta_u", lambda v: 0.0 <= v < 1.0, "in [0, 1) (mIoU is a fraction)"),
    ("gamma_max", lambda v: v >= 1, ">= 1"),
    ("psi_max", lambda v: v >= 1, ">= 1"),
    ("omega_max", lambda v: v >= 0, ">= 0"),
    ("buffer_max", lambda v: v >= 2, ">= 2 (the ground set and at least one generated set)"),
    ("max_propagations", lambda v: v >= 0, ">= 0 (0: no cap)"),
    ("holdout_fraction", lambda v: 0.0 < v < 1.0, "in (0, 1)"),
    ("adv_batch_size", lambda v: v >= 1, ">= 1"),
    ("adv_learning_rate", lambda v: v >= 0, ">= 0 (0: the generator does not move, LoAd only "
     "selects)"),
    ("adv_momentum", lambda v: 0.0 <= v < 1.0, "in [0, 1)"),
    ("disc_batch_size", lambda v: v >= 1, ">= 1"),
    ("disc_learning_rate", lambda v: v > 0, "> 0"),
    ("disc_input_size", lambda v: v >= 32, ">= 32 (MobileNet downsamples by 32)"),
    ("disc_max_epochs", lambda v: v >= 1, ">= 1"),
    ("disc_patience", lambda v: v >= 0, ">= 0"),
    ("disc_min_epochs", lambda v: v >= 0, ">= 0"),
    ("disc_bn_batches", lambda v: v >= 1, ">= 1"),
    ("disc_target_accuracy", lambda v: 0.0 <= v <= 1.0, "in [0, 1] (0: no target)"),
    ("eval_batch_size", lambda v: v >= 1, ">= 1"),
    ("map_batch_size", lambda v: v >= 1, ">= 1"),
)

# The demo data set: settings that make the whole job fit a CPU in minutes (flags/demo.cfg
# spells them out).
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
