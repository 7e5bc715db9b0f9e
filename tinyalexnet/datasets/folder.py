"""Image folders: one sub-folder per class of JPEG/PNG files, read lazily with Pillow.

This is how ImageNet, Imagenette or your own photos reach the network::

    root/
      cat/  001.jpg  002.png ...
      dog/  a.jpg ...

Class names are the sub-folder names in sorted order (label = position).
Listing the files is all the constructor does; ``get_batch`` decodes only the
images a batch asks for, so a data set larger than memory works.

Each image gets the paper's preprocessing: "we down-sampled the images to a
fixed resolution of 256 x 256 ... rescaled the image such that the shorter
side was of length 256, and then cropped out the central 256x256 patch".
``size`` changes the 256 (e.g. 36 for the 32x32 models).  The mean
subtraction the paper does next belongs to the input pipeline
(``tinyalexnet.transforms``), which works on batches on the device.

What real folders hold, and what happens to it: only regular files are opened
(a FIFO named cat.png would make a reader wait forever); a file's header is
checked before any pixel is decoded (at most ``MAX_SIDE`` pixels a side and
``MAX_PIXELS`` in all: a 1 KB PNG can claim 1,000,000 x 1 pixels); 16-bit and
float images are scaled to 8 bits by the depth Pillow reports (``to_8_bit``).

Decoding: JPEGs go through libjpeg-turbo, by Pillow or, where it is installed,
by ``simplejpeg`` (``jpeg.py``), which gives the same pixels about 1.2x
faster; ``decoder`` chooses ("auto": simplejpeg if installed).  A folder can
decode in worker processes (``workers``, ``workers.py``); a data set read
every epoch is better decoded once, into a store (``prepare.py``, ``store.py``).
"""
import contextlib
import errno
import os
import stat
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ..backend import numpy as np
from ..errors import DataError
from . import jpeg
from .workers import DecodePool, default_workers

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff",
                    ".webp")
MODES = {1: "L", 3: "RGB"}
DECODERS = ("auto", "pillow", "simplejpeg")

# The largest image decoded, checked from the file's header before any pixel is
# read.  A tiny file can claim a huge image (a "decompression bomb"); Pillow's
# own check only counts pixels (up to 179 M), so 1,000,000 x 1 passes it.
MAX_SIDE = 32_768             # pixels on either side
MAX_PIXELS = 64 * 1024 ** 2   # 67,108,864 pixels in all: 192 MiB as RGB

_KINDS = ((stat.S_ISDIR, "is a folder"), (stat.S_ISFIFO, "is a FIFO (named pipe)"),
          (stat.S_ISSOCK, "is a socket"), (stat.S_ISCHR, "is a character device"),
          (stat.S_ISBLK, "is a block device"))


def not_a_regular_file(path, st=None):
    """Why ``path`` is not a regular file (symbolic links followed), or None if it is one.

    Only regular files are opened: reading a FIFO waits for a writer forever, a
    device may never end.  The answer completes a message: "no such file", "is
    a folder", "is a FIFO (named pipe)", "is a symbolic link loop", ...
    """
    if st is None:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return "is a broken symbolic link" if os.path.islink(path) else "no such file"
        except OSError as err:
            if err.errno == errno.ELOOP:
                return "is a symbolic link loop"
            return f"cannot be read ({err.strerror or err})"
    if stat.S_ISREG(st.st_mode):
        return None
    return next((what for test, what in _KINDS if test(st.st_mode)), "is not a regular file")


def image_file_error(path, problem):
    """The one-line DataError for an image path that ``not_a_regular_file`` refused."""
    if problem == "no such file":
        return DataError(f"{path}: no such image file")
    return DataError(f"{path}: {problem}, not an image file")


