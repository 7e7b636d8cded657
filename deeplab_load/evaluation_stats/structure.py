"""Structural metrics of predicted label maps: are objects labelled as wholes?

Per image (numpy, no TensorFlow):
- object purity: for every ground-truth object, whether one predicted class covers >= 90% of
  its pixels (pure), and whether that class is the object's own (correct and pure). Objects are
  the instances of an instance map when the data set has one, else the 4-connected components
  of each ground-truth class (classes in `exclude_classes`, e.g. background, are no objects);
- connected components per class, 4-connectivity, in the ground truth and in the prediction.
Pixels whose ground truth is the ignore label belong to no component in either map (the
ignore band separates components in both alike).
"""
import dataclasses

import numpy as np

IGNORE_LABEL = 255
PURITY_THRESHOLD = 0.9


def connected_components(label_map, valid=None):
    """4-connected components of equal-valued pixels.

    label_map: integer [H, W]; valid: bool [H, W] or None (all valid); invalid pixels belong
    to no component. Returns (components int64 [H, W] numbered 0..n-1 in raster order of
    their first pixel, -1 for invalid pixels; n).
    """
    labels = np.asarray(label_map)
    if labels.ndim != 2:
        raise ValueError(f"label_map must be [H, W], got shape {labels.shape}")
    height, width = labels.shape
    valid = np.ones(labels.shape, bool) if valid is None else np.asarray(valid, bool)
    if valid.shape != labels.shape:
        raise ValueError(f"valid mask {valid.shape} differs from label map {labels.shape}")
    # Each valid pixel points to the smallest flat index it is known to be connected with;
    # neighbours exchange minima and pointers jump to their targets' targets until stable.
    index = np.arange(height * width).reshape(height, width)
    same_right = valid[:, :-1] & valid[:, 1:] & (labels[:, :-1] == labels[:, 1:])
    same_down = valid[:-1, :] & valid[1:, :] & (labels[:-1, :] == labels[1:, :])
    parent = index.copy()
    while True:
        before = parent.copy()
        left, right = parent[:, :-1], parent[:, 1:]
        low = np.minimum(left, right)
        parent[:, :-1] = np.where(same_right, low, left)
        parent[:, 1:] = np.where(same_right, np.minimum(parent[:, 1:], low), parent[:, 1:])
        up, down = parent[:-1, :], parent[1:, :]
        low = np.minimum(up, down)
        parent[:-1, :] = np.where(same_down, low, up)
        parent[1:, :] = np.where(same_down, np.minimum(parent[1:, :], low), parent[1:, :])
        flat = parent.reshape(-1)
        flat[:] = flat[flat[flat]]
        if np.array_equal(parent, before):
            break
    roots = parent[valid]
    unique_roots = np.unique(roots)  # sorted flat indices: raster order of first pixels
    components = np.full(labels.shape, -1, np.int64)
    components[valid] = np.searchsorted(unique_roots, roots)
    return components, int(unique_roots.size)


def components_per_class(label_map, num_classes, valid=None):
    """int64 [K]: number of 4-connected components of each class in `label_map` [H, W]."""
    components, count = connected_components(label_map, valid)
    labels = np.asarray(label_map)
    component_class = np.zeros(count, np.int64)
    mask = components >= 0
    component_class[components[mask]] = labels[mask]
    return np.bincount(component_class, minlength=num_classes)[:num_classes].astype(np.int64)


def ground_truth_objects(label, instances=None, exclude_classes=(0,)):
    """(objects int64 [H, W]: object index per pixel, -1 outside objects; object classes
    int64 [M]). With `instances` (int [H, W], 0 = no object), each instance id is an object
    with the majority ground-truth class of its pixels; else each 4-connected component of a
    class not in `exclude_classes` is one."""
    label = np.asarray(label).astype(np.int64)
    counted = label != IGNORE_LABEL
    if instances is not None:
        instances = np.asarray(instances).astype(np.int64)
        if instances.shape != label.shape:
            raise ValueError(f"instance map {instances.shape} differs from label {label.shape}")
        inside = counted & (instances > 0)
        ids, objects_flat = np.unique(instances[inside], return_inverse=True)
        objects = np.full(label.shape, -1, np.int64)
        objects[inside] = objects_flat
        classes = np.zeros(ids.size, np.int64)
        for number in range(ids.size):
            classes[number] = np.bincount(label[inside][objects_flat == number]).argmax()
        return objects, classes
    valid = counted & ~np.isin(label, list(exclude_classes))
    objects, count = connected_components(label, valid)
    classes = np.zeros(count, np.int64)
    classes[objects[objects >= 0]] = label[objects >= 0]
    return objects, classes


