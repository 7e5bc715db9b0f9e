"""What each CUDA kernel computes, in NumPy, for the strict CuPy stand-in.

The stand-in cannot run CUDA.  When the package launches a kernel there
(``xp.RawKernel(code, name)(grid, block, args)``), the stand-in calls the
reference registered under the kernel's name with the same arguments; these
references compute the kernel's outputs from its inputs with the package's
array code on the host buffers (``strict_cupy.host_arrays``: nothing counted as
a device operation or a host read), so the rest of the test suite runs through
the kernel path, one launch per kernel call, with the right numbers.

They do not stand for the kernels' correctness: the kernels' own CUDA text is
compiled by NVRTC (``tests/test_kernels_nvrtc.py``) and executed on the CPU by
g++ against the array code (``tests/test_kernels_cpu_exec.py``).  Each
reference does check the launch: one thread at least per element.
"""
import numpy as np

from tinyalexnet import metrics, rng
from tinyalexnet.kernels import (adam, col2im, crop, cross_entropy, dropout, im2col, lrn,
                                 maxpool, relu, sgd, topk)
from tinyalexnet.layers import fast

_standin = None


def _host(a):
    return _standin.host_arrays(a)


def _covers(name, grid, block, n):
    threads = int(np.prod(grid)) * int(np.prod(block))
    assert threads >= int(n), f"{name}: {threads} threads launched for {int(n)} elements"


def _device_or_value(pointer, value):
    """The number a kernel reads from a (device pointer, value) pair."""
    if isinstance(pointer, np.uint64) and pointer == 0:
        return value
    return _host(pointer).reshape(-1)[0]


def _adam(grid, block, args):
    p, g, m, v, lr_d, lr_v, step_d, step_v, b1, omb1, b2, omb2, lb1, lb2, eps, wd, n = args
    _covers(adam.UPDATE.name, grid, block, n)
    p, g, m, v = (_host(a) for a in (p, g, m, v))
    lr, t = float(_device_or_value(lr_d, lr_v)), int(_device_or_value(step_d, step_v))
    grad = g + wd * p                                  # optim/adam.py's array code
    m *= b1
    m += omb1 * grad                                   # 1 - beta1, rounded from double
    v *= b2
    v += omb2 * (grad * grad)
    # 1 - beta^t from log(beta) (computed in double from the optimizer's beta): float32's
    # beta2 = 0.999 would put 1.3e-5 into 1 - beta2
    bias1, bias2 = -np.expm1(t * float(lb1)), -np.expm1(t * float(lb2))
    p -= lr * (m / bias1) / (np.sqrt(v / bias2) + float(eps))


def _sgd(grid, block, args):
    p, g, velocity, lr_d, lr_v, momentum, wd, n = args
    _covers(sgd.UPDATE.name, grid, block, n)
    p, g, velocity = (_host(a) for a in (p, g, velocity))
    lr = float(_device_or_value(lr_d, lr_v))
    velocity *= float(momentum)                        # optim/sgd.py's array code
    if wd:
        velocity -= (float(wd) * lr) * p
    velocity -= lr * g
    p += velocity


def _relu_forward(grid, block, args):
    x, out, positive, n = (_host(a) for a in args)
    _covers(relu.FORWARD.name, grid, block, n)
    out[...] = np.maximum(x, 0)
    positive[...] = x > 0


def _relu_backward(grid, block, args):
    dout, positive, dx, n = (_host(a) for a in args)
    _covers(relu.BACKWARD.name, grid, block, n)
    dx[...] = dout * positive


def _dropout_forward(grid, block, args):
    x, out, keep, key1, key2, counter_d, offset, p, divisor, n = args
    _covers(dropout.FORWARD.name, grid, block, n)
    x, out, keep = (_host(a) for a in (x, out, keep))
    if not (isinstance(counter_d, np.uint64) and counter_d == 0):     # read from the device
        key2 = rng.keys_from(int(key1), int(_device_or_value(counter_d, None)))
    index = np.arange(x.size, dtype=np.uint32) + np.uint32(offset)
    h = rng._mix(index ^ np.uint32(key1), np)
    h = rng._mix(h + np.uint32(key2), np)
    u = (h >> np.uint32(8)).astype(x.dtype) * (1.0 / (1 << 24))
    keep[...] = (u >= p).reshape(x.shape)
    out[...] = x * keep / divisor


def _dropout_backward(grid, block, args):
    dout, keep, dx, divisor, n = (_host(a) for a in args)
    _covers(dropout.BACKWARD.name, grid, block, n)
    dx[...] = dout * keep / divisor


def _lrn_forward(grid, block, args):
    x, out, D, scale, C, HW, half, alpha, beta, k, n = (_host(a) for a in args)
    _covers(lrn.FORWARD.name, grid, block, n)
    got = fast.lrn_forward(x, 2 * int(half) + 1, alpha, beta, k)      # NumPy: the array code
    for target, value in zip((out, D, scale), got):
        target[...] = value


def _lrn_backward(grid, block, args):
    dout, x, D, scale, dx, C, HW, half, two_alpha_beta, n = (_host(a) for a in args)
    _covers(lrn.BACKWARD.name, grid, block, n)
    # fast.lrn_backward takes alpha and beta, and uses only 2 alpha beta
    dx[...] = fast.lrn_backward(dout, x, D, scale, 2 * int(half) + 1, two_alpha_beta / 2, 1.0)


