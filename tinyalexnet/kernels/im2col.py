"""im2col as a gather: each element of cols reads the one pixel of x it holds.

``im2col_batch_last`` (``layers/fast.py``) first copies x into a zero-padded
batch-last buffer (a fill and a transposing copy), then copies one strided view
of every window out of it: three launches for a padded layer, two without
padding, and the padded buffer in memory meanwhile.  Here one thread per element
of cols, in cols' own order (n fastest, so that neighbouring threads write
neighbouring numbers), computes which pixel it holds::

    cols[(c kh + a) kw + e, (oh OW + ow) N + n] = x[n, c, oh s + a - p, ow s + e - p]

and 0 where that pixel lies in the zero border.  It is a copy: the same numbers
as the array code, bit for bit, in one launch, with no padded buffer.
"""
from ..backend import get_array_module
from .build import Kernel, contiguous

BATCH_LAST = Kernel("tinyalexnet_im2col_batch_last", r"""
extern "C" __global__ void tinyalexnet_im2col_batch_last(
    const real* __restrict__ x, real* __restrict__ cols, int N, int C, int H, int W,
    int kh, int kw, int stride, int padding, int OH, int OW, long long n)
{
    long long i = thread_index();           // i = ((row OH + oh) OW + ow) N + b,
    if (i >= n) return;                     //   row = (c kh + a) kw + e
    int b = (int)(i % N);
    long long rest = i / N;
    int ow = (int)(rest % OW);
    rest /= OW;
    int oh = (int)(rest % OH);
    rest /= OH;
    int e = (int)(rest % kw);
    rest /= kw;
    int a = (int)(rest % kh);
    int c = (int)(rest / kh);
    int h = oh * stride + a - padding;      // the pixel's row in x; outside: the zero border
    int w = ow * stride + e - padding;
    real v = 0;
    if (h >= 0 && h < H && w >= 0 && w < W)
        v = x[(((long long)b * C + c) * H + h) * W + w];
    cols[i] = v;
}
""")


def batch_last(x, kh, kw, stride, padding):
    """x (N, C, H, W) -> cols (C*kh*kw, OH*OW*N), columns ordered (oh, ow, n), one launch."""
    xp = get_array_module(x)
    (x,) = contiguous(x)
    N, C, H, W = x.shape
    OH = (H + 2 * padding - kh) // stride + 1
    OW = (W + 2 * padding - kw) // stride + 1
    cols = xp.empty((C * kh * kw, OH * OW * N), dtype=x.dtype)
    BATCH_LAST.launch(xp, x.dtype, cols.size, (
        x, cols, xp.int32(N), xp.int32(C), xp.int32(H), xp.int32(W), xp.int32(kh),
        xp.int32(kw), xp.int32(stride), xp.int32(padding), xp.int32(OH), xp.int32(OW),
        xp.int64(cols.size)))
    return cols
