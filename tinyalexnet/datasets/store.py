"""A store: images decoded once, at their final size, read by training without decoding.

The paper prepared its data once: "we down-sampled the images to a fixed
resolution of 256 x 256" and trained from that.  ``python -m tinyalexnet
prepare`` (``prepare.py``) does the same, and this file is what it writes and
how it is read back::

    STORE/train/                     one folder per split (train, and test or val)
      manifest.json   written last: the store is complete. Format, version,
                      classes, counts, the size and decoder, a SHA-256 per chunk
                      of images, a SHA-256 of every other file
      images.npy      uint8 (N, C, S, S): every image, shorter side to S, centre crop
      labels.npy      int64 (N,): class of each row; -1 for a file that was skipped
      crc32.npy       uint32 (N,): a CRC-32 of each image's bytes
      sources.json    each row's source file (relative to the source folder) and size
      report.txt      what prepare did: counts, time, each skipped file and why

Why ``.npy``.  An image is read by its row number: a batch of 128 random
images is 128 copies of 196,608 contiguous bytes (S = 256, RGB) out of one
file, with no decoding and no index to consult.  ``.npy`` is that array with a
short text header, which NumPy maps into memory (``np.load(mmap_mode="r")``,
``allow_pickle=False``): pages are read from disk only when touched and are
shared through the page cache by every process on a machine that maps the same
file.  So data-parallel training needs nothing special: every rank opens the
store read-only and reads only the rows of its own slice of each global batch;
on several machines each reads the file from a shared file system, or from its
own copy (``rsync`` the folder; ``manifest.json`` says whether the copy is
whole).  Any language reads it (the header is a short literal, the rest raw C
order bytes).  HDF5 or Zarr would add chunking and compression that random
access pays for, and a library; LMDB or TFRecord/WebDataset shards suit
encoded files read in sequence; a pickle is never an option here.

Complete or refused.  ``prepare`` writes ``images.partial.npy`` and renames it
to ``images.npy`` only after every chunk was written, flushed to disk and read
back against its checksum; ``manifest.json`` comes last.  A reader
(:func:`open_store`) refuses a folder without a manifest (prepare is still
running or was stopped: run it again), a file of the wrong size (a copy cut
short), or a small file whose SHA-256 differs, in one line naming the file.

Corruption found on the way.  Hashing the whole images file at every start
(252 GB for ImageNet) would cost minutes; instead each image's CRC-32 is
checked the first time this process reads it, on the bytes it copied out, so
no damaged image reaches the model and the cost (about 0.1 ms an image, once)
is spread over the first epoch.  A mismatch is one line naming the file, the
chunk and the image.  :func:`verify_store` checks every chunk's SHA-256, as
``prepare`` does when it finishes and when it is run on a complete store.
"""
import hashlib
import json
import os
import zlib
from pathlib import Path

from .. import __version__
from ..backend import numpy as np
from ..errors import DataError

FORMAT = "tinyalexnet-store"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
IMAGES = "images.npy"
PARTIAL = "images.partial.npy"
LABELS = "labels.npy"
CRC32 = "crc32.npy"
SOURCES = "sources.json"
REPORT = "report.txt"
PLAN = "plan.json"
JOURNAL = "progress.jsonl"
CHUNK_BYTES = 32 * 2**20          # about 32 MiB of images per chunk (160 images at 256, RGB)
SPLITS = {"train": ("train",), "test": ("test", "val")}
PREPARE_HINT = "python -m tinyalexnet prepare --data-dir SOURCE --out STORE"


def chunk_images(image_bytes):
    """Images per chunk: the unit prepare writes, checks and resumes from."""
    return max(1, CHUNK_BYTES // image_bytes)


def sha256_file(path, block=2**22):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            data = f.read(block)
            if not data:
                return h.hexdigest()
            h.update(data)


def image_crc32(images):
    """CRC-32 of each image's bytes: uint32 (B,) for a uint8 batch (B, C, S, S)."""
    return np.asarray([zlib.crc32(np.ascontiguousarray(im)) for im in images], dtype=np.uint32)


def npy_header(shape, dtype=np.uint8):
    """The bytes of a version 1.0 ``.npy`` header for a C-order array of ``shape``."""
    import io
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
              "shape": tuple(int(v) for v in shape)})
    return buf.getvalue()


# ----------------------------------------------------------------------------- the manifest

