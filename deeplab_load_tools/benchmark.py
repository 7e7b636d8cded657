"""Speed and memory benchmark on the current device, float32 and bfloat16 side by side.

    python -m deeplab_load_tools.benchmark                       # every default case, both dtypes (~20 min on 2 cores)
    python -m deeplab_load_tools.benchmark --cases=forward_mnv2_os16,matmul_peak --dtypes=bfloat16
    python -m deeplab_load_tools.benchmark --list_cases
    python -m deeplab_load_tools.benchmark --cases=load_cycle_demo,load_cycle_paper --replicas=1,2 \
        --baseline_libraries=/path/to/older/checkout   # LoAd's phases, before/after side by side

Every (case, dtype) runs in its own subprocess so its peak resident memory (ru_maxrss) is its
own. Times are medians over `--repeats` runs after `--warmup` runs, with min and max. The dense
float32 and bfloat16 matmul peaks are measured first in the same run; every row with a FLOP
count reports the percent of the peak of its own dtype (forward rows: the profiler's count of
the inference graph; training rows: 3x the forward count of the images of a step, an estimate,
marked "~"). No figure from another run or machine is used: speed ratios are only printed
between rows of this run (bfloat16 vs float32 of the same case).

The load_cycle cases time every phase of one LoAd cycle apart (generator step, hold-out
evaluation, checkpoint write, map-set write, D epoch) at the demo's size and a paper-like one,
on each of `--replicas`, and print a per-phase table; `--baseline_libraries` adds rows of the
same cases run with older checkouts' libraries (before/after in one run).

bfloat16 rows: inference models from `models.precision.build_deeplab_in(config, "bfloat16")`,
training under Keras' `mixed_bfloat16` policy (what `--mixed_precision=mixed_bfloat16` does).
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

from deeplab_load_tools.scaling_model import compose_cycle

# The folder holding the deeplab_load package: child processes run `python -m` from it.
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FLAGS = flags.FLAGS
flags.DEFINE_list("cases", None, "Cases to run (default: every case but the load_run_memory "
                  "ones). See --list_cases.")
flags.DEFINE_list("dtypes", ["float32", "bfloat16"], "Compute dtypes to run every case in.")
flags.DEFINE_bool("list_cases", False, "Print the case names and exit.")
flags.DEFINE_integer("warmup", 1, "Untimed runs before timing.")
flags.DEFINE_integer("repeats", 5, "Timed runs (median, min, max reported).")
flags.DEFINE_integer("image_size", 513, "Forward-pass and training crop size (square).")
flags.DEFINE_integer("batch_size", 0, "Also time forward passes at this batch (0: batch 1 only).")
flags.DEFINE_bool("jit_compile", False, "XLA-compile the timed forward functions (slower for "
                  "conv nets on CPU).")
flags.DEFINE_string("output", "benchmark.json", "Where the JSON results go.")
flags.DEFINE_string("run_case", None, "Internal: run one case in this process and print its JSON.")
flags.DEFINE_string("run_dtype", "float32", "Internal: the dtype of --run_case.")
flags.DEFINE_integer("timeout", 900, "Seconds one case may take.")
flags.DEFINE_list("replicas", ["1"], "Replica counts the load_cycle cases run on (several: "
                  "MirroredStrategy over the GPUs, or over that many logical CPU devices, which "
                  "share the same cores: a correctness layout, not a speed-up, on a CPU).")
flags.DEFINE_list("baseline_libraries", [], "Checkouts (folders holding deeplab_load/) whose "
                  "library every case also runs with, right after the current one, on one "
                  "replica: before/after rows of one run, named `<dtype> @<folder name>` (e.g. "
                  "`git worktree add --detach ../before <commit>`).")
flags.DEFINE_integer("run_replicas", 1, "Internal: the replicas of --run_case.")

# Benchmarked models: (zoo entry whose architecture is built, output stride). OS 8 scales the
# entry's atrous rates as the zoo does (`zoo.zoo_config`): Xception-65 6,12,18 -> 12,24,36.
MODELS = {
    "xception65_os16": ("xception65_coco_voc_trainaug", 16),
    "xception65_os8": ("xception65_coco_voc_trainaug", 8),
    "mnv2_os16": ("mobilenetv2_coco_voc_trainaug", 16),
    "mnv2_os8": ("mobilenetv2_coco_voc_trainaug", 8),
}
TRACE_CROP = 321     # the first Xception-65 stage-1 step (batch 1) is timed at this crop


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


def timing(fn, images_per_call=1, repeats=None):
    median, low, high = time_calls(fn, FLAGS.warmup, repeats or FLAGS.repeats)
    return {"median_s": median, "min_s": low, "max_s": high,
            "images_per_s": images_per_call / median}


def training_policy(dtype):
    """Keras' global policy for training in `dtype` (as --mixed_precision sets it)."""
    import keras
    keras.mixed_precision.set_global_policy({"float32": "float32",
                                             "bfloat16": "mixed_bfloat16"}[dtype])


