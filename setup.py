"""deeplab-load: Lookahead Adversarial Semantic Segmentation (LoAd) on DeepLabv3+ in Keras 3."""
from setuptools import find_packages, setup

setup(
    name="deeplab-load",
    version="0.1.0",
    description=(
        "DeepLabv3+ (Xception-65, MobileNetV2) in TensorFlow 2 / Keras 3 that loads the official "
        "DeepLab model-zoo checkpoints, plus Lookahead Adversarial learning (LoAd)."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # deeplab_load_tools: the tools, command modules beside the library (python -m
    # deeplab_load_tools.<name>, or the deeplab-load-<name> scripts below).
    packages=find_packages(include=["deeplab_load", "deeplab_load.*", "deeplab_load_tools"]),
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "numpy",
        "absl-py",
        "matplotlib",
        "pillow",
        "tensorboard",
    ],
    entry_points={
        "console_scripts": [
            f"deeplab-load-{name.replace('_', '-')}=deeplab_load_tools.{name}:run"
            for name in ("ablation", "benchmark", "build_tfrecords", "compare_runs",
                         "download_checkpoint", "holdout_dtype", "load_phases", "lr_sweep",
                         "make_demo_data", "plot_convergence", "scaling_model",
                         "stage1_digest")
        ],
    },
    extras_require={
        "test": ["pytest", "pytest-xdist", "cityscapesscripts", "ruff"],
        "cityscapes": ["cityscapesscripts"],
    },
)
