"""The segmentation model LoAd trains: any Keras model from raw pixels to logits at a stride.

The LoAd training (`run.run_training`: stage 1, the LoAd phase, evaluation, export) needs of its
generator only what a `Segmentor` states:

    build(num_classes) -> keras.Model
        called inside the run's `strategy.scope()` (and once more, outside it, for the baseline
        copy of changes.png); every call builds a new model with the same variable paths
        (snapshots are matched by path: give every layer a name, Keras numbers unnamed layers
        per process).
    the model: float32 pixels [B, H, W, 3] in 0..255 (the data pipeline's crops; for evaluation
        padded at the bottom/right with 127.5 to the eval crop size) -> logits [B, h, w,
        num_classes] with h = ceil(H / output_stride), w = ceil(W / output_stride), computed
        with the `training` argument it is called with (True in stage 1, the generator's mode in
        LoAd, False in evaluation). Logits are upsampled to the pixels with align_corners
        bilinear interpolation, as DeepLab's.

Optional capabilities (None: the run does without them):

    restore(model, path) -> description    reads --initial_checkpoint (default: checkpoints the
        package writes -- a run's store, a tf.train prefix of ours, a .weights.h5 file; an
        official TF1 DeepLab checkpoint needs DeepLab);
    decayed_kernels(model) -> [variables]   the kernels --weight_decay regularises (DeepLab's
        table: `weight_decay.decayed_kernels`); without it --weight_decay must be 0;
    model_config                            a DeepLabConfig: the run writes model.json beside its
        checkpoints, so evaluate / export / predict rebuild the model from --run_dir alone.

`check_segmentor` checks the contract on the built model and raises `SegmentorContractError`
naming what differs. `deeplab_segmentor(config)` is DeepLab with every capability.
"""
import dataclasses
import math
from typing import Any, Callable, Optional

import keras
import numpy as np

from deeplab_load.checkpoints.restore import restore_checkpoint
from deeplab_load.checkpoints.store import variable_table
from deeplab_load.errors import FlagError, UserError
from deeplab_load.models.deeplab import DeepLabConfig, build_deeplab
from deeplab_load.models.ops import PAD_PIXEL_VALUE
from deeplab_load.training.weight_decay import decayed_kernels


class SegmentorContractError(UserError):
    """A segmentor's model does not do what its `Segmentor` says (the message names what)."""


@dataclasses.dataclass(frozen=True)
class Segmentor:
    """A segmentation model for the LoAd training (see the module doc for the contract).

    build: num_classes -> a new keras.Model (raw pixels -> logits at `output_stride`).
    output_stride: the input size / logits size ratio (1 for full-resolution logits).
    name: names the default run dir (runs/<dataset>_<name>).
    fixed_variable_paths: True when `build` names its variables itself (DeepLab's are the TF1
        names); False makes `check_segmentor` build a second model to compare paths.
    """
    build: Callable[[int], Any]
    output_stride: int
    name: str = "segmentor"
    restore: Optional[Callable[[Any, str], str]] = None
    decayed_kernels: Optional[Callable[[Any], list]] = None
    model_config: Optional[DeepLabConfig] = None
    fixed_variable_paths: bool = False

    def __post_init__(self):
        if not callable(self.build):
            raise TypeError(f"Segmentor.build must be callable (num_classes -> keras.Model), got "
                            f"{type(self.build).__name__}")
        if isinstance(self.output_stride, bool) or not isinstance(self.output_stride, int) \
                or self.output_stride < 1:
            raise ValueError(f"Segmentor.output_stride must be an int >= 1, got "
                             f"{self.output_stride!r}")

    def restore_weights(self, model, path):
        """Loads `path` into `model` with `restore`, else the package's own checkpoint formats;
        returns a one-line description."""
        if self.restore is not None:
            return self.restore(model, path)
        return restore_checkpoint(model, path, allow_tf1=False)

    def weight_decay_kernels(self, model, weight_decay):
        """The kernels `weight_decay` applies to: [] when it is 0; FlagError when it is not and
        the segmentor has no `decayed_kernels`."""
        if not weight_decay:
            return []
        if self.decayed_kernels is None:
            raise FlagError(f"--weight_decay={weight_decay} needs the segmentor to say which "
                            f"kernels decay (Segmentor(decayed_kernels=...)); segmentor "
                            f"{self.name!r} has none: set weight_decay=0, or regularise the "
                            f"model's layers yourself")
        return list(self.decayed_kernels(model))