def measure_matmul_peaks(dtype=None):
    """Dense 2048^3 matmul GFLOP/s in float32 and in bfloat16 (the device's practical peaks)."""
    import tensorflow as tf
    n = 2048
    result = {}
    for name, tf_dtype in (("float32", tf.float32), ("bfloat16", tf.bfloat16)):
        a = tf.cast(tf.random.stateless_normal([n, n], seed=[1, 2]), tf_dtype)
        b = tf.cast(tf.random.stateless_normal([n, n], seed=[3, 4]), tf_dtype)
        matmul = tf.function(lambda a=a, b=b: tf.reduce_sum(tf.cast(tf.matmul(a, b), tf.float32)),
                             jit_compile=FLAGS.jit_compile)
        timed = timing(lambda: matmul().numpy(), repeats=max(FLAGS.repeats, 5))
        timed["gflops"] = 2 * n ** 3 / timed["median_s"] / 1e9
        result[name] = timed
    result["median_s"] = result["float32"]["median_s"]
    result["min_s"], result["max_s"] = result["float32"]["min_s"], result["float32"]["max_s"]
    result["images_per_s"] = 0.0
    return result


def model_flops(model, shape):
    """Float operations of one inference call of `model` on a float32 input of `shape`
    (TF profiler on the frozen graph)."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import \
        convert_variables_to_constants_v2
    fn = tf.function(lambda x: model(x, training=False))
    frozen = convert_variables_to_constants_v2(
        fn.get_concrete_function(tf.TensorSpec(shape, tf.float32)))
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    return tf.compat.v1.profiler.profile(graph=frozen.graph, options=options).total_float_ops


def config_of(key, num_classes=21):
    """The DeepLabConfig of benchmark model `key` (`MODELS`) from the zoo table."""
    from deeplab_load.checkpoints.zoo import zoo_config
    name, output_stride = MODELS[key]
    return zoo_config(name, num_classes, output_stride)


def inference_model(key, dtype, num_classes=21):
    from deeplab_load.models.precision import build_deeplab_in
    return build_deeplab_in(config_of(key, num_classes), dtype)


def forward_case(key, dtype, saved_model=False):
    """Forward pass at image_size^2, batch 1 (and --batch_size): latency, FLOPs per image."""
    import numpy as np
    import tensorflow as tf
    model = inference_model(key, dtype)
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
    result = {"batch1": timing(run(1))}
    if FLAGS.batch_size > 1:
        result[f"batch{FLAGS.batch_size}"] = timing(run(FLAGS.batch_size), FLAGS.batch_size)
    result["gflop"] = model_flops(model, [1, size, size, 3]) / 1e9
    return result


def _demo(num_train, num_val, size):
    """The demo data set generated at `size` (an int: square; or (H, W)), cached in /tmp."""
    from deeplab_load.data import get_dataset
    height, width = (size, size) if isinstance(size, int) else size
    root = os.path.join(tempfile.gettempdir(),
                        f"bench_demo_{num_train}_{num_val}_{height}x{width}")
    return get_dataset("demo", root, num_train=num_train, num_val=num_val,
                       image_size=(height, width), seed=0)


def _trainers(key, num_classes, dtype, discriminator_size=224):
    """(model, stage-1, generator and discriminator trainers) under `dtype`'s training policy."""
    from deeplab_load.models.deeplab import build_deeplab
    from deeplab_load.models.discriminator import build_discriminator
    from deeplab_load.training import steps
    from deeplab_load.training.strategy import make_strategy
    training_policy(dtype)
    strategy = make_strategy()
    with strategy.scope():
        model = build_deeplab(config_of(key, num_classes))
        discriminator = build_discriminator(num_classes, input_size=discriminator_size)
        stage1 = steps.Stage1Trainer(model, steps.stage1_optimizer(), strategy, num_classes)
        generator = steps.GeneratorTrainer(model, discriminator, steps.generator_optimizer(),
                                           strategy, num_classes)
        disc = steps.DiscriminatorTrainer(discriminator, steps.discriminator_optimizer(),
                                          strategy, num_classes)
    return model, stage1, generator, disc


def _random_batch(batch, size, num_classes):
    import tensorflow as tf
    pixels = tf.random.stateless_uniform([batch, size, size, 3], [0, 1], maxval=255.0)
    labels = tf.random.stateless_uniform([batch, size, size], [0, 2], maxval=num_classes,
                                         dtype=tf.int32)
    return pixels, labels


