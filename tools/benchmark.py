"""Speed and memory benchmark on the current device; prints a table and writes JSON.

    python tools/benchmark.py                       # every case, results in benchmark.json
    python tools/benchmark.py --cases=forward_mnv2_os16,matmul_peak --repeats=5
    python tools/benchmark.py --mixed_precision=mixed_bfloat16 --jit_compile

Every case runs in its own subprocess so its peak resident memory (ru_maxrss) is its own. Times
are medians over `--repeats` runs after `--warmup` runs, with min and max; throughput is
images/s. Forward cases also report the model's FLOPs per image (TF profiler on the frozen
graph) and the achieved fraction of the dense float32 matmul peak measured in the same run.
"""
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

FLAGS = flags.FLAGS
flags.DEFINE_list("cases", None, "Cases to run (default: all). See --list_cases.")
flags.DEFINE_bool("list_cases", False, "Print the case names and exit.")
flags.DEFINE_integer("warmup", 2, "Untimed runs before timing.")
flags.DEFINE_integer("repeats", 5, "Timed runs (median, min, max reported).")
flags.DEFINE_integer("image_size", 513, "Forward-pass input size (square).")
flags.DEFINE_integer("batch_size", 4, "Batch size of the throughput measurements.")
flags.DEFINE_bool("jit_compile", False, "XLA-compile the timed functions (slower for conv nets on CPU).")
flags.DEFINE_enum("mixed_precision", "float32", ["float32", "mixed_bfloat16", "mixed_float16"],
                  "Keras dtype policy for the models.")
flags.DEFINE_string("output", "benchmark.json", "Where the JSON results go.")
flags.DEFINE_string("run_case", None, "Internal: run one case in this process and print its JSON.")
flags.DEFINE_integer("timeout", 900, "Seconds one case may take.")

MODEL_CONFIGS = {
    "xception65_os16": dict(backbone="xception_65", output_stride=16, atrous_rates=(6, 12, 18),
                            decoder_output_stride=4),
    "xception65_os8": dict(backbone="xception_65", output_stride=8, atrous_rates=(12, 24, 36),
                           decoder_output_stride=4),
    "mnv2_os16": dict(backbone="mobilenet_v2", output_stride=16, atrous_rates=(),
                      decoder_output_stride=None),
    "mnv2_os8": dict(backbone="mobilenet_v2", output_stride=8, atrous_rates=(),
                     decoder_output_stride=None),
}


def time_calls(fn, warmup, repeats):
    """Runs fn() warmup + repeats times; returns (median, min, max) seconds of the timed runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times), max(times)


def timing(fn, images_per_call=1):
    median, low, high = time_calls(fn, FLAGS.warmup, FLAGS.repeats)
    return {"median_s": median, "min_s": low, "max_s": high,
            "images_per_s": images_per_call / median}


def set_policy():
    import keras
    keras.mixed_precision.set_global_policy(FLAGS.mixed_precision)


def measure_matmul_peak():
    """Dense float32 matmul GFLOP/s (the device's practical peak)."""
    import tensorflow as tf
    n = 2048
    a = tf.random.stateless_normal([n, n], seed=[1, 2])
    b = tf.random.stateless_normal([n, n], seed=[3, 4])
    matmul = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)), jit_compile=FLAGS.jit_compile)
    result = timing(lambda: matmul().numpy())
    result["gflops"] = 2 * n ** 3 / result["median_s"] / 1e9
    return result


