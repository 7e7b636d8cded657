"""Experiments built on the training library (the ablation study in `ablation/`)."""