def train_step_case(kind, dtype, key="mnv2_os16", num_classes=21):
    """Images/s of one training step at the paper's batch sizes (stage 1: 7, generator: 5 at
    the crop size; discriminator: 16 at 224x224x3K)."""
    import tensorflow as tf
    model, stage1, generator, disc = _trainers(key, num_classes, dtype)
    batch = {"stage1": 7, "generator": 5, "discriminator": 16}[kind]
    size = 224 if kind == "discriminator" else FLAGS.image_size
    pixels, labels = _random_batch(batch, size, num_classes)
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
    trained = disc.discriminator if kind == "discriminator" else model
    shape = [1, size, size, trained.input_shape[-1]]
    result["gflop"] = 3 * batch * model_flops(trained, shape) / 1e9
    result["flop_estimated"] = True
    result["batch_size"], result["input_size"] = batch, size
    result["traces"] = {"stage1": stage1, "generator": generator,
                        "discriminator": disc}[kind].trace_count
    return result


def trace_case(dtype, key="xception65_os16", num_classes=21):
    """The first Xception-65 stage-1 step (batch 1, TRACE_CROP^2): its wall time, the steady
    step's, and their difference (tracing + graph optimisation + first-run allocations)."""
    started = time.perf_counter()
    _, stage1, _, _ = _trainers(key, num_classes, dtype)
    build_s = time.perf_counter() - started
    pixels, labels = _random_batch(1, TRACE_CROP, num_classes)
    started = time.perf_counter()
    stage1.step(pixels, labels).numpy()
    first_s = time.perf_counter() - started
    result = timing(lambda: stage1.step(pixels, labels).numpy(), 1, repeats=3)
    result.update(first_step_s=first_s, trace_s=first_s - result["median_s"], build_s=build_s,
                  traces=stage1.trace_count, input_size=TRACE_CROP)
    return result


def propagation_case(dtype, key="mnv2_os16"):
    """One LoAd propagation (the hooks' adversarial step + hold-out mIoU) against the two parts
    timed separately; the hold-out set is 8 images of image_size^2 kept in memory."""
    from deeplab_load.data import pipeline
    from deeplab_load.training.holdout import HoldoutEvaluator
    from deeplab_load.training.config import TrainConfig
    from deeplab_load.training.load_hooks import HookData, LoAdTrainingHooks
    size = FLAGS.image_size
    ds = _demo(10, 27, size)
    model, _, generator, disc = _trainers(key, ds.info.num_classes, dtype)
    holdout = HoldoutEvaluator(model, ds, ds.examples("val")[:8], 4, (size, size))
    config = TrainConfig.from_flags(adv_batch_size=5, seed=0)   # the paper's batch, unscaled
    data = HookData(train_split="train", crop_size=(size, size), eval_crop_size=(size, size))
    hooks = LoAdTrainingHooks(generator, disc, None, None, holdout, ds, ds.examples("train"),
                              config, data, tempfile.mkdtemp(prefix="bench_run_"))
    counter = iter(range(1, 10 ** 6))

    def propagation():
        hooks.adversarial_step(next(counter))
        hooks.evaluate()
    batch = next(iter(generator.distribute(pipeline.train_dataset(ds, "train", 5, size, 0))))
    parts = {"generator_step": timing(lambda: generator.step(*batch).numpy(), 5, repeats=3),
             "holdout_eval": timing(holdout.mean_iou, 8, repeats=3)}
    result = timing(propagation)
    separate = parts["generator_step"]["median_s"] + parts["holdout_eval"]["median_s"]
    result.update(parts, separate_sum_s=separate, ratio_to_separate=result["median_s"] / separate,
                  generator_traces=generator.trace_count)
    result["gflop"] = (3 * 5 + 8) * model_flops(model, [1, size, size, 3]) / 1e9
    result["flop_estimated"] = True
    return result


def map_generation_case(dtype, key="mnv2_os16", images=16):
    """Label-map set generation (batched inference + PNG writes), images of image_size^2."""
    from deeplab_load.training.map_sets import write_label_map_set
    size = FLAGS.image_size
    ds = _demo(images, 4, size)
    model = inference_model(key, dtype, ds.info.num_classes)
    refs = ds.examples("train")
    out = tempfile.mkdtemp(prefix="bench_maps_")
    result = timing(lambda: write_label_map_set(model, ds, refs, out, 4, (size, size)), len(refs),
                    repeats=3)
    result["gflop"] = len(refs) * model_flops(model, [1, size, size, 3]) / 1e9
    return result


