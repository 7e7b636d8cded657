"""Everything about weights on disk: the official zoo table (`zoo`), the TF1 checkpoint matcher
and loader, the tagged training store (`store`), restoring any checkpoint a user points at
(`restore`), the `model.json` spec beside checkpoints (`model_spec`) and building a model from
a run dir or checkpoint (`model_loading`). Import the submodules."""
