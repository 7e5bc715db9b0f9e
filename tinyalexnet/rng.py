"""Counter-based random numbers: the n-th draw is a pure function of (seed, n).

Dropout needs fresh random masks at every step.  Instead of a generator whose
hidden state must be saved and restored, each mask is computed from the seed, a
call counter and each element's position, through an integer hash.  Three
things follow:

* a run resumed from a checkpoint draws exactly the masks it would have drawn
  (the counter is all the state there is);
* NumPy and CuPy draw *the same* masks, element for element, because the hash
  is plain uint32 arithmetic that both do identically;
* the draw is a handful of element-wise operations, cheap on either device.

The mixing function is the 32-bit "lowbias32" integer hash (shifts and odd
multipliers 0x7feb352d, 0x846ca68b, published by C. Wellons); it is not
cryptographic, but its outputs are statistically uniform enough for dropout.
"""
from .backend import numpy as np

_M32 = 0xFFFFFFFF
_GOLDEN = 0x9E3779B9  # 2^32 / golden ratio: spreads consecutive seeds apart


def _mix(x, xp):
    """lowbias32 on a uint32 array (wrap-around arithmetic)."""
    x = x ^ (x >> xp.uint32(16))
    x = x * xp.uint32(0x7FEB352D)
    x = x ^ (x >> xp.uint32(15))
    x = x * xp.uint32(0x846CA68B)
    return x ^ (x >> xp.uint32(16))


def _mix_int(v):
    """The same hash on one Python int, for the keys."""
    return int(_mix(np.array([v & _M32], dtype=np.uint32), np)[0])


def keys(seed, counter):
    """The two uint32 keys of draw number ``counter`` of stream ``seed`` (Python ints)."""
    key1 = _mix_int(seed * _GOLDEN + 1)
    return key1, keys_from(key1, counter)


def keys_from(key1, counter):
    """The second key of draw ``counter``, from the first (what a kernel that reads the
    counter from device memory computes in uint32)."""
    return _mix_int(counter * _GOLDEN + key1)


def uniform(xp, shape, seed, counter, dtype="float32", offset=0):
    """Uniform [0, 1) numbers of ``shape`` for draw number ``counter`` of stream ``seed``.

    Element e of the draw gets number ``offset + e``: the draw of elements
    ``offset .. offset + size`` of a larger one (a slice of a batch held by
    another process) is that slice of the larger draw."""
    key1, key2 = keys(seed, counter)
    n = 1
    for d in shape:
        n *= int(d)
    index = xp.arange(n, dtype=xp.uint32)
    if offset:
        index += xp.uint32(offset % 2 ** 32)          # wraps around 2^32, as uint32 does
    h = _mix(index ^ xp.uint32(key1), xp)
    h = _mix(h + xp.uint32(key2), xp)
    # The top 24 bits, scaled, fill a float32 mantissa exactly: values k / 2^24.
    return ((h >> xp.uint32(8)).astype(dtype) * (1.0 / (1 << 24))).reshape(shape)
