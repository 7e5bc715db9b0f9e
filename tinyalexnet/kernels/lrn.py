"""Local response normalisation as one kernel each way.

The array code (``layers/fast.py``, section 3) sums the channel window with
``size - 1`` shifted in-place additions and makes about a dozen passes forward
and a dozen back.  Here each thread computes one activation, reading its
channel window straight from x, for output channel c at pixel (n, h, w)::

    D[c]     = k + alpha sum_{|j - c| <= size/2} x[j]^2
    scale[c] = D[c]^-beta
    out[c]   = x[c] scale[c]

and keeps D and scale for backward, as the array version does.  Backward, for
input channel j::

    dx[j] = dout[j] scale[j] - 2 alpha beta x[j] sum_{|c - j| <= size/2} dout[c] x[c] scale[c] / D[c]

one thread per dx, reading the window's dout, x, scale and D; no temporary.  The
window is summed in the array version's order (the channel itself, then the
neighbours one below, one above, two below, ...), so the two agree to rounding.
"""
from ..backend import get_array_module
from .build import Kernel, contiguous

FORWARD = Kernel("tinyalexnet_lrn_forward", r"""
extern "C" __global__ void tinyalexnet_lrn_forward(
    const real* __restrict__ x, real* __restrict__ out, real* __restrict__ D,
    real* __restrict__ scale, int C, long long HW, int half, real alpha, real beta, real k,
    long long n)
{
    long long i = thread_index();
    if (i >= n) return;
    int c = (int)((i / HW) % C);
    real xi = x[i];
    real sum = xi * xi;
    for (int d = 1; d <= half; ++d) {
        if (c - d >= 0) { real a = x[i - d * HW]; sum += a * a; }
        if (c + d < C)  { real a = x[i + d * HW]; sum += a * a; }
    }
    real Di = sum * alpha;
    Di += k;
    real si = pow(Di, -beta);
    D[i] = Di;
    scale[i] = si;
    out[i] = xi * si;
}
""")

BACKWARD = Kernel("tinyalexnet_lrn_backward", r"""
__device__ __forceinline__ real lrn_term(const real* dout, const real* x, const real* D,
                                         const real* scale, long long j)
{
    return dout[j] * x[j] * scale[j] / D[j];          // dout[c] out[c] / D[c]
}

extern "C" __global__ void tinyalexnet_lrn_backward(
    const real* __restrict__ dout, const real* __restrict__ x, const real* __restrict__ D,
    const real* __restrict__ scale, real* __restrict__ dx, int C, long long HW, int half,
    real two_alpha_beta, long long n)
{
    long long i = thread_index();
    if (i >= n) return;
    int c = (int)((i / HW) % C);
    real inner = lrn_term(dout, x, D, scale, i);
    for (int d = 1; d <= half; ++d) {
        if (c - d >= 0) inner += lrn_term(dout, x, D, scale, i - d * HW);
        if (c + d < C)  inner += lrn_term(dout, x, D, scale, i + d * HW);
    }
    inner *= x[i];
    inner *= two_alpha_beta;
    dx[i] = dout[i] * scale[i] - inner;
}
""")


def forward(x, size, alpha, beta, k):
    """x (N, C, H, W) -> (out, D, scale), each (N, C, H, W), in one launch."""
    xp = get_array_module(x)
    (x,) = contiguous(x)
    N, C, H, W = x.shape
    real = x.dtype.type
    out, D, scale = (xp.empty(x.shape, dtype=x.dtype) for _ in range(3))
    FORWARD.launch(xp, x.dtype, x.size, (
        x, out, D, scale, xp.int32(C), xp.int64(H * W), xp.int32(size // 2), real(alpha),
        real(beta), real(k), xp.int64(x.size)))
    return out, D, scale


def backward(dout, x, D, scale, size, alpha, beta):
    """dL/dx (N, C, H, W) from forward's D and scale, in one launch."""
    xp = get_array_module(dout)
    dout, x, D, scale = contiguous(dout, x, D, scale)
    N, C, H, W = x.shape
    dx = xp.empty(x.shape, dtype=dout.dtype)
    BACKWARD.launch(xp, dout.dtype, dout.size, (
        dout, x, D, scale, dx, xp.int32(C), xp.int64(H * W), xp.int32(size // 2),
        dout.dtype.type(2.0 * alpha * beta), xp.int64(dout.size)))
    return dx
