"""Small image folders in the layouts users have, made with Pillow (shared by the store tests)."""
import io
import os
import struct
import zlib

import numpy as np
from PIL import Image

CLASSES = ["n02119789", "n01440764", "n03255030"]      # deliberately not in sorted order
SORTED = sorted(CLASSES)


def photo(rng, h, w):
    """A smooth, photograph-like RGB image (a colour gradient, blobs and a little noise)."""
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([np.sin(6 * x + rng.uniform(0, 6)), np.cos(5 * y + rng.uniform(0, 6)),
                     np.sin(4 * (x + y) + rng.uniform(0, 6))], -1)
    img = 128 + 90 * base + rng.normal(0, 6, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def save(path, array, **options):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path, **options)


def class_folders(root, per_class=4, rng=None, sizes=((40, 50), (50, 40), (90, 130))):
    """root/<wnid>/<k>.JPEG|png, photo-like, of a few sizes (the last one large enough for
    JPEG draft scaling at small store sizes)."""
    rng = rng or np.random.default_rng(0)
    for c, wnid in enumerate(SORTED):
        for k in range(per_class):
            h, w = sizes[(c + k) % len(sizes)]
            ext = "png" if k == 1 else "JPEG"
            save(os.path.join(root, wnid, f"{wnid}_{k}.{ext}"), photo(rng, h, w), quality=90)


def flat_val(folder, labels, rng=None):
    """ImageNet's validation layout: folder/ILSVRC2012_val_0000000k.JPEG, k from 1."""
    rng = rng or np.random.default_rng(1)
    for k, _ in enumerate(labels, 1):
        save(os.path.join(folder, f"ILSVRC2012_val_{k:08d}.JPEG"), photo(rng, 40, 60), quality=90)


def png_claiming(width, height):
    """The bytes of a PNG whose header claims width x height pixels (no pixel data)."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def jpeg_bytes(array, **options):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "JPEG", **options)
    return buf.getvalue()