def _open_regular(path):
    """``path`` opened for reading as a binary file, only if it is a regular file.

    O_NONBLOCK: opening a FIFO returns at once instead of waiting for a writer,
    so the check on the open file (no race with a file swapped in between) can
    refuse it.  It changes nothing for regular files.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as err:
        raise image_file_error(path, not_a_regular_file(path) or
                               f"cannot be opened ({err.strerror or err})") from None
    problem = not_a_regular_file(path, os.fstat(fd))
    if problem is not None:
        os.close(fd)
        raise image_file_error(path, problem)
    return os.fdopen(fd, "rb")


def check_image_size(path, width, height):
    """Refuse an image larger than ``MAX_SIDE`` a side or ``MAX_PIXELS`` in all (one line)."""
    if width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_PIXELS:
        raise DataError(f"{path}: {width:,}x{height:,} pixels is too large to read: expected at "
                        f"most {MAX_SIDE:,} pixels a side and {MAX_PIXELS:,} in all (a "
                        f"decompression bomb, or a huge picture: scale it down first)")


def to_8_bit(img, path):
    """``img`` with 8 bits per channel, scaled by the bit depth Pillow reports.

    ``img.convert("L")`` or ``("RGB")`` would clip 16-bit grey (Pillow's modes
    I;16, I;16B..., and I for 16-bit PNG and PGM) to 255, turning a 16-bit
    image almost white, and would truncate float pixels (mode F) on the usual
    [0, 1] scale to 0 or 1, turning them black.  Here 16-bit values v become
    round(v * 255 / 65535), floats in [0, 1] become round(255 x); floats
    outside [0, 1] and 32-bit integers (no known white level) are refused in
    one line.  16-bit RGB(A) PNGs need nothing: Pillow reads them as 8-bit.
    """
    mode = img.mode
    if mode.startswith("I;16") or (mode == "I" and img.format in ("PNG", "PPM")):
        v = np.asarray(img)
        if v.dtype.kind not in "ui" or v.min() < 0 or v.max() > 65535:
            raise DataError(f"{path}: 16-bit image (Pillow mode {mode}) with values from "
                            f"{v.min()} to {v.max()}: expected 0..65535")
        return Image.fromarray(((v.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8))
    if mode == "I":
        raise DataError(f"{path}: 32-bit integer pixels (Pillow mode I, {img.format}) have no "
                        "known white level; save the image with 8 or 16 bits per channel")
    if mode == "F":
        v = np.asarray(img, dtype=np.float64)
        finite = bool(np.isfinite(v).all())
        if not finite or v.min() < 0 or v.max() > 1:
            found = f"values from {v.min():g} to {v.max():g}" if finite else "NaN or infinity"
            raise DataError(f"{path}: float pixels (Pillow mode F) with {found}: expected "
                            "values in [0, 1], the usual scale of float images")
        return Image.fromarray(np.rint(v * 255).astype(np.uint8))
    return img


def resize_and_crop(img, size):
    """Scale a PIL image so that it covers ``size`` = (h, w), then cut out the centre.

    For a square ``size`` this is the paper's rule: shorter side to ``h``,
    central ``h x h`` crop.  Pillow's resampling filters average over the
    source pixels when shrinking, so large photos do not alias.  Only the
    region that lands in the crop is resampled (Pillow's ``box``), so a thin
    image (10,000 x 2 scaled to cover 256 x 256 would be 1,280,000 x 256) costs
    no more memory than the crop itself.
    """
    h, w = size
    scale = max(h / img.height, w / img.width)
    new_w, new_h = max(w, round(img.width * scale)), max(h, round(img.height * scale))
    left, top = (new_w - w) // 2, (new_h - h) // 2
    if (new_w, new_h) == img.size:
        return img.crop((left, top, left + w, top + h))
    # The crop's corners in source pixels: the same resampling as resizing the
    # whole image to (new_w, new_h) and cropping (to within one grey level).
    sx, sy = img.width / new_w, img.height / new_h
    return img.resize((w, h), Image.BILINEAR,
                      box=(left * sx, top * sy, (left + w) * sx, (top + h) * sy))


@contextlib.contextmanager
def _header_checked(path, channels, size):
    """``path`` opened by Pillow, its header read and its size checked, nothing decoded yet.

    Only regular files are opened; anything wrong, here or in the ``with`` body
    that decodes, becomes a one-line DataError naming the file.
    """
    try:
        with _open_regular(path) as f, warnings.catch_warnings():
            # Pillow warns from 89 M pixels; check_image_size refuses from 64 M anyway.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(f) as img:
                if size is not None and img.format == "JPEG":
                    # Let the JPEG decoder scale down by 1/2, 1/4 or 1/8 while decoding,
                    # never below the size we need: ImageNet photos decode several times faster.
                    img.draft(MODES[channels], (size[1], size[0]))
                check_image_size(path, *img.size)
                yield img
    except DataError:
        raise
    except Image.DecompressionBombError as err:
        raise DataError(f"{path}: too large to read ({err}); expected at most {MAX_SIDE:,} "
                        f"pixels a side and {MAX_PIXELS:,} in all") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        reason = "not an image Pillow can read" if isinstance(err, UnidentifiedImageError) else err
        raise DataError(f"{path}: cannot decode the image ({reason})") from None


def _arguments(path, channels, size):
    if channels not in MODES:
        raise DataError(f"{path}: channels must be 1 (grey) or 3 (RGB), got {channels}")
    return (size, size) if isinstance(size, int) else size


def resolve_decoder(decoder="auto"):
    """The decoder ``decoder`` names here: "auto" is simplejpeg where installed, else Pillow.

    Both give the same pixels (``jpeg.py``); simplejpeg is faster.
    """
    if decoder not in DECODERS:
        raise DataError(f"unknown image decoder {decoder!r}: expected one of "
                        f"{', '.join(DECODERS)}")
    if decoder == "auto":
        return "simplejpeg" if jpeg.available() else "pillow"
    if decoder == "simplejpeg" and not jpeg.available():
        raise DataError("the simplejpeg decoder is not installed: pip install simplejpeg, "
                        "or use the pillow decoder (the same pixels, about 1.2x slower)")
    return decoder


def check_image_file(path, channels=3, size=None):
    """Refuse, from its header alone, a file ``load_image_file`` would refuse before
    decoding (not a regular file, not an image, too large): a cheap check of many
    files before a long job starts."""
    with _header_checked(path, channels, _arguments(path, channels, size)):
        pass


def _load_fast(path, channels, size):
    """``load_image_file``'s result through simplejpeg as uint8 (h, w[, C]), or None
    where Pillow must decide (not a plain JPEG, a damaged one, a read error).

    The same steps as Pillow's path in the same order: only a regular file is
    opened; Pillow's own limit on the full size (``MAX_IMAGE_PIXELS``), then
    ``check_image_size`` on the size decoded at Pillow's draft scale; the same
    ``resize_and_crop``.
    """
    try:
        with _open_regular(path) as f:
            data = f.read()
    except OSError:
        return None
    dims = jpeg.header(data)
    limit = Image.MAX_IMAGE_PIXELS
    if dims is None or (limit is not None and dims[0] * dims[1] > 2 * limit):
        return None
    scale = jpeg.draft_scale(*dims, size)
    check_image_size(path, -(-dims[0] // scale), -(-dims[1] // scale))
    pixels = jpeg.decode(data, channels, *dims, scale)
    if pixels is None:
        return None
    img = Image.fromarray(pixels[:, :, 0] if channels == 1 else pixels)
    return np.asarray(resize_and_crop(img, size), dtype=np.uint8)


def load_image_file(path, channels=3, size=None, decoder="auto"):
    """An image file as uint8 (C, H, W): grey (``channels=1``) or RGB (``channels=3``).

    ``size`` (an int or (h, w)) applies ``resize_and_crop``.  Only regular
    files are opened, images over ``MAX_SIDE``/``MAX_PIXELS`` are refused from
    their header, 16-bit and float pixels are scaled (``to_8_bit``); anything
    Pillow cannot decode raises a one-line DataError naming the file.
    ``decoder``: "auto", "pillow" or "simplejpeg" (``resolve_decoder``), the
    same pixels either way.
    """
    size = _arguments(path, channels, size)
    if size is not None and resolve_decoder(decoder) == "simplejpeg":
        array = _load_fast(path, channels, size)
        if array is not None:
            return array[None] if channels == 1 else array.transpose(2, 0, 1)
    with _header_checked(path, channels, size) as img:
        img = to_8_bit(img, path).convert(MODES[channels])
        if size is not None:
            img = resize_and_crop(img, size)
        array = np.asarray(img, dtype=np.uint8)
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


def decode_files(paths, channels, size, decoder="auto"):
    """``load_image_file`` of each path, stacked: uint8 (len(paths), C, size, size).
    What a worker process runs for a piece of a batch."""
    C, (h, w) = channels, _arguments(None, channels, size)
    images = np.empty((len(paths), C, h, w), dtype=np.uint8)
    for k, path in enumerate(paths):
        images[k] = load_image_file(path, channels, (h, w), decoder)
    return images


def load_image_files(paths, shape):
    """Image files as one uint8 batch (B, C, h, w), ``shape`` = (C, h, w).

    Each file becomes grey (C = 1) or RGB (C = 3) and is scaled to cover (h, w),
    then centre-cropped to it (``load_image_file``): how ``predict`` turns files
    into the batch a checkpoint's pipeline expects (its ``source_shape``).
    """
    C, h, w = (int(v) for v in shape)
    images = [load_image_file(p, C, (h, w)) for p in paths]
    return np.stack(images) if images else np.zeros((0, C, h, w), np.uint8)


FOLDER_LAYOUT = "expected one sub-folder per class of .jpg/.png files, e.g. root/cat/1.jpg, root/dog/2.png"


def list_images(root, classes=None):
    """The images of ``root/<class>/<file>``: (classes, files, labels, problems).

    Classes are the sorted sub-folder names, or ``classes`` given (the test
    split passes the training split's; every sub-folder must then be one of
    them).  Files in sorted order within each class; hidden files and nested
    folders are passed over.  ``problems`` lists, in order, each entry that is
    not a readable image file by its name or kind (readme.txt, a FIFO) as
    (path, DataError): ``ImageFolder`` raises the first, ``prepare --skip-bad``
    reports them all.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder; {FOLDER_LAYOUT}")
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if classes is None:
        classes = found
    else:
        classes = list(classes)
        stray = [c for c in found if c not in classes]
        if stray:
            raise DataError(f"{root}: class folder {stray[0]!r} is not one of the "
                            f"{len(classes)} training classes ({', '.join(classes[:5])}...)")
    files, labels, problems = [], [], []
    for label, cls in enumerate(classes):
        folder = root / cls
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if path.name.startswith("."):
                continue          # hidden files (.DS_Store)
            problem = not_a_regular_file(path)
            if problem == "is a folder":
                continue          # nested folders
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                problems.append((path, DataError(f"{path}: not an image file name; expected "
                                                 f"{', '.join(IMAGE_EXTENSIONS)} in the class "
                                                 "folders")))
            elif problem is not None:   # a FIFO would hang the first batch that reads it
                problems.append((path, image_file_error(path, problem)))
            else:
                files.append(path)
                labels.append(label)
    return list(classes), files, np.asarray(labels, dtype=np.int64), problems


def check_class_list(root, classes, labels, own_classes):
    """Refuse a folder with no images; for a training set (``own_classes``), also a class
    folder with none, or fewer than two classes."""
    root = Path(root)
    if not len(labels):
        raise DataError(f"{root}: no images found; {FOLDER_LAYOUT}")
    if own_classes:        # a training set defines the classes: each needs images
        empty = [c for k, c in enumerate(classes) if not np.any(labels == k)]
        if empty:
            raise DataError(f"{root / empty[0]}: class folder with no images")
        if len(classes) < 2:
            raise DataError(f"{root}: only one class folder ({classes[0]!r}); a "
                            "classifier needs at least two sub-folders of images")


class ImageFolder:
    """Labelled images from ``root/<class>/<file>``; decoded when a batch asks for them.

    ``size``: the side of the square each image is cut to (the paper: 256).
    ``channels``: 3 (RGB) or 1 (grey).  ``classes``: the class names to use, in
    order (the test split passes the training split's so labels agree); every
    sub-folder must then be one of them.  ``workers``: processes that decode
    each batch between them (``workers.py``; None: ``default_workers()``, 0:
    this process decodes); the batch is the same either way.  ``decoder``: see
    ``resolve_decoder``.  ``close()`` (or ``with``) ends the workers; so does
    the end of the program.
    """

    def __init__(self, root, size=256, channels=3, classes=None, name=None, workers=None,
                 decoder="auto"):
        self.root, self.size, self._channels = Path(root), int(size), int(channels)
        self.name = name or str(self.root)
        own_classes = classes is None
        self.classes, self.files, self.labels, problems = list_images(self.root, classes)
        if problems:
            raise problems[0][1]
        check_class_list(self.root, self.classes, self.labels, own_classes)
        self.decoder = resolve_decoder(decoder)
        self.workers = default_workers() if workers is None else int(workers)
        if self.workers < 0:
            raise DataError(f"{self.name}: workers must be 0 or more, got {self.workers}")
        self._pool = None

    def __len__(self):
        return len(self.files)

    @property
    def channels(self):
        return self._channels

    @property
    def image_size(self):
        return (self.size, self.size)

    def get_batch(self, indices):
        """Decode the images at ``indices``: uint8 (B, C, size, size) and int64 (B,)."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        paths = [self.files[i] for i in indices]
        if self.workers == 0 or len(paths) < 2:
            images = decode_files(paths, self._channels, self.size, self.decoder)
        else:
            images = self._decode_in_workers(paths)
        return images, self.labels[indices]

    def _decode_in_workers(self, paths):
        """The batch cut into one contiguous piece per worker, put back in order."""
        if self._pool is None:
            self._pool = DecodePool(self.workers)
        pieces = np.array_split(np.arange(len(paths)), min(self.workers, len(paths)))
        futures = [self._pool.submit(decode_files, [paths[i] for i in piece], self._channels,
                                     self.size, self.decoder) for piece in pieces]
        try:
            return np.concatenate([f.result() for f in futures])
        except BaseException:
            for f in futures:           # a broken file (or Ctrl-C): drop the rest of the batch
                f.cancel()
            raise

    def close(self):
        """End the worker processes (a later batch starts them again)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __getstate__(self):          # a copy (pickled) gets no pool of its own
        state = dict(self.__dict__)
        state["_pool"] = None
        return state

    def __repr__(self):
        return (f"{self.name}: {len(self)} images {self._channels}x{self.size}x{self.size} "
                f"(from files), {len(self.classes)} classes")
