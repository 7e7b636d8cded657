"""Command-line tools beside the main commands: ``python -m deeplab_load.tools.<name>`` or the
``deeplab-load-<name>`` console script that ``pip install`` puts on the PATH (setup.py).

ablation, lr_sweep       studies over one stage-1 model (the experiments package)
benchmark                speed and memory, float32 and bfloat16 (docs/SPEED.md)
build_tfrecords          a data set's splits into TFRecord shards
compare_runs             per-class IoU of two runs side by side
download_checkpoint      an official zoo checkpoint into checkpoints/<name>/
make_demo_data           the demo data set into a folder
plot_convergence         a run's convergence.png from its state.json
"""
