"""CIFAR-10 from its binary version, parsed with NumPy (never with pickle).

The "python version" of CIFAR-10 is a set of pickles, and loading a pickle runs
whatever code it contains.  The binary version holds the same images as plain
bytes.  ``cifar-10-binary.tar.gz`` unpacks to::

    cifar-10-batches-bin/data_batch_1.bin ... data_batch_5.bin   10,000 records each
    cifar-10-batches-bin/test_batch.bin                          10,000 records
    cifar-10-batches-bin/batches.meta.txt                        the 10 class names

and every record is 3073 bytes: one label byte (0-9), then the 32x32 red
plane, the green plane and the blue plane, each row-major.  So a whole file
is one reshape away from labels and (N, 3, 32, 32) images::

    records = bytes.reshape(-1, 3073)
    labels, images = records[:, 0], records[:, 1:].reshape(-1, 3, 32, 32)

The archive is checked against its published MD5 and unpacked member by
member: only plain files and folders under ``cifar-10-batches-bin/`` are
written, so an archive cannot place a file outside the data folder (absolute
paths, ``..``, links).  Unpacking goes to a temporary folder that is renamed
into place only when complete.
"""
import gzip
import os
import shutil
import tarfile
import zlib
from pathlib import Path, PurePosixPath

from ..backend import numpy as np
from ..errors import DataError, option
from .base import ArrayDataset
from .download import download as download_file
from .download import downloads_dir, md5_of_file

NAME = "cifar10"
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
ARCHIVE = "cifar-10-binary.tar.gz"
FOLDER = "cifar-10-batches-bin"
FILES = {"train": [f"data_batch_{k}.bin" for k in range(1, 6)], "test": ["test_batch.bin"]}
META = "batches.meta.txt"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
           "dog", "frog", "horse", "ship", "truck")
SIDE = 32
RECORD = 1 + 3 * SIDE * SIDE     # label byte + R, G, B planes


def parse_batch(data, source="CIFAR-10 batch"):
    """Images uint8 (N, 3, 32, 32) and labels uint8 (N,) from the bytes of one batch file."""
    if len(data) == 0 or len(data) % RECORD:
        raise DataError(f"{source}: {len(data)} bytes is not a whole number of {RECORD}-byte "
                        "records (1 label + 3072 pixels): truncated, or not a CIFAR-10 binary batch")
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, RECORD)
    labels = records[:, 0]
    bad = np.flatnonzero(labels >= len(CLASSES))
    if bad.size:
        raise DataError(f"{source}: record {bad[0]} has label byte {labels[bad[0]]}, expected "
                        f"0..{len(CLASSES) - 1}: corrupt, or not a CIFAR-10 binary batch")
    return records[:, 1:].reshape(-1, 3, SIDE, SIDE), labels


