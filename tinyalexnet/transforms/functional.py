"""The input pipeline's steps: one function each, over a whole batch, on any backend.

Every function takes a batch (B, C, H, W) (or (..., C, H, W)) and returns a new
one, with no Python loop over images, on whichever backend holds the batch
(``xp = get_array_module(x)``).  Random numbers are drawn on the host, by the
``*_params`` / ``*_alpha`` functions, from a NumPy Generator the caller seeds;
the steps themselves are deterministic.  ``pipeline.Pipeline`` chains them.

The paper's steps, and where they are here (Krizhevsky et al. 2012, section 4.1):

- "random 224x224 patches (and their horizontal reflections) from the 256x256
  images": ``random_crop_params`` + ``crop``.  (The network really needs 227.)
- "altering the intensities of the RGB channels": ``lighting``, to every pixel
  of an image add  [p1 p2 p3] [a1 l1, a2 l2, a3 l3]^T,  p_i and l_i the
  eigenvectors and eigenvalues of the 3x3 covariance of the training set's RGB
  pixels (``rgb_pca``), a_i ~ N(0, 0.1^2) drawn once per image per
  presentation (``lighting_alpha``).  Here pixels are on the [0, 1] scale, so
  l_i are variances on that scale.
- "subtracting the mean activity over the training set from each pixel":
  ``normalize``, per channel, also dividing by the standard deviation.
- at test time, averaging the predictions of "the four corner patches and the
  center patch as well as their horizontal reflections": ``ten_crop``.
"""
import numpy

from .. import kernels
from ..backend import backend_of, get_array_module, is_array
from ..errors import ShapeError

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
    w = size[1]
    # The same as one gather per pixel, x[b, c, rows[b, i], cols[b, j]], done as two
    # gathers that each move whole lines of pixels (about 3x faster on NumPy):
    # first every image's columns (mirrored where flipped), then its rows.
    index = xp.asarray(crop_index(x.shape, top, left, size, flip))                  # one copy
    b = xp.arange(B)
    by_column = x.transpose(0, 3, 1, 2)[b[:, None], index[:, :w]]          # (B, w, C, H)
    by_row = by_column.transpose(0, 2, 3, 1)                               # (B, C, H, w), a view
    return by_row[b[:, None, None], xp.arange(C)[None, :, None], index[:, None, w:]]


def crop_index(x_shape, top, left, size, flip=None):
    """The host table ``crop`` gathers with: (B, w + h) int32, row b holding image b's
    columns (mirrored where flip[b]) and then its rows, checked to lie inside x_shape."""
    B, C, H, W = x_shape
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
    return numpy.concatenate([cols, rows], axis=1).astype(numpy.int32)


def center_crop(x, size):
    """The central (h, w) patch of every image (plain slicing, no copy)."""
    top, left = center_offsets(x.shape[2:], size)
    return x[:, :, top:top + size[0], left:left + size[1]]


def center_crop_padded(x, padding, size):
    """``center_crop(pad(x, padding), size)`` without making the padded array.

    The crop's window, in x's own coordinates, is a slice of x with zeros added
    only where it reaches past x's edges: x itself when the border is all margin
    (a 32x32 image on a 40x40 canvas), a 2-pixel border for 28x28 (on the GPU, two
    launches or none instead of a padded copy of the whole canvas).
    """
    if isinstance(padding, int):
        padding = ((padding, padding), (padding, padding))
    (top, bottom), (left, right) = padding
    H, W = x.shape[-2:]
    ct, cl = center_offsets((H + top + bottom, W + left + right), size)
    r0, c0 = ct - top, cl - left                      # the crop's corner, in x's coordinates
    r1, c1 = r0 + size[0], c0 + size[1]
    x = x[..., max(r0, 0):min(r1, H), max(c0, 0):min(c1, W)]
    return pad(x, ((max(-r0, 0), max(r1 - H, 0)), (max(-c0, 0), max(c1 - W, 0))))


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


# ----------------------------------------------------------------------------- normalisation