def read_manifest(folder):
    """The manifest of the store ``folder``, checked; a one-line DataError if there is none
    (with what prepare left, if anything) or it is damaged."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise DataError(_missing_manifest(folder))
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise DataError(f"{path}: not a readable store manifest ({err}); prepare the store "
                        "again") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise DataError(f"{path}: not a tinyalexnet store manifest (format "
                        f"{m.get('format') if isinstance(m, dict) else None!r})")
    if m.get("format_version") != FORMAT_VERSION:
        raise DataError(f"{path}: store format version {m.get('format_version')!r}, this "
                        f"version of tinyalexnet reads version {FORMAT_VERSION}; prepare the "
                        "store again")
    try:
        shape = [int(v) for v in m["images"]["shape"]]
        assert len(shape) == 4 and shape[2] == shape[3] == m["size"]
        assert shape[1] == m["channels"] in (1, 3)
        assert len(m["chunks"]) == -(-shape[0] // m["chunk_images"])
        assert len(m["classes"]) >= 1
        for key in ("labels", "crc32", "sources"):
            assert isinstance(m[key]["sha256"], str)
    except (KeyError, TypeError, ValueError, AssertionError):
        raise DataError(f"{path}: incomplete or inconsistent store manifest; prepare the store "
                        "again") from None
    return m


def _missing_manifest(folder):
    if not folder.is_dir():
        return f"{folder}: no such store folder; make it with {PREPARE_HINT}"
    if (folder / PLAN).is_file():
        done, total = journal_progress(folder)
        return (f"{folder}: incomplete store: prepare stopped after {done:,} of {total:,} "
                f"chunks; run the same prepare command again to finish it")
    return f"{folder}: not a store (no {MANIFEST}); make one with {PREPARE_HINT}"


def journal_progress(folder):
    """(chunks done, chunks in all) of an unfinished prepare in ``folder``, as far as known."""
    try:
        total = int(json.loads((Path(folder) / PLAN).read_text())["chunks"])
    except (OSError, ValueError, KeyError, TypeError):
        total = 0
    return len(read_journal(folder)), total


def journal_line(record):
    """One line of the progress journal: the record and a CRC of it, so that a line cut
    short by a crash is recognised and ignored."""
    text = json.dumps(record, sort_keys=True, separators=(",", ":"))
    return f"{zlib.crc32(text.encode()):08x} {text}\n"


def read_journal(folder):
    """{chunk: record} of the complete lines of ``folder``'s journal (the last per chunk:
    a chunk written again after a failed read-back check has a newer line)."""
    done = {}
    try:
        with open(Path(folder) / JOURNAL, "rb") as f:
            lines = f.read().split(b"\n")
    except FileNotFoundError:
        return done
    for line in lines[:-1]:                 # the last piece has no newline: cut short, or empty
        crc, _, text = line.partition(b" ")
        try:
            if int(crc, 16) != zlib.crc32(text):
                continue
            record = json.loads(text)
            done[int(record["chunk"])] = record
        except (ValueError, KeyError, TypeError):
            continue
    return done


# ----------------------------------------------------------------------------- reading

def split_folder(root, split):
    """STORE/train for "train"; STORE/test, or else STORE/val, for "test"."""
    root = Path(root)
    for name in SPLITS[split]:
        if (root / name).is_dir():
            return root / name
    names = " or ".join(f"{root / n}" for n in SPLITS[split])
    raise DataError(f"{names}: no such store folder; prepare the image folder SOURCE (with "
                    f"train/ and test/ or val/) with {PREPARE_HINT}")


class StoreDataset:
    """The images of a complete store, read from ``images.npy`` mapped into memory.

    A data set as ``base.py`` defines it: ``len``, ``classes``, ``channels``,
    ``get_batch(indices)`` -> uint8 (B, C, S, S), int64 (B,).  Index k is the
    k-th image that was kept (rows of skipped files are left out).  ``verify``:
    "lazy" (default) checks each image's CRC-32 the first time it is read,
    "full" also checks every chunk's SHA-256 now, "none" checks neither (for
    benchmarks of the reading alone).
    """

    def __init__(self, folder, size=None, name=None, verify="lazy"):
        self.folder = Path(folder)
        if verify not in ("lazy", "full", "none"):
            raise DataError(f"{self.folder}: verify must be lazy, full or none, got {verify!r}")
        m = self.manifest = read_manifest(self.folder)
        self.name = name or str(self.folder)
        self.classes = list(m["classes"])
        self.size = int(m["size"])
        if size is not None and int(size) != self.size:
            raise DataError(f"{self.folder}: the store holds {self.size}x{self.size} images, "
                            f"this model reads {size}x{size} (the paper's canvas for its "
                            f"input); prepare a store with --size {size}")
        shape = tuple(m["images"]["shape"])
        path = self.folder / IMAGES
        if not path.is_file():
            raise DataError(f"{path}: missing from the store; prepare it again")
        header = len(npy_header(shape))
        expected = header + int(np.prod(shape))
        if path.stat().st_size != expected:
            raise DataError(f"{path}: {path.stat().st_size:,} bytes, the manifest promises "
                            f"{expected:,} ({shape[0]:,} images of {shape[1]}x{shape[2]}x"
                            f"{shape[3]}): a copy cut short? copy or prepare it again")
        try:
            self.images = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as err:
            raise DataError(f"{path}: not a readable .npy array ({err})") from None
        if self.images.shape != shape or self.images.dtype != np.uint8:
            raise DataError(f"{path}: holds {self.images.dtype} {self.images.shape}, the "
                            f"manifest says uint8 {shape}")
        rows = shape[0]
        labels = self._small_array(LABELS, np.int64, rows)
        self.crc = self._small_array(CRC32, np.uint32, rows)
        if labels.size and (labels.max() >= len(self.classes) or labels.min() < -1):
            raise DataError(f"{self.folder / LABELS}: labels from {labels.min()} to "
                            f"{labels.max()}, expected -1 (skipped) to {len(self.classes) - 1}")
        self.rows = np.flatnonzero(labels >= 0)          # dataset index -> row
        self.labels = labels[self.rows]
        if int(m["count"]) != len(self.rows):
            raise DataError(f"{self.folder / LABELS}: {len(self.rows):,} labelled images, the "
                            f"manifest says {int(m['count']):,}")
        self.chunk_images = int(m["chunk_images"])
        self.verify = verify
        self._checked = np.zeros(rows, dtype=bool)
        if verify == "full":
            verify_store(self.folder, self.manifest)
        if verify != "lazy":
            self._checked[:] = True

    def _small_array(self, name, dtype, rows):
        path = self.folder / name
        if not path.is_file():
            raise DataError(f"{path}: missing from the store; prepare it again")
        key = {LABELS: "labels", CRC32: "crc32"}[name]
        digest = sha256_file(path)
        if digest != self.manifest[key]["sha256"]:
            raise DataError(f"{path}: SHA-256 {digest[:16]}... differs from the manifest's "
                            f"{self.manifest[key]['sha256'][:16]}...: the file is damaged; "
                            "prepare the store again")
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise DataError(f"{path}: not a readable .npy array ({err})") from None
        if array.shape != (rows,) or array.dtype != dtype:
            raise DataError(f"{path}: holds {array.dtype} {array.shape}, expected "
                            f"{np.dtype(dtype)} ({rows},)")
        return array

    def __getstate__(self):         # a copy sent to another process maps the file again,
        state = dict(self.__dict__)  # instead of carrying the array's bytes
        state["images"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.images = np.load(self.folder / IMAGES, mmap_mode="r", allow_pickle=False)

    def __len__(self):
        return len(self.rows)

    @property
    def channels(self):
        return self.images.shape[1]

    @property
    def image_size(self):
        return (self.size, self.size)

    def get_batch(self, indices):
        """The images at ``indices``: uint8 (B, C, S, S) and int64 (B,), copied out of the map.

        One copy, in the order asked for.  (Sorting the rows first would help a
        disk only for rows that are near each other, which random rows of a
        large store are not, and would cost a second copy.)
        """
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        rows = self.rows[indices]
        images = np.asarray(self.images[rows])
        unchecked = np.flatnonzero(~self._checked[rows])
        if unchecked.size:
            self._check(images, rows, unchecked)
        return images, self.labels[indices]

    def _check(self, images, rows, positions):
        for k in positions:
            row = int(rows[k])
            if zlib.crc32(images[k]) != int(self.crc[row]):
                chunk = row // self.chunk_images
                first = chunk * self.chunk_images
                raise DataError(
                    f"{self.folder / IMAGES}: chunk {chunk} (rows {first:,} to "
                    f"{min(first + self.chunk_images, len(self.crc)) - 1:,}) is damaged: row "
                    f"{row:,} does not match its CRC-32; prepare the store again")
            self._checked[row] = True

    def __repr__(self):
        return (f"{self.name}: {len(self):,} images {self.channels}x{self.size}x{self.size} "
                f"(store), {len(self.classes)} classes")


def verify_store(folder, manifest=None):
    """Check every chunk of ``folder``'s images against the manifest's SHA-256 (reads it
    all); a one-line DataError naming the file and the first bad chunk."""
    folder = Path(folder)
    m = manifest or read_manifest(folder)
    path = folder / IMAGES
    shape = m["images"]["shape"]
    bad = first_bad_chunk(path, len(npy_header(shape)), int(np.prod(shape[1:])),
                          shape[0], int(m["chunk_images"]), m["chunks"])
    if bad is not None:
        raise DataError(f"{path}: chunk {bad} (rows {bad * m['chunk_images']:,} on) does not "
                        "match its SHA-256 in the manifest: the file is damaged; prepare the "
                        "store again")
    for key, name in (("sources", SOURCES),):
        if sha256_file(folder / name) != m[key]["sha256"]:
            raise DataError(f"{folder / name}: differs from its SHA-256 in the manifest")
    return m


def chunk_sha256(path, header, image_bytes, rows, chunk_images, chunk):
    """SHA-256 of chunk ``chunk``'s bytes in the images file ``path``."""
    first = chunk * chunk_images
    n = min(chunk_images, rows - first)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(header + first * image_bytes)
        left = n * image_bytes
        while left:
            data = f.read(min(left, 2**22))
            if not data:
                break
            h.update(data)
            left -= len(data)
    return h.hexdigest()