def model_flops(model, size):
    """Float operations per image of the model's inference graph (TF profiler)."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import \
        convert_variables_to_constants_v2
    fn = tf.function(lambda x: model(x, training=False))
    frozen = convert_variables_to_constants_v2(
        fn.get_concrete_function(tf.TensorSpec([1, size, size, 3], tf.float32)))
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    return tf.compat.v1.profiler.profile(graph=frozen.graph, options=options).total_float_ops


def build_model(key, num_classes=21):
    from deeplab_load.models.deeplab import DeepLabConfig, build_deeplab
    return build_deeplab(DeepLabConfig(num_classes=num_classes, **MODEL_CONFIGS[key]))


def forward_case(key, saved_model=False):
    """Forward pass at image_size^2: batch 1 latency, batch-N throughput, FLOPs, % of peak."""
    import numpy as np
    import tensorflow as tf
    set_policy()
    model = build_model(key)
    size = FLAGS.image_size
    if saved_model:
        from deeplab_load.serving import export_saved_model
        export_dir = os.path.join(tempfile.mkdtemp(prefix="bench_export_"), "saved_model")
        export_saved_model(model, export_dir)
        loaded = tf.saved_model.load(export_dir)
        serve = loaded.signatures["serving_default"]

        def run(batch):
            images = tf.constant(np.full([batch, size, size, 3], 128, np.uint8))
            return lambda: [v.numpy() for v in serve(images).values()]
    else:
        predict = tf.function(lambda x: tf.argmax(model(x, training=False), -1),
                              jit_compile=FLAGS.jit_compile, reduce_retracing=True)

        def run(batch):
            pixels = tf.random.stateless_uniform([batch, size, size, 3], [0, 1], maxval=255.0)
            return lambda: predict(pixels).numpy()
    result = {"batch1": timing(run(1)),
              f"batch{FLAGS.batch_size}": timing(run(FLAGS.batch_size), FLAGS.batch_size)}
    if not saved_model:
        result["gflop_per_image"] = model_flops(model, size) / 1e9
    return result


def _demo(num_train, num_val, size):
    from deeplab_load.data import get_dataset
    root = os.path.join(tempfile.gettempdir(), f"bench_demo_{num_train}_{num_val}_{size}")
    return get_dataset("demo", root, num_train=num_train, num_val=num_val,
                       image_size=(size, size), seed=0)


def _trainers(key, num_classes, discriminator_size=224):
    """(strategy, model, discriminator, stage-1, generator and discriminator trainers)."""
    from deeplab_load.models.discriminator import build_discriminator
    from deeplab_load.training import steps
    from deeplab_load.training.strategy import make_strategy
    strategy = make_strategy()
    with strategy.scope():
        model = build_model(key, num_classes)
        discriminator = build_discriminator(num_classes, input_size=discriminator_size)
        stage1 = steps.Stage1Trainer(model, steps.stage1_optimizer(), strategy, num_classes)
        generator = steps.GeneratorTrainer(model, discriminator, steps.generator_optimizer(),
                                           strategy, num_classes)
        disc = steps.DiscriminatorTrainer(discriminator, steps.discriminator_optimizer(),
                                          strategy, num_classes)
    return model, stage1, generator, disc


def train_step_case(kind, key="mnv2_os16", num_classes=21):
    """Images/s of one training step at the paper's batch sizes (stage 1: 7, generator: 5 at
    the crop size; discriminator: 16 at 224x224x3K)."""
    import tensorflow as tf
    set_policy()
    _, stage1, generator, disc = _trainers(key, num_classes)
    crop = FLAGS.image_size
    batch = {"stage1": 7, "generator": 5, "discriminator": 16}[kind]
    size = 224 if kind == "discriminator" else crop
    pixels = tf.random.stateless_uniform([batch, size, size, 3], [0, 1], maxval=255.0)
    labels = tf.random.stateless_uniform([batch, size, size], [0, 2], maxval=num_classes,
                                         dtype=tf.int32)
    if kind == "stage1":
        step = lambda: stage1.step(pixels, labels).numpy()
    elif kind == "generator":
        step = lambda: generator.step(pixels, labels).numpy()
    else:
        ignore = tf.zeros([batch, size, size], tf.bool)
        is_real = tf.cast(tf.range(batch) % 2, tf.float32)
        weight = tf.ones([batch])
        step = lambda: [t.numpy() for t in disc.step(pixels, labels, ignore, is_real, weight)]
    result = timing(step, batch)
    result["batch_size"], result["input_size"] = batch, size
    result["traces"] = {"stage1": stage1, "generator": generator,
                        "discriminator": disc}[kind].trace_count
    return result


def propagation_case(key="mnv2_os16"):
    """One LoAd propagation (the hooks' adversarial step + hold-out mIoU) against the two parts
    timed separately; the hold-out set is 8 images of 513x513 kept in memory."""
    from deeplab_load.data import pipeline
    from deeplab_load.training.holdout import HoldoutEvaluator
    from deeplab_load.training.load_hooks import LoAdTrainingHooks
    set_policy()
    size = FLAGS.image_size
    ds = _demo(10, 27, size)
    model, _, generator, disc = _trainers(key, ds.info.num_classes)
    holdout = HoldoutEvaluator(model, ds, ds.examples("val")[:8], 4, (size, size))
    options = dict(train_split="train", batch_size=5, crop_size=(size, size), seed=0,
                   random_scale=(1.0, 1.0),
                   skip_bad_examples=False)
    hooks = LoAdTrainingHooks(generator, disc, None, None, holdout, ds, ds.examples("train"),
                              options, tempfile.mkdtemp(prefix="bench_run_"))
    counter = iter(range(1, 10 ** 6))

    def propagation():
        hooks.adversarial_step(next(counter))
        hooks.evaluate()
    batch = next(iter(generator.distribute(pipeline.train_dataset(ds, "train", 5, size, 0))))
    parts = {"generator_step": timing(lambda: generator.step(*batch).numpy(), 5),
             "holdout_eval": timing(holdout.mean_iou, 8)}
    result = timing(propagation)
    separate = parts["generator_step"]["median_s"] + parts["holdout_eval"]["median_s"]
    result.update(parts, separate_sum_s=separate, ratio_to_separate=result["median_s"] / separate,
                  generator_traces=generator.trace_count)
    return result


def map_generation_case(key="mnv2_os16", images=16):
    """Label-map set generation (batched inference + PNG writes), images of 513x513."""
    from deeplab_load.training.map_sets import write_label_map_set
    set_policy()
    size = FLAGS.image_size
    ds = _demo(images, 4, size)
    model = build_model(key, ds.info.num_classes)
    refs = ds.examples("train")
    out = tempfile.mkdtemp(prefix="bench_maps_")
    return timing(lambda: write_label_map_set(model, ds, refs, out, 4, (size, size)), len(refs))


def load_run_memory_case(num_train):
    """Peak memory of a short demo LoAd run (no stage 1) with `num_train` training images,
    run as `python -m deeplab_load.train` in a child process."""
    run_dir = tempfile.mkdtemp(prefix=f"bench_load_{num_train}_")
    data_dir = os.path.join(tempfile.gettempdir(), f"bench_demo_load_{num_train}")
    cmd = [sys.executable, "-m", "deeplab_load.train", f"--run_dir={run_dir}",
           f"--dataset_dir={data_dir}", f"--demo_num_train={num_train}", "--demo_num_val=20",
           "--stage1=off", "--gamma_max=2", "--psi_max=1", "--max_propagations=4",
           "--disc_max_epochs=1", "--noexport"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise RuntimeError(proc.stderr[-2000:])
    with open(os.path.join(run_dir, "summary.json"), encoding="utf-8") as f:
        summary = json.load(f)
    return {"median_s": seconds, "min_s": seconds, "max_s": seconds,
            "images_per_s": num_train / seconds, "num_train": num_train,
            "propagations": summary["propagations"],
            "train_process_peak_rss_mb":
                resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}

CASES = {
    "matmul_peak": measure_matmul_peak,
    **{f"forward_{k}": (lambda k=k: forward_case(k)) for k in MODEL_CONFIGS},
    **{f"savedmodel_{k}": (lambda k=k: forward_case(k, saved_model=True))
       for k in ("xception65_os16", "mnv2_os16")},
    **{f"{kind}_step_mnv2_os16": (lambda kind=kind: train_step_case(kind))
       for kind in ("stage1", "generator", "discriminator")},
    "load_propagation_mnv2_os16": propagation_case,
    "map_generation_mnv2_os16": map_generation_case,
    "load_run_memory_50_images": lambda: load_run_memory_case(50),
    "load_run_memory_500_images": lambda: load_run_memory_case(500),
}


def run_one_case(name):
    result = CASES[name]()
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def run_in_subprocess(name):
    cmd = [sys.executable, os.path.abspath(__file__), f"--run_case={name}",
           f"--warmup={FLAGS.warmup}", f"--repeats={FLAGS.repeats}",
           f"--image_size={FLAGS.image_size}", f"--batch_size={FLAGS.batch_size}",
           f"--mixed_precision={FLAGS.mixed_precision}",
           "--jit_compile" if FLAGS.jit_compile else "--nojit_compile"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=FLAGS.timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {FLAGS.timeout} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("BENCHMARK_RESULT "):
            return json.loads(line[len("BENCHMARK_RESULT "):])
    return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1:]}


def headline(name, result):
    """One table row: median, min-max, images/s, peak memory, and extras."""
    if "error" in result:
        return f"{name:<28} ERROR {result['error']}"
    main = result.get("batch1", result)
    row = (f"{name:<28} {main['median_s'] * 1e3:9.1f} ms  [{main['min_s'] * 1e3:.1f}-"
           f"{main['max_s'] * 1e3:.1f}]  {main['images_per_s']:8.2f} img/s  "
           f"{result['peak_rss_mb']:7.0f} MB")
    batched = [k for k in result if k.startswith("batch") and k[5:].isdigit() and k != "batch1"]
    for k in batched:
        row += f"  {k}: {result[k]['images_per_s']:.2f} img/s"
    if "gflops" in result:
        row += f"  {result['gflops']:.0f} GFLOP/s"
    if "fraction_of_peak" in result:
        row += f"  {result['gflop_per_image']:.2f} GFLOP/img, {100 * result['fraction_of_peak']:.0f}% of peak"
    if "ratio_to_separate" in result:
        row += (f"  = {result['ratio_to_separate']:.2f}x (generator step "
                f"{result['generator_step']['median_s'] * 1e3:.0f} ms + hold-out eval "
                f"{result['holdout_eval']['median_s'] * 1e3:.0f} ms timed apart), "
                f"{result['generator_traces']} trace(s)")
    if "train_process_peak_rss_mb" in result:
        row += (f"  train process peak {result['train_process_peak_rss_mb']:.0f} MB for "
                f"{result['num_train']} training images")
    return row


def main(argv):
    del argv
    if FLAGS.list_cases:
        print("\n".join(CASES))
        return
    if FLAGS.run_case:
        print("BENCHMARK_RESULT " + json.dumps(run_one_case(FLAGS.run_case)))
        return
    names = FLAGS.cases or list(CASES)
    unknown = sorted(set(names) - set(CASES))
    if unknown:
        raise app.UsageError(f"--cases: unknown {unknown}; known: {sorted(CASES)}")
    if "matmul_peak" in names:
        names = ["matmul_peak"] + [n for n in names if n != "matmul_peak"]
    results = {}
    for name in names:
        print(f"running {name} ...", flush=True)
        results[name] = run_in_subprocess(name)
        peak = results.get("matmul_peak", {}).get("gflops")
        res = results[name]
        if peak and "gflop_per_image" in res and "batch1" in res:
            res["fraction_of_peak"] = res["gflop_per_image"] / res["batch1"]["median_s"] / peak
        print(headline(name, res), flush=True)
    report = {"flags": {"mixed_precision": FLAGS.mixed_precision, "jit_compile": FLAGS.jit_compile,
                        "image_size": FLAGS.image_size, "warmup": FLAGS.warmup,
                        "repeats": FLAGS.repeats},
              "results": results}
    with open(FLAGS.output, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
    print("\nsummary")
    for name, res in results.items():
        print(headline(name, res))
    print(f"wrote {FLAGS.output}")


if __name__ == "__main__":
    app.run(main)
