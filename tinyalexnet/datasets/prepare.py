"""``prepare``: decode every image of a folder once, into a store that training reads.

    python -m tinyalexnet prepare --dataset folder --data-dir SOURCE --out STORE
    python -m tinyalexnet train --dataset store --data-dir STORE --model alexnet

SOURCE is laid out as for ``--dataset folder``: ``SOURCE/train/<class>/*.jpg``
and ``SOURCE/test/`` (or ``val/``), either with class folders too or, as
ImageNet's validation set comes, flat with a label file (``--val-labels``,
see ``imagenet.py``).  Each split becomes a store of its own, ``STORE/train``
and ``STORE/test`` (or ``STORE/val``), in the format ``store.py`` describes;
``train --dataset store`` reads both, as ``--dataset folder`` reads SOURCE.

Each image gets what ``ImageFolder`` gives it (``folder.load_image_file``:
shorter side to ``--size``, 256 by default as in the paper, centre crop), so
a model trained on the store sees the same pixels as one trained on the folder.

How it works.  The images are cut into chunks of about 32 MiB (160 images at
256x256 RGB).  ``--workers`` processes (``workers.DecodePool``; default: every
core) each take a chunk, decode its images, write them at the chunk's rows of
``images.partial.npy`` (made at its full size at the start), flush them to the
disk, and report the chunk's SHA-256 and each image's CRC-32.  The parent then
appends one line for the chunk to ``progress.jsonl``, flushed too.  When every
chunk is done, every chunk is read back and checked against its SHA-256, the
labels and the other small files are written, ``images.partial.npy`` becomes
``images.npy``, and ``manifest.json`` is written last.

Stopped at any moment (Ctrl-C, SIGTERM, ``kill -9``, a power cut), the same
command continues: the journal says which chunks are on disk (a line cut short
by the crash carries no valid CRC and does not count), the others are decoded
again.  Decoding is deterministic and a chunk's rows are fixed in advance, so
the store is byte for byte the one an uninterrupted run makes, with 1 worker or
32.  Run on a finished store, ``prepare`` checks every chunk again and says so.

Bad images (a file Pillow cannot decode, a truncated one, one over the size
limits, a FIFO or other non-file) stop ``prepare`` with the one-line error
``ImageFolder`` gives; with ``--skip-bad`` each is left out (its row stays
zero, with label -1, and readers skip it) and listed with its reason in the
store's ``report.txt`` and manifest.  CMYK and 16-bit images are not bad: they
are converted as ``ImageFolder`` converts them.
"""
import argparse
import concurrent.futures
import hashlib
import json
import os
import signal
import sys
import time
from pathlib import Path

from ..backend import numpy as np
from ..errors import DataError, TinyAlexNetError
from ..runfolder import RunFolder, fsync_dir, write_atomic, write_text_atomic
from ..signals import StopRequests, Terminated
from . import store
from .folder import (IMAGE_EXTENSIONS, check_class_list, image_file_error, list_images,
                     load_image_file, not_a_regular_file, resolve_decoder)
from .imagenet import read_val_labels
from .workers import DecodePool, cores

PROGRESS_SECONDS = 10


# ----------------------------------------------------------------------------- the source

class Source:
    """One split of the source folder: every file in store order, its label, and what was
    left out while listing.  ``files`` are absolute paths; ``names`` relative to the root."""

    def __init__(self, root, split_dir, classes, files, labels, skipped):
        self.root, self.split_dir = Path(root), Path(split_dir)
        self.classes, self.files, self.labels, self.skipped = classes, files, labels, skipped
        self.names = [os.path.relpath(f, self.root) for f in files]
        stats = [os.stat(f) for f in files]
        self.bytes = [st.st_size for st in stats]
        # What identifies this listing: a resumed prepare must find the same files.
        h = hashlib.sha256()
        for name, label, st in zip(self.names, labels, stats):
            h.update(f"{name}\0{label}\0{st.st_size}\0{st.st_mtime_ns}\n"
                     .encode("utf-8", "surrogateescape"))
        self.fingerprint = h.hexdigest()