def overlap_case(dtype, key="mnv2_os16", images=16, batch=4):
    """overlap.py's background threads on and off, interleaved in one process: a map-set write
    (PNGs written behind the next batch) and a hold-out evaluation (next batch padded ahead) of
    `images` images of image_size^2 at `batch`. The timed row is the map set with overlap."""
    from deeplab_load.training.holdout import HoldoutEvaluator
    from deeplab_load.training.map_sets import write_label_map_set
    size = FLAGS.image_size
    ds = _demo(images, images, size)
    model = inference_model(key, dtype, ds.info.num_classes)
    refs = ds.examples("train")
    out = tempfile.mkdtemp(prefix="bench_overlap_")
    runs = {}
    for overlap in (True, False):
        holdout = HoldoutEvaluator(model, ds, ds.examples("val"), batch, (size, size),
                                   overlap=overlap)
        runs[f"map_set_overlap_{overlap}"] = lambda o=overlap: write_label_map_set(
            model, ds, refs, out, batch, (size, size), overlap=o)
        runs[f"holdout_overlap_{overlap}"] = holdout.confusion_matrix
    seconds = {name: [] for name in runs}
    for _ in range(FLAGS.warmup):
        for fn in runs.values():
            fn()
    for _ in range(FLAGS.repeats):
        for name, fn in runs.items():
            started = time.perf_counter()
            fn()
            seconds[name].append(time.perf_counter() - started)
    parts = {name: {"median_s": statistics.median(t), "min_s": min(t), "max_s": max(t)}
             for name, t in seconds.items()}
    result = dict(parts["map_set_overlap_True"], images_per_s=images / parts[
        "map_set_overlap_True"]["median_s"], overlap=parts)
    for what in ("map_set", "holdout"):
        result[f"{what}_inline_over_overlap"] = (parts[f"{what}_overlap_False"]["median_s"]
                                                 / parts[f"{what}_overlap_True"]["median_s"])
    return result


def load_run_memory_case(num_train, dtype):
    """Peak memory of a short demo LoAd run (no stage 1) with `num_train` training images,
    run as `python -m deeplab_load.train` in a child process."""
    run_dir = tempfile.mkdtemp(prefix=f"bench_load_{num_train}_")
    data_dir = os.path.join(tempfile.gettempdir(), f"bench_demo_load_{num_train}")
    cmd = [sys.executable, "-m", "deeplab_load.train", f"--run_dir={run_dir}",
           f"--dataset_dir={data_dir}", f"--demo_num_train={num_train}", "--demo_num_val=20",
           "--stage1=off", "--gamma_max=2", "--psi_max=1", "--max_propagations=4",
           "--disc_max_epochs=1", "--noexport",
           "--mixed_precision=" + {"float32": "float32", "bfloat16": "mixed_bfloat16"}[dtype]]
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

# One LoAd cycle's phases at two sizes (`load_cycle_case`). demo: the demo's model, image size
# and LoAd settings (DEMO_PROFILE); paper: a paper-like size, MobileNetV2 OS16 + ASPP + decoder
# (the VOC zoo entry) on 513x513 images with the paper's generator batch 5 and D input 224.
# holdout: hold-out images per evaluation; train: training images of the map set and of D's
# epoch (one real + one fake per image); gamma, map_sets, d_epochs: the cycle composed from them.
CYCLES = {
    "demo": dict(model=None, image=(97, 129), holdout=36, train=32, adv_batch=8, eval_batch=8,
                 map_batch=8, disc_batch=16, disc_input=96, disc_bn_batches=16, gamma=8,
                 map_sets=2, d_epochs=20),
    "paper": dict(model="mnv2_os16", image=(513, 513), holdout=24, train=16, adv_batch=5,
                  eval_batch=4, map_batch=4, disc_batch=16, disc_input=224, disc_bn_batches=2,
                  gamma=50, map_sets=2, d_epochs=20),
}
CYCLE_PHASES = ("generator_step", "holdout_eval", "checkpoint_write", "map_set_write",
                "d_epoch")


def _cycle_strategy(replicas):
    """The default strategy, or `make_strategy("mirrored")` (every GPU, else the logical CPU
    devices `split_cpu` made), which must have `replicas` replicas."""
    import tensorflow as tf
    if replicas == 1:
        return tf.distribute.get_strategy()     # an older library's code path too
    from deeplab_load.training.strategy import make_strategy
    strategy = make_strategy("mirrored")
    if strategy.num_replicas_in_sync != replicas:
        raise RuntimeError(f"{replicas} replicas asked, the mirrored strategy has "
                           f"{strategy.num_replicas_in_sync} (set CUDA_VISIBLE_DEVICES)")
    return strategy


