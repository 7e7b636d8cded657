"""Compute dtype of a DeepLab model: bfloat16 where it pays, float32 where it must.

A bfloat16 DeepLab is the same `build_deeplab` graph under Keras' ``mixed_bfloat16`` policy:
weights stay float32 and every conv casts them at call time, so BatchNorm is folded into the
kernel in float32 and the folded kernel then cast (`layers.ConvBN`). Float32 is kept where
bfloat16's 8-bit mantissa would move labels or costs more than it saves:

* the input normalisation (pixels 0..255 are exact in bfloat16, the result is float32);
* the image-pooling mean (a sum over every position);
* every bilinear resize (the op computes float32; `resize_bilinear_align_corners`);
* the logits layer (`build_deeplab` builds it float32 under any policy), hence the upsampled
  logits, softmax and argmax of inference, and the cross entropy of training.

Depthwise convs and MobileNetV2 compute in bfloat16 too: on this project's CPU (AVX-512 with
avx512_bf16) `deeplab_load_tools/benchmark.py` measured MobileNetV2 faster in bfloat16 than in float32, and a
probe with Xception-65's depthwise convs forced to float32 was slower than all-bfloat16 (the
casts around them cost more than they save).

    fast = inference_model(model, "bfloat16")       # a copy computing in bfloat16
    labels = inference.predict_labels(fast, images)
"""
import contextlib

import keras

from deeplab_load.models.deeplab import DeepLabConfig, backbone_layer, build_deeplab

COMPUTE_DTYPES = ("float32", "bfloat16")
_POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16"}


def check_compute_dtype(dtype):
    """`dtype` if it is one of COMPUTE_DTYPES; a ValueError naming the choices otherwise."""
    if dtype not in COMPUTE_DTYPES:
        raise ValueError(f"dtype must be one of {COMPUTE_DTYPES}, got {dtype!r}")
    return dtype


@contextlib.contextmanager
def global_policy(policy):
    """Keras' global dtype policy set to `policy` inside the block, restored after it."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def compute_dtype(model):
    """The dtype the backbone of a `build_deeplab` model computes in ("float32", "bfloat16");
    for another model, its own `compute_dtype` (float32 when it has none)."""
    if not isinstance(getattr(model, "deeplab_config", None), DeepLabConfig):
        return getattr(model, "compute_dtype", "float32")
    return backbone_layer(model).compute_dtype


def build_deeplab_in(config, dtype, crop_size=None):
    """`build_deeplab(config, crop_size)` computing in `dtype` (float32 weights either way)."""
    with global_policy(_POLICIES[check_compute_dtype(dtype)]):
        return build_deeplab(config, crop_size)


def inference_model(model, dtype):
    """`model` (from `build_deeplab`) computing in `dtype`: itself when it already does, else a
    new model of the same configuration holding a copy of its current weights."""
    if compute_dtype(model) == check_compute_dtype(dtype):
        return model
    if getattr(model, "deeplab_config", None) is None:
        raise ValueError(f"computing in {dtype} needs a model from build_deeplab, got "
                         f"{type(model).__name__} {model.name!r}")
    copy = build_deeplab_in(model.deeplab_config, dtype)
    copy.set_weights(model.get_weights())
    return copy
