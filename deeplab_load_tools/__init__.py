"""Command-line tools beside the main commands: ``python -m deeplab_load_tools.<name>`` or the
``deeplab-load-<name>`` console script that ``pip install`` puts on the PATH (setup.py).

ablation, lr_sweep       studies over one stage-1 model (the experiments package)
benchmark                speed and memory, float32 and bfloat16 (docs/SPEED.md)
build_tfrecords          a data set's splits into TFRecord shards
compare_runs             per-class IoU of two runs side by side
download_checkpoint      an official zoo checkpoint into checkpoints/<name>/
holdout_dtype            hold-out evaluation and map sets, float32 vs bfloat16 (docs/SCALING.md)
load_phases              the LoAd phases' costs on a stage-1 run (docs/SCALING.md)
make_demo_data           the demo data set into a folder
plot_convergence         a run's convergence.png from its state.json
scaling_model            the predicted scaling table of docs/SCALING.md
"""
