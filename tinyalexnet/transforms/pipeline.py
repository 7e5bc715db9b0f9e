"""The Pipeline: uint8 image batches in, normalised float32 model input out.

It plans how the images reach the model's size, then runs the steps of
``functional.py`` in this order, the same way every time::

    uint8 (B, C, h0, w0) on the host
      -> to the device (one copy)
      -> [to_float, resize]  bilinear, to a canvas (only when sizes are far apart)
      -> [pad]               zero border: 28 -> 32, plus a margin to crop from
      -> crop                centre (test) or random with reflections (training)
      -> to_float            [0, 255] -> [0, 1]                     }  standardize:
      -> [lighting]          PCA colour noise (training, RGB only)  }  one normalize
      -> normalize           (x - mean) / std per channel           }  (see there)
    float32 (B, C, H, W) on the device

(``crop_standardize`` runs pad, crop and standardize together: on a GPU one
kernel for uint8 images, without making the padded canvas.)

How a source image reaches the model's size is decided per axis by ``plan``,
whose rules are the table ``PLAN`` (s = source side, t = model side, m = t // 8
the margin random crops move in, c = paper_canvas(t) = round(t * 256 / 227));
for each s exactly one row holds::

    policy      when                resize to  border before   border after
    pad         t - t//4 <= s <= t  s          (t - s)//2 + m  (t - s + 1)//2 + m
    upsample    s < t - t//4        t          m               m
    crop        t < s <= c          s          0               0
    downsample  c < s               c          0               0

The canvas is the resized (or source) side plus the borders.  The test view is
the centre crop of the canvas: under "pad" and "upsample" the whole image,
under "crop" and "downsample" its centre, as in the paper.  Training views are
random crops of the canvas: shifts by up to m pixels, or the paper's random
227 of 256.

So, per model (``model.input_shape``):

- ``alexnet_small`` / ``alexnet32`` (3x32x32 or 1x32x32): Fashion-MNIST/MNIST 28x28 are
  zero-padded to 32x32 ("pad"; their background is black, so the border adds
  nothing); CIFAR-10 32x32 is used as is.  Augmentation = the usual pad-4-and-
  crop-32 with reflections.  Image folders: load them with
  ``size=paper_canvas(32)`` = 36 and crop 32 ("crop").
- ``alexnet`` (227x227): 28x28 or 32x32 images are upsampled to 227 bilinearly
  ("upsample", as d2l feeds Fashion-MNIST to AlexNet), with shifts of up to 28
  pixels as augmentation; image folders at the paper's 256 give the paper's
  centre 227 crop at test time and random 227 crops while training ("crop").

Mean and standard deviation are those of the training images as stored (the
paper's mean image is of its 256x256 images, before cropping), from a fixed
subsample of at most 10,000 images (1,000 for folders, which decode files):
``channel_stats``.  Image files are read by ``datasets.folder.load_image_files``.
"""
import numpy

from ..backend import get_array_module
from ..errors import ShapeError, TinyAlexNetError
from .functional import (LIGHTING_STD, crop_index, crop_standardize, lighting_alpha,
                         lighting_offset, pad,
                         random_crop_params, resize, rgb_pca, standardize, standardize_constants,
                         ten_crop, to_float)

# ----------------------------------------------------------------------------- geometry

# One side of s pixels and the model's side t: which policy, the side to resize to,
# and the zero border before and after, with m = t // 8 and c = paper_canvas(t).
# ``plan`` below is the code; PLAN is the same rules as text, for the module
# docstring and lesson 8 (tests/test_transforms.py checks every row against plan).
PLAN_COLUMNS = ("policy", "when", "resize to", "border before", "border after")
PLAN = (
    ("pad",        "t - t//4 <= s <= t",  "s",  "(t - s)//2 + m",  "(t - s + 1)//2 + m"),
    ("upsample",   "s < t - t//4",        "t",  "m",               "m"),
    ("crop",       "t < s <= c",          "s",  "0",               "0"),
    ("downsample", "c < s",               "c",  "0",               "0"),
)


def paper_canvas(size):
    """The image side to crop ``size`` from at the paper's ratio 256:227 (227 -> 256, 32 -> 36)."""
    return round(size * 256 / 227)


