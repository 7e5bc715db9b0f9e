"""The input pipeline's crop and normalisation as one gather.

``Pipeline`` turns the uint8 batch on the device into model input with array
operations: a zero border (``pad``: a fill and a copy), the crop (every image's
own rows and columns, mirrored where flipped: two gathers, some eleven
launches with their index arrays) or the centre view, then ``standardize``
(a float32 copy, a subtraction, a multiplication).  Here one thread per
output number (b, c, i, j) finds the pixel it shows on the padded canvas,
reads it from the unpadded images (0 where it falls in the border), and
standardizes it::

    row, col = index[b, w + i], index[b, j]      random crops: crop_index's table
             = top + i, left + j                 the centre view (index null)
    v = x[b, c, row - pad_top, col - pad_left]     (0 outside x)
    out[b, c, i, j] = ((real)v - shift[b, c]) * scale[c]   (shift[c] without lighting)

The same operations as the array code, in float32 and its order, so the same
bits; one launch instead of three (the centre view) or sixteen (random crops
with reflections and lighting), and no padded canvas in memory.
"""
from ..backend import get_array_module
from .build import Kernel, contiguous

CROP_STANDARDIZE = Kernel("tinyalexnet_crop_standardize", r"""
extern "C" __global__ void tinyalexnet_crop_standardize(
    const unsigned char* __restrict__ x, const int* __restrict__ index,
    const real* __restrict__ shift, const real* __restrict__ scale, real* __restrict__ out,
    int C, int H, int W, int h, int w, int pad_top, int pad_left, int top, int left,
    int shift_per_image, long long n)
{
    long long i = thread_index();                  // i = ((b C + c) h + r) w + j
    if (i >= n) return;
    int j = (int)(i % w);
    int r = (int)((i / w) % h);
    int c = (int)((i / ((long long)w * h)) % C);
    long long b = i / ((long long)w * h * C);
    int row = top + r, col = left + j;             // on the padded canvas
    if (index) {
        row = index[b * (w + h) + w + r];
        col = index[b * (w + h) + j];
    }
    row -= pad_top;                                // in x
    col -= pad_left;
    real v = 0;
    if (row >= 0 && row < H && col >= 0 && col < W)
        v = (real)x[((b * C + c) * H + row) * W + col];
    long long s = shift_per_image ? b * C + c : c;
    out[i] = (v - shift[s]) * scale[c];
}
""")


def crop_standardize(x, shift, scale, size, pad_top, pad_left, index=None, top=0, left=0):
    """x uint8 (B, C, H, W) -> out (B, C, h, w) of the constants' dtype, in one launch.

    ``index``: the (B, w + h) int32 device table of each image's columns and rows on
    the canvas (``transforms.functional.crop_index``), or None for the one window at
    (``top``, ``left``).  ``shift`` (C, 1, 1) or (B, C, 1, 1), ``scale`` (C, 1, 1):
    ``standardize_constants`` on the device.
    """
    xp = get_array_module(x)
    x, shift, scale = contiguous(x, shift, scale)
    B, C, H, W = x.shape
    h, w = size
    out = xp.empty((B, C, h, w), dtype=scale.dtype)
    if index is None:
        index = xp.uint64(0)                       # a null pointer: the one window
    else:
        (index,) = contiguous(index)
    CROP_STANDARDIZE.launch(xp, scale.dtype, out.size, (
        x, index, shift, scale, out, xp.int32(C), xp.int32(H), xp.int32(W), xp.int32(h),
        xp.int32(w), xp.int32(pad_top), xp.int32(pad_left), xp.int32(top), xp.int32(left),
        xp.int32(shift.ndim == 4), xp.int64(out.size)))
    return out