def load_cycle_case(setting, dtype):
    """Every phase of one LoAd cycle timed apart (medians of --repeats after --warmup), on
    random weights, at `CYCLES[setting]`'s sizes, on --run_replicas replicas.

    bfloat16: the generator and D train under `mixed_bfloat16` and the hold-out evaluations and
    map sets run in bfloat16 (what `--mixed_precision=mixed_bfloat16` does). Phases: one
    generator step, one hold-out evaluation, one generator checkpoint write (after every
    propagation), one map-set write, one D epoch (`fit_discriminator(max_epochs=1)`: training
    steps, BatchNorm recomputation, hold-out accuracy). `cycle_s` composes them:
    gamma x (step + hold-out + checkpoint) + map_sets x map set + d_epochs x D epoch.
    Only library calls that the single-device code had before issue 19 are used with one replica,
    so `--baseline_libraries` can time an older checkout's library with this same case."""
    import tensorflow as tf
    from deeplab_load.checkpoints.store import CheckpointStore
    from deeplab_load.data import pipeline
    from deeplab_load.data.batches import Batches
    from deeplab_load.models.deeplab import DeepLabConfig, build_deeplab
    from deeplab_load.models.discriminator import build_discriminator
    from deeplab_load.training import map_sets, steps
    from deeplab_load.training.holdout import HoldoutEvaluator
    s = CYCLES[setting]
    replicas = FLAGS.run_replicas
    ds = _demo(s["train"], s["holdout"], s["image"])
    classes = ds.info.num_classes
    crop = tuple(s["image"])
    training_policy(dtype)
    strategy = _cycle_strategy(replicas)
    on_replicas = {"strategy": strategy} if replicas > 1 else {}
    tf.keras.utils.set_random_seed(0)
    with strategy.scope():
        model = build_deeplab(config_of(s["model"], classes) if s["model"] else DeepLabConfig(
            backbone="mobilenet_v2", num_classes=classes, output_stride=8, atrous_rates=(),
            decoder_output_stride=None))
        discriminator = build_discriminator(classes, input_size=s["disc_input"])
        optimizer = steps.generator_optimizer(1e-4)
        generator = steps.GeneratorTrainer(model, discriminator, optimizer, strategy, classes)
        d_trainer = steps.DiscriminatorTrainer(discriminator,
                                               steps.discriminator_optimizer(1e-3, "adam"),
                                               strategy, classes)
    holdout_refs = ds.examples("val")[:s["holdout"]]
    train_refs = ds.examples("train")[:s["train"]]
    work = tempfile.mkdtemp(prefix=f"bench_cycle_{setting}_")
    phases = {}

    def time_phase(name, fn, images):
        phases[name] = timing(fn, images)
        phases[name]["images"] = images

    batches = iter(Batches(generator.distribute(pipeline.train_dataset(
        ds, "train", s["adv_batch"], crop, 0))))
    time_phase("generator_step", lambda: float(generator.step(*next(batches))), s["adv_batch"])
    holdout = HoldoutEvaluator(model, ds, holdout_refs, s["eval_batch"], crop, **on_replicas)
    time_phase("holdout_eval", holdout.confusion_matrix, len(holdout_refs))
    store = CheckpointStore(os.path.join(work, "generator"), model=model, optimizer=optimizer)
    time_phase("checkpoint_write", lambda: store.save("timed"), 1)
    set_dir = os.path.join(work, "set")
    time_phase("map_set_write", lambda: map_sets.write_label_map_set(
        model, ds, train_refs, set_dir, s["map_batch"], crop, **on_replicas), len(train_refs))

    counter = iter(range(10 ** 9))
    triples = list(holdout.examples_with_maps())
    holdout_real = map_sets.in_memory_examples(triples, crop, real=True)
    holdout_fake = map_sets.in_memory_examples(triples, crop, real=False)
    time_phase("d_epoch", lambda: steps.fit_discriminator(
        d_trainer, lambda: map_sets.real_examples(ds, train_refs, crop, next(counter)),
        [lambda: map_sets.fake_examples(ds, train_refs, set_dir, crop, next(counter))],
        holdout_real, holdout_fake, batch_size=s["disc_batch"], max_epochs=1,
        batch_norm_batches=s["disc_bn_batches"]), 2 * len(train_refs))

    import deeplab_load
    result = {"setting": setting, "replicas": replicas, "phases": phases,
              "library": os.path.dirname(os.path.dirname(os.path.abspath(deeplab_load.__file__))),
              "sizes": {k: s[k] for k in ("image", "holdout", "train", "adv_batch", "eval_batch",
                                          "map_batch", "disc_batch", "disc_input",
                                          "disc_bn_batches")},
              "cycle": {k: s[k] for k in ("gamma", "map_sets", "d_epochs")}}
    for key in ("median_s", "min_s", "max_s"):
        result[key] = compose_cycle({p: timed[key] for p, timed in phases.items()}, s)
    result["cycle_s"] = result["median_s"]
    result["images_per_s"] = 0.0
    result["per_image_s"] = {p: phases[p]["median_s"] / phases[p]["images"] for p in CYCLE_PHASES}
    return result


