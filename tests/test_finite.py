"""Evaluation refuses a model whose weights or logits are NaN / Inf (`finite.check_model_is_finite`)."""
import keras
import numpy as np
import pytest

from deeplab_load.errors import NonFiniteError, UserError
from deeplab_load.finite import check_model_is_finite, non_finite_weights


def tiny_model():
    inputs = keras.Input([4, 4, 3])
    return keras.Model(inputs, keras.layers.Conv2D(2, 1, name="logits")(inputs))


def test_finite_model_passes():
    model = tiny_model()
    check_model_is_finite(model, "ckpt", np.full([1, 4, 4, 3], 255.0, np.float32))
    assert non_finite_weights(model) == []


def test_nan_weight_is_refused_naming_the_source_and_variable():
    model = tiny_model()
    kernel, bias = model.get_weights()
    kernel[0, 0, 0, 0] = np.nan
    model.set_weights([kernel, bias])
    with pytest.raises(NonFiniteError, match=r"run/generator: .*NaN / Inf weights \(logits/kernel\)"):
        check_model_is_finite(model, "run/generator")
    assert issubclass(NonFiniteError, UserError)


def test_infinite_logits_from_finite_weights_are_refused():
    model = tiny_model()
    kernel, bias = model.get_weights()
    model.set_weights([np.full_like(kernel, 3e38), bias])    # 255 * 3e38 overflows float32
    pixels = np.full([1, 4, 4, 3], 255.0, np.float32)
    with pytest.raises(NonFiniteError, match=r"ckpt: 100.0% of the model's logits are NaN / Inf"):
        check_model_is_finite(model, "ckpt", pixels)
    check_model_is_finite(model, "ckpt")       # weights alone are finite
