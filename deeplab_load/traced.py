"""How the package compiles its graph functions, and keeps them per model.

``compiled(fn)`` is ``tf.function`` traced once per input-shape family (``reduce_retracing``)
and without autograph: the traced code has no tensor-dependent Python control flow, and
autograph's source conversion was about a tenth of a training step's trace.
``PerModel`` keeps compiled functions per (model, key), so repeated evaluations of one model
trace once.
"""
import weakref

import tensorflow as tf


def compiled(fn):
    """``fn`` as a tf.function (retraced per shape family, no autograph); usable as decorator."""
    return tf.function(fn, reduce_retracing=True, autograph=False)


class PerModel:
    """Compiled functions kept per (model, key).

    A function holds its model, so an entry stays for the life of the process: keep functions of
    models that live as long (a run's generator, a loaded checkpoint), not of per-call copies.
    """

    def __init__(self):
        self._functions = weakref.WeakKeyDictionary()

    def get(self, model, key, make):
        """The function kept for (model, key); ``make()`` builds it the first time."""
        functions = self._functions.setdefault(model, {})
        if key not in functions:
            functions[key] = make()
        return functions[key]

    def kept(self, model):
        """{key: function} kept for ``model`` (empty if none)."""
        return dict(self._functions.get(model, {}))

    def __len__(self):
        """Number of models with kept functions."""
        return len(self._functions)