@dataclasses.dataclass
class ImageStructure:
    """Structure counts of one image: objects, pure objects (one predicted class on >= 90% of
    the pixels), correct pure objects (that class is the object's), and components per class
    int64 [K] in the ground truth and the prediction."""
    num_objects: int
    num_pure: int
    num_correct_pure: int
    gt_components: np.ndarray
    predicted_components: np.ndarray


def image_structure(label, prediction, num_classes, instances=None, exclude_classes=(0,)):
    """ImageStructure of a prediction int [H, W] against its ground truth uint8 [H, W]
    (ignore 255) and optional instance map [H, W] (0 = no object)."""
    label = np.asarray(label).astype(np.int64)
    prediction = np.asarray(prediction).astype(np.int64)
    if label.shape != prediction.shape:
        raise ValueError(f"prediction {prediction.shape} differs from label {label.shape}")
    counted = label != IGNORE_LABEL
    objects, classes = ground_truth_objects(label, instances, exclude_classes)
    num_objects = classes.size
    inside = objects >= 0
    # [M, K] predicted-class pixel counts per object
    histogram = np.bincount(objects[inside] * num_classes + prediction[inside],
                            minlength=num_objects * num_classes).reshape(num_objects, num_classes)
    sizes = histogram.sum(axis=1)
    pure = histogram.max(axis=1, initial=0) >= PURITY_THRESHOLD * np.maximum(sizes, 1)
    pure &= sizes > 0
    correct = histogram.argmax(axis=1) == classes if num_objects else np.zeros(0, bool)
    return ImageStructure(
        num_objects=int(num_objects), num_pure=int(pure.sum()),
        num_correct_pure=int((pure & correct).sum()),
        gt_components=components_per_class(np.where(counted, label, 0), num_classes, counted),
        predicted_components=components_per_class(prediction, num_classes, counted))


@dataclasses.dataclass
class StructureStats:
    """Per-image structure counts of a split: num_objects / num_pure / num_correct_pure int64
    [N]; gt_components / predicted_components int64 [N, K]."""
    num_objects: np.ndarray
    num_pure: np.ndarray
    num_correct_pure: np.ndarray
    gt_components: np.ndarray
    predicted_components: np.ndarray

    @classmethod
    def from_images(cls, images, num_classes):
        """Stacks a list of ImageStructure."""
        images = list(images)
        def column(name):
            return np.array([getattr(image, name) for image in images], np.int64)
        components = {name: (np.stack([getattr(i, name) for i in images]).astype(np.int64)
                             if images else np.zeros((0, num_classes), np.int64))
                      for name in ("gt_components", "predicted_components")}
        return cls(num_objects=column("num_objects"), num_pure=column("num_pure"),
                   num_correct_pure=column("num_correct_pure"), **components)

    def arrays(self):
        """{field name: array}, e.g. for np.savez."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}

    def summary(self, class_names):
        """JSON-ready totals: object purity shares and component counts per class with the
        ratio predicted / ground truth (None where the ground truth has none)."""
        objects = int(self.num_objects.sum())
        gt = self.gt_components.sum(axis=0)
        predicted = self.predicted_components.sum(axis=0)
        per_class = {name: {"gt_components": int(g), "predicted_components": int(p),
                            "ratio": float(p / g) if g else None}
                     for name, g, p in zip(class_names, gt, predicted)}
        return {
            "num_images": int(self.num_objects.size), "num_objects": objects,
            "pure_share": float(self.num_pure.sum() / objects) if objects else None,
            "correct_pure_share": (float(self.num_correct_pure.sum() / objects)
                                   if objects else None),
            "purity_threshold": PURITY_THRESHOLD,
            "gt_components": int(gt.sum()), "predicted_components": int(predicted.sum()),
            "component_ratio": float(predicted.sum() / gt.sum()) if gt.sum() else None,
            "per_class": per_class}
