"""Train with LoAd: stage 1 (pixel-wise CE, when needed), then lookahead adversarial stage 2.

    python -m deeplab_load.train                                   # the demo data set, CPU, minutes
    python -m deeplab_load.train --flagfile=flags/voc_xception65.cfg --dataset_dir=/data/VOCdevkit

Flag defaults are the paper's. With `--dataset=demo` (the default) and no flagfile, the values of
`DEMO_PROFILE` replace the defaults of flags not given on the command line, so the whole job
(stage 1, LoAd cycles, evaluation, export) runs on a CPU in minutes; `flags/demo.cfg` spells
them out. A run directory that already holds a run is resumed (`--resume`, default on).
"""
from absl import app, flags

from deeplab_load import evaluate as evaluate_lib

FLAGS = flags.FLAGS

evaluate_lib.define_model_flags()
flags.DEFINE_string("dataset", "demo", "voc, cityscapes, stanford or demo.")
flags.DEFINE_string("dataset_dir", None, "Data set root (demo: the cache dir by default).")
flags.DEFINE_string("tfrecord_dir", None, "Read shards written by tools/build_tfrecords.py or "
                    "research/deeplab's build_*_data.py (then --dataset_dir is not needed).")
flags.DEFINE_string("train_split", None, "Training split (default: train_aug for VOC when "
                    "present, else train).")
flags.DEFINE_string("eval_split", "val", "Split of the baseline/final evaluation and hold-out set.")
flags.DEFINE_integer("demo_num_train", 256, "Demo: training images.")
flags.DEFINE_integer("demo_num_val", 120, "Demo: validation images (30% of them are the "
                     "hold-out set).")
flags.DEFINE_list("demo_image_size", ["97", "129"], "Demo: image height,width.")
flags.DEFINE_integer("demo_data_seed", 0, "Demo: seed of the generated images (apart from "
                     "--seed, so runs with several seeds share one data set).")
flags.DEFINE_string("initial_checkpoint", None, "Starting weights: official TF1 zoo checkpoint "
                    "(prefix or folder) or one of ours. None: random initialisation.")
flags.DEFINE_bool("fine_tune_batch_norm", False, "Update BatchNorm statistics while training "
                  "(DeepLab's default is off for small batches).")
flags.DEFINE_float("batch_norm_decay", 0.9997, "Moving-average decay of BatchNorm statistics "
                   "(DeepLab: 0.9997); matters with --fine_tune_batch_norm.")
flags.DEFINE_string("run_dir", None, "Run directory (default: runs/<dataset>_<model_variant>).")
flags.DEFINE_bool("resume", True, "Continue the run found in --run_dir; with --noresume an "
                  "existing run is an error (nothing is overwritten).")
flags.DEFINE_integer("seed", 0, "Seed of data order, augmentation, initialisation and splits.")
flags.DEFINE_list("crop_size", None, "Training crop H,W (default: the data set's: 513 VOC and "
                  "Cityscapes, 321 Stanford).")
flags.DEFINE_list("eval_crop_size", None, "Evaluation padding H,W (default: the data set's).")
flags.DEFINE_float("min_scale_factor", 1.0, "Random scale augmentation: minimum.")
flags.DEFINE_float("max_scale_factor", 1.0, "Random scale augmentation: maximum.")
flags.DEFINE_bool("skip_bad_examples", False, "Skip (and count) corrupt or invalid examples "
                  "instead of stopping with an error naming the file.")
flags.DEFINE_enum("mixed_precision", "float32", ["float32", "mixed_bfloat16"],
                  "Keras dtype policy: bfloat16 compute with float32 weights speeds up "
                  "Xception-65 1.3-1.8x on CPUs with bf16 units (slower for MobileNetV2).")
flags.DEFINE_string("strategy", "auto", "auto | default | mirrored | multi_worker.")
# Stage 1.
flags.DEFINE_enum("stage1", "auto", ["auto", "on", "off"], "Pixel-wise CE before LoAd; auto: "
                  "when there is no initial checkpoint or its logits did not fit the data set.")
