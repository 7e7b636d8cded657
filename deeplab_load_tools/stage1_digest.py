"""Digest of a tiny stage 1's weights: do float32 results depend on the CPU's kernels or load?

    python -m deeplab_load_tools.stage1_digest                  # one tiny stage 1 here: digest and wall time
    python -m deeplab_load_tools.stage1_digest --isa_table      # the same under each oneDNN setting below

A demo-data stage 1 (the demo profile's MobileNetV2 OS8 model and stage-1 settings: 12 epochs
of 16 images of 65x81 at batch 8, 24 steps) runs in a fresh process from a seeded start; the output is one JSON line: the sha256 of every weight's
bytes (`digest`), the stage-1 losses, and the wall time of the stage-1 steps. Equal digests mean
bit-identical weights. `--isa_table` runs it once per setting, each in its own process:

    default                     oneDNN picks its kernels for this CPU
    ONEDNN_MAX_CPU_ISA=AVX2     oneDNN limited to AVX2 kernels (Zen 4, Zen 5 and Intel all have it)
    ONEDNN_MAX_CPU_ISA=AVX512_CORE
    TF_ENABLE_ONEDNN_OPTS=0     TensorFlow's own kernels, no oneDNN
    op_determinism              tf.config.experimental.enable_op_determinism()

and prints a markdown table. Used by tests/test_reproducibility.py (the same digest with a
CPU-heavy process beside the run).
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time

# The folder holding the deeplab_load package: the child process runs `python -m` from it.
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SETTINGS = (("default", {}), ("ONEDNN_MAX_CPU_ISA=AVX2", {"ONEDNN_MAX_CPU_ISA": "AVX2"}),
            ("ONEDNN_MAX_CPU_ISA=AVX512_CORE", {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}),
            ("TF_ENABLE_ONEDNN_OPTS=0", {"TF_ENABLE_ONEDNN_OPTS": "0"}),
            ("op_determinism", {"DEEPLAB_LOAD_OP_DETERMINISM": "1"}))


def run_once(work_dir):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    if os.environ.get("DEEPLAB_LOAD_OP_DETERMINISM") == "1":
        tf.config.experimental.enable_op_determinism()
    from deeplab_load.training.config import TrainConfig
    from deeplab_load.training.run import open_job, run_stage1_if_needed

    config, _ = TrainConfig.from_flags(
        dataset="demo", dataset_dir=os.path.join(work_dir, "demo"),
        run_dir=os.path.join(work_dir, "run"), demo_num_train=16, demo_num_val=4,
        demo_image_size=(65, 81), seed=3).with_demo_profile(
            given=("demo_num_train", "demo_num_val", "demo_image_size"))
    job = open_job(config)
    start = time.monotonic()
    run_stage1_if_needed(job)
    seconds = time.monotonic() - start
    digest = hashlib.sha256()
    for weight in job.model.weights:
        digest.update(weight.path.encode())
        digest.update(weight.numpy().tobytes())
    with open(os.path.join(job.local_dir, "stage1_state.json"), encoding="utf-8") as f:
        loss = json.load(f).get("loss")
    return {"digest": digest.hexdigest(), "final_loss": loss, "stage1_seconds": round(seconds, 1)}


def measure(env_extra):
    """Runs this tool in a fresh process with `env_extra`; returns its JSON result."""
    with tempfile.TemporaryDirectory() as work_dir:
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO, **env_extra)
        proc = subprocess.run([sys.executable, "-m", "deeplab_load_tools.stage1_digest",
                               "--work_dir", work_dir], env=env, capture_output=True, text=True,
                              timeout=1800, cwd=REPO)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-3000:])
        return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work_dir", help="where the demo data and the run go (default: a "
                        "temporary folder, removed afterwards)")
    parser.add_argument("--isa_table", action="store_true")
    args = parser.parse_args()
    if args.isa_table:
        print("| setting | digest (first 16) | final loss | stage-1 seconds |")
        print("|---|---|---|---|")
        for name, env in SETTINGS:
            result = measure(env)
            print(f"| {name} | {result['digest'][:16]} | {result['final_loss']} | "
                  f"{result['stage1_seconds']} |", flush=True)
        return
    if args.work_dir:
        print(json.dumps(run_once(args.work_dir)))
        return
    print(json.dumps(measure({})))


def run():
    """The console script's entry point (setup.py)."""
    main()


if __name__ == "__main__":
    run()
