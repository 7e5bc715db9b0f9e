"""col2im as a gather: each pixel of dx sums the columns of the windows that saw it.

``col2im_batch_last`` (``layers/fast.py``) adds the kh*kw window offsets one at
a time into a zero-padded batch-last copy, then moves the batch to the front:
kh*kw + 3 launches (121 additions for an 11x11 kernel).  Here one thread per
pixel of dx (n, c, h, w) visits the offsets (i, j) whose window row and column
land on it::

    dx[n, c, h, w] = sum over (i, j) with h + p - i = oh s, w + p - j = ow s,
                     0 <= oh < OH, 0 <= ow < OW,  of  cols[c, i, j, oh, ow, n]

in the order of the array code's loop, so the result is exactly the array
code's.  Each thread writes only its own pixel: no atomic additions, the same
result on every run.  Threads are numbered with n fastest, so that neighbouring
threads read neighbouring columns (the batch is cols' last axis); the writes
to dx, one per thread, are the strided ones.
"""
from ..backend import get_array_module
from .build import Kernel, contiguous

BATCH_LAST = Kernel("tinyalexnet_col2im_batch_last", r"""
extern "C" __global__ void tinyalexnet_col2im_batch_last(
    const real* __restrict__ cols, real* __restrict__ dx, int N, int C, int H, int W,
    int kh, int kw, int stride, int padding, int OH, int OW, long long n)
{
    long long i = thread_index();                         // i = ((c H + h) W + w) N + b
    if (i >= n) return;
    int b = (int)(i % N);
    int w = (int)((i / N) % W);
    int h = (int)((i / ((long long)N * W)) % H);
    int c = (int)(i / ((long long)N * W * H));
    real sum = 0;
    for (int a = 0; a < kh; ++a) {
        int top = h + padding - a;                        // = oh * stride for window row oh
        if (top < 0 || top % stride != 0 || top / stride >= OH) continue;
        for (int e = 0; e < kw; ++e) {
            int left = w + padding - e;
            if (left < 0 || left % stride != 0 || left / stride >= OW) continue;
            long long row = ((long long)c * kh + a) * kw + e;
            sum += cols[((row * OH + top / stride) * OW + left / stride) * N + b];
        }
    }
    dx[(((long long)b * C + c) * H + h) * W + w] = sum;
}
""")


def batch_last(cols, x_shape, kh, kw, stride, padding):
    """cols (C*kh*kw, OH*OW*N), columns ordered (oh, ow, n) -> dx (N, C, H, W), one launch."""
    xp = get_array_module(cols)
    (cols,) = contiguous(cols)
    N, C, H, W = x_shape
    OH = (H + 2 * padding - kh) // stride + 1
    OW = (W + 2 * padding - kw) // stride + 1
    dx = xp.empty((N, C, H, W), dtype=cols.dtype)
    BATCH_LAST.launch(xp, cols.dtype, dx.size, (
        cols, dx, xp.int32(N), xp.int32(C), xp.int32(H), xp.int32(W), xp.int32(kh),
        xp.int32(kw), xp.int32(stride), xp.int32(padding), xp.int32(OH), xp.int32(OW),
        xp.int64(dx.size)))
    return dx
