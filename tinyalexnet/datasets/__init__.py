"""Data sets: what they are (base.py) and where they come from (one file per source).

    from tinyalexnet.datasets import load_dataset
    train = load_dataset("fashion-mnist-subset", "train")   # the default: in the repository
    images, labels = train.get_batch([0, 1, 2])             # uint8 (3, 1, 28, 28), int64 (3,)

=====================  ==========================================  ============================
name                   what                                         where it comes from
=====================  ==========================================  ============================
fashion-mnist-subset   6,000 + 1,000 grey 28x28, 10 classes         data/fashion-mnist-subset/
fashion-mnist          60,000 + 10,000 grey 28x28, 10 classes       download, or Debian package
mnist                  60,000 + 10,000 grey 28x28 digits            download
cifar10                50,000 + 10,000 RGB 32x32, 10 classes        download (binary version)
folder                 your JPEG/PNG files, one folder per class    data_dir/train, data_dir/test
store                  a folder decoded once by ``prepare``         data_dir/train, data_dir/test
=====================  ==========================================  ============================
"""
from pathlib import Path

from ..errors import DataError
from .base import ArrayDataset, batch_order, iterate_batches
from .cifar10 import load_cifar10
from .embedded import load_subset
from .folder import ImageFolder, load_image_file, load_image_files
from .idx import FASHION_MNIST, MNIST, load_idx, read_idx
from .store import StoreDataset, load_store

DEFAULT_DATASET = "fashion-mnist-subset"
SPLITS = ("train", "test")


def _fashion_mnist(split, data_dir=None, download=False):
    """Fashion-MNIST, 60,000 + 10,000 grey 28x28 images of clothes (download or Debian package)."""
    return load_idx(FASHION_MNIST, split, data_dir, download)


def _mnist(split, data_dir=None, download=False):
    """MNIST, 60,000 + 10,000 grey 28x28 handwritten digits (download)."""
    return load_idx(MNIST, split, data_dir, download)


def _subset(split, data_dir=None, download=False):
    """Fashion-MNIST subset, 6,000 + 1,000 images, class-balanced, in the repository (default)."""
    return load_subset(split, data_dir)            # nothing to download: it is in the repository


def _cifar10(split, data_dir=None, download=False):
    """CIFAR-10, 50,000 + 10,000 RGB 32x32 images, 10 classes (download, binary version)."""
    return load_cifar10(split, data_dir, download)


def _folder(split, data_dir=None, download=False, size=256, channels=3):
    """Your images: --data-dir ROOT with ROOT/train/<class>/*.jpg|png and ROOT/test/ (or val/).

    ``size``: the side each image is cut to (the paper: 256; use
    ``transforms.paper_canvas(32)`` = 36 for the 32x32 models).
    """
    layout = ("give --data-dir a folder holding train/<class>/*.jpg|png and "
              "test/<class>/*.jpg|png (or val/ instead of test/)")
    if data_dir is None:
        raise DataError(f"the 'folder' data set needs a data folder: {layout}")
    root = Path(data_dir)
    if not (root / "train").is_dir():
        raise DataError(f"{root / 'train'}: no such folder; {layout}")
    if split == "train":
        return ImageFolder(root / "train", size, channels, name="folder/train")
    test = next((root / s for s in ("test", "val") if (root / s).is_dir()), None)
    if test is None:
        raise DataError(f"{root}: no test/ or val/ folder; {layout}")
    # the test split uses the training split's class list, so that labels agree
    classes = sorted(p.name for p in (root / "train").iterdir()
                     if p.is_dir() and not p.name.startswith("."))
    return ImageFolder(test, size, channels, classes=classes, name=f"folder/{test.name}")


def _store(split, data_dir=None, download=False, size=None, channels=None, verify="lazy"):
    """A store made by prepare: --data-dir STORE with STORE/train and STORE/test (or val/).

    The images are decoded already; ``size`` (the side the model's loader
    asks for) must be the store's, ``channels`` is the store's own; ``verify``:
    see ``store.StoreDataset``.
    """
    if data_dir is None:
        raise DataError("the 'store' data set needs the store's folder: give --data-dir STORE, "
                        "made by python -m tinyalexnet prepare --data-dir SOURCE --out STORE")
    store = load_store(data_dir, split, size, verify)
    if channels is not None and channels != store.channels:
        raise DataError(f"{store.folder}: holds {store.channels}-channel images, "
                        f"{channels} were asked for")
    return store


#: name -> loader(split, data_dir=None, download=False)
DATASETS = {
    "fashion-mnist-subset": _subset,
    "fashion-mnist": _fashion_mnist,
    "mnist": _mnist,
    "cifar10": _cifar10,
    "folder": _folder,
    "store": _store,
}
TAKES_OPTIONS = ("folder", "store")     # size and channels


def describe(name):
    """One line about the data set ``name`` (for --help and logs)."""
    return DATASETS[name].__doc__.splitlines()[0]


def load_dataset(name=DEFAULT_DATASET, split="train", data_dir=None, download=False, **options):
    """Load ``split`` ("train" or "test") of the data set called ``name``.

    ``data_dir``: where to look instead of the default places (for "folder":
    the root holding train/ and test/).  ``download=True`` fetches a missing
    data set from its official location, checked by MD5.  ``options`` go to
    the loader ("folder" and "store" take ``size`` and ``channels``).  Anything missing
    raises a one-line DataError that says how to get it.
    """
    if name not in DATASETS:
        raise DataError(f"unknown data set {name!r}: expected one of {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise DataError(f"{name}: unknown split {split!r}, expected one of {', '.join(SPLITS)}")
    if options and name not in TAKES_OPTIONS:
        raise DataError(f"{name}: no options {', '.join(options)} (only 'folder' and 'store' "
                        "take size and channels)")
    return DATASETS[name](split, data_dir, download, **options)


__all__ = ["ArrayDataset", "batch_order", "iterate_batches", "DATASETS", "DEFAULT_DATASET",
           "load_dataset", "describe", "load_image_file", "load_image_files", "ImageFolder",
           "load_cifar10", "load_idx", "read_idx", "load_subset", "FASHION_MNIST", "MNIST",
           "StoreDataset", "load_store"]
