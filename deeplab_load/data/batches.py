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
that their user errors can be found again; the loaders of this package do not even raise inside
tf.data: they return the error as a numbered string that a graph assertion (`assert_no_error`)
turns into a one-line pipeline failure naming the file, so TensorFlow logs no Python traceback.
"""
import collections
import functools
import re
import threading

import tensorflow as tf

from deeplab_load.errors import UserError

_RECENT = 64  # user errors remembered from loader threads
ERROR_TAG = "deeplab_load pipeline error"


class _ErrorRegistry:
    """The last user errors met inside pipeline functions, by number (thread-safe)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._errors = collections.OrderedDict()
        self._next = 1

    def add(self, error) -> int:
        with self._lock:
            number, self._next = self._next, self._next + 1
            self._errors[number] = error
            while len(self._errors) > _RECENT:
                self._errors.popitem(last=False)
        return number

    def pop_match(self, text):
        """The remembered error that `text` (an OpError message) names by number, or whose
        message occurs in `text` (removed), or None."""
        match = re.search(re.escape(ERROR_TAG) + r"\W*#(\d+) ", text)
        with self._lock:
            if match and int(match.group(1)) in self._errors:
                return self._errors.pop(int(match.group(1)))
            for number in reversed(self._errors):
                message = str(self._errors[number])
                if message and message in text:
                    return self._errors.pop(number)
        return None


_registry = _ErrorRegistry()


def reports_errors(function, failed_outputs=None):
    """Decorator for functions run inside tf.data (`numpy_function`, `py_function`).

    With `failed_outputs` (a callable giving placeholder outputs), a `UserError` the function
    raises is remembered and the function returns `failed_outputs() + (error,)` instead, where
    `error` is bytes "#<number> <message>"; normal results get `(b"",)` appended. Pass that
    string to `assert_no_error` in the graph: the pipeline then stops with a one-line assertion
    naming the file (no Python traceback in TensorFlow's log) that `Batches` turns back into the
    remembered error. Without `failed_outputs`, the error is
    remembered and re-raised (TensorFlow logs its traceback; `Batches` still finds it).
    """
    if failed_outputs is None:
        @functools.wraps(function)
        def reraise(*args, **kwargs):
            try:
                return function(*args, **kwargs)
            except UserError as error:
                _registry.add(error)
                raise
        return reraise

    @functools.wraps(function)
    def numbered(*args, **kwargs):
        try:
            return tuple(function(*args, **kwargs)) + (b"",)
        except UserError as error:
            number = _registry.add(error)
            return tuple(failed_outputs()) + (f"#{number} {error}".encode(),)
    return numbered


def reports_errors_with(failed_outputs):
    """`reports_errors(function, failed_outputs)` as a decorator."""
    return lambda function: reports_errors(function, failed_outputs)


def assert_no_error(error):
    """Graph op failing with the tagged error unless `error` (string scalar from a
    `reports_errors(..., failed_outputs)` function) is empty."""
    return tf.debugging.Assert(tf.equal(error, ""), [ERROR_TAG, error])


def pipeline_error(op_error):
    """The exception to raise for a `tf.errors.OpError` from a pipeline: the user error a
    `reports_errors` function met (its message names the file), else the OpError itself.
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
