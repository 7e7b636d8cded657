"""Lookahead adversarial learning (LoAd): Algorithm 3 controller and Algorithm 1 map buffer.

Pure Python (no TensorFlow): the training loop injects the model work as hooks.
"""
from deeplab_load.lookahead.buffer import MapBuffer, MapSet
from deeplab_load.lookahead.controller import (STATE_FILE, LoAdConfig, LoAdController, LoAdHooks,
                                               LoAdResult, load_state)

__all__ = ["MapBuffer", "MapSet", "STATE_FILE", "LoAdConfig", "LoAdController", "LoAdHooks",
           "LoAdResult", "load_state"]