CASES = {
    "matmul_peak": measure_matmul_peaks,
    **{f"forward_{k}": (lambda dtype, k=k: forward_case(k, dtype)) for k in MODELS},
    **{f"{kind}_step_mnv2_os16": (lambda dtype, kind=kind: train_step_case(kind, dtype))
       for kind in ("stage1", "generator", "discriminator")},
    "stage1_step_xception65_os16": lambda dtype: train_step_case("stage1", dtype,
                                                                  "xception65_os16"),
    "first_step_trace_xception65_os16": trace_case,
    "load_propagation_mnv2_os16": propagation_case,
    "map_generation_mnv2_os16": map_generation_case,
    "savedmodel_xception65_os16": lambda dtype: forward_case("xception65_os16", dtype, True),
    "load_run_memory_50_images": lambda dtype: load_run_memory_case(50, dtype),
    "load_run_memory_500_images": lambda dtype: load_run_memory_case(500, dtype),
    **{f"load_cycle_{setting}": (lambda dtype, setting=setting: load_cycle_case(setting, dtype))
       for setting in CYCLES},
    "overlap_mnv2_os16": overlap_case,
}
REPLICATED_CASES = tuple(f"load_cycle_{setting}" for setting in CYCLES)
OPTIONAL_CASES = ("savedmodel_xception65_os16", "load_run_memory_50_images",
                  "load_run_memory_500_images", "stage1_step_xception65_os16")
TARGETS = (  # (case, minimum float32/bfloat16 time ratio), issue 10's targets
    ("forward_xception65_os16", 1.6), ("load_propagation_mnv2_os16", 1.4),
    ("forward_mnv2_os16", 1.0), ("forward_mnv2_os8", 1.0))


def split_cpu(replicas):
    """In a case's process, before TensorFlow is used: split the CPU into `replicas` logical
    devices (when there is no GPU)."""
    if replicas > 1:
        import tensorflow as tf
        if not tf.config.list_physical_devices("GPU"):
            cpu = tf.config.list_physical_devices("CPU")[0]
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration()] * replicas)


def run_one_case(name, dtype):
    split_cpu(FLAGS.run_replicas)
    result = CASES[name](dtype)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def child_command(library):
    """(command prefix, environment) of a case's process. With `library` (a checkout) this file
    runs as a script with PYTHONPATH = library, then this checkout: `deeplab_load` is imported
    from the library, this benchmark's code from here."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    if not library:
        return [sys.executable, "-m", "deeplab_load_tools.benchmark"], env
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.abspath(library), REPO] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    return [sys.executable, os.path.abspath(__file__)], env


def run_in_subprocess(name, dtype, replicas=1, library=None):
    cmd, env = child_command(library)
    cmd += [f"--run_case={name}", f"--run_dtype={dtype}", f"--warmup={FLAGS.warmup}",
            f"--repeats={FLAGS.repeats}", f"--image_size={FLAGS.image_size}",
            f"--batch_size={FLAGS.batch_size}", f"--run_replicas={replicas}",
            "--jit_compile" if FLAGS.jit_compile else "--nojit_compile"]
    started = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=FLAGS.timeout, env=env,
                              cwd=REPO)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {FLAGS.timeout} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("BENCHMARK_RESULT "):
            result = json.loads(line[len("BENCHMARK_RESULT "):])
            result["process_s"] = time.perf_counter() - started
            return result
    return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1:]}


def variants(name, replicas_asked):
    """(row key, dtype, replicas, library folder or None) of every run of case `name`: each
    dtype on the current library (and the replica counts of a replicated case), then on
    each of --baseline_libraries (one replica)."""
    if name == "matmul_peak":
        return [("both", "both", 1, None)]
    rows = []
    for dtype in FLAGS.dtypes:
        for replicas in (replicas_asked if name in REPLICATED_CASES else [1]):
            rows.append((dtype if replicas == 1 else f"{dtype} x{replicas}", dtype, replicas,
                         None))
            if replicas == 1:
                rows += [(f"{dtype} @{os.path.basename(os.path.normpath(library))}", dtype, 1,
                          library) for library in FLAGS.baseline_libraries]
    return rows


def phase_table(by_variant):
    """Markdown table: one row per LoAd phase (and the composed cycle), one column per run."""
    runs = {k: r for k, r in by_variant.items() if "phases" in r}
    if not runs:
        return "(no run finished)"
    first = next(iter(runs.values()))
    lines = ["| phase | images | " + " | ".join(runs) + " |",
             "|---|---:|" + "---:|" * len(runs)]

    def cell(t):
        return f"{t['median_s']:.3f} [{t['min_s']:.3f}-{t['max_s']:.3f}]"
    for phase in CYCLE_PHASES:
        lines.append(f"| {phase} | {first['phases'][phase]['images']} | "
                     + " | ".join(cell(r["phases"][phase]) for r in runs.values()) + " |")
    c = first["cycle"]
    lines.append(f"| cycle = {c['gamma']} x (step + hold-out + checkpoint) + {c['map_sets']} x "
                 f"map set + {c['d_epochs']} x D epoch | | "
                 + " | ".join(cell(r) for r in runs.values()) + " |")
    libraries = sorted({r["library"] for r in runs.values()})
    lines.append("library: " + ", ".join(f"{k} = {r['library']}" for k, r in runs.items())
                 if len(libraries) > 1 else f"library: {libraries[0]}")
    return "\n".join(lines)


def add_percent_of_peak(result, dtype, peaks):
    """Achieved GFLOP/s of a row as a percent of the same run's matmul peak of its dtype."""
    if "gflop" not in result or dtype not in peaks:
        return
    main = result.get("batch1", result)
    result["gflops"] = result["gflop"] / main["median_s"]
    result["percent_of_peak"] = 100 * result["gflops"] / peaks[dtype]


