"""The input pipeline: uint8 image batches in, normalised float32 model input out.

Every step is a small function over a whole batch (B, C, H, W), with no Python
loop over images, and runs on whichever backend holds the batch
(``xp = get_array_module(x)``).  The host draws the random numbers (a NumPy
Generator seeded by (seed, epoch, step)), the uint8 batch is copied to the
device once, and everything after that happens there::

    uint8 (B, C, h0, w0) on the host
      -> to the device (one copy)
      -> [resize]         bilinear, to a canvas (only when sizes are far apart)
      -> [pad]            zero border: 28 -> 32, plus a margin to crop from
      -> crop             centre (test) or random with reflections (training)
      -> to_float         [0, 255] -> [0, 1]                      }  one pass
      -> [lighting]       PCA colour noise (training, RGB only)   }  (standardize)
      -> normalize        (x - mean) / std per channel            }
    float32 (B, C, H, W) on the device

The paper's steps, and where they are here (Krizhevsky et al. 2012, section 4.1):

- "random 224x224 patches (and their horizontal reflections) from the 256x256
  images": ``random_crop_params`` + ``crop``.  (The network really needs 227.)
- "altering the intensities of the RGB channels": ``lighting``, to every pixel
  of an image add  [p1 p2 p3] [a1 l1, a2 l2, a3 l3]^T,  p_i and l_i the
  eigenvectors and eigenvalues of the 3x3 covariance of the training set's RGB
  pixels, a_i ~ N(0, 0.1^2) drawn once per image per presentation.  Here
  pixels are on the [0, 1] scale, so l_i are variances on that scale.
- "subtracting the mean activity over the training set from each pixel":
  ``normalize``, per channel, also dividing by the standard deviation.
- at test time, averaging the predictions of "the four corner patches and the
  center patch as well as their horizontal reflections": ``ten_crop``.

How a source image reaches the model's size (``plan``, per axis; s = source
side, t = model side, margin m = t // 8, canvas c = round(t * 256 / 227))::

    policy      when                   steps                    test view    training view
    pad         t - t//4 <= s <= t     pad to t, plus m         the image    shifted by up to m
    upsample    s < t - t//4           resize s -> t, pad m     the image    shifted by up to m
    crop        t < s <= c             none                     centre crop  random crop
    downsample  s > c                  resize s -> c            centre crop  random crop

So, per model (``model.input_shape``):

- ``small`` / ``alexnet32`` (3x32x32 or 1x32x32): Fashion-MNIST/MNIST 28x28 are
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
subsample of at most 10,000 images (1,000 for folders, which decode files).
"""
import numpy

from .backend import backend_of, get_array_module, is_array
from .datasets.folder import load_image_file
from .errors import ShapeError, TinyAlexNetError

LIGHTING_STD = 0.1   # the paper's sigma for the PCA colour noise


# ----------------------------------------------------------------------------- basic steps

def to_float(x):
    """uint8 [0, 255] -> float32 [0, 1]; a float array is returned unchanged."""
    xp = get_array_module(x)
    if x.dtype != xp.uint8:
        return x
    out = x.astype(xp.float32)
    out *= xp.float32(1 / 255)
    return out


def normalize(x, mean, std):
    """(x - mean[c]) / std[c] for each channel c.  x: (..., C, H, W); mean, std: (C,)."""
    xp = get_array_module(x)
    mean = numpy.asarray(mean, numpy.float32).reshape(-1, 1, 1)
    scale = (1 / numpy.asarray(std, numpy.float64)).astype(numpy.float32).reshape(-1, 1, 1)
    mean, scale = xp.asarray(mean), xp.asarray(scale)
    return (x - mean) * scale


def pad(x, padding, value=0):
    """A constant border: ``padding`` = p, or ((top, bottom), (left, right)).

    (B, C, H, W) -> (B, C, H + top + bottom, W + left + right).
    """
    if isinstance(padding, int):
        padding = ((padding, padding), (padding, padding))
    (top, bottom), (left, right) = padding
    if top == bottom == left == right == 0:
        return x
    xp = get_array_module(x)
    return xp.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=value)