def read_batch(path):
    """``parse_batch`` on a file."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot read: {err.strerror or err}") from None
    return parse_batch(data, str(path))


def read_classes(folder):
    """The class names in ``batches.meta.txt`` (the built-in names if the file is absent)."""
    path = Path(folder) / META
    if not path.is_file():
        return CLASSES
    names = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    if len(names) != len(CLASSES):
        raise DataError(f"{path}: {len(names)} class names, expected {len(CLASSES)}")
    return tuple(names)


def safe_extract(archive, dest):
    """Unpack the ``cifar-10-batches-bin/`` folder of ``archive`` into ``dest``; return it.

    Refuses (DataError naming the member) anything but plain files and folders
    under ``cifar-10-batches-bin/``.  Nothing appears at ``dest/cifar-10-batches-bin``
    unless the whole archive unpacked.
    """
    archive, dest = Path(archive), Path(dest)
    final = dest / FOLDER
    partial = dest / (FOLDER + ".partial")
    shutil.rmtree(partial, ignore_errors=True)       # left over from an interrupted run
    try:
        partial.mkdir(parents=True)
    except OSError as err:
        raise DataError(f"cannot unpack {archive.name} into {dest}: "
                        f"{err.strerror or err}") from None
    root = partial.resolve()
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                parts = PurePosixPath(member.name).parts
                if (member.name.startswith(("/", "\\")) or ".." in parts or ":" in member.name
                        or not parts or parts[0] != FOLDER):
                    raise DataError(f"{archive}: refusing member {member.name!r}: expected only "
                                    f"relative paths under {FOLDER}/")
                if not (member.isfile() or member.isdir()):
                    raise DataError(f"{archive}: refusing member {member.name!r}: links and "
                                    "special files are not allowed")
                target = partial.joinpath(*parts[1:])
                if not target.resolve().is_relative_to(root):   # belt and braces
                    raise DataError(f"{archive}: refusing member {member.name!r}: outside {FOLDER}/")
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
        shutil.rmtree(partial, ignore_errors=True)
        damaged = isinstance(err, (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile))
        if not damaged:                # the disk is full, the folder read-only, ...: not the archive
            raise DataError(f"cannot unpack {archive.name} into {dest}: "
                            f"{err.strerror or err}") from None
        raise DataError(f"{archive}: corrupt or truncated archive ({err})") from None
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    missing = [f for f in FILES["train"] + FILES["test"] if not (partial / f).is_file()]
    if missing:
        shutil.rmtree(partial, ignore_errors=True)
        raise DataError(f"{archive}: no {FOLDER}/{missing[0]} in the archive")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(partial, final)
    return final


def _batch_folder(d, split):
    """``d/cifar-10-batches-bin`` or ``d`` itself if it holds the split's files, else None."""
    for folder in (d / FOLDER, d):
        if all((folder / f).is_file() for f in FILES[split]):
            return folder
    return None


def find_folder(split, data_dir=None, download=False, url=URL, md5=MD5):
    """The folder holding the split's batch files: found, unpacked or downloaded."""
    cache = downloads_dir(NAME)
    dirs = [Path(data_dir), Path(data_dir) / NAME] if data_dir is not None else [cache]
    for d in dirs:
        folder = _batch_folder(d, split)
        if folder is not None:
            return folder
    for d in dirs:                                   # an archive nobody has unpacked yet
        archive = d / ARCHIVE
        if archive.is_file():
            actual = md5_of_file(archive)
            if actual != md5:
                if d == cache:
                    archive.unlink()
                    if download:
                        break
                fix = ("the file was deleted; add " if d == cache else
                       "replace it with the official archive, or remove it and add ")
                raise DataError(f"{archive}: MD5 mismatch (cut short or damaged): expected "
                                f"{md5}, got {actual}; {fix}"
                                f"{option('--download', 'download=True')} to fetch it afresh")
            return _batch_folder(safe_extract(archive, d), split)
    if download:
        target = Path(data_dir) if data_dir is not None else cache
        archive = download_file(url, target / ARCHIVE, md5)
        return _batch_folder(safe_extract(archive, target), split)
    where = ", ".join(str(d) for d in dirs)
    raise DataError(f"CIFAR-10 ({split}) not found: no {FOLDER}/ or {ARCHIVE} in {where}; add "
                    f"{option('--download', 'download=True')} to fetch {URL} (163 MB), or give "
                    f"{option('--data-dir', 'data_dir')} a folder holding {ARCHIVE} or the "
                    f"unpacked {FOLDER}/")


def load_cifar10(split="train", data_dir=None, download=False, url=URL, md5=MD5):
    """The ``split`` ("train": 50,000 images, "test": 10,000) of CIFAR-10 as an ArrayDataset.

    Images uint8 (N, 3, 32, 32), labels int64 (N,).  ``url`` and ``md5`` name
    the archive to download and the checksum it must have.
    """
    if split not in FILES:
        raise DataError(f"{NAME}: unknown split {split!r}, expected 'train' or 'test'")
    folder = find_folder(split, data_dir, download, url, md5)
    parts = [read_batch(folder / f) for f in FILES[split]]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return ArrayDataset(images, labels, read_classes(folder), name=f"{NAME}/{split}")
