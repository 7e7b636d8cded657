"""Choosing the tf.distribute strategy and the chief's duties.

Batch sizes are global everywhere: a strategy with R replicas gives each replica global / R
examples, and the training steps scale their losses so gradients equal the single-device ones.
"""
import json
import os

import tensorflow as tf

STRATEGY_KINDS = ("auto", "default", "mirrored", "multi_worker")


def _tf_config():
    text = os.environ.get("TF_CONFIG", "")
    if not text:
        return {}
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON: {error}") from error


def _cluster_size(tf_config):
    return sum(len(tasks) for tasks in tf_config.get("cluster", {}).values())


def make_strategy(kind="auto"):
    """Returns a tf.distribute.Strategy.

    "auto": MultiWorkerMirroredStrategy when TF_CONFIG describes a cluster of several tasks,
    else MirroredStrategy when more than one GPU is visible, else the default strategy (one
    device: the GPU if there is one, else the CPU). The other kinds force a choice; "mirrored"
    without a GPU mirrors over the logical CPU devices when there are several.
    """
    if kind not in STRATEGY_KINDS:
        raise ValueError(f"strategy kind must be one of {STRATEGY_KINDS}, got {kind!r}")
    if kind == "auto":
        if _cluster_size(_tf_config()) > 1:
            kind = "multi_worker"
        elif len(tf.config.list_physical_devices("GPU")) > 1:
            kind = "mirrored"
        else:
            kind = "default"
    if kind == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy(_mirrored_devices())
    return tf.distribute.get_strategy()


def _mirrored_devices():
    """None (MirroredStrategy's default: every GPU) when there is a GPU, else every logical CPU
    device when the CPU is split into several (`tf.config.set_logical_device_configuration`, as
    the tests do to run 2 replicas on a CPU)."""
    if tf.config.list_logical_devices("GPU"):
        return None
    cpus = [device.name for device in tf.config.list_logical_devices("CPU")]
    return cpus if len(cpus) > 1 else None


def is_chief(strategy=None):
    """True for the task that writes checkpoints, logs and outputs.

    Under MultiWorkerMirroredStrategy that is the "chief" task, or worker 0 when the cluster has
    no chief; single-machine strategies are always chief.
    """
    resolver = getattr(strategy, "cluster_resolver", None) if strategy is not None else None
    if resolver is not None and resolver.task_type is not None:
        task_type, task_id = resolver.task_type, resolver.task_id
        cluster = resolver.cluster_spec().as_dict()
    else:
        tf_config = _tf_config()
        task = tf_config.get("task", {})
        task_type, task_id = task.get("type"), task.get("index", 0)
        cluster = tf_config.get("cluster", {})
    if task_type is None:
        return True
    if task_type == "chief":
        return True
    return task_type == "worker" and task_id == 0 and "chief" not in cluster


def worker_directory(directory, strategy=None):
    """Where this task writes checkpoints: `directory` for the chief, a per-worker scratch
    subdirectory otherwise (every MultiWorkerMirroredStrategy worker must take part in saving,
    but only the chief's copy is kept)."""
    if is_chief(strategy):
        return directory
    resolver = getattr(strategy, "cluster_resolver", None) if strategy is not None else None
    task_id = resolver.task_id if resolver is not None else _tf_config().get("task", {}).get("index", 0)
    return os.path.join(directory, f"worker_tmp_{task_id}")


def distribute_dataset(strategy, dataset):
    """Splits each global batch of `dataset` across the replicas (element-wise data sharding).

    Every worker reads the same stream and keeps its slice of each global batch, so a global batch
    is the same examples whatever the number of workers and replicas.
    """
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return strategy.experimental_distribute_dataset(dataset.with_options(options))
