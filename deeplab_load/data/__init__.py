"""Data sets (VOC 2012, Cityscapes, Stanford Background, the generated demo and bench) and the tf.data
pipeline. All data sets give `ExampleRef`s and decode to (uint8 image [H,W,3], uint8 label [H,W])
with ignore = 255; see `common.py`."""
from deeplab_load.errors import FlagError
from deeplab_load.data.common import IGNORE_LABEL, BadExampleError, DatasetInfo, ExampleRef

DATASET_NAMES = ("voc", "cityscapes", "stanford", "demo", "bench")


def get_dataset(name: str, data_dir=None, tfrecord_dir=None, **kwargs):
    """The data set `name` read from `data_dir`.

    `data_dir` may be None for "demo" and "bench" (then the cache dir is used) and with
    `tfrecord_dir` (then the split is read from the shards alone: ours or research/deeplab's).
    Extra keyword arguments go to the demo generator (num_train, num_val, image_size, seed) or
    the bench generator (num_train, num_val, num_test, image_size, seed). With
    `tfrecord_dir`, the pipeline reads that split's shards written by
    `tools/build_tfrecords.py` instead of the individual files.
    """
    if name == "voc":
        from deeplab_load.data.voc import VocDataset as cls
    elif name == "cityscapes":
        from deeplab_load.data.cityscapes import CityscapesDataset as cls
    elif name == "stanford":
        from deeplab_load.data.stanford import StanfordDataset as cls
    elif name in ("demo", "bench"):
        if name == "demo":
            from deeplab_load.data.demo import DemoDataset as generated
        else:
            from deeplab_load.data.bench import BenchDataset as generated
        dataset = generated(data_dir, **kwargs)
        dataset.tfrecord_dir = tfrecord_dir
        return dataset
    else:
        raise FlagError(f"--dataset {name!r} is unknown; expected one of "
                        f"{', '.join(DATASET_NAMES)}")
    if kwargs:
        raise TypeError(f"unexpected arguments for dataset {name!r}: {sorted(kwargs)}")
    if data_dir is None and tfrecord_dir is not None:
        from deeplab_load.data.records_only import RecordsDataset
        return RecordsDataset(cls.info, tfrecord_dir)
    if data_dir is None:
        raise FlagError(f"--dataset={name} needs --dataset_dir (see README: data sets)")
    dataset = cls(data_dir)
    dataset.tfrecord_dir = tfrecord_dir
    return dataset


def dataset_info(name):
    """The DatasetInfo (classes, palette, crop sizes) of data set ``name`` without reading any
    data; None for None."""
    if name is None:
        return None
    if name == "demo":
        from deeplab_load.data import demo
        names = demo.CLASS_NAMES
        return DatasetInfo("demo", len(names), names, demo.DEFAULT_IMAGE_SIZE,
                           demo.DEFAULT_IMAGE_SIZE, palette=demo.PALETTE_256[:len(names)])
    if name not in DATASET_NAMES:
        raise FlagError(f"--dataset {name!r} is unknown; expected one of "
                        f"{', '.join(DATASET_NAMES)}")
    import importlib
    return importlib.import_module(f"deeplab_load.data.{name}").INFO


__all__ = ["dataset_info", "BadExampleError", "DatasetInfo", "ExampleRef", "IGNORE_LABEL", "DATASET_NAMES",
           "get_dataset"]