def source_splits(root):
    """[(store split name, source folder)]: train/, then test/ or val/ if present."""
    root = Path(root)
    layout = ("expected SOURCE/train/<class>/*.jpg|png and SOURCE/test/ or SOURCE/val/ "
              "(class folders, or ImageNet's flat validation folder with --val-labels)")
    if not root.is_dir():
        raise DataError(f"{root}: no such source folder; {layout}")
    if not (root / "train").is_dir():
        raise DataError(f"{root / 'train'}: no such folder; {layout}")
    splits = [("train", root / "train")]
    test = next((root / s for s in ("test", "val") if (root / s).is_dir()), None)
    if test is not None:
        splits.append((test.name, test))
    return splits


def is_flat(folder):
    """A folder of image files with no class sub-folders (ImageNet's validation layout)."""
    entries = [p for p in Path(folder).iterdir() if not p.name.startswith(".")]
    return not any(p.is_dir() for p in entries) and any(
        p.suffix.lower() in IMAGE_EXTENSIONS for p in entries)


def list_source(root, split_dir, classes=None, val_labels=None, synsets=None, skip_bad=False):
    """The Source of one split.  ``classes``: the training split's (for test/val)."""
    split_dir = Path(split_dir)
    own = classes is None               # a training split defines the classes
    if not own and is_flat(split_dir):
        if val_labels is None:
            raise DataError(f"{split_dir}: a flat folder of images (ImageNet's validation "
                            "layout) needs its labels: give --val-labels with the devkit's "
                            "ILSVRC2012_validation_ground_truth.txt (and --synsets) or "
                            "LOC_val_solution.csv")
        files, problems = [], []
        for path in sorted(split_dir.iterdir()):
            if path.name.startswith("."):
                continue
            problem = not_a_regular_file(path)
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                problems.append((path, DataError(f"{path}: not an image file name; expected "
                                                 f"{', '.join(IMAGE_EXTENSIONS)}")))
            elif problem is not None:
                problems.append((path, image_file_error(path, problem)))
            else:
                files.append(path)
        labels = np.asarray(read_val_labels(files, val_labels, classes, synsets), np.int64)
    else:
        classes, files, labels, problems = list_images(split_dir, classes)
    if problems and not skip_bad:
        raise problems[0][1]
    check_class_list(split_dir, classes, labels, own_classes=own)
    skipped = [{"path": os.path.relpath(p, root), "reason": str(err)} for p, err in problems]
    return Source(root, split_dir, list(classes), [str(f) for f in files], labels, skipped)


# ----------------------------------------------------------------------------- one chunk

def decode_chunk(partial, header, chunk, first_row, paths, channels, size, decoder, skip_bad):
    """Decode ``paths`` (the images of rows first_row...), write them into ``partial`` at
    their rows, flush them to the disk; return what the journal records of the chunk.

    Runs in a worker process.  A bad image raises its DataError, or with
    ``skip_bad`` leaves its row zero and is reported as (row, reason).
    """
    images = np.zeros((len(paths), channels, size, size), dtype=np.uint8)
    skipped = []
    for k, path in enumerate(paths):
        try:
            images[k] = load_image_file(path, channels, size, decoder)
        except DataError as err:
            if not skip_bad:
                raise
            skipped.append([first_row + k, str(err)])
    data = memoryview(images).cast("B")
    try:
        fd = os.open(partial, os.O_WRONLY)
        try:
            offset = header + first_row * images[0].nbytes
            while data:
                written = os.pwrite(fd, data, offset)
                data, offset = data[written:], offset + written
            os.fdatasync(fd) if hasattr(os, "fdatasync") else os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as err:
        raise DataError(f"cannot write {partial}: {err.strerror or err}; prepare stopped, run "
                        "it again once this is fixed (it continues where it stopped)") from None
    return {"chunk": chunk, "sha256": hashlib.sha256(images).hexdigest(),
            "crc32": store.image_crc32(images).tolist(), "skipped": skipped}


