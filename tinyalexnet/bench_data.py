"""How fast images reach the model: decoding, preparing, reading a store, a folder's workers.

    python -m tinyalexnet.bench_data                       # everything, about 2 minutes
    python -m tinyalexnet.bench_data --what decode --images 256 --rounds 5
    python -m tinyalexnet bench --model alexnet --data STORE   # the input beside training

What it measures, each in one process, side by side and in alternating rounds
(A, B, B, A, ...) so that other programs' load falls on both; the ratios are
what to compare across machines, the rates are this machine's.  Beside each
images/s (wall clock) it prints images per CPU-second (of this process and its
workers): on a machine that other programs keep busy the wall clock counts
the time spent waiting for a core, the CPU time does not, so images per
CPU-second is close to what a free core gives, and its ratio between 1 and 2
workers says what a second free core would add:

* **decode**: photograph-like JPEGs of 500x375 pixels at quality 90 (1/f
  noise, the spectrum of natural images; about 125 KB each, like ImageNet's
  files) are made in a temporary folder; each is read as ``ImageFolder``
  reads it (shorter side to 256, centre crop) with Pillow and with
  simplejpeg: images/s on one core, and the largest pixel difference between
  the two (0: the same bytes).
* **prepare**: the same photographs through ``prepare``'s chunk workers
  (decode, write, flush) with 1 and 2 worker processes: images/s and the
  scaling from 1 to 2 (the pool is started before timing).
* **read**: a store of random 256x256 RGB images; batches of 128 random
  indices.  ``get_batch`` alone (what the reading thread does for a GPU,
  which crops on the device), its first read (each image's CRC-32 checked),
  and ``get_batch`` followed by the random 227x227 crops with reflections on
  the host (what the NumPy backend adds).  Against one contiguous copy of the
  same bytes (``numpy.copyto``), which bounds it: a batch copies 196,608
  bytes per image out of the page cache, i.e. reads that many and writes that
  many, so images/s <= copy bandwidth / 393,216 B.
* **folder**: ``ImageFolder.get_batch`` of 128 JPEGs with 0 (this process),
  1 and 2 worker processes.

The images of the page cache are what a store read in a second epoch, or a
store smaller than memory, sees; a store larger than memory reads from the
disk (ImageNet's 252 GB store at 5,000 images/s needs ~1 GB/s of random reads
of 192 KiB: an NVMe disk, or memory enough to hold it).
"""
import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from . import machine
from .backend import numpy as np
from .datasets import jpeg
from .datasets.folder import ImageFolder, load_image_file
from .datasets.store import StoreDataset, save_store
from .datasets.workers import DecodePool
from .errors import TinyAlexNetError
from .runfolder import write_text_atomic
from .transforms import crop, random_crop_params

READ_BATCH = 128
CROP = (227, 227)


# ----------------------------------------------------------------------------- test images

