"""The default data set: a small, class-balanced Fashion-MNIST subset kept in the repository.

``fashion-mnist-subset`` is 600 training and 100 test images of each of the
10 classes (6,000 + 1,000 grey 28x28 images, about 3 MB), stored in
``data/fashion-mnist-subset/`` as IDX .gz files with the official names, so
the same reader as for the full data set loads it.  It makes the first run
work with no download at all.  ``pip install`` ships the same files inside
the package, as ``tinyalexnet/data/fashion-mnist-subset/`` (pyproject.toml),
so the first run works from any folder too.

It is built from the official files by a fixed rule, so anyone can rebuild it
and get the same images (see data/README.md)::

    python -m tinyalexnet.datasets.embedded --rebuild /usr/share/datasets/fashion-mnist

The rule: a NumPy Generator seeded with 0 gives every image of a split a
random key (``rng.random``, training split first); in each class the images
with the smallest keys are kept, in their original order.
"""
import argparse
import hashlib
import sys
from pathlib import Path

from ..backend import numpy as np
from ..errors import DataError, TinyAlexNetError
from .download import DATA_ROOT, md5_of_file
from .idx import FASHION_MNIST, IdxSource, load_idx, read_bytes, write_idx

NAME = "fashion-mnist-subset"
SUBSET_DIR = DATA_ROOT / NAME                                   # the repository's data/
INSTALLED_DIR = Path(__file__).resolve().parents[1] / "data" / NAME   # an installed package's
PER_CLASS = {"train": 600, "test": 100}
SEED = 0

SUBSET = IdxSource(
    name=NAME,
    title="the embedded Fashion-MNIST subset",
    url="",
    classes=FASHION_MNIST.classes,
    md5={},
    # MD5s of the decompressed files: they do not depend on the zlib that compressed them.
    raw_md5={"train-images-idx3-ubyte.gz": "babe302a59ab3c4d27d2ad4f07a43776",
             "train-labels-idx1-ubyte.gz": "21bb6a333dd4ab05506176df05a51c8b",
             "t10k-images-idx3-ubyte.gz": "28f712131eea43a96eafdaf1ebcc3911",
             "t10k-labels-idx1-ubyte.gz": "aa93d968aa3c1d3f4cdd627a2fe6e28b"},
)


def load_subset(split="train", data_dir=None):
    """The embedded subset's ``split`` as an ArrayDataset (never downloads anything)."""
    if split not in PER_CLASS:
        raise DataError(f"{NAME}: unknown split {split!r}, expected 'train' or 'test'")
    folder = Path(data_dir) if data_dir is not None else _subset_dir(split)
    missing = [n for n in SUBSET.files(split) if not (folder / n).is_file()]
    if missing:
        raise DataError(f"{folder / missing[0]}: the embedded subset is missing; it ships in the "
                        "repository's data/ folder and inside an installed package (reinstall "
                        "with pip install, or set TINYALEXNET_DATA_ROOT to a copy of data/)")
    return load_idx(SUBSET, split, data_dir=folder)


def _subset_dir(split):
    """data/fashion-mnist-subset/ of a checkout (or under TINYALEXNET_DATA_ROOT), else the
    copy installed inside the package; the checkout's when neither has the split's files."""
    for folder in (SUBSET_DIR, INSTALLED_DIR):
        if all((folder / name).is_file() for name in SUBSET.files(split)):
            return folder
    return SUBSET_DIR


def select(labels, per_class, rng):
    """Indices of ``per_class`` images of each class, in their original order."""
    keys = rng.random(len(labels))
    chosen = []
    for c in range(int(labels.max()) + 1):
        members = np.flatnonzero(labels == c)
        if len(members) < per_class:
            raise DataError(f"class {c} has {len(members)} images, fewer than {per_class}")
        chosen.append(members[np.argsort(keys[members], kind="stable")[:per_class]])
    return np.sort(np.concatenate(chosen))


def rebuild(src_dir, out_dir=SUBSET_DIR, per_class=None, seed=SEED):
    """Write the subset's four IDX .gz files from the official ones in ``src_dir``.

    Returns {file name: (number of items, MD5 of the .gz file, MD5 of its contents)}.
    """
    per_class = dict(PER_CLASS, **(per_class or {}))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    report = {}
    for split in ("train", "test"):
        full = load_idx(FASHION_MNIST, split, data_dir=src_dir)   # checks the official MD5s
        keep = select(full.labels, per_class[split], rng)
        images_name, labels_name = SUBSET.files(split)
        for name, array in ((images_name, full.images[keep, 0]),
                            (labels_name, full.labels[keep].astype(np.uint8))):
            path = write_idx(out_dir / name, array)
            report[name] = (len(array), md5_of_file(path), hashlib.md5(read_bytes(path)).hexdigest())
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m tinyalexnet.datasets.embedded",
        description="Rebuild the embedded Fashion-MNIST subset from the official IDX files.")
    parser.add_argument("--rebuild", metavar="SRC_DIR", required=True,
                        help="folder with the four official Fashion-MNIST .gz files")
    parser.add_argument("--out", default=str(SUBSET_DIR),
                        help="where to write (default: %(default)s)")
    parser.add_argument("--train-per-class", type=int, default=PER_CLASS["train"])
    parser.add_argument("--test-per-class", type=int, default=PER_CLASS["test"])
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    try:
        report = rebuild(args.rebuild, args.out, {"train": args.train_per_class,
                                                  "test": args.test_per_class}, args.seed)
    except TinyAlexNetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{'file':28s} {'items':>6s}  {'MD5 of the .gz file':32s}  MD5 of the contents")
    for name, (count, md5, raw) in report.items():
        print(f"{name:28s} {count:6d}  {md5}  {raw}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
