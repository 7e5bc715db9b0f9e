"""Where data files live, and how they get there: downloads with an MD5 check.

Every downloaded file is checked against the MD5 its publisher gives.  A file
whose checksum is wrong is deleted at once, so a broken download is never
mistaken for a good one on the next run; a file already in the cache with the
right checksum is not fetched again.  Writes are atomic: bytes go to
``name.part`` and only a verified file is renamed to ``name``.

``fetch`` is the one function that touches the network (``urllib`` also opens
``file://`` URLs, which is how the tests download without a network).
"""
import hashlib
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import DataError

#: The repository's data folder: the embedded subset and, under downloads/, the cache.
DATA_ROOT = Path(os.environ.get("TINYALEXNET_DATA_ROOT",
                                Path(__file__).resolve().parents[2] / "data"))


def downloads_dir(name):
    """The cache folder of data set ``name``: ``data/downloads/<name>``."""
    return DATA_ROOT / "downloads" / name


def md5_of_file(path, chunk=1 << 20):
    """The MD5 of a file's bytes, as 32 hex digits."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(url, dest):
    """Copy the bytes at ``url`` into the file ``dest`` (http, https or file URLs)."""
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(dest, "wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise DataError(f"could not download {url}: {reason}") from None


def download(url, path, md5):
    """Make ``path`` hold the file at ``url`` with the given MD5; return ``path``.

    A cached file with the right MD5 is kept as it is.  A cached or freshly
    downloaded file with the wrong MD5 is deleted and a :class:`DataError`
    names the file and both checksums.
    """
    path = Path(path)
    part = path.with_name(path.name + ".part")
    if path.is_file() and md5_of_file(path) == md5:
        return path
    try:
        if path.exists():
            path.unlink()                   # a stale or broken cache entry: fetch it again
        # Can the file be written?  Asked before the first byte is downloaded.
        path.parent.mkdir(parents=True, exist_ok=True)
        part.touch()
    except OSError as err:
        raise DataError(f"{path.parent}: cannot write the download there "
                        f"({err.strerror or err}); give --data-dir a writable folder, or set "
                        f"TINYALEXNET_DATA_ROOT (now {DATA_ROOT})") from None
    try:
        fetch(url, part)
        actual = md5_of_file(part)
    except BaseException:                   # also Ctrl-C: leave no half file behind
        part.unlink(missing_ok=True)
        raise
    if actual != md5:
        part.unlink()
        raise DataError(f"{path}: MD5 mismatch after downloading {url}: expected {md5}, "
                        f"got {actual}; the file was deleted, try again")
    os.replace(part, path)
    return path