def normalize(x, mean, std, constants=None):
    """(x - mean[c]) / std[c] for each channel c, as a new float32 array.

    x: (..., C, H, W), any dtype; mean, std: host arrays (C,), or (B, C) for a
    value per image and channel.  One float32 copy of x, then two passes in place.
    ``constants``: ``normalize_constants(mean, std)`` already on x's device (a
    pipeline keeps them there: copied once, not with every batch).
    """
    xp = get_array_module(x)
    if constants is None:
        constants = [xp.asarray(c) for c in normalize_constants(mean, std)]
    shift, scale = constants
    y = x.astype(xp.float32)
    y -= shift
    y *= scale
    return y


def normalize_constants(mean, std):
    """What ``normalize`` subtracts and multiplies by: float32 host arrays mean and
    1 / std, shaped (..., C, 1, 1) to broadcast over the pixels."""
    mean, std = numpy.asarray(mean, numpy.float64), numpy.asarray(std, numpy.float64)
    return mean.astype(numpy.float32)[..., None, None], (1 / std).astype(numpy.float32)[..., None, None]


def standardize(x, mean, std, offset=None, constants=None):
    """``normalize(lighting(to_float(x)), mean, std)`` as one ``normalize``.

    ``to_float`` divides uint8 pixels by 255 and ``lighting`` adds ``offset[b, c]``
    (``lighting_offset``); both fold into normalize's constants::

        (x / 255 + offset - mean) / std  =  (x - 255 (mean - offset)) / (255 std)

    so the pipeline makes one float32 array and three passes over it, instead
    of three arrays.  x: uint8 pixels (..., C, H, W), or floats already on the
    [0, 1] scale (then there is no 255); mean, std (C,) and offset (B, C) are
    host arrays on the [0, 1] scale.  tests/test_transforms.py checks that this
    equals the three steps called one after the other.  ``constants``: see
    ``standardize_constants`` and ``normalize``.
    """
    if constants is None:
        xp = get_array_module(x)
        constants = [xp.asarray(c) for c in standardize_constants(x, mean, std, offset)]
    return normalize(x, None, None, constants)


def crop_standardize(x, padding, size, constants, top=None, left=None, flip=None, index=None):
    """The pipeline's last steps on a batch on its device: the crop of ``pad(x, padding)``
    then ``standardize`` with its ``constants`` (on x's device).

    ``top``, ``left``, ``flip`` given: ``crop`` (random crops, reflected where flip);
    else the centre view (``center_crop_padded``).  On a GPU, for uint8 images, one
    kernel does all of it (``kernels/crop.py``): the same numbers, no padded canvas.
    ``index``: that kernel's crop table already on the device (``crop_index`` of the
    crops, copied in by the caller: a replayed CUDA graph's input buffer, graph.py).
    """
    xp = get_array_module(x)
    if isinstance(padding, int):
        padding = ((padding, padding), (padding, padding))
    (pad_top, pad_bottom), (pad_left, pad_right) = padding
    canvas = (x.shape[2] + pad_top + pad_bottom, x.shape[3] + pad_left + pad_right)
    if x.dtype == xp.uint8 and x.ndim == 4 and kernels.runs_on(*constants):
        if top is None and index is None:
            ct, cl = center_offsets(canvas, size)
            return kernels.crop.crop_standardize(x, *constants, size, pad_top, pad_left,
                                                 top=ct, left=cl)
        if index is None:
            index = xp.asarray(crop_index(x.shape[:2] + canvas, top, left, size, flip))  # a copy
        return kernels.crop.crop_standardize(x, *constants, size, pad_top, pad_left, index)
    if index is not None:
        raise ShapeError("crop_standardize: a crop table on the device is read by the GPU's "
                         f"kernel only (uint8 images on a GPU), got {x.dtype} images")
    if top is None:
        x = center_crop_padded(x, padding, size)
    else:
        x = crop(pad(x, padding), top, left, size, flip)
    return normalize(x, None, None, constants)


def standardize_constants(x, mean, std, offset=None):
    """The host arrays ``standardize(x, mean, std, offset)`` normalizes x with: those of
    ``normalize_constants`` for 255 (mean - offset) and 255 std (uint8 x), or for the
    unscaled values (float x)."""
    unit = 255.0 if x.dtype == numpy.uint8 else 1.0       # to_float's scale, undone
    mean, std = numpy.asarray(mean, numpy.float64), numpy.asarray(std, numpy.float64)
    if offset is not None:
        mean = mean - numpy.asarray(offset, numpy.float64)     # (B, C): lighting
    return normalize_constants(unit * mean, unit * std)