def _bilinear_taps(n_in, n_out):
    """For each output position: the two source indices and the weight of the second.

    Pixel centres line up (the "half-pixel" rule of Pillow, OpenCV and PyTorch's
    ``align_corners=False``): output i sits at source coordinate
    u = (i + 0.5) * n_in / n_out - 0.5, clamped to [0, n_in - 1].
    """
    u = (numpy.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    u = numpy.clip(u, 0, n_in - 1)
    i0 = numpy.floor(u).astype(numpy.int64)
    i1 = numpy.minimum(i0 + 1, n_in - 1)
    return i0, i1, (u - i0).astype(numpy.float32)


def resize(x, size):
    """Bilinear resize of a float batch (B, C, H, W) -> (B, C, h, w), ``size`` = (h, w).

    Separable: first along rows, out[., ., i, :] = (1 - a_i) x[., ., r0_i, :] + a_i x[., ., r1_i, :],
    then the same along columns.  Two gathers and two blends, no loop.  Meant for
    enlarging (28 -> 227); shrinking by much more than 2x aliases, which is why
    image files are shrunk by Pillow when they are read.
    """
    xp = get_array_module(x)
    if x.dtype == xp.uint8:
        raise ShapeError("resize: expected a float batch (use to_float first), got uint8")
    h, w = size
    if x.shape[2:] == (h, w):
        return x
    r0, r1, a = (xp.asarray(t) for t in _bilinear_taps(x.shape[2], h))
    x = x[:, :, r0, :] * (1 - a)[:, None] + x[:, :, r1, :] * a[:, None]
    c0, c1, b = (xp.asarray(t) for t in _bilinear_taps(x.shape[3], w))
    return x[:, :, :, c0] * (1 - b) + x[:, :, :, c1] * b


# ----------------------------------------------------------------------------- crops

def center_offsets(in_size, out_size):
    """(top, left) of the central out_size patch of an in_size image."""
    return (in_size[0] - out_size[0]) // 2, (in_size[1] - out_size[1]) // 2


def random_crop_params(rng, batch, in_size, out_size, flip=True):
    """Per-image crop offsets and reflections, drawn on the host from ``rng``.

    Returns int64 ``top``, ``left`` (B,), uniform over every position where an
    ``out_size`` patch fits in ``in_size``, and bool ``flip`` (B,), each True
    with probability 1/2 (all False when ``flip=False``).  Draw order: top, left, flip.
    """
    top = rng.integers(0, in_size[0] - out_size[0] + 1, size=batch)
    left = rng.integers(0, in_size[1] - out_size[1] + 1, size=batch)
    flips = rng.random(batch) < 0.5 if flip else numpy.zeros(batch, dtype=bool)
    return top, left, flips


def crop(x, top, left, size, flip=None):
    """Cut a (h, w) patch at its own (top[b], left[b]) from every image, reflected where flip[b].

    out[b, c, i, j] = x[b, c, top[b] + i, left[b] + j]                  (no flip)
    out[b, c, i, j] = x[b, c, top[b] + i, left[b] + w - 1 - j]          (flip)

    No loop over images: index arrays pick every image's own rows and columns.
    ``top``, ``left``, ``flip``: host arrays of shape (B,).  (B, C, H, W) -> (B, C, h, w).
    """
    xp = get_array_module(x)
    B, C, H, W = x.shape
    h, w = size
    for name, v in (("top", top), ("left", left), ("flip", flip)):
        if is_array(v) and backend_of(v) != "numpy":   # they index on the host (see above)
            raise ShapeError(f"crop: {name} must be a host (NumPy) array, as random_crop_params "
                             f"draws it, got a {backend_of(v)} array; move it with as_numpy")
    top, left = numpy.asarray(top, numpy.int64), numpy.asarray(left, numpy.int64)
    if top.shape != (B,) or left.shape != (B,):
        raise ShapeError(f"crop: expected one offset per image, (B,) = ({B},), got "
                         f"top {top.shape} and left {left.shape}")
    if B and (top.min() < 0 or left.min() < 0 or top.max() + h > H or left.max() + w > W):
        raise ShapeError(f"crop: a {h}x{w} patch at offsets top {top.min()}..{top.max()}, "
                         f"left {left.min()}..{left.max()} does not fit in {H}x{W} images")
    cols = numpy.arange(w)
    if flip is not None:
        cols = numpy.where(numpy.asarray(flip, bool)[:, None], w - 1 - cols, cols)   # (B, w)
    rows = top[:, None] + numpy.arange(h)                                           # (B, h)
    cols = left[:, None] + cols                                                     # (B, w)
    # The same as one gather per pixel, x[b, c, rows[b, i], cols[b, j]], done as two
    # gathers that each move whole lines of pixels (about 3x faster on NumPy):
    # first every image's columns (mirrored where flipped), then its rows.
    b = xp.arange(B)
    by_column = x.transpose(0, 3, 1, 2)[b[:, None], xp.asarray(cols)]      # (B, w, C, H)
    by_row = by_column.transpose(0, 2, 3, 1)                               # (B, C, H, w), a view
    return by_row[b[:, None, None], xp.arange(C)[None, :, None], xp.asarray(rows)[:, None, :]]


def center_crop(x, size):
    """The central (h, w) patch of every image (plain slicing, no copy)."""
    top, left = center_offsets(x.shape[2:], size)
    return x[:, :, top:top + size[0], left:left + size[1]]


def ten_crop(x, size):
    """The paper's ten test patches: (B, C, H, W) -> (10, B, C, h, w).

    Order: top-left, top-right, bottom-left, bottom-right, centre, then the
    horizontal reflection of each of those five patches in the same order.
    """
    xp = get_array_module(x)
    H, W = x.shape[2:]
    h, w = size
    ct, cl = center_offsets((H, W), size)
    corners = [(0, 0), (0, W - w), (H - h, 0), (H - h, W - w), (ct, cl)]
    patches = [x[:, :, t:t + h, l:l + w] for t, l in corners]
    return xp.stack(patches + [p[:, :, :, ::-1] for p in patches])


# ----------------------------------------------------------------------------- colour noise

def rgb_pca(cov):
    """Eigenvalues (3,) in decreasing order and eigenvectors (3, 3), one per column."""
    eigval, eigvec = numpy.linalg.eigh(numpy.asarray(cov, numpy.float64))
    order = numpy.argsort(eigval)[::-1]
    return numpy.maximum(eigval[order], 0), eigvec[:, order]


def lighting_alpha(rng, batch, sigma=LIGHTING_STD):
    """The paper's a_i ~ N(0, sigma^2): (B, 3), drawn on the host."""
    return rng.normal(0.0, sigma, size=(batch, 3))


def lighting(x, eigval, eigvec, alpha):
    """PCA colour noise: add  p . (alpha[b] * eigval)  to every RGB pixel of image b.

    x: float (B, 3, H, W); eigval (3,), eigvec (3, 3) (columns p_i) and alpha
    (B, 3) are host arrays.  offset[b] = sum_i p_i alpha[b, i] l_i, shape (B, 3).
    """
    xp = get_array_module(x)
    if x.ndim != 4 or x.shape[1] != 3:
        raise ShapeError(f"lighting: expected RGB images (B, 3, H, W), got {tuple(x.shape)}")
    offset = lighting_offset(eigval, eigvec, alpha)
    return x + xp.asarray(offset.astype(numpy.float32))[:, :, None, None]


def lighting_offset(eigval, eigvec, alpha):
    """The RGB offset of each image, (B, 3): row b is  sum_i p_i alpha[b, i] l_i  (host arrays)."""
    return (numpy.asarray(alpha) * numpy.asarray(eigval)) @ numpy.asarray(eigvec).T


def standardize(x, mean, std, offset=None):
    """``to_float``, ``lighting`` and ``normalize`` as one affine map per image and channel.

        y[b, c] = (x[b, c] / 255 + offset[b, c] - mean[c]) / std[c]
                = x[b, c] * (1 / (255 std[c]))  +  (offset[b, c] - mean[c]) / std[c]

    x: uint8 pixels (..., C, H, W), or floats already on the [0, 1] scale (then
    no 1/255).  mean, std (C,) and offset (B, C) are host arrays on the [0, 1]
    scale.  One float32 array is made, instead of one per step.
    """
    xp = get_array_module(x)
    unit = 1 / 255 if x.dtype == xp.uint8 else 1.0
    mean, std = numpy.asarray(mean, numpy.float64), numpy.asarray(std, numpy.float64)
    scale = (unit / std).astype(numpy.float32).reshape(-1, 1, 1)                    # (C, 1, 1)
    shift = -mean if offset is None else numpy.asarray(offset, numpy.float64) - mean
    shift = (shift / std).astype(numpy.float32)[..., None, None]         # (C, 1, 1) or (B, C, 1, 1)
    y = x.astype(xp.float32)
    y *= xp.asarray(scale)
    y += xp.asarray(shift)
    return y


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


# ----------------------------------------------------------------------------- geometry

def paper_canvas(size):
    """The image side to crop ``size`` from at the paper's ratio 256:227 (227 -> 256, 32 -> 36)."""
    return round(size * 256 / 227)


def plan(source, target):
    """How one axis of side ``source`` reaches side ``target``.

    Returns (policy, resize_to or None, pad_before, pad_after); see the table
    in the module docstring.  The canvas is resize_to (or source) + padding.
    """
    s, t = source, target
    margin = t // 8
    if t - t // 4 <= s <= t:
        return "pad", None, (t - s) // 2 + margin, (t - s) - (t - s) // 2 + margin
    if s < t:
        return "upsample", t, margin, margin
    if s <= paper_canvas(t):
        return "crop", None, 0, 0
    return "downsample", paper_canvas(t), 0, 0


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

    def _canvas(self, images, xp):
        """Copy the batch to ``xp`` (the one transfer) and lay it on the canvas."""
        self._check(images)
        x = (xp or get_array_module(images)).asarray(images)
        if self.resize is not None:
            x = resize(to_float(x), self.resize)
        return pad(x, self.padding)

    def __call__(self, images, train, rng=None, xp=None):
        """Model input float32 (B, *input_shape) on ``xp`` (default: where the images are).

        ``train=True`` draws random crops/reflections and colour noise from
        ``rng`` (a NumPy Generator) when the pipeline augments; ``train=False``
        takes the centre view and uses no randomness.
        """
        x = self._canvas(images, xp)
        B = x.shape[0]
        random_crops = train and self.augment
        if (random_crops or (train and self.lighting)) and rng is None:
            raise TinyAlexNetError("Pipeline: training augmentation needs rng, "
                                   "a numpy.random.Generator")
        if random_crops:
            top, left, flip = random_crop_params(rng, B, self.canvas, self.crop_size, self.flip)
            x = crop(x, top, left, self.crop_size, flip)
        else:
            x = center_crop(x, self.crop_size)
        offset = None
        if train and self.lighting:
            offset = lighting_offset(self.eigval, self.eigvec, lighting_alpha(rng, B))
        return standardize(x, self.mean, self.std, offset)

    def ten_crop(self, images, xp=None):
        """The ten test views of every image: float32 (10, B, *input_shape) on ``xp``
        (default: where the images are)."""
        return standardize(ten_crop(self._canvas(images, xp), self.crop_size), self.mean, self.std)

    def load_files(self, paths):
        """Image files as a uint8 batch (B, *source_shape), ready for ``__call__``.

        Each file is converted to the pipeline's channels (grey or RGB) and
        scaled to cover the source size, then centre-cropped (the folder rule).
        """
        C, h, w = self.source_shape
        images = [load_image_file(p, C, (h, w)) for p in paths]
        return numpy.stack(images) if images else numpy.zeros((0, C, h, w), numpy.uint8)

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
