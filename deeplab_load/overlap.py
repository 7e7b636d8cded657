"""Host work beside the compute thread: reading ahead and writing behind, results unchanged.

`read_ahead(items)` produces the next items of an iterable in a background thread while the
caller works on the current one; `WriteBehind` runs file writes in one background thread, in
submission order, while the caller computes the next batch. Both keep the order of the items and
re-raise a background error in the caller; neither changes what is computed or written. With
`enabled=False` both do the same work inline, in the caller's thread.

Whether it pays depends on where the model runs (`overlap_enabled`, the callers' default): on
a GPU the host's cores idle while the device computes, and the background thread uses them; on a
CPU the model's ops already take every core, and on 2 cores no gain was measured (the map-set
write 1098 vs 1066 ms inline, the hold-out evaluation 893 vs 888 ms; docs/SCALING.md).
"""
import collections
import queue
import threading
from concurrent import futures

_DONE = object()


def overlap_enabled(enabled=None):
    """The callers' overlap setting: `enabled`, or by default whether overlapping pays here (True
    when TensorFlow sees a GPU)."""
    if enabled is not None:
        return bool(enabled)
    import tensorflow as tf
    return bool(tf.config.list_logical_devices("GPU"))


def read_ahead(items, depth=1, enabled=True):
    """Yields the items of the iterable `items` in order, producing up to `depth` of them ahead
    in a background thread (inline when not `enabled`). An exception raised by `items` is raised
    here at its position."""
    if not enabled:
        yield from items
        return
    slots = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce():
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        slots.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            slots.put((_DONE, None))
        except BaseException as error:              # re-raised in the consumer
            slots.put((_DONE, error))

    thread = threading.Thread(target=produce, name="read_ahead", daemon=True)
    thread.start()
    try:
        while True:
            item, error = slots.get()
            if error is not None:
                raise error
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():                    # unblock a producer waiting on a full queue
            try:
                slots.get_nowait()
            except queue.Empty:
                pass
            thread.join(timeout=0.05)


class WriteBehind:
    """Runs `submit`ted functions in one background thread, in order, at most `max_pending`
    unfinished at once (`submit` waits beyond that); inline in `submit` when not `enabled`.

        with WriteBehind() as writer:
            for batch in batches:
                writer.submit(write_files, compute(batch))
                for _ in range(writer.finished()): ...   # jobs done since the last call
        # every job has run here; the first job error is raised at `submit`, `finished` or exit
    """

    def __init__(self, max_pending=2, enabled=True):
        self.max_pending = max_pending
        self.enabled = enabled
        self._executor = None
        self._pending = collections.deque()

    def __enter__(self):
        if self.enabled:
            self._executor = futures.ThreadPoolExecutor(max_workers=1,
                                                        thread_name_prefix="write_behind")
        return self

    def submit(self, function, *args):
        if self._executor is None:                  # inline: run now, count as a finished job
            function(*args)
            done = futures.Future()
            done.set_result(None)
            self._pending.append(done)
            return
        self._pending.append(self._executor.submit(function, *args))
        while len(self._pending) > self.max_pending:
            self._pending.popleft().result()

    def finished(self):
        """The number of jobs finished since the last call (in submission order)."""
        count = 0
        while self._pending and self._pending[0].done():
            self._pending.popleft().result()
            count += 1
        return count

    def wait(self):
        """Waits for every submitted job; returns how many finished since `finished` last ran."""
        count = 0
        while self._pending:
            self._pending.popleft().result()
            count += 1
        return count

    def __exit__(self, kind, error, traceback):
        try:
            if kind is None:
                self.wait()
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
            self._pending.clear()
        return False
