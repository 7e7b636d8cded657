"""deeplab-load: DeepLabv3+ in Keras 3 with Lookahead Adversarial learning (LoAd)."""

__version__ = "0.1.0"
