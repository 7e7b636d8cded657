"""Refuse a model with NaN / Inf weights or logits before evaluating or exporting it.

The argmax of NaN logits is a valid label map (class 0 everywhere), so a broken model would
otherwise evaluate to a small but ordinary-looking mIoU.
"""
import numpy as np
import tensorflow as tf

from deeplab_load.errors import NonFiniteError


def non_finite_weights(model):
    """Paths of the model's floating-point weights holding a NaN or an Inf."""
    bad = []
    for variable in model.weights:
        value = np.asarray(variable.numpy() if hasattr(variable, "numpy") else variable)
        if np.issubdtype(value.dtype, np.floating) and not np.all(np.isfinite(value)):
            bad.append(variable.path)
    return bad


def check_model_is_finite(model, source, pixels=None):
    """NonFiniteError naming `source` (e.g. the checkpoint path) when a weight of `model` or,
    given `pixels` (float32 [B,H,W,3], 0..255), one of its logits on them is NaN or infinite."""
    bad = non_finite_weights(model)
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise NonFiniteError(f"{source}: the model has NaN / Inf weights ({shown}); it cannot be "
                             f"evaluated: use an earlier checkpoint or retrain")
    if pixels is not None:
        logits = model(tf.convert_to_tensor(pixels, tf.float32), training=False)
        finite = tf.math.is_finite(tf.cast(logits, tf.float32))
        if not bool(tf.reduce_all(finite)):
            share = 1.0 - float(tf.reduce_mean(tf.cast(finite, tf.float32)))
            raise NonFiniteError(f"{source}: {100 * share:.1f}% of the model's logits are NaN / "
                                 f"Inf on the first batch; it cannot be evaluated: use an "
                                 f"earlier checkpoint or retrain")
