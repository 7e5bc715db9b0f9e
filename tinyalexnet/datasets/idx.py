"""MNIST and Fashion-MNIST, read from their IDX files.

The IDX format (LeCun's, used by both data sets) is a header and raw bytes::

    bytes 0-1   0x00 0x00            the magic number starts with two zero bytes
    byte  2     0x08                 element type: unsigned byte
    byte  3     ndim                 3 for images (N, 28, 28), 1 for labels (N,)
    4 * ndim    big-endian uint32    the size of each dimension
    the rest    N*28*28 (or N) bytes the values, row-major

The files are published gzip-compressed (``*-ubyte.gz``); uncompressed copies
are read too.  The parser is strict: any magic number, element type, number
of dimensions or file length that disagrees with the header is an error naming
the file, because a silently misread data set trains a silently broken model.

Where the files are looked for, in order (the first folder holding a file wins):

- ``data_dir`` and ``data_dir/<name>`` when a data folder is given, else
- the download cache ``data/downloads/<name>/`` and the system folders
  (Debian's ``dataset-fashion-mnist`` installs /usr/share/datasets/fashion-mnist).

A file found anywhere is checked against the MD5 of the official *decompressed*
contents (Debian recompresses the .gz files, so their own MD5s differ from the
published ones while the contents are identical); a download is checked
against the published MD5 of the .gz file.
"""
import gzip
import hashlib
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from ..backend import numpy as np
from ..errors import DataError, option
from ..runfolder import write_atomic
from .base import ArrayDataset
from .download import download as download_file
from .download import downloads_dir

IDX_UBYTE = 0x08   # the only element type MNIST-like files use


def parse_idx(data, source="IDX data", ndim=None):
    """The array stored in the IDX bytes ``data``; ``source`` names the file in errors.

    ``ndim`` (optional) is the number of dimensions the caller expects.
    Returns a read-only uint8 array of the header's shape.
    """
    if len(data) < 4:
        raise DataError(f"{source}: {len(data)} bytes, too short for an IDX header (4 bytes or more)")
    magic = int.from_bytes(data[:4], "big")
    if data[0] != 0 or data[1] != 0:
        raise DataError(f"{source}: bad magic number 0x{magic:08x}: an IDX file starts with "
                        "two zero bytes (is it compressed, or not an IDX file?)")
    if data[2] != IDX_UBYTE:
        raise DataError(f"{source}: element type 0x{data[2]:02x} in magic number 0x{magic:08x}, "
                        f"expected 0x{IDX_UBYTE:02x} (unsigned bytes)")
    dims_count = data[3]
    if ndim is not None and dims_count != ndim:
        raise DataError(f"{source}: {dims_count} dimensions (magic number 0x{magic:08x}), "
                        f"expected {ndim}")
    header = 4 + 4 * dims_count
    if len(data) < header:
        raise DataError(f"{source}: truncated header: {len(data)} bytes, the {dims_count} "
                        f"dimension sizes need {header}")
    shape = struct.unpack(f">{dims_count}I", data[4:header])
    size = int(np.prod(shape, dtype=np.int64))
    body = len(data) - header
    dims = "x".join(map(str, shape))
    if body < size:
        raise DataError(f"{source}: truncated: the header promises {dims} = {size} bytes of "
                        f"data, the file holds {body}")
    if body > size:
        raise DataError(f"{source}: {body - size} unexpected bytes after the {dims} = {size} "
                        "bytes of data the header promises")
    return np.frombuffer(data, dtype=np.uint8, count=size, offset=header).reshape(shape)