def headline(name, dtype, result):
    """One table row: median, min-max, images/s, peak memory, GFLOP/s and % of peak, extras."""
    label = f"{name} [{dtype}]"
    if "error" in result:
        return f"{label:<48} ERROR {result['error']}"
    if name == "matmul_peak":
        return (f"{label:<48} float32 {result['float32']['gflops']:.0f} GFLOP/s, bfloat16 "
                f"{result['bfloat16']['gflops']:.0f} GFLOP/s (2048^3 matmul)  "
                f"{result['peak_rss_mb']:6.0f} MB")
    if "phases" in result:
        return (f"{label:<48} cycle {result['median_s']:.1f} s [{result['min_s']:.1f}-"
                f"{result['max_s']:.1f}] {result['peak_rss_mb']:6.0f} MB  " + ", ".join(
                    f"{p} {t['median_s']:.3f} s" for p, t in result["phases"].items()))
    main = result.get("batch1", result)
    row = (f"{label:<48} {main['median_s'] * 1e3:8.1f} ms [{main['min_s'] * 1e3:.1f}-"
           f"{main['max_s'] * 1e3:.1f}] {main['images_per_s']:7.2f} img/s "
           f"{result['peak_rss_mb']:6.0f} MB")
    for key in result:
        if key.startswith("batch") and key[5:].isdigit() and key != "batch1":
            row += f"  {key}: {result[key]['images_per_s']:.2f} img/s"
    if "percent_of_peak" in result:
        approx = "~" if result.get("flop_estimated") else ""
        row += (f"  {approx}{result['gflops']:.0f} GFLOP/s = {approx}"
                f"{result['percent_of_peak']:.0f}% of {dtype} peak")
    if "trace_s" in result:
        row += (f"  first step {result['first_step_s']:.1f} s = trace+setup "
                f"{result['trace_s']:.1f} s + step; build {result['build_s']:.1f} s, "
                f"{result['traces']} trace(s)")
    if "ratio_to_separate" in result:
        row += (f"  = {result['ratio_to_separate']:.2f}x (generator step "
                f"{result['generator_step']['median_s'] * 1e3:.0f} ms + hold-out eval "
                f"{result['holdout_eval']['median_s'] * 1e3:.0f} ms timed apart)")
    if "overlap" in result:
        row += (f"  inline / overlap time: map set {result['map_set_inline_over_overlap']:.2f}x, "
                f"hold-out {result['holdout_inline_over_overlap']:.2f}x (> 1: overlap faster)")
    if "train_process_peak_rss_mb" in result:
        row += (f"  train process peak {result['train_process_peak_rss_mb']:.0f} MB for "
                f"{result['num_train']} training images")
    return row


