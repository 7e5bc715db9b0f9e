"""Dropout as one kernel each way: the random draw, the mask and the scale in one pass.

The array code draws the uniform numbers with about twenty operations
(``rng.uniform``: two rounds of the lowbias32 hash, each five operations, on an
``arange``, then the shift and the scale), compares, multiplies and divides:
some twenty-five launches and as many temporaries.  Here each thread hashes its
own element number; the bits are those of ``rng.uniform``, element for element::

    h    = lowbias32(lowbias32((offset + i) ^ key1) + key2)       (uint32 arithmetic)
    u    = (h >> 8) / 2^24                                         (exact in float32)
    keep = u >= p                                                  (compared in real, as NumPy does)
    out  = x * keep / (1 - p)

The mask's number (``rng.keys``: key2 = lowbias32(counter * 0x9E3779B9 + key1),
uint32) may be read from device memory, a 1-element int64 array, so that a
replayed CUDA graph draws a new mask at every step (graph.py): each thread then
forms key2 from it, the same uint32 arithmetic.

``offset`` is the number of the first element in the whole batch: a process that
holds images 64..127 of a batch of 128 passes 64 * (elements per image) and draws
the mask bits a single process holding all 128 would draw for them.
Backward is ``dx = dout * keep / (1 - p)`` with forward's mask.
"""
from .. import rng
from ..backend import get_array_module
from .build import Kernel, contiguous, device_or_value

FORWARD = Kernel("tinyalexnet_dropout_forward", r"""
__device__ __forceinline__ unsigned int lowbias32(unsigned int x)
{
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    x ^= x >> 16;
    return x;
}

extern "C" __global__ void tinyalexnet_dropout_forward(
    const real* __restrict__ x, real* __restrict__ out, bool* __restrict__ keep,
    unsigned int key1, unsigned int key2_value, const long long* __restrict__ counter_device,
    unsigned int offset, real p, real scale_divisor, long long n)
{
    long long i = thread_index();
    if (i >= n) return;
    // rng.keys: key2 = lowbias32(counter * golden + key1), all in uint32
    unsigned int key2 = counter_device
        ? lowbias32((unsigned int)((unsigned long long)*counter_device * 0x9E3779B9ull) + key1)
        : key2_value;
    unsigned int h = lowbias32(((unsigned int)i + offset) ^ key1);
    h = lowbias32(h + key2);
    real u = (real)(h >> 8) * (real)(1.0 / 16777216.0);
    bool kept = u >= p;
    keep[i] = kept;
    out[i] = x[i] * (real)kept / scale_divisor;
}
""")

BACKWARD = Kernel("tinyalexnet_dropout_backward", r"""
extern "C" __global__ void tinyalexnet_dropout_backward(
    const real* __restrict__ dout, const bool* __restrict__ keep, real* __restrict__ dx,
    real scale_divisor, long long n)
{
    long long i = thread_index();
    if (i >= n) return;
    dx[i] = dout[i] * (real)keep[i] / scale_divisor;
}
""")


def forward(x, p, seed, counter, offset=0):
    """-> (out, keep): mask number ``counter`` of stream ``seed``, elements from ``offset`` on.
    ``counter``: a Python int, or a 1-element int64 device array the kernel reads."""
    xp = get_array_module(x)
    (x,) = contiguous(x)
    real = x.dtype.type
    counter_device, counter_value = device_or_value(xp, counter, "int64")
    key1, key2 = rng.keys(seed, int(counter_value))
    out = xp.empty(x.shape, dtype=x.dtype)
    keep = xp.empty(x.shape, dtype=bool)
    FORWARD.launch(xp, x.dtype, x.size, (
        x, out, keep, xp.uint32(key1), xp.uint32(key2), counter_device,
        xp.uint32(offset % 2 ** 32),
        real(p), real(1 - p), xp.int64(x.size)))
    return out, keep


def backward(dout, keep, p):
    """dout * keep / (1 - p), in one launch."""
    xp = get_array_module(dout)
    dout, keep = contiguous(dout, keep)
    dx = xp.empty(dout.shape, dtype=dout.dtype)
    BACKWARD.launch(xp, dout.dtype, dout.size,
                    (dout, keep, dx, dout.dtype.type(1 - p), xp.int64(dout.size)))
    return dx