def _maxpool_forward(grid, block, args):
    x, out, argmax, H, W, OH, OW, k, s, n = (_host(a) for a in args)
    _covers(maxpool.FORWARD.name, grid, block, n)
    got_out, got_argmax = fast.maxpool_forward(x, int(k), int(s))
    out[...] = got_out
    argmax[...] = got_argmax


def _maxpool_backward(grid, block, args):
    dout, argmax, dx, H, W, OH, OW, k, s, n = (_host(a) for a in args)
    _covers(maxpool.BACKWARD.name, grid, block, n)
    dx[...] = fast.maxpool_backward(dout, argmax, dx.shape, int(k), int(s))


def _im2col(grid, block, args):
    x, cols, N, C, H, W, kh, kw, stride, padding, OH, OW, n = (_host(a) for a in args)
    _covers(im2col.BATCH_LAST.name, grid, block, n)
    cols[...] = fast.im2col_batch_last(x, int(kh), int(kw), int(stride), int(padding))


def _col2im(grid, block, args):
    cols, dx, N, C, H, W, kh, kw, stride, padding, OH, OW, n = (_host(a) for a in args)
    _covers(col2im.BATCH_LAST.name, grid, block, n)
    dx[...] = fast.col2im_batch_last(cols, dx.shape, int(kh), int(kw), int(stride), int(padding))


def _cross_entropy_rows(grid, block, args):
    z, labels, row_loss, stats, K, N = (_host(a) for a in args)
    _covers(cross_entropy.ROWS.name, grid, block, N)
    m = z.max(axis=1, keepdims=True)
    shifted = z - m
    log_s = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    row_loss[...] = log_s[:, 0] - shifted[np.arange(int(N)), labels]
    stats[...] = np.concatenate([m, log_s], axis=1)


def _mean(grid, block, args):
    values, mean, N = (_host(a) for a in args)
    _covers(cross_entropy.MEAN.name, grid, block, 1)
    mean[...] = values[:int(N)].mean()


def _cross_entropy_backward(grid, block, args):
    z, labels, stats, dz, dout_d, dout_v, inv_N, K, n = args
    _covers(cross_entropy.BACKWARD.name, grid, block, n)
    z, labels, stats, dz = (_host(a) for a in (z, labels, stats, dz))
    dout = _device_or_value(dout_d, dout_v)
    dz[...] = fast.softmax_cross_entropy_backward(z, labels, stats, dout)


def _below_true(grid, block, args):
    scores, labels, below, K, N = (_host(a) for a in args)
    _covers(topk.BELOW_TRUE.name, grid, block, N)
    valid = (labels >= 0) & (labels < K)               # a label outside counts nothing
    below[...] = metrics.below_true(scores, np.where(valid, labels, 0)) * valid


def _crop_standardize(grid, block, args):
    x, index, shift, scale, out = args[:5]
    C, H, W, h, w, pad_top, pad_left, top, left, per_image, n = (int(a) for a in args[5:])
    _covers(crop.CROP_STANDARDIZE.name, grid, block, n)
    x, shift, scale, out = (_host(a) for a in (x, shift, scale, out))
    B = x.shape[0]
    if isinstance(index, np.uint64) and index == 0:             # the one window
        rows = np.broadcast_to(top + np.arange(h), (B, h))
        cols = np.broadcast_to(left + np.arange(w), (B, w))
    else:
        index = _host(index)
        rows, cols = index[:, w:], index[:, :w]
    rows, cols = rows - pad_top, cols - pad_left                # canvas -> x
    inside = (((rows >= 0) & (rows < H))[:, None, :, None]
              & ((cols >= 0) & (cols < W))[:, None, None, :])
    b = np.arange(B)[:, None, None, None]
    c = np.arange(C)[None, :, None, None]
    v = x[b, c, rows.clip(0, H - 1)[:, None, :, None], cols.clip(0, W - 1)[:, None, None, :]]
    y = (v * inside).astype(out.dtype)                          # the border's zeros
    y -= shift.reshape(-1, C, 1, 1) if per_image else shift.reshape(1, C, 1, 1)
    y *= scale.reshape(1, C, 1, 1)
    out[...] = y


REFERENCES = {
    adam.UPDATE: _adam, sgd.UPDATE: _sgd,
    relu.FORWARD: _relu_forward, relu.BACKWARD: _relu_backward,
    dropout.FORWARD: _dropout_forward, dropout.BACKWARD: _dropout_backward,
    lrn.FORWARD: _lrn_forward, lrn.BACKWARD: _lrn_backward,
    maxpool.FORWARD: _maxpool_forward, maxpool.BACKWARD: _maxpool_backward,
    im2col.BATCH_LAST: _im2col, col2im.BATCH_LAST: _col2im,
    cross_entropy.ROWS: _cross_entropy_rows, cross_entropy.MEAN: _mean,
    cross_entropy.BACKWARD: _cross_entropy_backward,
    topk.BELOW_TRUE: _below_true, crop.CROP_STANDARDIZE: _crop_standardize,
}


def register(strict_cupy):
    """Register every kernel of the package with the stand-in."""
    global _standin
    _standin = strict_cupy
    for kernel, reference in REFERENCES.items():
        strict_cupy.register_kernel(kernel.name, reference)
