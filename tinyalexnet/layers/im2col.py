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
the padded image, ``x_pad[:, :, i : i + stride*OH : stride, j : j + stride*OW : stride]``.
col2im adds the columns back into those same slices.  Windows overlap, so one
pixel receives several contributions, but within one offset's slice every pixel
appears once: a plain ``+=`` is correct and no scatter-add (or atomics on a GPU)
is needed.  The same lines run on NumPy and CuPy.

These are the versions to read (and the reference solutions of lesson 3's
exercises 3.1 and 3.2).  ``fast.py`` holds the batch-last forms Conv2d runs by
default: the same idea, several times less time in the copies.
"""
from ..backend import get_array_module


def conv_output_size(size, kernel, stride=1, padding=0):
    """Positions a kernel can take along one axis: (size + 2p - k) // s + 1."""
    return (size + 2 * padding - kernel) // stride + 1


def im2col(x, kh, kw, stride=1, padding=0):
    """(N, C, H, W) -> cols (C*kh*kw, N*OH*OW); rows ordered (c, i, j), columns (n, oh, ow)."""
    xp = get_array_module(x)
    N, C, H, W = x.shape
    OH = (H + 2 * padding - kh) // stride + 1
    OW = (W + 2 * padding - kw) // stride + 1
    x_pad = xp.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    cols = xp.empty((C, kh, kw, N, OH, OW), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            # what every window sees at kernel offset (i, j): one strided slice (N, C, OH, OW)
            patch = x_pad[:, :, i:i + stride * OH:stride, j:j + stride * OW:stride]
            cols[:, i, j] = patch.transpose(1, 0, 2, 3)
    return cols.reshape(C * kh * kw, N * OH * OW)


def col2im(cols, x_shape, kh, kw, stride=1, padding=0):
    """cols (C*kh*kw, N*OH*OW) -> (N, C, H, W), adding where windows overlap.

    This is the adjoint (the transpose) of im2col: if cols holds dL/dcols, the result is dL/dx.
    """
    xp = get_array_module(cols)
    N, C, H, W = x_shape
    OH = (H + 2 * padding - kh) // stride + 1
    OW = (W + 2 * padding - kw) // stride + 1
    cols = cols.reshape(C, kh, kw, N, OH, OW)
    dx = xp.zeros((N, C, H + 2 * padding, W + 2 * padding), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            # += : a pixel in several windows gets the sum of their gradients
            dx[:, :, i:i + stride * OH:stride, j:j + stride * OW:stride] += \
                cols[:, i, j].transpose(1, 0, 2, 3)
    return dx[:, :, padding:padding + H, padding:padding + W]