def plan(source, target):
    """How one axis of side ``source`` reaches side ``target``: the row of ``PLAN`` that holds.

    Returns (policy, resize_to or None, border before, border after).
    """
    s, t = int(source), int(target)
    m, c = t // 8, paper_canvas(t)
    if t - t // 4 <= s <= t:        # close below: a zero border brings it to t, centred
        return "pad", None, (t - s) // 2 + m, (t - s + 1) // 2 + m
    if s < t - t // 4:              # far below: bilinear up to t
        return "upsample", t, m, m
    if t < s <= c:                  # up to the paper's canvas: crops of it as it is
        return "crop", None, 0, 0
    if c < s:                       # above: bilinear down to the canvas
        return "downsample", c, 0, 0
    raise ShapeError(f"no plan for a side of {source} pixels to {target}")


def plan_table(indent="    "):
    """``PLAN`` as an aligned text table: the one in the module docstring."""
    widths = [max(len(r[k]) for r in PLAN + (PLAN_COLUMNS,)) for k in range(len(PLAN_COLUMNS))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip()
             for row in (PLAN_COLUMNS,) + PLAN]
    return "\n".join(indent + line for line in lines)


# ----------------------------------------------------------------------------- statistics

def channel_stats(dataset, max_images=None, seed=0, pixels_per_chunk=4_000_000):
    """Per-channel mean (C,), standard deviation (C,) and covariance (C, C) on the [0, 1] scale.

    Over all images, or a fixed random subsample of ``max_images`` (default
    10,000 for in-memory data sets, 1,000 for ones that decode files).
    Accumulates sums in float64 chunk by chunk, so memory stays small.
    """
    n = len(dataset)
    if max_images is None:
        max_images = 10_000 if hasattr(dataset, "images") else 1_000
    if n > max_images:
        indices = numpy.sort(numpy.random.default_rng(seed).choice(n, max_images, replace=False))
    else:
        indices = numpy.arange(n)
    first, _ = dataset.get_batch(indices[:1])
    C = first.shape[1]
    chunk = max(1, pixels_per_chunk // first[0].size)
    total, s, ss = 0, numpy.zeros(C), numpy.zeros((C, C))
    for start in range(0, len(indices), chunk):
        images, _ = dataset.get_batch(indices[start:start + chunk])
        px = images.transpose(1, 0, 2, 3).reshape(C, -1).astype(numpy.float64) / 255
        total += px.shape[1]
        s += px.sum(axis=1)
        ss += px @ px.T
    mean = s / total
    cov = ss / total - numpy.outer(mean, mean)
    std = numpy.sqrt(numpy.maximum(numpy.diag(cov), 0))
    std = numpy.where(std < 1e-6, 1.0, std)          # a constant channel: leave its scale alone
    return mean, std, cov



# ----------------------------------------------------------------------------- the pipeline

class Pipeline:
    """Turns a host uint8 batch into model input on a backend, the same way every time.

    Build it from the training set with ``for_dataset``; save ``config()`` in a
    checkpoint and rebuild it with ``from_config`` to evaluate or predict with
    exactly the same preprocessing.
    """

    def __init__(self, source_shape, input_shape, mean, std, augment=False, flip=True,
                 lighting=False, eigval=None, eigvec=None):
        self.source_shape = tuple(int(v) for v in source_shape)       # (C, h0, w0)
        self.input_shape = tuple(int(v) for v in input_shape)         # (C, H, W)
        if self.source_shape[0] != self.input_shape[0]:
            raise ShapeError(f"Pipeline: the model takes {self.input_shape[0]}-channel input but "
                             f"the images have {self.source_shape[0]} channels; build the model "
                             f"with in_channels={self.source_shape[0]}")
        self.mean = numpy.asarray(mean, numpy.float64)
        self.std = numpy.asarray(std, numpy.float64)
        self.augment, self.flip = bool(augment), bool(flip)
        self.eigval = None if eigval is None else numpy.asarray(eigval, numpy.float64)
        self.eigvec = None if eigvec is None else numpy.asarray(eigvec, numpy.float64)
        self.lighting = bool(lighting) and self.eigval is not None and self.source_shape[0] == 3
        rows = plan(self.source_shape[1], self.input_shape[1])
        cols = plan(self.source_shape[2], self.input_shape[2])
        self.policy = rows[0] if rows[0] == cols[0] else f"{rows[0]}/{cols[0]}"
        self.resize = None
        if rows[1] is not None or cols[1] is not None:
            self.resize = (rows[1] or self.source_shape[1], cols[1] or self.source_shape[2])
        self.padding = ((rows[2], rows[3]), (cols[2], cols[3]))
        base = self.resize or self.source_shape[1:]
        self.canvas = (base[0] + rows[2] + rows[3], base[1] + cols[2] + cols[3])
        self.crop_size = self.input_shape[1:]
        self._on_devices = {}     # standardize's constants, kept where they were used

    # ------------------------------------------------------------------ building

    @classmethod
    def for_dataset(cls, train_set, input_shape, augment=False, lighting=False, flip=True,
                    max_images=None, seed=0):
        """A pipeline fitted to ``train_set`` for a model taking ``input_shape`` = (C, H, W).

        Computes the per-channel mean/std and, for RGB data, the PCA of the
        pixel colours.  ``augment``: random crops (+ reflections if ``flip``;
        say flip=False for digits).  ``lighting``: PCA colour noise (ignored
        for grey images, which have no colour).
        """
        first, _ = train_set.get_batch(numpy.arange(1))
        mean, std, cov = channel_stats(train_set, max_images, seed)
        eigval = eigvec = None
        if first.shape[1] == 3:
            eigval, eigvec = rgb_pca(cov)
        return cls(first.shape[1:], input_shape, mean, std, augment, flip, lighting, eigval, eigvec)

    def config(self):
        """Everything needed to rebuild this pipeline, as JSON-serialisable values."""
        return {
            "version": 1,
            "source_shape": list(self.source_shape),
            "input_shape": list(self.input_shape),
            "policy": self.policy,
            "resize": None if self.resize is None else list(self.resize),
            "padding": [list(p) for p in self.padding],
            "canvas": list(self.canvas),
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "augment": self.augment,
            "flip": self.flip,
            "lighting": self.lighting,
            "lighting_std": LIGHTING_STD,
            "pca": None if self.eigval is None else {"eigval": self.eigval.tolist(),
                                                    "eigvec": self.eigvec.tolist()},
        }

    @classmethod
    def from_config(cls, cfg):
        """The pipeline ``config()`` describes (the geometry is re-derived and checked)."""
        try:
            pca = cfg.get("pca") or {}
            pipe = cls(cfg["source_shape"], cfg["input_shape"], cfg["mean"], cfg["std"],
                       cfg.get("augment", False), cfg.get("flip", True), cfg.get("lighting", False),
                       pca.get("eigval"), pca.get("eigvec"))
        except (KeyError, TypeError, ValueError) as err:
            raise ShapeError(f"Pipeline: invalid configuration "
                             f"({err.__class__.__name__}: {err})") from None
        if cfg.get("canvas") is not None and list(pipe.canvas) != list(cfg["canvas"]):
            raise ShapeError(f"Pipeline: configuration has canvas {cfg['canvas']}, this version "
                             f"of the code derives {list(pipe.canvas)}")
        return pipe

    # ------------------------------------------------------------------ applying

    def _check(self, images):
        shape = tuple(getattr(images, "shape", ()))
        dtype = getattr(images, "dtype", None)
        if len(shape) != 4 or shape[1:] != self.source_shape or dtype != numpy.uint8:
            want = ", ".join(map(str, self.source_shape))
            raise ShapeError(f"Pipeline: expected uint8 images of shape (B, {want}), "
                             f"got {dtype} {shape}")

    def _to_device(self, images, xp):
        """Copy the batch to ``xp`` (the one transfer) and resize it if the plan says so."""
        self._check(images)
        x = (xp or get_array_module(images)).asarray(images)
        if self.resize is not None:
            x = resize(to_float(x), self.resize)
        return x

    def _canvas(self, images, xp):
        """Copy the batch to ``xp`` and lay it on the canvas."""
        return pad(self._to_device(images, xp), self.padding)

    def _constants(self, x, offset=None):
        """What ``standardize`` normalizes x with, on x's device.  Mean and std are the same
        for every batch: copied once and kept (on a GPU, two copies fewer per batch); only
        lighting's shift, which is the batch's own, is copied with it."""
        xp = get_array_module(x)
        key = (xp, x.dtype == numpy.uint8, self.mean.tobytes(), self.std.tobytes())
        if key not in self._on_devices:
            self._on_devices[key] = [xp.asarray(c) for c in
                                     standardize_constants(x, self.mean, self.std)]
        constants = self._on_devices[key]
        if offset is not None:
            shift = standardize_constants(x, self.mean, self.std, offset)[0]
            constants = [xp.asarray(shift), constants[1]]
        return constants

    def __call__(self, images, train, rng=None, xp=None, part=None):
        """Model input float32 (B, *input_shape) on ``xp`` (default: where the images are).

        ``train=True`` draws random crops/reflections and colour noise from
        ``rng`` (a NumPy Generator) when the pipeline augments; ``train=False``
        takes the centre view and uses no randomness.

        ``part = (start, stop, total)``: the images are numbers start..stop of a batch of
        ``total`` (data parallelism, parallel/data.py): the draws are made for the whole
        batch and this part's rows kept, so that every image gets the crop, reflection and
        colour noise it gets in one process.
        """
        x = self._to_device(images, xp)
        top, left, flip, offset = self._draws(x.shape[0], train, rng, part)
        # crop, then standardize (to_float, lighting, normalize): one kernel on a GPU
        return crop_standardize(x, self.padding, self.crop_size, self._constants(x, offset),
                                top, left, flip)

    def _draws(self, B, train, rng, part=None):
        """A batch's random draws, on the host from ``rng``: (top, left, flip) of the random
        crops (None: the centre) and lighting's offset (B, C) (None: no lighting).  ``part``:
        as in ``__call__``."""
        start, stop, total = part or (0, B, B)
        if stop - start != B:
            raise TinyAlexNetError(f"Pipeline: part {start}..{stop} of the batch is "
                                   f"{stop - start} images, but {B} came")
        rows = slice(start, stop)
        random_crops = train and self.augment
        if (random_crops or (train and self.lighting)) and rng is None:
            raise TinyAlexNetError("Pipeline: training augmentation needs rng, "
                                   "a numpy.random.Generator")
        top = left = flip = None        # None: the canvas's centre, without making the canvas
        if random_crops:
            top, left, flip = (a[rows] for a in random_crop_params(
                rng, total, self.canvas, self.crop_size, self.flip))
        offset = None
        if train and self.lighting:     # the shift lighting() would add, per image and channel
            offset = lighting_offset(self.eigval, self.eigvec, lighting_alpha(rng, total)[rows])
        return top, left, flip, offset

    # ------------------------------------------------------------------ fixed input buffers
    # A step replayed as a CUDA graph (graph.py) runs no Python: what ``__call__`` draws
    # and copies in each step is made on the host (``staged``) and copied by the caller
    # into device buffers of its own, which ``from_staged`` reads.  The same numbers as
    # ``__call__`` on a GPU, one kernel; only without a resize (uint8 images to the kernel).

    def staged(self, images, train, rng=None):
        """The host arrays a batch needs besides its images: ``{"index": the crop table
        (random crops), "shift": the normalisation shift with lighting (B, C, 1, 1)}``, each
        present only when drawn."""
        self._check(images)
        if self.resize is not None:
            raise ShapeError(f"Pipeline: {self.policy} resizes the images first; fixed input "
                             "buffers take images that need no resize")
        top, left, flip, offset = self._draws(images.shape[0], train, rng)
        out = {}
        if top is not None:
            out["index"] = crop_index(images.shape[:2] + self.canvas, top, left, self.crop_size,
                                      flip)
        if offset is not None:
            out["shift"] = standardize_constants(images, self.mean, self.std, offset)[0]
        return out

    def from_staged(self, x, staged):
        """The model input from uint8 images ``x`` and ``staged``'s arrays, both already on
        the device (``__call__``'s crop and standardize, on those buffers)."""
        shift, scale = self._constants(x)
        constants = [staged.get("shift", shift), scale]
        return crop_standardize(x, self.padding, self.crop_size, constants,
                                index=staged.get("index"))

    def ten_crop(self, images, xp=None):
        """The ten test views of every image: float32 (10, B, *input_shape) on ``xp``
        (default: where the images are)."""
        x = ten_crop(self._canvas(images, xp), self.crop_size)
        return standardize(x, self.mean, self.std, constants=self._constants(x))

    def describe(self):
        """One line for logs, e.g. "pad 1x28x28 -> 1x32x32, random crops + flips"."""
        aug = "no augmentation"
        if self.augment:
            aug = "random crops" + (" + flips" if self.flip else "")
        if self.lighting:
            aug += " + PCA lighting"
        src, dst = ("x".join(map(str, s)) for s in (self.source_shape, self.input_shape))
        return (f"{self.policy} {src} -> {dst} (canvas {self.canvas[0]}x{self.canvas[1]}), {aug}, "
                f"mean {numpy.round(self.mean, 3).tolist()} std {numpy.round(self.std, 3).tolist()}")

    __repr__ = describe
