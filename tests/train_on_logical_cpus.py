"""`python -m deeplab_load.train` with the CPU split into two logical devices, so that
--strategy=mirrored runs two replicas on a CPU (tests/test_replicated.py).

    python tests/train_on_logical_cpus.py <train flags>
"""
import os
import runpy
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tensorflow as tf  # noqa: E402


def main():
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    sys.argv = ["deeplab_load.train"] + sys.argv[1:]
    runpy.run_module("deeplab_load.train", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
