"""Multi-worker resume: every worker starts from the same saved point.

Each worker keeps its own copy of the run's state (the chief in the run dir, worker i under
`run_dir/worker_tmp_<i>`) and commits it after its own steps, so a worker that dies leaves its
copy up to one commit behind the others' (e.g. killed after a generator step, before saving
it, while the survivors saved that step and went on to the next collective op). At the start
of every multi-worker run `sync_saved_progress` all-gathers a digest of each worker's saved
progress (stage-1 and LoAd controller state); when they differ, every non-chief worker replaces
its copy by the chief's (the run dir must be readable from every worker: one machine, or a
shared file system), so all of them resume from the chief's last committed point and redo the
same steps. A crash during the copy leaves a copy that still differs (the state files are
removed first and copied last), so the next start copies again.
"""
import hashlib
import json
import os
import shutil

from absl import logging

from deeplab_load.errors import UserError
from deeplab_load.training.strategy import is_chief, worker_gather

# Files and folders of a run dir that belong to one worker's process, never copied.
_OWN = ("train.lock", "tensorboard", "export")
# Written last (and removed first) when adopting the chief's copy: they say how far a copy is.
_STATE_FILES = ("stage1_state.json", "state.json")
# Controller-state fields that say how far the LoAd run got (not the wall-clock ones).
_PROGRESS_KEYS = ("phase", "cycle_end_step", "propagation", "cycle", "cycle_propagations", "psi",
                  "gamma", "omega", "discriminator_round", "pending_snapshots", "buffer_sets",
                  "emitted_through", "final_tag")


def _own(name):
    return name in _OWN or name.startswith("flags") or name.startswith("worker_tmp_")


def saved_progress(folder):
    """What a worker's copy says about the run's progress (JSON-able; None where absent or
    unreadable: an unreadable copy differs from a good one)."""
    progress = {}
    for name in _STATE_FILES:
        try:
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                state = json.load(f)
        except FileNotFoundError:
            state = None
        except (OSError, ValueError):
            state = "unreadable"
        if isinstance(state, dict) and name == "state.json":
            state = {key: state.get(key) for key in _PROGRESS_KEYS} | \
                {"events": len(state.get("history", []))}
        progress[name] = state
    return progress


def progress_digest(progress):
    """Three floats < 2**24 (exact in float32) from a sha256 of `progress`."""
    digest = hashlib.sha256(json.dumps(progress, sort_keys=True).encode()).digest()
    return [int.from_bytes(digest[i:i + 3], "big") for i in (0, 3, 6)]


def adopt_copy(source, target):
    """Makes `target`'s run files (all but `_OWN`) those of `source`: state files removed first
    and copied last."""
    for name in _STATE_FILES:
        if os.path.exists(os.path.join(target, name)):
            os.remove(os.path.join(target, name))
    wanted = {name for name in os.listdir(source) if not _own(name)}
    for name in os.listdir(target):
        if not _own(name):
            path = os.path.join(target, name)
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    for name in sorted(wanted - set(_STATE_FILES)):
        src, dst = os.path.join(source, name), os.path.join(target, name)
        shutil.copytree(src, dst) if os.path.isdir(src) else shutil.copy2(src, dst)
    for name in _STATE_FILES:
        if name in wanted:
            shutil.copy2(os.path.join(source, name), os.path.join(target, name) + ".tmp")
            os.replace(os.path.join(target, name) + ".tmp", os.path.join(target, name))


def sync_saved_progress(strategy, run_dir, local_dir):
    """All workers agree on the saved point to resume from (see the module doc); returns the
    indices of the workers whose copy differed from the chief's (empty when all agreed)."""
    gather = worker_gather(strategy)
    mine = saved_progress(local_dir)
    rows = gather(progress_digest(mine))           # also a barrier: every worker has started
    differing = [i for i, row in enumerate(rows) if list(row) != list(rows[0])]
    if differing:
        if is_chief(strategy):
            logging.warning("multi-worker resume: the saved progress of worker(s) %s differs "
                            "from the chief's (a worker stopped between two commits): they "
                            "take the chief's copy and redo the steps after it", differing)
        elif [float(v) for v in progress_digest(mine)] != list(rows[0]):  # row 0: the chief
            if not os.path.exists(os.path.join(run_dir, "flags.txt")):
                raise UserError(
                    f"this worker's saved progress in {local_dir} differs from the chief's and "
                    f"the chief's run dir {run_dir} is not readable here; copy it here (all "
                    f"but worker_tmp_*) and start every worker again")
            logging.warning("multi-worker resume: this worker's saved progress %s differs from "
                            "the chief's %s: taking the chief's copy from %s", mine,
                            saved_progress(run_dir), run_dir)
            adopt_copy(run_dir, local_dir)
    gather([0])                                    # the chief writes nothing before all copied
    return differing