def photo(rng, height=375, width=500):
    """A photograph-like RGB image: colour noise with a 1/f amplitude spectrum (natural
    images' statistics), channels correlated as in photographs, plus sensor-like noise."""
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    f = np.sqrt(fx ** 2 + fy ** 2)
    f[0, 0] = 1.0

    def field():
        phase = np.exp(2j * np.pi * rng.random((height, width // 2 + 1)))
        return np.fft.irfft2(phase / f, s=(height, width))
    shared = field()
    x = np.stack([0.7 * shared + 0.3 * field() for _ in range(3)], -1)
    x = (x - x.mean()) / x.std() * 55 + 120 + rng.normal(0, 4, x.shape)
    return np.clip(x, 0, 255).astype(np.uint8)


def make_photos(folder, count, seed=0, classes=2):
    """``count`` JPEGs (500x375, quality 90) in folder/train/c<k>/; returns their paths."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        path = Path(folder) / "train" / f"c{i % classes}" / f"{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(photo(rng)).save(path, quality=90)
        paths.append(path)
    return paths


def _alternate(rounds, runs, pids=None):
    """Time each of ``runs`` {name: fn() -> images} ``rounds`` times, in the order
    A B, B A, A B, ...  Returns ({name: [images/s]}, {name: [images per CPU-second]}):
    the CPU time is that of this process and of ``pids(name)`` (its workers), which,
    unlike the wall clock, does not grow when other programs take the cores."""
    names = list(runs)
    rates = {n: [] for n in names}
    per_cpu = {n: [] for n in names}
    for name in names:                    # untimed: start workers, fill caches
        runs[name]()
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            workers = pids(name) if pids else []
            cpu = _cpu(workers)
            start = time.perf_counter()
            n = runs[name]()
            rates[name].append(n / (time.perf_counter() - start))
            used = _cpu(workers)
            if cpu is not None and used is not None and used > cpu:
                per_cpu[name].append(n / (used - cpu))
    return rates, per_cpu


def cpu_seconds(pids):
    """CPU time (user + system) the processes ``pids`` have used so far, or None (not Linux)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        total += int(fields[11]) + int(fields[12])          # utime, stime (clock ticks)
    return total / os.sysconf("SC_CLK_TCK")


def _cpu(workers):
    """This process's CPU time (all its threads, to the nanosecond) plus its workers'."""
    others = cpu_seconds(workers) if workers else 0.0
    return None if others is None else time.process_time() + others


def _medians(table):
    return {k: statistics.median(v) for k, v in table.items() if v}


def _line(label, rate, per_cpu=None):
    extra = f"{per_cpu:10,.0f} per CPU-second" if per_cpu else ""
    print(f"  {label:44s}{rate:10,.0f} images/s{extra}")


def _lines(med, cpu):
    for k, v in med.items():
        _line(k, v, cpu.get(k))


# ----------------------------------------------------------------------------- measurements

def bench_decode(paths, rounds, size=256):
    decoders = ["pillow"] + (["simplejpeg"] if jpeg.available() else [])
    diff = 0
    if len(decoders) == 2:
        for p in paths:
            a = load_image_file(p, 3, size, "pillow").astype(np.int16)
            diff = max(diff, int(np.abs(a - load_image_file(p, 3, size, "simplejpeg")).max()))
    runs = {d: (lambda d=d: sum(1 for p in paths if load_image_file(p, 3, size, d) is not None))
            for d in decoders}
    if len(decoders) == 2:                      # the decoder alone, whole files in memory
        from PIL import Image
        import io
        import simplejpeg
        data = [p.read_bytes() for p in paths]

        def pillow_only():
            for d in data:
                with Image.open(io.BytesIO(d)) as img:
                    img.load()
            return len(data)
        runs["decode only: Pillow"] = pillow_only
        runs["decode only: simplejpeg"] = lambda: len([simplejpeg.decode_jpeg(d) for d in data])
        runs["decode only: simplejpeg at 3/4 scale"] = lambda: len(
            [simplejpeg.decode_jpeg(d, min_height=size, min_width=size) for d in data])
    rates, per_cpu = _alternate(rounds, runs)
    med, cpu = _medians(rates), _medians(per_cpu)
    print(f"decode: {len(paths)} JPEGs of 500x375 (quality 90, "
          f"{np.mean([p.stat().st_size for p in paths]) / 1000:.0f} KB on average) -> "
          f"{size}x{size} as ImageFolder reads them, one core, median of {rounds} rounds")
    _lines(med, cpu)
    result = {"images": len(paths), "rates": rates, "median": med, "per_cpu_second": cpu}
    if len(decoders) == 2:
        result["ratio"] = med["simplejpeg"] / med["pillow"]
        result["ratio_decode_only"] = med["decode only: simplejpeg"] / med["decode only: Pillow"]
        result["max_pixel_difference"] = diff
        print(f"  simplejpeg / pillow: {result['ratio']:.2f}x (decoding alone "
              f"{result['ratio_decode_only']:.2f}x; at 3/4 scale "
              f"{med['decode only: simplejpeg at 3/4 scale'] / med['decode only: simplejpeg']:.2f}x"
              f" a full decode); largest pixel difference {diff} (grey levels, over every "
              "pixel of every image)")
    else:
        print("  simplejpeg is not installed: pip install simplejpeg to compare")
    return result


def bench_prepare(paths, rounds, size=256):
    """``prepare``'s chunk workers with 1 and 2 processes.  Images per CPU-second (of the
    parent and its workers) do not depend on whether other programs left a core free:
    their ratio says what a second free core would add."""
    from .datasets.prepare import Source, SplitWriter
    from .datasets.folder import list_images, resolve_decoder
    root = Path(paths[0]).parents[2]
    classes, files, labels, _ = list_images(root / "train")
    source = Source(root, root / "train", classes, [str(f) for f in files], labels, [])
    decoder = resolve_decoder("auto")
    work = Path(tempfile.mkdtemp(prefix="tinyalexnet-bench-prepare-"))
    pools = {"1 worker": DecodePool(1), "2 workers": DecodePool(2)}
    chunk = max(1, -(-len(files) // 16))        # 16 chunks: 8 for each of 2 workers
    try:
        def run(name):
            out = work / name.replace(" ", "-")
            shutil.rmtree(out, ignore_errors=True)
            # Chunks of a few images: prepare's own ~32 MiB chunks hold 160 images at 256x256,
            # so a bench of a few hundred would give the second worker little or nothing to do
            SplitWriter(out, source, "train", size, 3, decoder, False, pools[name].workers,
                        chunk_images=chunk, log=lambda *a: None).run(pools[name])
            return len(files)
        rates, per_cpu = _alternate(rounds, {name: (lambda name=name: run(name))
                                             for name in pools},
                                    pids=lambda name: list(pools[name]._processes))
    finally:
        for pool in pools.values():
            pool.close()
        shutil.rmtree(work, ignore_errors=True)
    med, cpu = _medians(rates), _medians(per_cpu)
    print(f"prepare: the same {len(files)} JPEGs into a store ({decoder}; decode, write, flush, "
          f"read back; chunks of {chunk}), median of {rounds} rounds, "
          f"{machine.cores_available()} cores here")
    _lines(med, cpu)
    scaling = med["2 workers"] / med["1 worker"]
    result = {"rates": rates, "median": med, "per_cpu_second": cpu, "scaling_1_to_2": scaling,
              "decoder": decoder}
    line = f"  2 workers / 1 worker: {scaling:.2f}x on the wall clock"
    if len(cpu) == 2:
        result["scaling_on_free_cores"] = 2 * cpu["2 workers"] / cpu["1 worker"]
        line += (f"; per CPU-second {cpu['2 workers'] / cpu['1 worker']:.2f}x, so ~"
                 f"{result['scaling_on_free_cores']:.2f}x on 2 free cores")
    print(line)
    return result


def bench_read(rounds, images=2048, size=256, batches=8, folder=None):
    own = folder is None
    folder = Path(folder or tempfile.mkdtemp(prefix="tinyalexnet-bench-store-")) / "train"
    try:
        if own:
            rng = np.random.default_rng(0)
            save_store(folder, rng.integers(0, 256, (images, 3, size, size), dtype=np.uint8),
                       rng.integers(0, 10, images), [str(k) for k in range(10)])
        ds = StoreDataset(folder, verify="none")
        ds.get_batch(np.arange(len(ds)))                       # in the page cache
        rng = np.random.default_rng(1)
        order = [rng.integers(0, len(ds), READ_BATCH) for _ in range(batches)]

        def gather():
            for idx in order:
                ds.get_batch(idx)
            return READ_BATCH * batches

        def first_read():                                      # every image's CRC checked
            fresh = StoreDataset(folder, verify="lazy")
            for idx in order:
                fresh.get_batch(idx)
            return READ_BATCH * batches

        def with_crops():
            for k, idx in enumerate(order):
                x, _ = ds.get_batch(idx)
                top, left, flip = random_crop_params(np.random.default_rng(k), len(idx),
                                                     x.shape[2:], CROP)
                crop(x, top, left, CROP, flip)
            return READ_BATCH * batches

        block = np.asarray(ds.images[:READ_BATCH])
        target = np.empty_like(block)

        def plain_copy():                     # the same bytes as one contiguous copy: the bound
            for _ in order:
                np.copyto(target, block)
            return READ_BATCH * batches
        rates, per_cpu = _alternate(rounds, {"get_batch": gather, "get_batch, first read (CRC-32)":
                                    first_read, "get_batch + random 227 crops, flips":
                                    with_crops, "bound: one contiguous copy of those bytes":
                                    plain_copy})
    finally:
        if own:
            shutil.rmtree(folder.parent, ignore_errors=True)
    med, cpu = _medians(rates), _medians(per_cpu)
    image_bytes = 3 * size * size
    bound = med["bound: one contiguous copy of those bytes"]
    print(f"read: batches of {READ_BATCH} random images from a store of {len(ds):,} "
          f"{size}x{size} RGB images (in the page cache), one thread, median of {rounds} rounds")
    _lines(med, cpu)
    print(f"  a batch moves {2 * image_bytes:,} bytes per image (read {image_bytes:,} from the "
          f"page cache, write as many): {bound * 2 * image_bytes / 1e9:.1f} GB/s at the bound; "
          f"get_batch reaches {med['get_batch'] / bound:.0%} of it; target 5,000 images/s")
    return {"rates": rates, "median": med, "per_cpu_second": cpu, "bound": bound,
            "bytes_per_image": 2 * image_bytes}


def bench_folder(paths, rounds, size=256):
    root = Path(paths[0]).parents[1]
    sets = {w: ImageFolder(root, size=size, workers=w) for w in (0, 1, 2)}
    idx = np.arange(min(READ_BATCH, len(paths)))
    try:
        for ds in sets.values():
            ds.get_batch(idx[:4])                              # start the workers
        names = {f"{w} worker processes" if w else "this process": ds
                 for w, ds in sets.items()}
        rates, per_cpu = _alternate(
            rounds, {name: (lambda ds=ds: len(ds.get_batch(idx)[1])) for name, ds in names.items()},
            pids=lambda name: list(names[name]._pool._processes) if names[name]._pool else [])
    finally:
        for ds in sets.values():
            ds.close()
    med, cpu = _medians(rates), _medians(per_cpu)
    print(f"folder: ImageFolder.get_batch of {len(idx)} JPEGs (decoder {sets[0].decoder}), "
          f"median of {rounds} rounds")
    _lines(med, cpu)
    return {"rates": rates, "median": med, "per_cpu_second": cpu}


# ----------------------------------------------------------------------------- beside training

def input_rate(data, batch_size, side, batches=5):
    """images/s of ``get_batch`` of random batches from ``data`` (a store or an image folder,
    read at the paper's canvas for a model of input ``side``), as the reading thread runs it."""
    from .datasets import load_dataset
    from .transforms import paper_canvas
    name = "store" if (Path(data) / "train" / "manifest.json").is_file() else "folder"
    ds = load_dataset(name, "train", data_dir=data, size=paper_canvas(side))
    rng = np.random.default_rng(0)
    ds.get_batch(rng.integers(0, len(ds), min(batch_size, 4)))      # start workers, map pages
    start = time.perf_counter()
    for _ in range(batches):
        ds.get_batch(rng.integers(0, len(ds), batch_size))
    rate = batches * batch_size / (time.perf_counter() - start)
    if hasattr(ds, "close"):
        ds.close()
    return name, ds, rate


def beside_training(args, training_rate):
    """``bench --data``: print the input pipeline's images/s beside training's, and which
    one limits training.  Returns what it printed, as a dict."""
    from .models import INPUT_SIDE
    name, ds, rate = input_rate(args.data, args.batch_size, INPUT_SIDE[args.model])
    what = f"{name} {args.data} ({len(ds):,} images"
    what += f", {ds.workers} worker processes)" if name == "folder" else ", one reading thread)"
    limit = "the input" if rate < training_rate else "the model"
    print(f"\ninput pipeline: {rate:,.0f} images/s from {what}; training step "
          f"{training_rate:,.0f} images/s: training is limited by {limit} "
          f"({rate / training_rate:.2f}x)")
    return {"source": name, "input_images_per_s": rate, "training_images_per_s": training_rate,
            "limited_by": limit}


# ----------------------------------------------------------------------------- command

def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tinyalexnet.bench_data",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--what", default="decode,prepare,read,folder",
                        help="comma-separated: decode, prepare, read, folder (default: all)")
    parser.add_argument("--images", type=int, default=160, help="test JPEGs (default 160)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--store", help="read this store's train split instead of a synthetic "
                                        "one")
    parser.add_argument("--store-images", type=int, default=2048,
                        help="images in the synthetic store (default 2048: 400 MB)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    what = [w.strip() for w in args.what.split(",") if w.strip()]
    unknown = set(what) - {"decode", "prepare", "read", "folder"}
    if unknown or args.images < 2 or args.rounds < 1:
        print(f"error: --what takes decode, prepare, read, folder (got {sorted(unknown)}); "
              "--images at least 2, --rounds at least 1", file=sys.stderr)
        return 2
    print(f"tinyalexnet bench_data, {time.strftime('%Y-%m-%d')}: "
          f"{machine.device_line('numpy', None)}")
    load = machine.OtherLoad().start()
    results = {}
    work = Path(tempfile.mkdtemp(prefix="tinyalexnet-bench-photos-"))
    try:
        paths = make_photos(work, args.images) if set(what) - {"read"} else []
        if "decode" in what:
            results["decode"] = bench_decode(paths, args.rounds)
        if "prepare" in what:
            results["prepare"] = bench_prepare(paths, args.rounds)
        if "read" in what:
            results["read"] = bench_read(args.rounds, images=args.store_images,
                                         folder=args.store and Path(args.store))
        if "folder" in what:
            results["folder"] = bench_folder(paths, args.rounds)
    except TinyAlexNetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(work, ignore_errors=True)
    other = load.stop()
    if other is not None:
        results["other_load"] = other
        note = "" if other < 0.05 else "  -- too busy: rates unreliable, compare the ratios"
        print(f"other programs kept the CPUs {100 * other:.0f}% busy meanwhile{note}")
    if args.json:
        write_text_atomic(args.json, json.dumps(results, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
