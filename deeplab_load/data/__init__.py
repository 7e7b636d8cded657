"""Data sets (VOC 2012, Cityscapes, Stanford Background, the generated demo and bench) and the tf.data
pipeline. All data sets give `ExampleRef`s and decode to (uint8 image [H,W,3], uint8 label [H,W])
with ignore = 255; see `common.py`."""
from deeplab_load.data import bench, cityscapes, demo, stanford, voc
from deeplab_load.data.common import IGNORE_LABEL, BadExampleError, DatasetInfo, ExampleRef
from deeplab_load.data.records_only import RecordsDataset
from deeplab_load.dataset_names import DATASET_NAMES
from deeplab_load.errors import FlagError

# name -> class of the data sets read from files.
_FILE_DATASETS = {"voc": voc.VocDataset, "cityscapes": cityscapes.CityscapesDataset,
                  "stanford": stanford.StanfordDataset}
# name -> class of the generated data sets (written to a cache dir on first use).
_GENERATED_DATASETS = {"demo": demo.DemoDataset, "bench": bench.BenchDataset}


def get_dataset(name: str, data_dir=None, tfrecord_dir=None, **kwargs):
    """The data set `name` read from `data_dir`.

    `data_dir` may be None for "demo" and "bench" (then the cache dir is used) and with
    `tfrecord_dir` (then the split is read from the shards alone: ours or research/deeplab's).
    Extra keyword arguments go to the demo generator (num_train, num_val, image_size, seed) or
    the bench generator (num_train, num_val, num_test, image_size, seed). With
    `tfrecord_dir`, the pipeline reads that split's shards written by
    `deeplab_load_tools/build_tfrecords.py` instead of the individual files.
    """
    if name in _GENERATED_DATASETS:
        dataset = _GENERATED_DATASETS[name](data_dir, **kwargs)
        dataset.tfrecord_dir = tfrecord_dir
        return dataset
    if name not in _FILE_DATASETS:
        raise FlagError(f"--dataset {name!r} is unknown; expected one of "
                        f"{', '.join(DATASET_NAMES)}")
    if kwargs:
        raise TypeError(f"unexpected arguments for dataset {name!r}: {sorted(kwargs)}")
    cls = _FILE_DATASETS[name]
    if data_dir is None and tfrecord_dir is not None:
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
        names = demo.CLASS_NAMES
        return DatasetInfo("demo", len(names), names, demo.DEFAULT_IMAGE_SIZE,
                           demo.DEFAULT_IMAGE_SIZE, palette=demo.PALETTE_256[:len(names)])
    if name == "bench":
        return bench.INFO
    if name not in DATASET_NAMES:
        raise FlagError(f"--dataset {name!r} is unknown; expected one of "
                        f"{', '.join(DATASET_NAMES)}")
    return _FILE_DATASETS[name].info


__all__ = ["dataset_info", "BadExampleError", "DatasetInfo", "ExampleRef", "IGNORE_LABEL", "DATASET_NAMES",
           "get_dataset"]
