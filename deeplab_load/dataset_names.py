"""The names of the data sets (`deeplab_load.data.get_dataset`'s ``name``), kept free of
TensorFlow so that the configuration classes (flag choices, help strings) can name them without
importing the data pipeline. ``deeplab_load.data`` re-exports them."""

DATASET_NAMES = ("voc", "cityscapes", "stanford", "demo", "bench")
# For help strings: "voc, cityscapes, stanford, demo or bench".
DATASET_NAMES_TEXT = ", ".join(DATASET_NAMES[:-1]) + " or " + DATASET_NAMES[-1]
