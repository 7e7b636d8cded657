"""A data set read from TFRecord shards alone (ours or research/deeplab's), with no raw tree.

`get_dataset(name, None, tfrecord_dir=...)` returns one. The pipeline reads its shards directly;
`examples` / `load` serve the few callers that go example by example (class weights, reports):
`load` reads the split's records in order and is cheap when called in split order, as those
callers do (a call out of order restarts the scan).
"""
import os
import threading

import tensorflow as tf

from deeplab_load.data import tfrecords
from deeplab_load.data.common import ExampleRef
from deeplab_load.errors import UserError


class RecordsDataset:
    """`info` of the named data set; splits are those found in `tfrecord_dir`."""

    data_dir = None

    def __init__(self, info, tfrecord_dir):
        self.info = info
        self.tfrecord_dir = os.path.abspath(os.path.expanduser(os.fspath(tfrecord_dir)))
        if not os.path.isdir(self.tfrecord_dir):
            raise UserError(f"--tfrecord_dir {self.tfrecord_dir} is not a folder")
        self._lock = threading.Lock()
        self._readers = {}

    @property
    def splits(self):
        """Shard-name splits found, plus `train`/`val` for research/deeplab's Cityscapes
        `train_fine`/`val_fine`."""
        found = sorted(tfrecords.split_shards(self.tfrecord_dir))
        suffix = tfrecords.CITYSCAPES_RESEARCH_SUFFIX
        aliases = [s[:-len(suffix)] for s in found
                   if self.info.name == "cityscapes" and s.endswith(suffix)]
        return tuple(found + [a for a in aliases if a not in found])

    def check_split(self, split):
        tfrecords.resolve_split(self.tfrecord_dir, split, self.info.name)

    def examples(self, split):
        """ExampleRefs of the split in record order; paths point at the shards (`<dir>/<split>
        #<id>`), label_path is set (records hold labels; an empty one decodes to all ignore)."""
        metadata = tfrecords.read_metadata(self.tfrecord_dir, split, self.info.name)
        base = os.path.join(self.tfrecord_dir, metadata["split"])
        return [ExampleRef(example_id, f"{base}#{example_id}", f"{base}#{example_id}")
                for example_id in metadata["ids"]]

    def load(self, ref):
        """(image uint8 [H,W,3], label uint8 [H,W]) of an ExampleRef from `examples`."""
        base, _, example_id = ref.image_path.rpartition("#")
        split = os.path.basename(base)
        with self._lock:
            reader = self._readers.get(split)
            for attempt in range(2):
                if reader is None:
                    paths = tfrecords.shard_paths(self.tfrecord_dir, split, self.info.name)
                    reader = iter(tf.data.TFRecordDataset(paths).map(tfrecords.parse))
                for fields in reader:
                    if fields["id"].numpy().decode() == example_id:
                        self._readers[split] = reader
                        return tfrecords.decode_record(
                            fields["id"].numpy(), fields["image/encoded"].numpy(),
                            fields["image/filename"].numpy(), fields["label/encoded"].numpy(),
                            self.info.num_classes)
                reader = None
        raise KeyError(f"example {example_id!r} not in the {split!r} TFRecords of "
                       f"{self.tfrecord_dir}")

    def __repr__(self):
        return f"RecordsDataset({self.info.name!r}, {self.tfrecord_dir!r})"
