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

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff",
                    ".webp")
MODES = {1: "L", 3: "RGB"}

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


def check_image_file(path, channels=3, size=None):
    """Refuse, from its header alone, a file ``load_image_file`` would refuse before
    decoding (not a regular file, not an image, too large): a cheap check of many
    files before a long job starts."""
    with _header_checked(path, channels, _arguments(path, channels, size)):
        pass


def load_image_file(path, channels=3, size=None):
    """An image file as uint8 (C, H, W): grey (``channels=1``) or RGB (``channels=3``).

    ``size`` (an int or (h, w)) applies ``resize_and_crop``.  Only regular
    files are opened, images over ``MAX_SIDE``/``MAX_PIXELS`` are refused from
    their header, 16-bit and float pixels are scaled (``to_8_bit``); anything
    Pillow cannot decode raises a one-line DataError naming the file.
    """
    size = _arguments(path, channels, size)
    with _header_checked(path, channels, size) as img:
        img = to_8_bit(img, path).convert(MODES[channels])
        if size is not None:
            img = resize_and_crop(img, size)
        array = np.asarray(img, dtype=np.uint8)
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


def load_image_files(paths, shape):
    """Image files as one uint8 batch (B, C, h, w), ``shape`` = (C, h, w).

    Each file becomes grey (C = 1) or RGB (C = 3) and is scaled to cover (h, w),
    then centre-cropped to it (``load_image_file``): how ``predict`` turns files
    into the batch a checkpoint's pipeline expects (its ``source_shape``).
    """
    C, h, w = (int(v) for v in shape)
    images = [load_image_file(p, C, (h, w)) for p in paths]
    return np.stack(images) if images else np.zeros((0, C, h, w), np.uint8)


class ImageFolder:
    """Labelled images from ``root/<class>/<file>``; decoded when a batch asks for them.

    ``size``: the side of the square each image is cut to (the paper: 256).
    ``channels``: 3 (RGB) or 1 (grey).  ``classes``: the class names to use, in
    order (the test split passes the training split's so labels agree); every
    sub-folder must then be one of them.
    """

    def __init__(self, root, size=256, channels=3, classes=None, name=None):
        self.root, self.size, self._channels = Path(root), int(size), int(channels)
        self.name = name or str(self.root)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: no such folder; expected one sub-folder per class "
                            "of .jpg/.png files, e.g. root/cat/1.jpg, root/dog/2.png")
        found = sorted(p.name for p in self.root.iterdir()
                       if p.is_dir() and not p.name.startswith("."))
        own_classes = classes is None
        if own_classes:
            classes = found
        else:
            classes = list(classes)
            stray = [c for c in found if c not in classes]
            if stray:
                raise DataError(f"{self.root}: class folder {stray[0]!r} is not one of the "
                                f"{len(classes)} training classes ({', '.join(classes[:5])}...)")
        self.classes = list(classes)
        self.files, labels = [], []
        for label, cls in enumerate(self.classes):
            folder = self.root / cls
            if not folder.is_dir():
                continue
            for path in sorted(folder.iterdir()):
                if path.name.startswith("."):
                    continue          # hidden files (.DS_Store)
                problem = not_a_regular_file(path)
                if problem == "is a folder":
                    continue          # nested folders
                if path.suffix.lower() not in IMAGE_EXTENSIONS:
                    raise DataError(f"{path}: not an image file name; expected "
                                    f"{', '.join(IMAGE_EXTENSIONS)} in the class folders")
                if problem is not None:   # a FIFO would hang the first batch that reads it
                    raise image_file_error(path, problem)
                self.files.append(path)
                labels.append(label)
        self.labels = np.asarray(labels, dtype=np.int64)
        if not self.files:
            raise DataError(f"{self.root}: no images found; expected one sub-folder per class "
                            "of .jpg/.png files, e.g. root/cat/1.jpg, root/dog/2.png")
        if own_classes:        # a training set defines the classes: each needs images
            empty = [c for k, c in enumerate(self.classes) if not np.any(self.labels == k)]
            if empty:
                raise DataError(f"{self.root / empty[0]}: class folder with no images")
            if len(self.classes) < 2:
                raise DataError(f"{self.root}: only one class folder ({self.classes[0]!r}); a "
                                "classifier needs at least two sub-folders of images")

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
        images = np.empty((len(indices), self._channels, self.size, self.size), dtype=np.uint8)
        for k, i in enumerate(indices):        # decoding is per file; the pipeline is not
            images[k] = load_image_file(self.files[i], self._channels, self.size)
        return images, self.labels[indices]

    def __repr__(self):
        return (f"{self.name}: {len(self)} images {self._channels}x{self.size}x{self.size} "
                f"(from files), {len(self.classes)} classes")
