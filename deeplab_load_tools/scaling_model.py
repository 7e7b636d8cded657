"""docs/SCALING.md's cost model: predicted LoAd cycle times on N devices.

    python -m deeplab_load_tools.scaling_model                  # the table of docs/SCALING.md
    python -m deeplab_load_tools.scaling_model --tflops=30 --devices=1,4,8
    python -m deeplab_load_tools.scaling_model --measured=benchmark.json --devices=2,8

Without --measured every input is an assumption or a FLOP count (TF profiler, this code's graphs)
written below; nothing is measured by this script. With --measured the costs are the one-replica
phases of the benchmark's load_cycle cases (`deeplab_load_tools.benchmark --cases=load_cycle_demo
--replicas=1,2`), and the prediction for N replicas is set beside the benchmark's measured
N-replica run where it has one. See docs/SCALING.md for the formulas' terms.
"""
import json
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
flags.DEFINE_string("measured", None, "A benchmark JSON with load_cycle rows: predict from its "
                    "one-replica phases instead of the paper settings' assumptions.")

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


def batch_sizes(images, batch):
    """Image counts of the batches that `images` images cut into at `batch`."""
    return [min(batch, images - start) for start in range(0, images, batch)]


def replicated_images(images, batch, replicas, shared):
    """Images' worth of forward work of an evaluation over `replicas` replicas (`replicated.py`:
    replica r runs batch r of each group of R; a replica without a batch runs one dummy image).

    shared=True: the replicas share one device (logical CPU devices): their work adds up.
    shared=False: separate devices: a group takes as long as its largest batch."""
    sizes = batch_sizes(images, batch)
    total = 0
    for start in range(0, len(sizes), replicas):
        group = sizes[start:start + replicas]
        group += [1] * (replicas - len(group))
        total += sum(group) if shared else max(group)
    return total


def predict_phases(row, replicas, shared):
    """{phase: seconds} of a one-replica benchmark load_cycle row predicted for `replicas`.

    Generator and D steps divide by the replicas (unless shared); hold-out and map-set forward
    passes follow `replicated_images` at the one-replica cost per image; the map set's host part
    (PNG encoding and writing: its time beyond the forward passes) and checkpoint writes do not
    divide. No collective cost is modelled."""
    phases, sizes = row["phases"], row["sizes"]
    divide = 1 if shared else replicas
    per_image = phases["holdout_eval"]["median_s"] / sizes["holdout"]
    train = sizes["train"]
    map_host = max(0.0, phases["map_set_write"]["median_s"] - train * per_image)
    return {
        "generator_step": phases["generator_step"]["median_s"] / divide,
        "holdout_eval": per_image * replicated_images(sizes["holdout"], sizes["eval_batch"],
                                                      replicas, shared),
        "checkpoint_write": phases["checkpoint_write"]["median_s"],
        "map_set_write": map_host + per_image * replicated_images(train, sizes["map_batch"],
                                                                  replicas, shared),
        "d_epoch": phases["d_epoch"]["median_s"] / divide,
    }


def compose_cycle(phases, cycle):
    """Seconds of one cycle: gamma x propagation + map sets + D epochs (the benchmark composes its
    load_cycle rows with it too)."""
    return (cycle["gamma"] * (phases["generator_step"] + phases["holdout_eval"]
                              + phases["checkpoint_write"])
            + cycle["map_sets"] * phases["map_set_write"] + cycle["d_epochs"] * phases["d_epoch"])


def measured_tables(report, devices):
    """Markdown lines: per load_cycle case and dtype, the measured one-replica phases, the
    prediction for each N (shared CPU and separate devices) and the measured N-replica run."""
    lines = []
    phase_names = ("generator_step", "holdout_eval", "checkpoint_write", "map_set_write",
                   "d_epoch")
    for name, rows in report["results"].items():
        if not name.startswith("load_cycle_"):
            continue
        for dtype in ("float32", "bfloat16"):
            base = rows.get(dtype)
            if not base or "phases" not in base:
                continue
            columns = {"measured x1": {p: base["phases"][p]["median_s"] for p in phase_names}}
            for n in devices:
                if n == 1:
                    continue
                columns[f"predicted x{n}, shared CPU"] = predict_phases(base, n, shared=True)
                measured = rows.get(f"{dtype} x{n}")
                if measured and "phases" in measured:
                    columns[f"measured x{n}"] = {p: measured["phases"][p]["median_s"]
                                                for p in phase_names}
                columns[f"predicted x{n} devices"] = predict_phases(base, n, shared=False)
            lines += [f"\n{name} [{dtype}] (seconds; cycle = {base['cycle']['gamma']} x "
                      f"propagation + {base['cycle']['map_sets']} map sets + "
                      f"{base['cycle']['d_epochs']} D epochs)",
                      "| phase | " + " | ".join(columns) + " |",
                      "|---|" + "---:|" * len(columns)]
            for phase in phase_names:
                lines.append(f"| {phase} | " + " | ".join(f"{c[phase]:.3f}"
                                                          for c in columns.values()) + " |")
            lines.append("| cycle | " + " | ".join(
                f"{compose_cycle(c, base['cycle']):.1f}" for c in columns.values()) + " |")
    return lines


def main(argv):
    del argv
    if FLAGS.measured:
        with open(FLAGS.measured, encoding="utf-8") as f:
            report = json.load(f)
        lines = measured_tables(report, [int(v) for v in FLAGS.devices])
        if not lines:
            raise app.UsageError(f"--measured={FLAGS.measured}: no load_cycle rows with phases")
        print(f"measured on {report.get('device')} ({report.get('cpus')} CPUs); predictions "
              "from its one-replica phases")
        print("\n".join(lines))
        return
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
