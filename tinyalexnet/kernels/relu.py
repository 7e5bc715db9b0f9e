"""ReLU as one kernel each way.

The array code makes two passes forward (``x > 0`` for backward's mask, then
``maximum(x, 0)``); the forward kernel makes one, writing both.  Backward,
``dout * positive``, is one pass either way; its kernel is here so that the
layer's two passes are the same kind of code::

    forward:   out = max(x, 0)  (NaN stays NaN, as in maximum; -0 gives +0),  positive = x > 0
    backward:  dx = dout * positive
"""
from ..backend import get_array_module
from .build import Kernel, contiguous

FORWARD = Kernel("tinyalexnet_relu_forward", r"""
extern "C" __global__ void tinyalexnet_relu_forward(
    const real* __restrict__ x, real* __restrict__ out, bool* __restrict__ positive, long long n)
{
    long long i = thread_index();
    if (i >= n) return;
    real xi = x[i];
    out[i] = (xi > 0 || xi != xi) ? xi : (real)0;       // maximum(x, 0): keeps NaN
    positive[i] = xi > 0;
}
""")

BACKWARD = Kernel("tinyalexnet_relu_backward", r"""
extern "C" __global__ void tinyalexnet_relu_backward(
    const real* __restrict__ dout, const bool* __restrict__ positive, real* __restrict__ dx,
    long long n)
{
    long long i = thread_index();
    if (i >= n) return;
    dx[i] = dout[i] * (real)positive[i];                 // as dout * mask: -0 and NaN alike
}
""")


def forward(x):
    """x -> (max(x, 0), the bool mask x > 0), in one launch."""
    xp = get_array_module(x)
    (x,) = contiguous(x)
    out = xp.empty(x.shape, dtype=x.dtype)
    positive = xp.empty(x.shape, dtype=bool)
    FORWARD.launch(xp, x.dtype, x.size, (x, out, positive, xp.int64(x.size)))
    return out, positive


def backward(dout, positive):
    """dout * positive, in one launch."""
    xp = get_array_module(dout)
    dout, positive = contiguous(dout, positive)
    dx = xp.empty(dout.shape, dtype=dout.dtype)
    BACKWARD.launch(xp, dout.dtype, dout.size, (dout, positive, dx, xp.int64(dout.size)))
    return dx
