"""Training library: strategies (`strategy`), distributed steps (`steps`), class statistics for
the weighted CE (`class_weights`), checkpoints and progress lines. Import the submodules."""
