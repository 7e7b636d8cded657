"""docs/SCALING.md's cost model: predicted LoAd cycle times of the paper's settings on N devices.

    python -m deeplab_load_tools.scaling_model                  # the table of docs/SCALING.md
    python -m deeplab_load_tools.scaling_model --tflops=30 --devices=1,4,8

Every input is an assumption or a FLOP count (TF profiler, this code's graphs) written below;
nothing is measured by this script. See docs/SCALING.md for the formulas' terms.
"""
import math

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_float("tflops", 10.0, "Sustained device TFLOP/s on these convolutions (assumed).")
flags.DEFINE_list("devices", ["1", "2", "8"], "Device counts N.")
flags.DEFINE_integer("host_cores", 8, "Host cores running D's input pipeline in parallel.")
flags.DEFINE_integer("gamma", 50, "Propagations per cycle (the paper's Gamma: a cycle's upper end).")
flags.DEFINE_integer("map_sets", 2, "Map sets written per cycle end (1 or 2).")
flags.DEFINE_integer("d_epochs", 20, "D epochs per round (the paper's default maximum).")
flags.DEFINE_integer("fake_sets", 1, "Buffer sets D reads per epoch.")

GFLOP = 1e9
# name: H hold-out images, M training images, eval/map batch b, generator GFLOP per eval image,
# per training crop, D GFLOP per example (input 224, 3K channels), seconds per map PNG and per D
# input example on one host core, generator checkpoint write (weights + momentum slots).
SETTINGS = {
    "VOC Xception-65": dict(H=435, M=10582, b=4, g_eval=108.4, g_crop=108.4, d=1.58,
                            png=0.003, d_data=0.010, ckpt=0.5),
    "Cityscapes MobileNetV2": dict(H=150, M=2975, b=1, g_eval=42.8, g_crop=5.53, d=1.54,
                                   png=0.030, d_data=0.040, ckpt=0.05),
    "Stanford Xception-65 (321)": dict(H=52, M=400, b=4, g_eval=43.7, g_crop=43.7, d=1.30,
                                       png=0.001, d_data=0.005, ckpt=0.5),
}
GENERATOR_BATCH, D_BATCH, BN_BATCHES = 5, 16, 100


def cycle(s, n, flops_per_s):
    """{part: seconds} of one cycle of setting `s` on `n` devices."""
    fwd = s["g_eval"] * GFLOP / flops_per_s
    step = 3 * GENERATOR_BATCH * s["g_crop"] * GFLOP / flops_per_s
    d_fwd = s["d"] * GFLOP / flops_per_s
    batches = math.ceil(s["H"] / s["b"])
    prop = step / n + math.ceil(batches / n) * s["b"] * fwd + s["ckpt"]
    map_batches = math.ceil(s["M"] / s["b"])
    maps = FLAGS.map_sets * (math.ceil(map_batches / n) * s["b"] * fwd + s["M"] * s["png"])
    examples = (1 + FLAGS.fake_sets) * s["M"]
    bn_examples = min(BN_BATCHES * D_BATCH, examples)
    epoch = (max(examples * s["d_data"] / FLAGS.host_cores, examples * 3 * d_fwd / n)
             + (bn_examples + 2 * s["H"]) * d_fwd / n)
    parts = {"propagations": FLAGS.gamma * prop, "map_sets": maps,
             "d_round": FLAGS.d_epochs * epoch}
    parts["cycle"] = sum(parts.values())
    return parts


def main(argv):
    del argv
    flops_per_s = FLAGS.tflops * 1e12
    print(f"assumed {FLAGS.tflops:g} TFLOP/s per device, {FLAGS.host_cores} host cores, "
          f"gamma {FLAGS.gamma}, {FLAGS.map_sets} map sets, {FLAGS.d_epochs} D epochs")
    print("| setting | N | propagations | map sets | D round | cycle | speed-up |")
    print("|---|---|---|---|---|---|---|")
    for name, s in SETTINGS.items():
        base = None
        for n in (int(v) for v in FLAGS.devices):
            parts = cycle(s, n, flops_per_s)
            base = base or parts["cycle"]
            row = " | ".join(f"{parts[k] / 60:.1f} min" for k in
                             ("propagations", "map_sets", "d_round", "cycle"))
            print(f"| {name} | {n} | {row} | {base / parts['cycle']:.2f}x |")


def run():
    """The console script's entry point (setup.py)."""
    app.run(main)


if __name__ == "__main__":
    run()
