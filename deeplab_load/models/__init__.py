"""DeepLabv3+ models: backbones (Xception-65, MobileNetV2), the DeepLab head and the builder."""
from deeplab_load.models.deeplab import DeepLabConfig, build_deeplab, checkpoint_variables

__all__ = ["DeepLabConfig", "build_deeplab", "checkpoint_variables"]