flags.DEFINE_float("stage1_weighted_epochs", 4, "Epochs of class-weighted CE (paper: 4).")
flags.DEFINE_float("stage1_plain_epochs", 8, "Epochs of plain CE afterwards (paper: 8).")
flags.DEFINE_integer("stage1_batch_size", 7, "Stage-1 global batch (paper: 7).")
flags.DEFINE_float("stage1_learning_rate", 1e-4, "Stage-1 learning rate, constant (paper).")
flags.DEFINE_float("stage1_momentum", 0.9, "Stage-1 momentum (original DeepLab).")
flags.DEFINE_float("min_class_weight", 0.1, "Weighted CE: lower clip of pixel weights.")
flags.DEFINE_float("max_class_weight", 10.0, "Weighted CE: upper clip of pixel weights.")
flags.DEFINE_integer("checkpoint_every", 100, "Stage-1 steps between resumable checkpoints.")
# Stage 2: LoAd (Algorithm 3).
flags.DEFINE_float("beta_l", 0.05, "Divergence margin below mu_s that ends a cycle.")
flags.DEFINE_float("beta_u", 0.001, "Minimum mIoU gain over mu_s for a peak.")
flags.DEFINE_integer("gamma_max", 50, "Divergence patience Gamma (propagations).")
flags.DEFINE_integer("psi_max", 50, "Cycles without a new peak before stopping (Psi).")
flags.DEFINE_integer("omega_max", 10, "Peak-finder patience Omega.")
flags.DEFINE_integer("buffer_max", 3, "Map-aggregation buffer size B_max (label-map sets).")
flags.DEFINE_integer("max_propagations", 0, "Safety cap on propagations (0: none).")
flags.DEFINE_float("holdout_fraction", 0.3, "Share of the eval split used as hold-out set.")
flags.DEFINE_integer("adv_batch_size", 5, "Generator (adversarial) global batch (paper: 5).")
flags.DEFINE_float("adv_learning_rate", 5e-6, "Generator learning rate (paper: 5e-6).")
flags.DEFINE_float("adv_momentum", 0.95, "Generator momentum (paper: 0.95).")
flags.DEFINE_enum("map_encoding", "straight_through", ["straight_through", "soft"],
                  "Generated maps fed to D: one-hot forward / softmax backward, or softmax.")
flags.DEFINE_integer("disc_batch_size", 16, "Discriminator global batch (paper: 16).")
flags.DEFINE_enum("disc_optimizer", "adagrad", ["adagrad", "adam"],
                  "Discriminator optimizer (paper: Adagrad).")
flags.DEFINE_float("disc_learning_rate", 0.01, "Discriminator learning rate (paper: 0.01).")
flags.DEFINE_integer("disc_input_size", 224, "Discriminator input size (MobileNet-224).")
flags.DEFINE_integer("disc_max_epochs", 20, "Discriminator epochs per cycle, at most.")
flags.DEFINE_integer("disc_patience", 3, "Epochs without hold-out accuracy gain before D stops.")
flags.DEFINE_integer("disc_min_epochs", 0, "Epochs before patience may stop D (a D trained from "
                     "scratch can sit near chance for its first epochs).")
flags.DEFINE_integer("disc_bn_batches", 100, "Batches of D's training data over which its "
                     "BatchNorm statistics are recomputed after every D epoch (its inference "
                     "mode then matches its training steps).")
flags.DEFINE_float("disc_target_accuracy", 0.0, "Stop D at this hold-out accuracy (0: none).")
flags.DEFINE_integer("eval_batch_size", 4, "Batch of hold-out / validation evaluation.")
flags.DEFINE_integer("map_batch_size", 4, "Batch of label-map set generation.")
flags.DEFINE_bool("export", True, "Export the final generator as a SavedModel into the run dir.")

# The demo data set: settings that make the whole job fit a CPU in minutes.
DEMO_PROFILE = {
    "model_variant": "mobilenet_v2", "output_stride": 8, "atrous_rates": [],
    "decoder_output_stride": 0, "fine_tune_batch_norm": True, "batch_norm_decay": 0.9,
    "stage1_weighted_epochs": 4, "stage1_plain_epochs": 8, "stage1_batch_size": 8,
    "stage1_learning_rate": 0.05,
    "gamma_max": 8, "psi_max": 3, "omega_max": 2, "max_propagations": 80,
    "adv_learning_rate": 5e-4, "adv_batch_size": 8,
    "disc_optimizer": "adam", "disc_learning_rate": 1e-3, "disc_input_size": 96,
    "disc_max_epochs": 40, "disc_min_epochs": 20, "disc_patience": 3,
    "disc_target_accuracy": 0.9, "disc_bn_batches": 16,
    "eval_batch_size": 8, "map_batch_size": 8,
}


def apply_demo_profile(flag_values=FLAGS):
    """Sets DEMO_PROFILE values on flags the user did not give (demo data set only)."""
    if flag_values.dataset != "demo":
        return {}
    applied = {}
    for name, value in DEMO_PROFILE.items():
        if not flag_values[name].present:
            flag_values[name].value = value
            applied[name] = value
    return applied


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from deeplab_load.training.run import run_training
    applied = apply_demo_profile()
    run_training(FLAGS, demo_profile=applied)


if __name__ == "__main__":
    app.run(main)
