"""Slow, obviously correct versions of the layers, written as the equations read.

Nested Python loops over every output value: far too slow to train with, but
each line is the formula in the layer's docstring, so they are easy to trust.
The tests check the layers' readable maths (functional.py) against them on
random inputs, and the fast versions (fast.py) against the readable ones;
lesson 3 starts from ``conv2d_naive`` before deriving im2col.  NumPy only, forward passes only
(the backward passes are checked by numerical gradients instead).
"""
from ..backend import as_numpy
from ..backend import numpy as np


def conv2d_naive(x, weight, bias, stride=1, padding=0, groups=1):
    """y[n, f, oh, ow] = b[f] + sum_{c, i, j} W[f, c, i, j] * x_pad[n, g*Cg + c, oh*s + i, ow*s + j]"""
    x, weight, bias = as_numpy(x), as_numpy(weight), as_numpy(bias)
    N, C, H, W = x.shape
    F, Cg, kh, kw = weight.shape
    Fg = F // groups
    xp_ = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    OH = (H + 2 * padding - kh) // stride + 1
    OW = (W + 2 * padding - kw) // stride + 1
    y = np.zeros((N, F, OH, OW), dtype=x.dtype)
    for n in range(N):
        for f in range(F):
            g = f // Fg
            for oh in range(OH):
                for ow in range(OW):
                    window = xp_[n, g * Cg:(g + 1) * Cg,
                                 oh * stride:oh * stride + kh, ow * stride:ow * stride + kw]
                    y[n, f, oh, ow] = np.sum(window * weight[f]) + bias[f]
    return y


def maxpool2d_naive(x, kernel_size=3, stride=2):
    """y[n, c, oh, ow] = max over the k x k window at (oh*s, ow*s)."""
    x = as_numpy(x)
    N, C, H, W = x.shape
    k = kernel_size
    OH, OW = (H - k) // stride + 1, (W - k) // stride + 1
    y = np.zeros((N, C, OH, OW), dtype=x.dtype)
    for n in range(N):
        for c in range(C):
            for oh in range(OH):
                for ow in range(OW):
                    y[n, c, oh, ow] = x[n, c, oh * stride:oh * stride + k,
                                        ow * stride:ow * stride + k].max()
    return y


def lrn_naive(x, size=5, alpha=1e-4, beta=0.75, k=2.0):
    """b[c] = a[c] / (k + alpha * sum_{j=max(0, c-n/2)}^{min(C-1, c+n/2)} a[j]^2)^beta"""
    x = as_numpy(x)
    N, C, H, W = x.shape
    y = np.zeros_like(x)
    half = size // 2
    for n in range(N):
        for c in range(C):
            lo, hi = max(0, c - half), min(C - 1, c + half)
            energy = np.sum(x[n, lo:hi + 1] ** 2, axis=0)
            y[n, c] = x[n, c] / (k + alpha * energy) ** beta
    return y
