"""datasets/split.py: the validation split is fixed by the seed alone, and every image keeps
its own label through a split, a limit, or both, in array and in file-backed data sets.

Each image carries its own number in its first two pixels, so which images a
part holds, and which label each should have, are read back from the images
themselves, not from the indices the code under test chose.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from tinyalexnet.datasets import ArrayDataset
from tinyalexnet.datasets.split import limit_dataset, split_validation

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N = 300


def label_of(number):
    return (7 * number + 3) % 10           # not in order: a shifted or sorted label shows


def numbered(n=N):
    """n images whose pixels (0, 0) and (0, 1) hold their number (low, high byte)."""
    images = np.random.default_rng(1).integers(0, 256, (n, 1, 8, 8)).astype(np.uint8)
    numbers = np.arange(n)
    images[:, 0, 0, 0], images[:, 0, 0, 1] = numbers % 256, numbers // 256
    return ArrayDataset(images, label_of(numbers), [str(k) for k in range(10)], name="numbered")


class FileLike:
    """A data set without ``subset`` (as ImageFolder): parts of it are split.Subset views."""

    def __init__(self, arrays):
        self.arrays, self.classes, self.channels, self.name = arrays, arrays.classes, 1, "files"

    def __len__(self):
        return len(self.arrays)

    def get_batch(self, indices):
        return self.arrays.get_batch(np.asarray(indices))


def numbers_and_labels(part):
    """The numbers the images of ``part`` carry, and the labels ``part`` gives them."""
    images, labels = part.get_batch(np.arange(len(part)))
    return images[:, 0, 0, 0].astype(int) + 256 * images[:, 0, 0, 1].astype(int), labels


@pytest.mark.parametrize("kind", ["arrays", "files"])
def test_every_image_keeps_its_label_through_split_and_limit(kind):
    data = numbered() if kind == "arrays" else FileLike(numbered())
    train, val = split_validation(data, 0.2, seed=4)
    small = limit_dataset(train, 50, seed=9)
    for part in (train, val, small, limit_dataset(val, 17, seed=2)):
        numbers, labels = numbers_and_labels(part)
        assert np.array_equal(labels, label_of(numbers))
        assert len(set(numbers.tolist())) == len(part)     # no image twice
        # and in any order a batch asks for them
        order = np.random.default_rng(0).permutation(len(part))[:7]
        images, labels = part.get_batch(order)
        assert np.array_equal(labels, label_of(numbers[order]))
        assert np.array_equal(images[:, 0, 0, 0], numbers[order] % 256)
    t, v = numbers_and_labels(train)[0], numbers_and_labels(val)[0]
    assert len(v) == 60 and sorted(t.tolist() + v.tolist()) == list(range(N))   # a partition
    assert set(numbers_and_labels(small)[0].tolist()) <= set(t.tolist())


SPLIT_IN_A_CHILD = """
import numpy as np, sys
sys.path.insert(0, "tests")
from test_split import numbered, numbers_and_labels
from tinyalexnet.datasets.split import split_validation
np.random.seed(12345); np.random.random(100)      # other draws before it change nothing
print(sorted(numbers_and_labels(split_validation(numbered(), 0.2, seed=4)[1])[0].tolist()))
"""


def test_the_validation_split_is_fixed_by_the_seed_alone():
    """A resumed run, in another process, must validate on the same images."""
    def val_numbers(seed):
        return sorted(numbers_and_labels(split_validation(numbered(), 0.2, seed)[1])[0].tolist())

    first = val_numbers(4)
    np.random.random(1000)                              # the global generator moves on
    np.random.default_rng().random(10)
    assert val_numbers(4) == first
    assert val_numbers(5) != first                      # and the seed does choose it
    assert first != list(range(60)) and first != list(range(240, 300))   # drawn, not cut
    child = subprocess.run([sys.executable, "-c", SPLIT_IN_A_CHILD], capture_output=True,
                           text=True, timeout=60, cwd=ROOT)
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == str(first)
