"""What a data set is to the rest of the package, and how batches are drawn from it.

A data set is anything with::

    len(ds)                  number of images
    ds.classes               list of class names, index = label
    ds.channels              1 (grey) or 3 (RGB)
    ds.get_batch(indices)    -> (images uint8 (B, C, H, W), labels int64 (B,)), on the host

Images stay uint8 on the host until a batch is drawn; ``transforms`` turns a
batch into float input for a model on the active backend (one host-to-device
copy per step).  ``ArrayDataset`` holds everything in memory (MNIST,
Fashion-MNIST, CIFAR-10); ``ImageFolder`` decodes files as batches ask for them.
"""
from ..backend import numpy as np
from ..errors import DataError


class ArrayDataset:
    """Images and labels held in memory: uint8 (N, C, H, W) and int64 (N,)."""

    def __init__(self, images, labels, classes, name="arrays"):
        images, labels = np.asarray(images), np.asarray(labels)
        if images.ndim != 4 or images.dtype != np.uint8:
            raise DataError(f"{name}: expected uint8 images of shape (N, C, H, W), "
                            f"got {images.dtype} {images.shape}")
        if labels.shape != (images.shape[0],):
            raise DataError(f"{name}: {images.shape[0]} images but labels of shape {labels.shape}")
        if labels.size and (labels.min() < 0 or labels.max() >= len(classes)):
            raise DataError(f"{name}: labels must lie in [0, {len(classes) - 1}], "
                            f"got {labels.min()}..{labels.max()}")
        self.images, self.labels = images, labels.astype(np.int64)
        self.classes, self.name = list(classes), name

    def __len__(self):
        return len(self.labels)

    @property
    def channels(self):
        return self.images.shape[1]

    @property
    def image_size(self):
        return self.images.shape[2:]

    def get_batch(self, indices):
        return self.images[indices], self.labels[indices]

    def subset(self, indices, name=None):
        return ArrayDataset(self.images[indices], self.labels[indices], self.classes,
                            name or self.name)

    def __repr__(self):
        return (f"{self.name}: {len(self)} images {self.channels}x"
                f"{self.image_size[0]}x{self.image_size[1]}, {len(self.classes)} classes")


def batch_order(n, seed, epoch, shuffle=True):
    """The order of the n samples in ``epoch``: a permutation that depends only on (seed, epoch)."""
    if not shuffle:
        return np.arange(n)
    return np.random.default_rng([seed, epoch]).permutation(n)


def iterate_batches(dataset, batch_size, seed=0, epoch=0, shuffle=True, start=0, drop_last=False):
    """Yield ``(step, indices)`` for the batches of one epoch, from batch number ``start``.

    Restarting at ``start`` gives exactly the batches an uninterrupted epoch
    would have given from there: the order depends only on (seed, epoch).
    """
    order = batch_order(len(dataset), seed, epoch, shuffle)
    steps = len(order) // batch_size if drop_last else -(-len(order) // batch_size)
    for step in range(start, steps):
        yield step, order[step * batch_size:(step + 1) * batch_size]
