"""Iterating a tf.data pipeline so that an error inside it ends the process cleanly.

Why this exists (issue 11, "hangs"): tf.data runs our `numpy_function` calls (Pillow decoding,
label checks) on its own threads, several at once (parallel map, prefetch). Destroying an
iterator cancels it and waits for its in-flight calls, and each of them needs the GIL. When the
iterator outlives the error that stopped it -- the traceback of an uncaught exception holds the
frames that hold the iterator until interpreter shutdown -- it is destroyed inside
`Py_FinalizeEx`, where a thread asking for the GIL is ended by the interpreter: the destructor
then waits forever (the process prints the error and never exits) or the C++ runtime aborts
("terminate called without an active exception"). It happens when calls are still in flight at
exit, i.e. mostly with a busy CPU.

`Batches` therefore deletes its tf.data iterator -- while Python is fully alive, so in-flight
calls finish -- before any error leaves it, whether the error came from the pipeline or from the
loop body (`with Batches(ds) as batches:`), and re-raises a pipeline error as the `UserError`
the loader raised (e.g. `BadExampleError` naming the file) instead of TensorFlow's long
`InvalidArgumentError` text. Loaders run inside tf.data are wrapped with `reports_errors` so
that their user errors can be found again.
"""
import collections
import functools
import threading

import tensorflow as tf

from deeplab_load.errors import UserError

_RECENT = 64  # user errors remembered from loader threads


class _ErrorRegistry:
    """The last user errors raised inside pipeline functions, by message (thread-safe)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._errors = collections.OrderedDict()

    def add(self, error):
        with self._lock:
            self._errors[str(error)] = error
            while len(self._errors) > _RECENT:
                self._errors.popitem(last=False)

    def pop_match(self, text):
        """The remembered error whose message occurs in `text` (removed), or None."""
        with self._lock:
            for message in reversed(self._errors):
                if message and message in text:
                    return self._errors.pop(message)
        return None


_registry = _ErrorRegistry()


def reports_errors(function):
    """Decorator for functions run inside tf.data (`numpy_function`, `py_function`): a
    `UserError` they raise is remembered, so `Batches` can re-raise it by its own class."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except UserError as error:
            _registry.add(error)
            raise
    return wrapper


def pipeline_error(op_error):
    """The exception to raise for a `tf.errors.OpError` from a pipeline: the user error a
    `reports_errors` function raised (its message names the file), else the OpError itself.
    Either comes without a traceback or context, so it holds no reference to the iterator."""
    error = _registry.pop_match(str(op_error)) or op_error
    error.__context__ = None
    error.__cause__ = None
    return error.with_traceback(None)


class Batches:
    """Iterator over a `tf.data.Dataset` (or a distributed dataset) that never leaves its
    tf.data iterator alive behind an error.

    `next()` raises StopIteration at the end and the loader's `UserError` (or the OpError) on a
    pipeline failure; in both cases the tf.data iterator is deleted first. `close()` deletes it
    on demand; used as a context manager, the iterator is also deleted when the loop body
    raises. Iterating a closed `Batches` ends at once.
    """

    def __init__(self, dataset):
        self._iterator = iter(dataset)

    def __iter__(self):
        return self

    def __next__(self):
        if self._iterator is None:
            raise StopIteration
        failure = None
        try:
            return next(self._iterator)
        except StopIteration:
            self.close()
            raise
        except tf.errors.OpError as error:
            failure = pipeline_error(error)
        # Out of the except block: the OpError's traceback (whose frames hold the iterator) is
        # gone, so close() really deletes the iterator, waiting for its in-flight calls.
        self.close()
        raise failure

    def close(self):
        """Deletes the tf.data iterator (its destructor waits for in-flight calls)."""
        self._iterator = None

    @property
    def closed(self):
        return self._iterator is None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
        return False
