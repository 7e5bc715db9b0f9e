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
"""
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ..backend import numpy as np
from ..errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff",
                    ".webp")
MODES = {1: "L", 3: "RGB"}


def resize_and_crop(img, size):
    """Scale a PIL image so that it covers ``size`` = (h, w), then cut out the centre.

    For a square ``size`` this is the paper's rule: shorter side to ``h``,
    central ``h x h`` crop.  Pillow's resampling filters average over the
    source pixels when shrinking, so large photos do not alias.
    """
    h, w = size
    scale = max(h / img.height, w / img.width)
    new_w, new_h = max(w, round(img.width * scale)), max(h, round(img.height * scale))
    if (new_w, new_h) != img.size:
        img = img.resize((new_w, new_h), Image.BILINEAR)
    left, top = (new_w - w) // 2, (new_h - h) // 2
    return img.crop((left, top, left + w, top + h))


def load_image_file(path, channels=3, size=None):
    """An image file as uint8 (C, H, W): grey (``channels=1``) or RGB (``channels=3``).

    ``size`` (an int or (h, w)) applies ``resize_and_crop``.  Anything Pillow
    cannot decode raises a one-line DataError naming the file.
    """
    if channels not in MODES:
        raise DataError(f"{path}: channels must be 1 (grey) or 3 (RGB), got {channels}")
    if isinstance(size, int):
        size = (size, size)
    try:
        with Image.open(path) as img:
            if size is not None and img.format == "JPEG":
                # Let the JPEG decoder scale down by 1/2, 1/4 or 1/8 while decoding,
                # never below the size we need: ImageNet photos decode several times faster.
                img.draft(MODES[channels], (size[1], size[0]))
            img = img.convert(MODES[channels])
            if size is not None:
                img = resize_and_crop(img, size)
            array = np.asarray(img, dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"{path}: no such image file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, expected an image file") from None
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError,
            ValueError) as err:
        reason = "not an image Pillow can read" if isinstance(err, UnidentifiedImageError) else err
        raise DataError(f"{path}: cannot decode the image ({reason})") from None
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


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
                if path.name.startswith(".") or path.is_dir():
                    continue          # hidden files (.DS_Store), nested folders
                if path.suffix.lower() not in IMAGE_EXTENSIONS:
                    raise DataError(f"{path}: not an image file name; expected "
                                    f"{', '.join(IMAGE_EXTENSIONS)} in the class folders")
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