def deeplab_segmentor(config):
    """DeepLab of `config` (its num_classes replaced by the run's) with every capability."""
    if not isinstance(config, DeepLabConfig):
        raise TypeError(f"config must be a DeepLabConfig, got {type(config).__name__}")
    return Segmentor(
        build=lambda num_classes: build_deeplab(
            dataclasses.replace(config, num_classes=num_classes)),
        output_stride=config.logits_stride, name=config.backbone,
        restore=restore_checkpoint, decayed_kernels=decayed_kernels, model_config=config,
        fixed_variable_paths=True)


def logits_size(size, output_stride):
    """(h, w) of the logits of pixels of `size` (H, W): ceil(H / stride), ceil(W / stride)."""
    return tuple(int(math.ceil(int(s) / output_stride)) for s in size)


def check_segmentor(segmentor, model, num_classes, sizes):
    """Checks `model` (from `segmentor.build(num_classes)`) against the contract; returns it.

    sizes: (H, W) input sizes the run feeds it (its crop and eval crop sizes), probed with one
    image of the pad value in inference mode. Without `fixed_variable_paths`, a second model is
    built (in the caller's scope) and its variable paths compared. SegmentorContractError names
    the first violation.
    """
    name = segmentor.name
    if not isinstance(model, keras.Model):
        raise SegmentorContractError(f"segmentor {name!r}: build({num_classes}) returned a "
                                     f"{type(model).__name__}, not a keras.Model")
    try:
        paths = list(variable_table(model))
    except ValueError as err:
        raise SegmentorContractError(f"segmentor {name!r}: {err} (give every layer a unique "
                                     f"name)") from err
    for size in dict.fromkeys(tuple(int(s) for s in size) for size in sizes if size):
        pixels = np.full((1, *size, 3), PAD_PIXEL_VALUE, np.float32)
        try:
            logits = model(pixels, training=False)
        except Exception as err:  # noqa: BLE001 -- any failure is the model's, reported as such
            raise SegmentorContractError(
                f"segmentor {name!r}: the model fails on pixels [1, {size[0]}, {size[1]}, 3] "
                f"(the run's crop / eval crop size): {type(err).__name__}: "
                f"{str(err).strip().splitlines()[0] if str(err).strip() else ''}") from err
        expected = (1, *logits_size(size, segmentor.output_stride), num_classes)
        shape = tuple(getattr(logits, "shape", ()))
        if shape != expected:
            raise SegmentorContractError(
                f"segmentor {name!r}: pixels [1, {size[0]}, {size[1]}, 3] give logits of shape "
                f"{list(shape)}, expected {list(expected)} (num_classes {num_classes}, "
                f"output_stride {segmentor.output_stride}: ceil(size / stride))")
    if not segmentor.fixed_variable_paths:
        second = segmentor.build(num_classes)
        if second is model:
            raise SegmentorContractError(f"segmentor {name!r}: build returned the same model "
                                         f"twice; it must build a new one on every call")
        other = list(variable_table(second))
        if other != paths:
            differing = next((a, b) for a, b in zip(paths + [None] * len(other),
                                                    other + [None] * len(paths)) if a != b)
            raise SegmentorContractError(
                f"segmentor {name!r}: a second build has other variable paths ({differing[0]} "
                f"vs {differing[1]}): name every layer (Keras numbers unnamed layers per "
                f"process), snapshots are matched by path")
    return model