def first_bad_chunk(path, header, image_bytes, rows, chunk_images, expected):
    """The first chunk whose SHA-256 differs from ``expected[chunk]``, or None."""
    for chunk, digest in enumerate(expected):
        if chunk_sha256(path, header, image_bytes, rows, chunk_images, chunk) != digest:
            return chunk
    return None


def load_store(root, split, size=None, verify="lazy"):
    """The ``split`` ("train" or "test") of the store ``root`` (STORE/train, STORE/test or
    STORE/val); the test split must have the training split's classes."""
    folder = split_folder(root, split)
    ds = StoreDataset(folder, size=size, name=f"store/{folder.name}", verify=verify)
    if split == "test":
        train = split_folder(root, "train")
        train_classes = read_manifest(train)["classes"]
        if ds.classes != train_classes:
            raise DataError(f"{folder}: classes ({', '.join(ds.classes[:4])}...) differ from "
                            f"{train}'s ({', '.join(train_classes[:4])}...); prepare both "
                            "from one source folder")
    return ds


def manifest_record(split, shape, classes, count, skipped, decoder, chunk_images_, chunks,
                    digests, source_root):
    """The manifest of a finished store (everything in it is deterministic: a store
    prepared in one go and one resumed after a crash have the same manifest)."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "tinyalexnet_version": __version__,
        "split": split,
        "images": {"file": IMAGES, "shape": list(shape), "dtype": "uint8"},
        "labels": {"file": LABELS, "sha256": digests[LABELS]},
        "crc32": {"file": CRC32, "sha256": digests[CRC32]},
        "sources": {"file": SOURCES, "sha256": digests[SOURCES]},
        "size": int(shape[2]),
        "channels": int(shape[1]),
        "resize": f"shorter side to {shape[2]} (Pillow bilinear), centre {shape[2]}x{shape[3]} "
                  "crop",
        "decoder": decoder,
        "classes": list(classes),
        "count": int(count),
        "skipped": skipped,
        "source_root": str(source_root),
        "chunk_images": int(chunk_images_),
        "chunks": list(chunks),
    }


def save_store(folder, images, labels, classes, chunk_images_=None):
    """Write uint8 ``images`` (N, C, S, S) and ``labels`` (N,) held in memory as a complete
    store in ``folder`` (no source files: ``bench_data`` and tests make stores this way)."""
    from ..runfolder import write_atomic, write_text_atomic
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    images = np.ascontiguousarray(images, dtype=np.uint8)
    labels = np.asarray(labels, dtype=np.int64)
    k = int(chunk_images_ or chunk_images(images[0].nbytes))
    chunks = [hashlib.sha256(images[i:i + k]).hexdigest() for i in range(0, len(images), k)]
    write_atomic(folder / IMAGES, lambda f: np.save(f, images))
    digests = {}
    for name, write in ((LABELS, lambda f: np.save(f, labels)),
                        (CRC32, lambda f: np.save(f, image_crc32(images))),
                        (SOURCES, lambda f: f.write(b'{"root": null, "files": [], "bytes": []}'))):
        write_atomic(folder / name, write)
        digests[name] = sha256_file(folder / name)
    m = manifest_record(folder.name, images.shape, classes, int((labels >= 0).sum()), [],
                        "none (arrays)", k, chunks, digests, "")
    write_text_atomic(folder / MANIFEST, json.dumps(m, indent=1))
    return m


def remove_if_present(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
