"""Choosing the tf.distribute strategy and the chief's duties.

Batch sizes are global everywhere: a strategy with R replicas gives each replica global / R
examples, and the training steps scale their losses so gradients equal the single-device ones.

Multi-worker faults (TF 2.21, measured with two workers on localhost): MultiWorkerMirroredStrategy
starts TensorFlow's coordination service (leader: the chief, else worker 0), whose heartbeats
find a worker that died or froze; every collective op on the other workers then fails with
UnavailableError naming the task ("/job:worker/replica:0/task:1"), or, when the leader is the
lost one, with a failed heartbeat / connection to it. `make_strategy(worker_timeout_s=...)` sets
that heartbeat timeout (TF's default: 10 s); `collective_timeout_s` adds
CommunicationOptions(timeout_seconds) for a peer that is alive but never arrives (each collective
op then holds two threads for that long: 300 collective ops with 8 s gave ~600 extra threads).
`lost_worker_error` turns such a failure into a `WorkerLostError` naming the worker and its
address; `stop_agreement` lets every worker see a SIGTERM / SIGINT sent to any one of them.
"""
import json
import os
import re
import socket

import tensorflow as tf

from deeplab_load.errors import UserError

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


def make_strategy(kind="auto", worker_timeout_s=None, collective_timeout_s=0.0):
    """Returns a tf.distribute.Strategy.

    "auto": MultiWorkerMirroredStrategy when TF_CONFIG describes a cluster of several tasks,
    else MirroredStrategy when more than one GPU is visible, else the default strategy (one
    device: the GPU if there is one, else the CPU). The other kinds force a choice; "mirrored"
    without a GPU mirrors over the logical CPU devices when there are several.
    Multi-worker only: `worker_timeout_s`, the coordination service's heartbeat timeout (None:
    TensorFlow's, 10 s); `collective_timeout_s` > 0, the timeout of every collective op.
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
        if worker_timeout_s:
            _configure_heartbeats(worker_timeout_s)
        options = tf.distribute.experimental.CommunicationOptions(
            timeout_seconds=collective_timeout_s or None)
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
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


def _configure_heartbeats(timeout_s):
    """Configures the coordination service as MultiWorkerMirroredStrategy would (TF 2.21,
    collective_all_reduce_strategy.py: "standalone", leader from `coordination_leader`, the chief
    and worker jobs), with `timeout_s` as its heartbeat timeout. The strategy keeps a
    configuration made before it is created; there is no public API for the timeout."""
    from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
    from tensorflow.python.distribute import multi_worker_util
    from tensorflow.python.eager import context

    spec = tf.distribute.cluster_resolver.TFConfigClusterResolver().cluster_spec()
    jobs = [coordination_config_pb2.CoordinatedJob(name=job, num_tasks=spec.num_tasks(job))
            for job in ("chief", "worker") if job in spec.jobs]
    context.context().configure_coordination_service(
        service_type="standalone", service_leader=multi_worker_util.coordination_leader(spec),
        heartbeat_timeout_in_ms=int(timeout_s * 1000), coordinated_jobs=jobs)


def is_multi_worker():
    """True when TF_CONFIG describes a cluster of several tasks."""
    return _cluster_size(_tf_config()) > 1


class WorkerLostError(UserError):
    """Another worker of a multi-worker run died, froze or stopped answering."""


# Errors TensorFlow raises from collective ops and the coordination service when a peer is lost.
PEER_ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
               tf.errors.AbortedError, tf.errors.CancelledError)
_TASK = re.compile(r"/job:(\w+)/(?:replica:\d+/)?task:(\d+)")


def _tasks():
    """[(job, index, address)] of the TF_CONFIG cluster, chief first, and this task's (job,
    index)."""
    tf_config = _tf_config()
    cluster = tf_config.get("cluster", {})
    tasks = [(job, index, address) for job in sorted(cluster, key=lambda j: j != "chief")
             for index, address in enumerate(cluster[job])]
    task = tf_config.get("task", {})
    return tasks, (task.get("type"), int(task.get("index", 0)))


def _unreachable(address, timeout_s=2.0):
    """True when nothing accepts a TCP connection at `address` (host:port)."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            return False
    except (OSError, ValueError):
        return True


def lost_workers(error):
    """[(job, index, address)] of the peers `error` (a PEER_ERRORS failure) points at: the tasks
    its message names, the coordination leader when a heartbeat to it failed, and peers whose
    port no longer accepts connections."""
    tasks, me = _tasks()
    others = [t for t in tasks if (t[0], t[1]) != me]
    text = str(error)
    named = {(job, int(index)) for job, index in _TASK.findall(text)}
    if "CoordinationService" in text and tasks:
        named.add(tasks[0][:2])            # the leader: the chief, else worker 0
    lost = [t for t in others if t[:2] in named]
    lost += [t for t in others if t not in lost and _unreachable(t[2])]
    return lost


def lost_worker_error(error, saved_in):
    """A WorkerLostError for a collective failure `error` of a multi-worker run: the lost
    worker(s) with address, TensorFlow's reason in brief, and how to resume (two lines)."""
    _, (job, index) = _tasks()
    lost = lost_workers(error)
    who = ", ".join(f"{j} {i} ({address})" for j, i, address in lost) or \
        "a worker (none could be named: all still accept connections)"
    reason = next((line.split("aborted by:")[-1].strip().rstrip(":.")
                   for line in str(error).splitlines()
                   if any(key in line for key in ("unhealthy", "timed out", "Failed to send RPC",
                                                  "Connection refused", "aborted by"))),
                  type(error).__name__)
    if "CoordinationService/Heartbeat" in str(error):
        reason = f"{type(error).__name__}: its heartbeat to the coordination leader failed"
    return WorkerLostError(
        f"lost {who} of the multi-worker run; {job} {index} stopped too "
        f"(TensorFlow: {reason[:200]})\n"
        f"progress is saved in {saved_in}: start every worker again with the same command to "
        f"resume the run")


def worker_gather(strategy):
    """A function `gather(values) -> float64 array [workers, len(values)]` that all-gathers a
    few floats (exact below 2**24) from every worker: a collective op, so every worker must
    call it at the same points of the run."""
    local_replicas = len(strategy.extended.worker_devices)
    replicas = strategy.num_replicas_in_sync

    @tf.function(autograph=False)
    def gather_fn(value):
        def replica_fn(v):
            # Each replica puts the values in its row of zeros; the sum is the gathered matrix
            # (exact: every sum has one non-zero term).
            context = tf.distribute.get_replica_context()
            row = tf.one_hot(context.replica_id_in_sync_group, replicas, dtype=tf.float32)
            return context.all_reduce(tf.distribute.ReduceOp.SUM, row[:, None] * v[None, :])
        return strategy.experimental_local_results(strategy.run(replica_fn, args=(value,)))[0]

    def gather(values):
        rows = gather_fn(tf.constant([float(v) for v in values], tf.float32)).numpy()
        return rows[::local_replicas].astype("float64")
    return gather


def on_every_worker(strategy, flag):
    """True when `flag` is true on every worker of a MultiWorkerMirroredStrategy (a collective
    op: every worker calls it at the same point); `flag` itself under any other strategy."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return bool(flag)
    return bool(worker_gather(strategy)([1.0 if flag else 0.0]).min() > 0)


def stop_agreement(strategy):
    """`codes(local_code) -> [code per worker]` over `worker_gather`: one int each (a signal
    number, 0 for none), for `interrupts.agree_with`."""
    gather = worker_gather(strategy)
    return lambda local_code: [int(row[0]) for row in gather([local_code])]