def read_bytes(path):
    """The contents of a file, decompressed when its name ends in .gz."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot read: {err.strerror or err}") from None
    if path.suffix != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:   # bad header, CRC, cut short
        raise DataError(f"{path}: not a readable gzip file ({err})") from None


def read_idx(path, ndim=None):
    """Read an IDX file (gzip-compressed or not) into a uint8 array; strict, see ``parse_idx``."""
    return parse_idx(read_bytes(path), str(path), ndim)


def write_idx(path, array):
    """Write a uint8 array as a gzip-compressed IDX file, byte-for-byte reproducibly.

    The gzip header gets no file name and time stamp 0, so the same array
    always gives the same bytes (with the same zlib).  Written atomically.
    """
    array = np.ascontiguousarray(array)
    if array.dtype != np.uint8:
        raise DataError(f"{path}: IDX files here hold uint8 values, got {array.dtype}")
    header = bytes([0, 0, IDX_UBYTE, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path = Path(path)

    def write(f):
        with gzip.GzipFile(filename="", mode="wb", fileobj=f, compresslevel=9, mtime=0) as gz:
            gz.write(header)
            gz.write(array.tobytes())

    write_atomic(path, write)
    return path


@dataclass(frozen=True)
class IdxSource:
    """One MNIST-like data set: its files, checksums, classes and where to find it."""
    name: str
    title: str
    url: str                      # base URL of the .gz files, ending in "/"
    classes: tuple
    md5: dict                     # file name -> MD5 of the published .gz file
    raw_md5: dict = field(default_factory=dict)   # file name -> MD5 of the decompressed file
    system_dirs: tuple = ()
    install_hint: str = ""        # how else to get it, e.g. a Debian package

    @staticmethod
    def files(split):
        prefix = {"train": "train", "test": "t10k"}[split]
        return (f"{prefix}-images-idx3-ubyte.gz", f"{prefix}-labels-idx1-ubyte.gz")


FASHION_MNIST = IdxSource(
    name="fashion-mnist",
    title="Fashion-MNIST",
    url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
             "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    md5={"train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
         "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
         "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
         "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310"},
    raw_md5={"train-images-idx3-ubyte.gz": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
             "train-labels-idx1-ubyte.gz": "9018921c3c673c538a1fc5bad174d6f9",
             "t10k-images-idx3-ubyte.gz": "8181f5470baa50b63fa0f6fddb340f0a",
             "t10k-labels-idx1-ubyte.gz": "15d484375f8d13e6eb1aabb0c3f46965"},
    system_dirs=("/usr/share/datasets/fashion-mnist",),
    install_hint="or 'sudo apt-get install dataset-fashion-mnist' (Debian/Ubuntu), ",
)

MNIST = IdxSource(
    name="mnist",
    title="MNIST",
    # LeCun's original host no longer serves the files; this mirror has the same bytes.
    url="https://ossci-datasets.s3.amazonaws.com/mnist/",
    classes=tuple(str(d) for d in range(10)),
    md5={"train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
         "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
         "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
         "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"},
    raw_md5={"train-images-idx3-ubyte.gz": "6bbc9ace898e44ae57da46a324031adb",
             "train-labels-idx1-ubyte.gz": "a25bea736e30d166cdddb491f175f624",
             "t10k-images-idx3-ubyte.gz": "2646ac647ad5339dbf082846283269ea",
             "t10k-labels-idx1-ubyte.gz": "27ae3e4e09519cfbb04c329615203637"},
)


def search_dirs(source, data_dir=None):
    """The folders searched for ``source``'s files, in order."""
    if data_dir is not None:
        return [Path(data_dir), Path(data_dir) / source.name]
    return [downloads_dir(source.name), *map(Path, source.system_dirs)]


def _find(file_name, dirs):
    """The first existing ``file_name`` (or its uncompressed twin) in ``dirs``, else None."""
    for d in dirs:
        for candidate in (d / file_name, d / file_name.removesuffix(".gz")):
            if candidate.is_file():
                return candidate
    return None


def _read_verified(path, source, file_name, ndim):
    data = read_bytes(path)
    expected = source.raw_md5.get(file_name)
    if expected is not None:
        actual = hashlib.md5(data).hexdigest()
        if actual != expected:
            raise DataError(f"{path}: not the official {source.title} file: MD5 of its "
                            f"contents expected {expected}, got {actual}")
    return parse_idx(data, str(path), ndim)


def load_idx(source, split="train", data_dir=None, download=False):
    """The ``split`` ("train" or "test") of an MNIST-like data set as an ArrayDataset.

    ``download=True`` fetches missing files into ``data_dir`` (or the download
    cache), each checked against its published MD5, and fetches again a file
    there whose contents are not the official ones (a download cut short, a
    damaged disk).  Images come out as uint8 (N, 1, 28, 28), labels as int64 (N,).
    """
    if split not in ("train", "test"):
        raise DataError(f"{source.name}: unknown split {split!r}, expected 'train' or 'test'")
    dirs = search_dirs(source, data_dir)
    target = Path(data_dir) if data_dir is not None else downloads_dir(source.name)
    names = source.files(split)
    paths = [_find(n, dirs) for n in names]
    if download and None in paths:
        paths = [p if p is not None else download_file(source.url + n, target / n, source.md5[n])
                 for p, n in zip(paths, names)]
    if None in paths:
        missing = names[paths.index(None)]
        where = ", ".join(str(d) for d in dirs)
        raise DataError(
            f"{source.title} ({split}) not found: no {missing} in {where}; add "
            f"{option('--download', 'download=True')} to fetch it from {source.url}, "
            f"{source.install_hint}or give {option('--data-dir', 'data_dir')} a folder holding "
            f"the four IDX files")
    images = _read_or_fetch_again(paths[0], source, names[0], 3, target, download)
    labels = _read_or_fetch_again(paths[1], source, names[1], 1, target, download)
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{paths[1]}: {labels.shape[0]} labels for the {images.shape[0]} "
                        f"images of {paths[0]}")
    return ArrayDataset(images[:, None], labels, source.classes, name=f"{source.name}/{split}")


def _read_or_fetch_again(path, source, file_name, ndim, target, download):
    """The array in ``path``; a damaged file where downloads go is fetched again when
    ``download`` is on, and anywhere else named with what to do about it."""
    try:
        return _read_verified(path, source, file_name, ndim)
    except DataError as err:
        ours = path.parent == target     # where --download puts this file
        if download and ours:
            path.unlink(missing_ok=True)     # damaged: replaced by a fresh download
            fresh = download_file(source.url + file_name, target / file_name,
                                  source.md5[file_name])
            return _read_verified(fresh, source, file_name, ndim)
        if ours:
            advice = (f"add {option('--download', 'download=True')} to replace it with a fresh "
                      f"copy from {source.url}")
        else:
            advice = (f"replace it with the official file from {source.url}, or remove it and "
                      f"add {option('--download', 'download=True')} to fetch one into {target}")
        raise DataError(f"{err} (cut short or damaged); {advice}") from None
