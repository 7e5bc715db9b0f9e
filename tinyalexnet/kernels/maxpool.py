"""Max pooling as one kernel each way.

The array code (``layers/fast.py``, section 2) runs a loop over the k*k window
offsets: four passes per offset forward (copy, compare, maximum, arg-max) and
two per offset back, some fifty launches for a 3x3 pool.  Here:

forward, one thread per output window: the running maximum over the window in
row-major order, and the number ``i*k + j`` of the offset that won (a byte).  An
offset wins only when it is strictly greater, so a tie stays with the first
maximum in row-major order, as in ``functional.maxpool_forward``; a NaN makes
the output NaN, as ``maximum`` does.

backward, one thread per *input* pixel (a gather, not a scatter): the pixel adds
up the dout of every window whose arg-max it is, visiting the windows in the
order of the array code's loop (offset 0, 1, ...), so the sums are the same
numbers added in the same order: the result is exactly the array code's.  No
two threads write the same element, so there is no race and no atomic addition.
"""
from ..backend import get_array_module
from .build import Kernel, contiguous

MAX_WINDOW = 256           # the arg-max is a byte: windows of up to 16x16

FORWARD = Kernel("tinyalexnet_maxpool_forward", r"""
extern "C" __global__ void tinyalexnet_maxpool_forward(
    const real* __restrict__ x, real* __restrict__ out, unsigned char* __restrict__ argmax,
    int H, int W, int OH, int OW, int k, int s, long long n)
{
    long long i = thread_index();
    if (i >= n) return;
    int ow = (int)(i % OW);
    int oh = (int)((i / OW) % OH);
    long long plane = i / ((long long)OW * OH);           // n * C + c
    const real* window = x + plane * H * W + (long long)oh * s * W + (long long)ow * s;
    real best = window[0];
    int best_offset = 0;
    for (int a = 0; a < k; ++a) {
        for (int b = 0; b < k; ++b) {
            real v = window[a * W + b];
            if (v > best) best_offset = a * k + b;           // strictly greater: ties stay first
            if (v > best || v != v) best = v;                // maximum(): NaN propagates
        }
    }
    out[i] = best;
    argmax[i] = (unsigned char)best_offset;
}
""")

BACKWARD = Kernel("tinyalexnet_maxpool_backward", r"""
extern "C" __global__ void tinyalexnet_maxpool_backward(
    const real* __restrict__ dout, const unsigned char* __restrict__ argmax,
    real* __restrict__ dx, int H, int W, int OH, int OW, int k, int s, long long n)
{
    long long i = thread_index();
    if (i >= n) return;
    int w = (int)(i % W);
    int h = (int)((i / W) % H);
    long long plane = i / ((long long)W * H);
    real sum = 0;
    for (int a = 0; a < k; ++a) {                        // the pixel is offset (a, b) of window
        int top = h - a;                                 // (oh, ow) when oh*s = h - a, ow*s = w - b
        if (top < 0 || top % s != 0 || top / s >= OH) continue;
        for (int b = 0; b < k; ++b) {
            int left = w - b;
            if (left < 0 || left % s != 0 || left / s >= OW) continue;
            long long o = (plane * OH + top / s) * OW + left / s;
            if (argmax[o] == a * k + b) sum += dout[o];
        }
    }
    dx[i] = sum;
}
""")


def forward(x, kernel_size, stride):
    """x (N, C, H, W) -> (out, argmax) as ``fast.maxpool_forward``, in one launch (k*k <= 256)."""
    xp = get_array_module(x)
    (x,) = contiguous(x)
    N, C, H, W = x.shape
    OH, OW = (H - kernel_size) // stride + 1, (W - kernel_size) // stride + 1
    out = xp.empty((N, C, OH, OW), dtype=x.dtype)
    argmax = xp.empty((N, C, OH, OW), dtype=xp.uint8)
    FORWARD.launch(xp, x.dtype, out.size, (
        x, out, argmax, xp.int32(H), xp.int32(W), xp.int32(OH), xp.int32(OW),
        xp.int32(kernel_size), xp.int32(stride), xp.int64(out.size)))
    return out, argmax


def backward(dout, argmax, x_shape, kernel_size, stride):
    """dout (N, C, OH, OW) and forward's argmax -> dx (N, C, H, W), in one launch."""
    xp = get_array_module(dout)
    dout, argmax = contiguous(dout, argmax)
    N, C, H, W = x_shape
    OH, OW = dout.shape[2:]
    dx = xp.empty(tuple(x_shape), dtype=dout.dtype)
    BACKWARD.launch(xp, dout.dtype, dx.size, (
        dout, argmax, dx, xp.int32(H), xp.int32(W), xp.int32(OH), xp.int32(OW),
        xp.int32(kernel_size), xp.int32(stride), xp.int64(dx.size)))
    return dx
