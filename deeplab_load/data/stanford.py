"""Stanford Background (iccv09Data): `images/<id>.jpg` with `labels/<id>.regions.txt`.

The region files hold one row of whitespace-separated integers per image row: 0..7 for the
classes below, -1 for unknown (-> ignore 255). The data set has no official split; a seeded
400/172/143 train/val/test split (scaled for other sizes) is written once to
`iccv09Data/splits/{train,val,test}.txt` and reused by every later run.
"""
import glob
import os

import numpy as np

from deeplab_load.data.common import IGNORE_LABEL, BadExampleError, DataDirError, Dataset, \
    DatasetInfo, ExampleRef, read_id_list, write_id_list_atomic

CLASS_NAMES = ("sky", "tree", "road", "grass", "water", "building", "mountain",
               "foreground object")
PALETTE = np.array([(70, 130, 180), (34, 139, 34), (128, 64, 128), (124, 252, 0),
                    (0, 105, 148), (150, 75, 60), (139, 137, 112), (220, 20, 60)], np.uint8)
INFO = DatasetInfo(name="stanford", num_classes=len(CLASS_NAMES), class_names=CLASS_NAMES,
                   crop_size=(321, 321), eval_crop_size=(321, 321), palette=PALETTE)

SPLITS = ("train", "val", "test")
SPLIT_SIZES = (400, 172, 143)  # of the 715 images
SPLIT_SEED = 0


def split_sizes(num_images: int):
    """(train, val, test) counts: 400/172/143 scaled to `num_images`, summing to it."""
    total = sum(SPLIT_SIZES)
    train = int(round(num_images * SPLIT_SIZES[0] / total))
    val = int(round(num_images * SPLIT_SIZES[1] / total))
    return train, val, num_images - train - val


def parse_regions(data: bytes, path) -> np.ndarray:
    """`*.regions.txt` bytes -> uint8 [H, W] with -1 -> 255 (values unvalidated beyond int8)."""
    try:
        rows = [line.split() for line in data.decode("ascii").splitlines() if line.strip()]
        widths = {len(row) for row in rows}
        if len(widths) != 1:
            raise ValueError(f"rows have different lengths {sorted(widths)[:5]}")
        values = np.array(rows, dtype=np.int64)
    except (UnicodeDecodeError, ValueError) as err:
        raise BadExampleError(path, f"cannot parse region labels ({err})") from err
    if values.min() < -1 or values.max() >= IGNORE_LABEL:
        bad = np.unique(values[(values < -1) | (values >= IGNORE_LABEL)])
        raise BadExampleError(path, f"label values {bad[:10].tolist()} are neither a class "
                                    f"(0..{len(CLASS_NAMES) - 1}) nor unknown (-1)")
    values[values == -1] = IGNORE_LABEL
    return values.astype(np.uint8)


class StanfordDataset(Dataset):
    """Splits train / val / test, made on first use (see module docstring)."""

    info = INFO

    def __init__(self, data_dir):
        super().__init__(data_dir)
        root = os.path.join(self.data_dir, "iccv09Data")
        if not os.path.isdir(root) and os.path.isdir(os.path.join(self.data_dir, "images")):
            root = self.data_dir  # data_dir already points at iccv09Data
        self.root = root
        if not os.path.isdir(os.path.join(root, "images")):
            raise DataDirError(f"--dataset_dir {self.data_dir} holds no iccv09Data/images; pass "
                               f"the folder holding iccv09Data, or iccv09Data itself")

    @property
    def splits(self):
        return SPLITS

    def split_path(self, split):
        return os.path.join(self.root, "splits", f"{split}.txt")

    def all_ids(self):
        paths = glob.glob(os.path.join(self.root, "images", "*.jpg"))
        return sorted(os.path.basename(p)[:-len(".jpg")] for p in paths)

    def ensure_splits(self):
        """Writes the seeded split files unless all three exist already."""
        if all(os.path.isfile(self.split_path(s)) for s in SPLITS):
            return
        ids = self.all_ids()
        if not ids:
            raise FileNotFoundError(f"no images in {os.path.join(self.root, 'images')}")
        order = np.random.default_rng(SPLIT_SEED).permutation(len(ids))
        n_train, n_val, _ = split_sizes(len(ids))
        parts = {"train": order[:n_train], "val": order[n_train:n_train + n_val],
                 "test": order[n_train + n_val:]}
        split_dir = os.path.dirname(self.split_path("train"))
        try:
            os.makedirs(split_dir, exist_ok=True)
            for split in SPLITS:
                write_id_list_atomic(self.split_path(split), sorted(ids[i] for i in parts[split]))
        except OSError as err:
            raise OSError(f"cannot write the Stanford Background split files to {split_dir} "
                          f"({err}); make the data directory writable once") from err

    def examples(self, split):
        self.check_split(split)
        self.ensure_splits()
        ids = read_id_list(self.split_path(split))
        return [ExampleRef(i, os.path.join(self.root, "images", i + ".jpg"),
                           os.path.join(self.root, "labels", i + ".regions.txt")) for i in ids]

    def decode_label(self, data, path):
        return parse_regions(data, path)
