"""Parts of a data set: a validation split held out of the training set, a random limit.

    train, val = split_validation(train, 0.1, seed=0)    # 90% / 10%, fixed by the seed
    small = limit_dataset(train, 500, seed=0)             # 500 images drawn at random

Both draw from their own NumPy Generator seeded by (seed, a constant), so a
split depends on the seed alone, never on what else the program drew: a
resumed run gets the same validation images as the run it continues.
"""
from ..backend import numpy as np


class Subset:
    """The images of ``dataset`` at ``indices``, as a data set of its own."""

    def __init__(self, dataset, indices, name=None):
        self.dataset, self.indices = dataset, np.asarray(indices)
        self.classes, self.channels = dataset.classes, dataset.channels
        self.name = name or getattr(dataset, "name", "subset")

    def __len__(self):
        return len(self.indices)

    def get_batch(self, indices):
        return self.dataset.get_batch(self.indices[indices])


def subset(dataset, indices, name=None):
    """``dataset.subset`` where the data set has one (it keeps arrays), else a Subset view."""
    if hasattr(dataset, "subset"):
        return dataset.subset(indices, name)
    return Subset(dataset, indices, name)


def split_validation(dataset, fraction, seed):
    """(train, validation): a random ``fraction`` of ``dataset`` held out, fixed by ``seed``."""
    order = np.random.default_rng([seed, 0xA1]).permutation(len(dataset))
    n_val = int(round(len(dataset) * fraction))
    name = getattr(dataset, "name", "data")
    return (subset(dataset, np.sort(order[n_val:]), name),
            subset(dataset, np.sort(order[:n_val]), name + " (validation)"))


def limit_dataset(dataset, n, seed):
    """At most ``n`` images of ``dataset``, drawn at random (all classes mixed)."""
    if n is None or n >= len(dataset):
        return dataset
    keep = np.random.default_rng([seed, 0x11]).permutation(len(dataset))[:n]
    return subset(dataset, np.sort(keep))
