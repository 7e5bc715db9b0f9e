"""im2col and col2im: convolution as one matrix product.

A convolution slides a (C, kh, kw) kernel over the image.  im2col copies every
window the kernel visits into one column of a matrix, so that all the
multiplications of the layer become a single matrix product::

    x     (N, C, H, W)
    cols  (C*kh*kw, N*OH*OW)      column n*OH*OW + oh*OW + ow is the window at (n, oh, ow)
    W     (F, C*kh*kw)            the kernels, one per row (PyTorch's layout, flattened)
    W @ cols  ->  (F, N*OH*OW)    every output value of the layer at once

with OH = (H + 2*padding - kh) // stride + 1 (and OW alike).

Rows are ordered (c, i, j), the same order as a PyTorch weight
(F, C, kh, kw) flattened, and channels come first so that a ``groups=G``
convolution just reshapes cols to (G, C/G*kh*kw, N*OH*OW).

Both functions loop over the kh*kw kernel offsets, never over samples or pixels:
for offset (i, j), the pixels every window sees there form one strided slice of
the padded image, ``x[:, :, i : i + stride*OH : stride, j : j + stride*OW : stride]``.
col2im adds the columns back into those same slices.  Windows overlap, so one
pixel receives several contributions, but within one offset's slice every pixel
appears once: a plain ``+=`` is correct and no scatter-add (or atomics on a GPU)
is needed.  The same lines run on NumPy and CuPy.

``im2col`` and ``col2im`` are the plain versions, written to be read.  Conv2d
runs ``im2col_batch_last`` and ``col2im_batch_last``: the same idea with the
batch moved to the last axis, which is what makes them fast (see below).
"""
from ..backend import get_array_module


def conv_output_size(size, kernel, stride, padding):
    """Positions a kernel can take along one axis: (size + 2p - k) // s + 1."""
    return (size + 2 * padding - kernel) // stride + 1


def im2col(x, kh, kw, stride=1, padding=0):
    """(N, C, H, W) -> cols (C*kh*kw, N*OH*OW)."""
    xp = get_array_module(x)
    N, C, H, W = x.shape
    OH = conv_output_size(H, kh, stride, padding)
    OW = conv_output_size(W, kw, stride, padding)
    if padding:
        x = xp.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    x = x.transpose(1, 0, 2, 3)  # (C, N, Hp, Wp): a view, so that cols[c, i, j] = x[c, ...]
    cols = xp.empty((C, kh, kw, N, OH, OW), dtype=x.dtype)
    for i in range(kh):
        i_end = i + stride * OH
        for j in range(kw):
            cols[:, i, j] = x[:, :, i:i_end:stride, j:j + stride * OW:stride]
    return cols.reshape(C * kh * kw, N * OH * OW)


def col2im(cols, x_shape, kh, kw, stride=1, padding=0):
    """cols (C*kh*kw, N*OH*OW) -> (N, C, H, W), adding up the overlapping windows.

    This is the adjoint of im2col: if cols holds dL/dcols, the result is dL/dx.
    """
    xp = get_array_module(cols)
    N, C, H, W = x_shape
    OH = conv_output_size(H, kh, stride, padding)
    OW = conv_output_size(W, kw, stride, padding)
    cols = cols.reshape(C, kh, kw, N, OH, OW)
    dx = xp.zeros((C, N, H + 2 * padding, W + 2 * padding), dtype=cols.dtype)
    for i in range(kh):
        i_end = i + stride * OH
        for j in range(kw):
            dx[:, :, i:i_end:stride, j:j + stride * OW:stride] += cols[:, i, j]
    dx = dx[:, :, padding:padding + H, padding:padding + W]
    return xp.ascontiguousarray(dx.transpose(1, 0, 2, 3))


# ---------------------------------------------------------------------------- the fast layout
#
# The copies above move the data in runs of OW numbers (the inner axis of the
# slice), and for AlexNet's 13x13 or the 32x32 model's 5x5 maps a run of 5 to
# 13 numbers costs more in loop overhead than in copying.  Putting the batch
# last, in a (C, H, W, N) copy of x, makes the run of one window row
# ``OW * N`` numbers long and contiguous (stride 1), or N long for stride > 1:
# the same number of bytes, moved several times faster.  The columns of cols
# are then ordered (oh, ow, n) instead of (n, oh, ow); rows are unchanged, so
# the weights multiply exactly as before.


def pad_batch_last(x, padding):
    """(N, C, H, W) -> (C, H + 2p, W + 2p, N): the batch-last copy of x, zero-padded."""
    xp = get_array_module(x)
    N, C, H, W = x.shape
    p = padding
    out = xp.empty((C, H + 2 * p, W + 2 * p, N), dtype=x.dtype)
    if p:  # zero only the border; the interior is overwritten next
        out[:, :p] = 0
        out[:, H + p:] = 0
        out[:, :, :p] = 0
        out[:, :, W + p:] = 0
    out[:, p:p + H, p:p + W] = x.transpose(1, 2, 3, 0)
    return out


def im2col_batch_last(x, kh, kw, stride=1, padding=0):
    """(N, C, H, W) -> cols (C*kh*kw, OH*OW*N), column oh*OW*N + ow*N + n = window (n, oh, ow).

    One strided *view* presents every window at once, without copying::

        windows[c, i, j, oh, ow, n] = x_pad[c, oh*stride + i, ow*stride + j, n]

    (a step along oh moves ``stride`` rows of x_pad, a step along i one row), and
    a single copy of that view is cols.  Measured on two CPU cores this is as fast
    as or faster than the loop over offsets (BENCHMARKS.md); on a GPU it is one
    kernel instead of kh*kw.
    """
    xp = get_array_module(x)
    N, C, H, W = x.shape
    OH = conv_output_size(H, kh, stride, padding)
    OW = conv_output_size(W, kw, stride, padding)
    x_pad = pad_batch_last(x, padding)                       # (C, Hp, Wp, N), contiguous
    sc, sh, sw, sn = x_pad.strides
    windows = xp.lib.stride_tricks.as_strided(
        x_pad, shape=(C, kh, kw, OH, OW, N),
        strides=(sc, sh, sw, sh * stride, sw * stride, sn))
    return xp.ascontiguousarray(windows).reshape(C * kh * kw, OH * OW * N)


def col2im_batch_last(cols, x_shape, kh, kw, stride=1, padding=0):
    """cols (C*kh*kw, OH*OW*N) -> dx (N, C, H, W): the adjoint of ``im2col_batch_last``.

    The same loop over offsets as ``col2im`` (a view cannot add overlapping
    windows), on the batch-last layout, so each ``+=`` moves long runs.
    """
    xp = get_array_module(cols)
    N, C, H, W = x_shape
    OH = conv_output_size(H, kh, stride, padding)
    OW = conv_output_size(W, kw, stride, padding)
    cols = cols.reshape(C, kh, kw, OH, OW, N)
    dx = xp.zeros((C, H + 2 * padding, W + 2 * padding, N), dtype=cols.dtype)
    for i in range(kh):
        i_end = i + stride * OH
        for j in range(kw):
            dx[:, i:i_end:stride, j:j + stride * OW:stride] += cols[:, i, j]
    dx = dx[:, padding:padding + H, padding:padding + W]
    return xp.ascontiguousarray(dx.transpose(3, 0, 1, 2))