def speedups(results):
    """(case, timed key, float32 / bfloat16 of the medians, of the minima) for every case run in
    both dtypes (the minima are the less load-sensitive figure on a shared machine)."""
    rows = []
    for name, by_dtype in results.items():
        if name == "matmul_peak" or not {"float32", "bfloat16"} <= set(by_dtype):
            continue
        f32, bf16 = by_dtype["float32"], by_dtype["bfloat16"]
        if "error" in f32 or "error" in bf16:
            continue
        key = "trace_s" if "trace_s" in f32 else "median_s"
        a, b = f32.get("batch1", f32), bf16.get("batch1", bf16)
        minima = a["min_s"] / b["min_s"] if key == "median_s" else float("nan")
        rows.append((name, key, a[key] / b[key], minima))
    return rows


def cpu_model():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def main(argv):
    del argv
    if FLAGS.list_cases:
        print("\n".join(CASES))
        return
    if FLAGS.run_case:
        print("BENCHMARK_RESULT " + json.dumps(run_one_case(FLAGS.run_case, FLAGS.run_dtype)))
        return
    names = FLAGS.cases or [n for n in CASES if n not in OPTIONAL_CASES]
    unknown = sorted(set(names) - set(CASES))
    if unknown:
        raise app.UsageError(f"--cases: unknown {unknown}; known: {sorted(CASES)}")
    bad_dtypes = sorted(set(FLAGS.dtypes) - {"float32", "bfloat16"})
    if bad_dtypes:
        raise app.UsageError(f"--dtypes: unknown {bad_dtypes}; use float32 and/or bfloat16")
    names = ["matmul_peak"] + [n for n in names if n != "matmul_peak"]
    try:
        replicas_asked = sorted({int(r) for r in FLAGS.replicas})
    except ValueError as error:
        raise app.UsageError(f"--replicas: {error}") from error
    if replicas_asked[0] < 1:
        raise app.UsageError("--replicas: counts must be >= 1")
    for library in FLAGS.baseline_libraries:
        if not os.path.isdir(os.path.join(library, "deeplab_load")):
            raise app.UsageError(f"--baseline_libraries: {library} holds no deeplab_load/ "
                                 "package")
    load_before = os.getloadavg()
    print(f"device: {cpu_model()}, {os.cpu_count()} CPUs, load average {load_before[0]:.2f}",
          flush=True)
    started = time.perf_counter()
    results, peaks = {}, {}
    for name in names:
        for key, dtype, replicas, library in variants(name, replicas_asked):
            result = run_in_subprocess(name, "float32" if dtype == "both" else dtype, replicas,
                                       library)
            if name == "matmul_peak" and "error" not in result:
                peaks = {k: result[k]["gflops"] for k in ("float32", "bfloat16")}
            add_percent_of_peak(result, dtype, peaks)
            results.setdefault(name, {})[key] = result
            print(headline(name, key, result), flush=True)
    total_s = time.perf_counter() - started
    load_after = os.getloadavg()
    report = {"device": cpu_model(), "cpus": os.cpu_count(), "total_s": total_s,
              "load_average_1min": {"start": load_before[0], "end": load_after[0]},
              "flags": {"dtypes": FLAGS.dtypes, "jit_compile": FLAGS.jit_compile,
                        "image_size": FLAGS.image_size, "warmup": FLAGS.warmup,
                        "repeats": FLAGS.repeats, "replicas": replicas_asked,
                        "baseline_libraries": FLAGS.baseline_libraries},
              "matmul_peak_gflops": peaks, "results": results,
              "bfloat16_speedups": {n: {"medians": r, "minima": m}
                                    for n, _, r, m in speedups(results)}}
    with open(FLAGS.output, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
    print(f"\nsummary ({cpu_model()}, {os.cpu_count()} CPUs, whole run {total_s / 60:.1f} min, "
          f"1-min load average {load_before[0]:.2f} at start, {load_after[0]:.2f} at end: other "
          f"processes on the machine slow every row)")
    for name, by_dtype in results.items():
        for dtype, res in by_dtype.items():
            print(headline(name, dtype, res))
    for name, by_variant in results.items():
        if name in REPLICATED_CASES:
            print(f"\n{name}: seconds per phase (median [min-max]), one LoAd cycle composed")
            print(phase_table(by_variant))
    rows = speedups(results)
    if rows:
        print("\nbfloat16 speed-up in this run (float32 time / bfloat16 time: medians, minima)")
        targets = dict(TARGETS)
        for name, key, ratio, minima in rows:
            target = (f"  (target >= {targets[name]:.1f}x: "
                      f"{'met' if min(ratio, minima) >= targets[name] else 'not met'} "
                      f"by medians and minima)"
                      if name in targets else "")
            print(f"  {name:<40} {key:<9} {ratio:5.2f}x  {minima:5.2f}x{target}")
    print(f"wrote {FLAGS.output}")


def run():
    """The console script's entry point (setup.py)."""
    app.run(main)


if __name__ == "__main__":
    run()