def check_chunk(path, header, image_bytes, rows, chunk_images, chunk):
    """(chunk, SHA-256 of its bytes on disk): the read-back check, in a worker process."""
    return chunk, store.chunk_sha256(path, header, image_bytes, rows, chunk_images, chunk)


# ----------------------------------------------------------------------------- one split

class SplitWriter:
    """Prepares (or resumes, or checks) the store of one split in ``folder``."""

    def __init__(self, folder, source, split, size, channels, decoder, skip_bad, workers,
                 chunk_images=None, log=print):
        self.folder, self.source, self.split = Path(folder), source, split
        self.size, self.channels, self.decoder = int(size), int(channels), decoder
        self.skip_bad, self.workers, self.log = skip_bad, int(workers), log
        self.rows = len(source.files)
        self.image_bytes = self.channels * self.size * self.size
        self.shape = (self.rows, self.channels, self.size, self.size)
        self.header = len(store.npy_header(self.shape))
        self.chunk_images = int(chunk_images or store.chunk_images(self.image_bytes))
        self.chunks = -(-self.rows // self.chunk_images)
        self.plan = {"format": store.FORMAT, "format_version": store.FORMAT_VERSION,
                     "split": split, "size": self.size, "channels": self.channels,
                     "decoder": decoder, "chunk_images": self.chunk_images, "rows": self.rows,
                     "chunks": self.chunks, "classes": source.classes,
                     "source": str(source.split_dir), "fingerprint": source.fingerprint}
        self.partial = self.folder / store.PARTIAL
        self.decoded = 0

    # ---------------------------------------------------------------- the whole job
    def run(self, pool):
        """Make the store complete (or check it if it is); returns the manifest."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if (self.folder / store.MANIFEST).is_file():
            return self._check_finished()
        self._start()
        done = store.read_journal(self.folder)
        todo = [c for c in range(self.chunks) if c not in done]
        self.log(f"{self.split}: {self.rows:,} images in {self.chunks:,} chunks of "
                 f"{self.chunk_images}, {self.channels}x{self.size}x{self.size}, decoder "
                 f"{self.decoder}, {pool.workers if pool else 0} worker processes"
                 + (f"; {len(done):,} chunks were done before" if done else ""))
        start = time.perf_counter()
        self._decode(todo, pool, start)
        seconds = time.perf_counter() - start
        done = store.read_journal(self.folder)
        bad = self._read_back(done, pool)
        if bad:                            # on disk, not what was written: write them again
            self.log(f"{self.split}: {len(bad)} chunk(s) read back wrong ({bad[:5]}); "
                     "decoding them again")
            self._decode(bad, pool, time.perf_counter())
            done = store.read_journal(self.folder)
            still = self._read_back(done, pool)
            if still:
                raise DataError(f"{self.partial}: chunk {still[0]} reads back different from "
                                "what was written, twice: the disk is failing?")
        return self._finish(done, seconds)

    def _start(self):
        """Write the plan (or check the one there) and make the images file at full size."""
        plan_path = self.folder / store.PLAN
        if plan_path.is_file():
            try:
                old = json.loads(plan_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                old = None
            if old != self.plan:
                differ = [k for k in self.plan if not isinstance(old, dict) or
                          old.get(k) != self.plan[k]]
                raise DataError(
                    f"{self.folder}: an unfinished prepare of other images or settings is "
                    f"there ({', '.join(differ[:3])} differ: "
                    + ", ".join(f"{k} {_short(old.get(k) if isinstance(old, dict) else None)} "
                                f"then, {_short(self.plan[k])} now" for k in differ[:2])
                    + "); run that command again, or remove the folder to start over")
        else:
            for name in (store.JOURNAL, store.PARTIAL, store.IMAGES):
                store.remove_if_present(self.folder / name)
            write_text_atomic(plan_path, json.dumps(self.plan, indent=1))
        if (self.folder / store.IMAGES).is_file() and not self.partial.exists():
            # stopped between the rename and the manifest: finish from where it was
            os.replace(self.folder / store.IMAGES, self.partial)
        total = self.header + self.rows * self.image_bytes
        if not self.partial.is_file() or self.partial.stat().st_size != total:
            with open(self.partial, "r+b" if self.partial.is_file() else "xb") as f:
                f.write(store.npy_header(self.shape))
                f.truncate(total)            # sparse: rows cost disk space as they are written
                f.flush()
                os.fsync(f.fileno())
            fsync_dir(self.folder)

    def _decode(self, todo, pool, start):
        """Decode the chunks ``todo``, at most two per worker in flight, journalling each.

        Ctrl-C and SIGTERM only set a flag here (``signals.StopRequests``), read
        after each chunk: raised as an exception in the middle of
        ``concurrent.futures.wait``, which takes the futures' locks one by one,
        they could leave a lock taken and the pool's shutdown waiting forever.
        The chunks still running finish (a second or so); a second signal stops
        at once.
        """
        tasks = iter(todo)
        last = time.perf_counter()
        with open(self.folder / store.JOURNAL, "ab") as journal, StopRequests() as stop:
            def record(result):
                journal.write(store.journal_line(result).encode())
                journal.flush()
                os.fsync(journal.fileno())
                self.decoded += len(result["crc32"]) - len(result["skipped"])

            if pool is None:
                for chunk in tasks:
                    record(decode_chunk(*self._task(chunk)))
                    _stop_if_asked(stop)
                    last = self._progress(todo, start, last)
                return
            running = set()
            try:
                while True:
                    while len(running) < 2 * pool.workers and not stop.requested:
                        chunk = next(tasks, None)
                        if chunk is None:
                            break
                        running.add(pool.submit(decode_chunk, *self._task(chunk)))
                    if not running:
                        _stop_if_asked(stop)
                        return
                    finished, running = concurrent.futures.wait(
                        running, return_when=concurrent.futures.FIRST_COMPLETED)
                    for future in finished:
                        record(future.result())
                    last = self._progress(todo, start, last)
            finally:
                for future in running:
                    future.cancel()

    def _task(self, chunk):
        first = chunk * self.chunk_images
        paths = self.source.files[first:first + self.chunk_images]
        return (str(self.partial), self.header, chunk, first, paths, self.channels, self.size,
                self.decoder, self.skip_bad)

    def _progress(self, todo, start, last):
        now = time.perf_counter()
        if now - last >= PROGRESS_SECONDS:
            done = len(store.read_journal(self.folder))
            self.log(f"{self.split}: {done:,}/{self.chunks:,} chunks, "
                     f"{self.decoded / (now - start):,.0f} images/s")
            return now
        return last

    def _read_back(self, done, pool):
        """The chunks whose bytes on disk differ from the SHA-256 their worker computed."""
        args = (str(self.partial), self.header, self.image_bytes, self.rows, self.chunk_images)
        digests = []
        with StopRequests() as stop:              # as in _decode: stop between chunks
            if pool is None:
                for c in range(self.chunks):
                    digests.append(check_chunk(*args, c))
                    _stop_if_asked(stop)
            else:
                futures = [pool.submit(check_chunk, *args, c) for c in range(self.chunks)]
                try:
                    for future in futures:
                        digests.append(future.result())
                        _stop_if_asked(stop)
                finally:
                    for future in futures:
                        future.cancel()
        return [c for c, digest in digests if digest != done[c]["sha256"]]

    # ---------------------------------------------------------------- finishing
    def _finish(self, done, seconds):
        labels = self.source.labels.copy()
        crc = np.zeros(self.rows, dtype=np.uint32)
        skipped = list(self.source.skipped)
        for c in range(self.chunks):
            first = c * self.chunk_images
            crc[first:first + len(done[c]["crc32"])] = done[c]["crc32"]
            for row, reason in done[c]["skipped"]:
                labels[row] = -1
                skipped.append({"path": self.source.names[row], "reason": reason})
        skipped.sort(key=lambda s: s["path"])
        if skipped and not self.skip_bad:
            first = skipped[0]
            raise DataError(f"{first['reason']} (left out by an earlier prepare with --skip-bad; "
                            "give --skip-bad again to keep it out, or remove the store to "
                            "prepare it without)")
        digests = {}
        for name, write in ((store.LABELS, lambda f: np.save(f, labels)),
                            (store.CRC32, lambda f: np.save(f, crc)),
                            (store.SOURCES, lambda f: f.write(json.dumps(
                                {"root": str(self.source.root), "files": self.source.names,
                                 "bytes": self.source.bytes}).encode()))):
            write_atomic(self.folder / name, write)
            digests[name] = store.sha256_file(self.folder / name)
        with open(self.partial, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(self.partial, self.folder / store.IMAGES)
        fsync_dir(self.folder)
        manifest = store.manifest_record(
            self.split, self.shape, self.source.classes, int((labels >= 0).sum()), skipped,
            self.decoder, self.chunk_images, [done[c]["sha256"] for c in range(self.chunks)],
            digests, self.source.root)
        manifest["source_fingerprint"] = self.source.fingerprint
        write_text_atomic(self.folder / store.MANIFEST, json.dumps(manifest, indent=1))
        for name in (store.PLAN, store.JOURNAL):
            store.remove_if_present(self.folder / name)
        self._report(manifest, seconds)
        return manifest

    def _report(self, m, seconds):
        rate = self.decoded / seconds if seconds > 0 else 0.0
        lines = [f"store {self.folder}: {m['count']:,} images of {self.channels}x{self.size}x"
                 f"{self.size} in {len(m['classes'])} classes, from {self.source.split_dir}",
                 f"{self.split}: decoder {self.decoder}; this run decoded {self.decoded:,} images in "
                 f"{seconds:.1f} s ({rate:,.0f} images/s with "
                 f"{max(self.workers, 1)} worker process(es))",
                 f"skipped {len(m['skipped'])} file(s)" + (":" if m["skipped"] else "")]
        lines += [f"  {s['path']}: {s['reason']}" for s in m["skipped"]]
        write_text_atomic(self.folder / store.REPORT, "\n".join(lines) + "\n")
        for line in lines[:3]:
            self.log(line)
        for line in lines[3:13]:
            self.log(line)
        if len(lines) > 13:
            self.log(f"  ... {len(lines) - 13} more in {self.folder / store.REPORT}")

    def _check_finished(self):
        m = store.read_manifest(self.folder)
        want = {"size": self.size, "channels": self.channels, "classes": self.source.classes,
                "source_fingerprint": self.source.fingerprint}
        differ = [k for k, v in want.items() if m.get(k) != v]
        if differ:
            what = ("the source folder's files changed since" if differ == ["source_fingerprint"]
                    else f"{', '.join(differ)} differ from when")
            raise DataError(f"{self.folder}: a complete store, but {what} it was prepared; "
                            "give another --out, or remove it to prepare it again")
        store.verify_store(self.folder, m)
        for name in (store.PLAN, store.JOURNAL):
            store.remove_if_present(self.folder / name)
        self.log(f"{self.split}: {self.folder} is complete: {m['count']:,} images, every "
                 f"chunk matches its SHA-256")
        return m


def _stop_if_asked(stop):
    """Raise what the signal ``stop`` caught would have raised: KeyboardInterrupt for
    Ctrl-C, ``signals.Terminated`` for SIGTERM (the command exits with 130 or 143)."""
    if stop.requested:
        raise Terminated if stop.signum == signal.SIGTERM else KeyboardInterrupt


def _short(value):
    text = json.dumps(value)
    return text if len(text) <= 24 else text[:21] + "..."


# ----------------------------------------------------------------------------- all splits

def prepare(source, out, size=256, channels=3, workers=None, skip_bad=False, decoder="auto",
            val_labels=None, synsets=None, chunk_images=None, log=print):
    """Prepare every split of the image folder ``source`` into ``out`` (see the module
    docstring); returns {split: manifest}.  ``workers``: processes (None: every core;
    0: decode in this process)."""
    decoder = resolve_decoder(decoder)
    workers = cores() if workers is None else int(workers)
    if workers < 0:
        raise DataError(f"--workers must be 0 or more, got {workers}")
    if size < 1 or channels not in (1, 3):
        raise DataError(f"--size must be positive and channels 1 or 3, got {size} and "
                        f"{channels}")
    splits = source_splits(source)
    if any(Path(out).resolve() == Path(d).resolve() or Path(d).resolve() in
           Path(out).resolve().parents for _, d in splits):
        raise DataError(f"{out}: inside the source folder; give --out a folder elsewhere")
    sources, classes = [], None
    for name, folder in splits:
        src = list_source(source, folder, classes, val_labels, synsets, skip_bad)
        classes = src.classes
        sources.append((name, src))
    manifests = {}
    with RunFolder.claim(out):
        pool = DecodePool(workers) if workers > 0 else None
        try:
            for name, src in sources:
                writer = SplitWriter(Path(out) / name, src, name, size, channels, decoder,
                                     skip_bad, workers, chunk_images, log)
                manifests[name] = writer.run(pool)
        finally:
            if pool is not None:
                pool.close()
    return manifests


# ----------------------------------------------------------------------------- the command

HELP = ("decode an image folder once into a store (the paper's 256x256 images) that train "
        "reads without decoding")


def add_arguments(p):
    p.add_argument("--dataset", choices=["folder"], default="folder",
                   help="what to prepare: an image folder (the only kind so far)")
    p.add_argument("--data-dir", required=True, metavar="SOURCE",
                   help="SOURCE/train/<class>/*.jpg|png and SOURCE/test/ or SOURCE/val/")
    p.add_argument("--out", required=True, metavar="STORE",
                   help="the store: STORE/train and STORE/test (or val) are written there")
    p.add_argument("--size", type=int, default=256,
                   help="side of the stored images (default 256, the paper's; 36 for the "
                        "32x32 models)")
    p.add_argument("--channels", type=int, choices=[1, 3], default=3,
                   help="3 (RGB, default) or 1 (grey)")
    p.add_argument("--workers", type=int, default=None,
                   help=f"decoding processes (default: every core, {cores()} here; 0: this "
                        "process)")
    p.add_argument("--skip-bad", action="store_true",
                   help="leave out files that cannot be read, listing each with its reason in "
                        "the store's report.txt (default: stop at the first)")
    p.add_argument("--decoder", choices=["auto", "pillow", "simplejpeg"], default="auto",
                   help="JPEG decoder (default auto: simplejpeg if installed, else Pillow; the "
                        "same pixels)")
    p.add_argument("--val-labels", metavar="FILE",
                   help="labels of a flat validation folder (ImageNet's): the devkit's "
                        "ILSVRC2012_validation_ground_truth.txt (with --synsets) or "
                        "LOC_val_solution.csv")
    p.add_argument("--synsets", metavar="FILE",
                   help="the devkit's ILSVRC2012_ID -> WordNet ID mapping: data/meta.mat "
                        "(needs SciPy) or a text file of the WordNet IDs in ID order")
    p.add_argument("--chunk-images", type=int, default=None, help=argparse.SUPPRESS)


def run(args):
    if args.chunk_images is not None and args.chunk_images < 1:
        raise TinyAlexNetError(f"invalid --chunk-images {args.chunk_images}")
    try:
        manifests = prepare(args.data_dir, args.out, args.size, args.channels, args.workers,
                            args.skip_bad, args.decoder, args.val_labels, args.synsets,
                            args.chunk_images, log=_log)
    except KeyboardInterrupt:
        print(f"prepare stopped; run the same command again to continue where it stopped "
              f"(the chunks done are kept in {args.out})", file=sys.stderr)
        raise
    splits = " and ".join(f"{name} ({m['count']:,} images)" for name, m in manifests.items())
    print(f"store ready: {args.out}: {splits}; train with: python -m tinyalexnet train "
          f"--dataset store --data-dir {args.out}")
    return 0


def _log(line):
    print(line, flush=True)
