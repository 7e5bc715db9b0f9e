"""Every CUDA kernel's own source, run on the CPU, against the array code (``-k cpu_exec``).

``cuda_on_cpu.install`` puts the strict CuPy stand-in in CuPy's place with a
``RawKernel`` that compiles the kernel's exact text with g++ and runs it thread
by thread (checking the arguments' types, writes outside the arrays, and that
the result does not depend on the order of the threads: see cuda_on_cpu.py).
The package's own code then runs as on a GPU: the layer, fast.py, the launch in
kernels/, the kernel.  Each test compares with the readable NumPy path, in
float32 and float64, on odd shapes, ties, strides, paddings and groups:

* bit for bit where the kernel does the array code's operations in its order
  (ReLU, dropout, max pooling, im2col, col2im, the top-k counts, the input
  pipeline's crop, SGD);
* within float rounding where libm's exp/pow or the order of a sum differ (LRN,
  the loss, Adam): the bound is stated in each test.

test_cpu_exec_catches_a_planted_bug plants a mistake in each kernel's text and
sees the comparison fail: these tests can fail.
"""
import copy

import numpy as np
import pytest

import cuda_on_cpu
from tinyalexnet import backend, kernels, metrics, rng
from tinyalexnet import transforms as T
from tinyalexnet.datasets import ArrayDataset
from tinyalexnet.layers import (Conv2d, Dropout, LocalResponseNorm, MaxPool2d, ReLU,
                                SoftmaxCrossEntropy, fast, functional)
from tinyalexnet.layers.im2col import conv_output_size
from tinyalexnet.optim import SGD, Adam, fused

DTYPES = ("float32", "float64")


@pytest.fixture
def gpu(monkeypatch):
    """The stand-in "GPU" whose kernels are their CUDA source run by g++: its array module."""
    if cuda_on_cpu.gpp() is None:
        pytest.skip("no g++ on this machine: a kernel's CUDA source cannot run on the CPU")
    cuda_on_cpu.install(monkeypatch)
    cuda_on_cpu.CpuKernel.launches.clear()
    return backend.get_backend("cupy")


def _launched():
    return {name for name, _, _ in cuda_on_cpu.CpuKernel.launches}


def _rand(shape, seed, dtype, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)


def _host(a):
    return backend.as_numpy(a)


def _same_bits(got, want):
    got, want = _host(got), np.asarray(want)
    assert got.dtype == want.dtype and got.shape == want.shape
    differ = got.reshape(-1).view(np.uint8).reshape(got.size, -1) != \
        want.reshape(-1).view(np.uint8).reshape(want.size, -1)
    assert not differ.any(), f"{differ.any(axis=1).sum()} of {got.size} elements differ in bits"


def _close(got, want, bound):
    got, want = _host(got), np.asarray(want)
    assert got.dtype == want.dtype and got.shape == want.shape
    err = np.abs(got.astype(np.float64) - want).max() / max(float(np.abs(want).max()), 1e-300)
    assert err <= bound, f"relative error {err:.2e} > {bound:.0e}"


def _layer_pass(make, x, dout, xp=None):
    """(out, dx) of a fresh layer on x (host array, moved to xp when given)."""
    layer = make().set_check_finite(False)          # infinities are part of some inputs
    if xp is not None:
        x, dout = xp.asarray(x), xp.asarray(dout)
    out = layer.forward(x)
    return out, layer.backward(dout)


# ------------------------------------------------------------------------------------ ReLU
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 4, 5, 7), (1,), (257,), (2, 3, 1, 1)])
def test_cpu_exec_relu(gpu, dtype, shape):
    x = _rand(shape, 0, dtype)
    flat = x.reshape(-1)
    flat[: min(4, flat.size)] = np.array([0.0, -0.0, np.inf, -np.inf][: min(4, flat.size)])
    dout = _rand(shape, 1, dtype)
    out, dx = _layer_pass(ReLU, x, dout, gpu)
    assert _launched() == {kernels.relu.FORWARD.name, kernels.relu.BACKWARD.name}
    _same_bits(out, functional.relu_forward(x))
    _same_bits(dx, functional.relu_backward(dout, x))


def test_cpu_exec_relu_keeps_nan(gpu):
    x = np.array([np.nan, -1.0, 2.0], dtype=np.float32)
    out, positive = fast.relu_forward(gpu.asarray(x))
    _same_bits(out, np.maximum(x, 0))
    _same_bits(positive, x > 0)


# ------------------------------------------------------------------------------------ dropout
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p,shape", [(0.5, (64, 300)), (0.1, (3, 7)), (0.3, (1, 1000)),
                                     (0.9, (5, 2, 3))])
def test_cpu_exec_dropout(gpu, dtype, p, shape):
    x = _rand(shape, 2, dtype)
    dout = _rand(shape, 3, dtype)
    layer, readable = Dropout(p, seed=5), Dropout(p, seed=5)
    readable.fast = False
    for _ in range(2):                                   # two steps: counter 0, then 1
        out = layer.forward(gpu.asarray(x))
        dx = layer.backward(gpu.asarray(dout))
        _same_bits(out, readable.forward(x))             # the same hash: the same bits
        _same_bits(dx, readable.backward(dout))
    assert _launched() == {kernels.dropout.FORWARD.name, kernels.dropout.BACKWARD.name}


@pytest.mark.parametrize("offset", [0, 1, 256 * 3 + 17, 2 ** 32 - 100])
def test_cpu_exec_dropout_offset_is_the_element_number(gpu, offset):
    """Elements offset .. offset + n of one large draw, for a slice of a global batch."""
    x = _rand((4, 50), 4, "float32")
    out, keep = fast.dropout_forward(gpu.asarray(x), 0.5, 9, 3, offset=offset)
    if offset < 10 ** 6:        # the slice of the whole draw
        u = rng.uniform(np, (offset + x.size,), 9, 3)[offset:]
    else:                       # too large to draw whole: rng's own offset (test_rng.py)
        u = rng.uniform(np, (x.size,), 9, 3, offset=offset)
    want_keep = (u >= 0.5).reshape(x.shape)
    _same_bits(keep, want_keep)
    _same_bits(out, functional.dropout_forward(x, want_keep, 0.5))


@pytest.mark.parametrize("counter", [0, 1, 7, 2 ** 31 + 5, 2 ** 40 + 3])
def test_cpu_exec_dropout_counter_read_from_the_device(gpu, counter):
    """The mask number in device memory (a replayed CUDA graph's, graph.py): the kernel forms
    key2 from it in uint32 and draws rng.uniform's mask for that number, bit for bit."""
    x = _rand((4, 70), 6, "float32")
    out, keep = fast.dropout_forward(gpu.asarray(x), 0.5, 11,
                                     gpu.asarray(np.array([counter], dtype=np.int64)))
    want_keep = rng.uniform(np, x.shape, 11, counter) >= 0.5
    _same_bits(keep, want_keep)
    _same_bits(out, functional.dropout_forward(x, want_keep, 0.5))


def test_cpu_exec_dropout_offset_wraps_as_uint32(gpu):
    # rng.uniform's numbering is uint32: element 2^32 is element 0 again.
    x = _rand((3, 5), 5, "float32")
    a = fast.dropout_forward(gpu.asarray(x), 0.5, 1, 2, offset=2 ** 32 + 7)[1]
    b = fast.dropout_forward(gpu.asarray(x), 0.5, 1, 2, offset=7)[1]
    _same_bits(a, _host(b))


# ------------------------------------------------------------------------------------ LRN
LRN_CASES = [(5, 1e-4, 0.75, 2.0, (2, 8, 3, 5), 30.0),    # the paper's constants
             (5, 1e-2, 0.75, 2.0, (2, 7, 4, 5), 3.0),
             (3, 0.5, 0.5, 1.0, (1, 4, 3, 2), 1.0),
             (7, 0.1, 0.75, 2.0, (2, 3, 2, 2), 3.0),       # window wider than the channels
             (1, 0.1, 1.0, 2.0, (1, 2, 3, 3), 3.0)]        # a window of one channel


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size,alpha,beta,k,shape,scale", LRN_CASES)
def test_cpu_exec_lrn(gpu, dtype, size, alpha, beta, k, shape, scale):
    x = _rand(shape, 6, dtype, scale)
    dout = _rand(shape, 7, dtype)
    out, dx = _layer_pass(lambda: LocalResponseNorm(size, alpha, beta, k), x, dout, gpu)
    assert _launched() == {kernels.lrn.FORWARD.name, kernels.lrn.BACKWARD.name}
    # The same sums in the same order as fast.py; pow from libm, not NumPy's: a few ulps.
    # Against the readable functions, which sum the window in another order: the same.
    bound = 1e-6 if dtype == "float32" else 1e-14
    x64, dout64 = x.astype(np.float64), dout.astype(np.float64)
    _close(out, functional.lrn_forward(x64, size, alpha, beta, k).astype(dtype), bound)
    _close(dx, functional.lrn_backward(dout64, x64, size, alpha, beta, k).astype(dtype),
           10 * bound)


# ------------------------------------------------------------------------------------ max pooling
# (N, C, H, W, kernel, stride)
POOL_CASES = [(2, 3, 7, 7, 3, 2), (1, 2, 9, 6, 3, 2), (2, 2, 8, 8, 2, 2), (3, 1, 5, 7, 3, 1),
              (2, 1, 8, 7, 2, 3), (1, 2, 3, 3, 1, 1), (2, 3, 13, 13, 3, 2), (1, 1, 17, 16, 16, 1)]


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_CASES, ids=lambda c: "x".join(map(str, c)))
def test_cpu_exec_maxpool(gpu, case, dtype, ties):
    N, C, H, W, k, s = case
    x = _rand((N, C, H, W), 8, dtype)
    if ties:            # values from {-1, 0, 1}: most windows hold several maxima
        x = np.sign(np.round(x)).astype(dtype)
    OH, OW = conv_output_size(H, k, s), conv_output_size(W, k, s)
    dout = _rand((N, C, OH, OW), 9, dtype)
    out, dx = _layer_pass(lambda: MaxPool2d(k, s), x, dout, gpu)
    assert _launched() == {kernels.maxpool.FORWARD.name, kernels.maxpool.BACKWARD.name}
    # The same maxima, every dout to the same pixel, added in the same order: bit for bit.
    _same_bits(out, functional.maxpool_forward(x, k, s))
    _same_bits(dx, functional.maxpool_backward(dout, x, k, s))
    _, argmax = fast.maxpool_forward(x, k, s)
    _same_bits(fast.maxpool_forward(gpu.asarray(x), k, s)[1], argmax)


def test_cpu_exec_maxpool_nan_as_the_array_code(gpu):
    x = _rand((1, 1, 5, 5), 10, "float32")
    x[0, 0, 1, 1] = np.nan
    out, argmax = fast.maxpool_forward(gpu.asarray(x), 3, 2)
    want_out, want_argmax = fast.maxpool_forward(x, 3, 2)
    _same_bits(out, want_out)
    _same_bits(argmax, want_argmax)


# ------------------------------------------------------------------------------------ col2im
# (N, C, H, W, kh, kw, stride, padding)
COL2IM_CASES = [(2, 3, 7, 7, 3, 3, 1, 0), (3, 2, 8, 5, 3, 2, 1, 1), (1, 4, 9, 11, 5, 5, 2, 2),
                (2, 3, 13, 13, 11, 11, 4, 0), (2, 1, 4, 4, 6, 6, 1, 1), (1, 2, 5, 6, 1, 1, 2, 0),
                (3, 2, 9, 8, 5, 3, 2, 2)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", COL2IM_CASES, ids=lambda c: "x".join(map(str, c)))
def test_cpu_exec_col2im(gpu, case, dtype):
    N, C, H, W, kh, kw, s, p = case
    OH, OW = conv_output_size(H, kh, s, p), conv_output_size(W, kw, s, p)
    cols = _rand((C * kh * kw, OH * OW * N), 11, dtype)
    got = fast.col2im_batch_last(gpu.asarray(cols), (N, C, H, W), kh, kw, s, p)
    assert _launched() == {kernels.col2im.BATCH_LAST.name}
    # The same additions in the same order as the array loop: bit for bit.
    _same_bits(got, fast.col2im_batch_last(cols, (N, C, H, W), kh, kw, s, p))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", COL2IM_CASES, ids=lambda c: "x".join(map(str, c)))
def test_cpu_exec_im2col(gpu, case, dtype):
    N, C, H, W, kh, kw, s, p = case
    x = _rand((N, C, H, W), 10, dtype)
    x.reshape(-1)[:3] = [-0.0, np.inf, np.nan]          # copied as they are, bits and all
    got = fast.im2col_batch_last(gpu.asarray(x), kh, kw, s, p)
    assert _launched() == {kernels.im2col.BATCH_LAST.name}
    # A copy, the zero border included: bit for bit the array code's columns.
    _same_bits(got, fast.im2col_batch_last(x, kh, kw, s, p))


# (N, C, H, W, F, kernel, stride, padding, groups)
CONV_CASES = [(2, 4, 7, 9, 6, 3, 2, 1, 2), (1, 3, 11, 11, 4, 5, 1, 2, 1),
              (3, 4, 8, 8, 4, 3, 1, 0, 4), (2, 6, 5, 7, 6, (3, 2), 2, 1, 3)]


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "x".join(map(str, c)))
def test_cpu_exec_conv_with_the_im2col_and_col2im_kernels(gpu, case):
    N, C, H, W, F, k, s, p, g = case

    def make(xp_name):
        conv = Conv2d(C, F, k, stride=s, padding=p, groups=g, rng=5).to(xp_name, "float64")
        conv.fast = xp_name == "cupy"
        return conv

    x = _rand((N, C, H, W), 12, "float64")
    OH, OW = (conv_output_size(d, kd, s, p) for d, kd in zip((H, W), np.broadcast_to(k, 2)))
    dout = _rand((N, F, OH, OW), 13, "float64")
    want = make("numpy")                           # the readable path, on NumPy
    want_out, want_dx = want.forward(x), want.backward(dout)
    got = make("cupy").set_check_finite(False)     # fast.py with the col2im kernel
    out, dx = got.forward(gpu.asarray(x)), got.backward(gpu.asarray(dout))
    assert {kernels.im2col.BATCH_LAST.name, kernels.col2im.BATCH_LAST.name} <= _launched()
    for a, b in [(out, want_out), (dx, want_dx)] + [(got.grads[n], want.grads[n])
                                                    for n in ("weight", "bias")]:
        _close(a, b, 1e-13)                        # the products in another order


# ------------------------------------------------------------------------------------ the loss
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N,K", [(7, 10), (1, 3), (300, 10), (4, 1000), (2, 1)])
def test_cpu_exec_cross_entropy(gpu, dtype, N, K):
    logits = _rand((N, K), 14, dtype, scale=30.0)
    logits[-1, -1] = 100.0                          # exp(100 + 20) overflows float32 (and any
    logits[-1, 0] -= 20.0                           # shift but the row's max could overflow)
    labels = np.random.default_rng(15).integers(0, K, N)
    loss_fn = SoftmaxCrossEntropy()
    loss = loss_fn.forward(gpu.asarray(logits), labels)
    d1 = loss_fn.backward()
    d2 = loss_fn.backward(gpu.asarray(np.array(0.25, dtype=dtype)))      # dout on the device
    assert _launched() == {kernels.cross_entropy.ROWS.name, kernels.cross_entropy.MEAN.name,
                           kernels.cross_entropy.BACKWARD.name}
    want_loss, want_d = functional.softmax_cross_entropy(logits.astype(np.float64), labels)
    # exp and log from libm, sums in another order: a few ulps of the largest term
    bound = 1e-5 if dtype == "float32" else 1e-13
    _close(loss, np.asarray(want_loss).astype(dtype), bound)
    _close(d1, want_d.astype(dtype), bound)
    _close(d2, (0.25 * want_d).astype(dtype), bound)


def test_cpu_exec_cross_entropy_bad_label_gives_nan_not_a_stray_read(gpu):
    logits = _rand((2, 4), 16, "float32")
    loss, _ = fast.softmax_cross_entropy(gpu.asarray(logits), gpu.asarray(np.array([1, 4])))
    assert np.isnan(_host(loss))


# ------------------------------------------------------------------------------------ top-k counts
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N,K", [(7, 10), (1, 3), (300, 10), (4, 1000), (2, 1)])
def test_cpu_exec_below_true(gpu, dtype, N, K):
    scores = _rand((N, K), 20, dtype)
    scores[0, :] = np.round(scores[0, :])                # ties with the true score
    if K > 2 and N > 2:
        scores[1, 0], scores[2, 1] = np.nan, np.inf      # NaN and infinity: compared as <
    labels = np.random.default_rng(21).integers(0, K, N)
    got = metrics.below_true(gpu.asarray(scores), gpu.asarray(labels))
    assert _launched() == {kernels.topk.BELOW_TRUE.name}
    # Comparisons and counts: the array code's integers exactly.
    _same_bits(got, metrics.below_true(scores, labels))
    top1, top5 = metrics.topk_correct(gpu.asarray(scores), gpu.asarray(labels))
    want1, want5 = metrics.topk_correct(scores, labels)
    assert (int(_host(top1)), int(_host(top5))) == (int(want1), int(want5))


def test_cpu_exec_below_true_bad_label_counts_nothing(gpu):
    scores = _rand((3, 4), 22, "float32")
    got = kernels.topk.below_true(gpu.asarray(scores), gpu.asarray(np.array([1, 4, -1])))
    want = metrics.below_true(scores[:1], np.array([1]))
    _same_bits(got, np.array([int(want[0]), 0, 0]))


# ------------------------------------------------------------------------------------ pipeline
# (B, C, H, W, padding, crop size)
CROP_CASES = [(3, 1, 28, 28, ((6, 6), (6, 6)), (32, 32)),
              (2, 3, 32, 32, ((4, 4), (4, 4)), (32, 32)),
              (2, 3, 36, 36, ((0, 0), (0, 0)), (32, 32)),
              (2, 2, 9, 12, ((3, 0), (1, 4)), (7, 10))]


@pytest.mark.parametrize("view", ["centre", "random", "random + lighting"])
@pytest.mark.parametrize("case", CROP_CASES, ids=lambda c: "x".join(map(str, c[:4])))
def test_cpu_exec_crop_standardize(gpu, case, view):
    B, C, H, W, padding, size = case
    rng_ = np.random.default_rng(23)
    x = rng_.integers(0, 256, (B, C, H, W)).astype(np.uint8)
    mean, std = rng_.random(C), rng_.random(C) + 0.5
    offset = rng_.normal(0, 0.1, (B, C)) if "lighting" in view else None
    constants = T.standardize_constants(x, mean, std, offset)
    crops = ()
    if view != "centre":
        canvas = (H + sum(padding[0]), W + sum(padding[1]))
        crops = T.random_crop_params(rng_, B, canvas, size)
        crops[2][:2] = [True, False]                     # one image reflected, one not
    got = T.crop_standardize(gpu.asarray(x), padding, size, [gpu.asarray(c) for c in constants],
                             *crops)
    assert _launched() == {kernels.crop.CROP_STANDARDIZE.name}
    # A gather, then (v - shift) * scale in float32 as the array code: bit for bit.
    _same_bits(got, T.crop_standardize(x, padding, size, constants, *crops))


@pytest.mark.parametrize("train", [False, True])
def test_cpu_exec_the_pipeline_gives_numpys_bits(gpu, train):
    """The Pipeline itself, crops, reflections and lighting included, one kernel a batch."""
    images = np.random.default_rng(24).integers(0, 256, (5, 3, 32, 32)).astype(np.uint8)
    labels = np.arange(5) % 3
    pipe = T.Pipeline.for_dataset(ArrayDataset(images, labels, ["a", "b", "c"]), (3, 32, 32),
                                  augment=True, lighting=True)
    got = pipe(images, train=train, rng=np.random.default_rng(25), xp=gpu)
    assert _launched() == {kernels.crop.CROP_STANDARDIZE.name}
    _same_bits(got, pipe(images, train=train, rng=np.random.default_rng(25)))


# ------------------------------------------------------------------------------------ optimizers
def _flat(n, seed, dtype):
    rng_ = np.random.default_rng(seed)
    return [rng_.standard_normal(n).astype(dtype) for _ in range(4)]


def _adam_array_code(p, g, m, v, lr, t, b1, b2, eps, wd):
    """optim/adam.py's array code, on host arrays."""
    g = g + wd * p
    m *= b1
    m += (1 - b1) * g
    v *= b2
    v += (1 - b2) * (g * g)
    p -= lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)


@pytest.mark.parametrize("device_scalars", [False, True])
@pytest.mark.parametrize("betas,wd", [((0.9, 0.999), 0.0), ((0.9, 0.999), 0.01), ((0.0, 0.5), 0.0)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_cpu_exec_adam(gpu, dtype, betas, wd, device_scalars):
    n = 1000 + 37                                       # not a multiple of the block
    p, g, m, v = _flat(n, 17, dtype)
    v = np.abs(v)
    want = [a.copy() for a in (p, g, m, v)]
    start = p.copy()
    dp, dg, dm, dv = (gpu.asarray(a) for a in (p, g, m, v))
    lr = 0.01
    lr_device = gpu.asarray(np.array([lr]))             # float64, read by the kernel
    for t in (1, 2, 3, 10):
        step = gpu.asarray(np.array([t], dtype=np.int64)) if device_scalars else t
        assert fused.adam_update(dp, dg, dm, dv, lr=lr_device if device_scalars else lr,
                                 step=step, beta1=betas[0], beta2=betas[1], eps=1e-8,
                                 weight_decay=wd)
        _adam_array_code(*want, lr, t, betas[0], betas[1], 1e-8, wd)
    assert _launched() == {kernels.adam.UPDATE.name}
    # The bias corrections as -1/expm1(t log b) in real against 1/(1 - b^t) in double:
    # a few ulps of the update.
    moved = np.abs(want[0] - start).max()
    bound = 1e-5 if dtype == "float32" else 1e-12
    assert np.abs(_host(dp) - want[0]).max() <= bound * moved
    for got, ref in ((dm, want[2]), (dv, want[3])):        # the same formula: an ulp or two
        _close(got, ref, 1e-6 if dtype == "float32" else 1e-15)


@pytest.mark.parametrize("device_lr", [False, True])
@pytest.mark.parametrize("wd", [0.0, 5e-4])
@pytest.mark.parametrize("dtype", DTYPES)
def test_cpu_exec_sgd(gpu, dtype, wd, device_lr):
    p, g, velocity, _ = _flat(777, 18, dtype)
    want_p, want_v = p.copy(), velocity.copy()
    dp, dg, dv = (gpu.asarray(a) for a in (p, g, velocity))
    for lr in (0.01, 0.001):
        lr_arg = gpu.asarray(np.array([lr])) if device_lr else lr
        assert fused.sgd_update(dp, dg, dv, lr=lr_arg, momentum=0.9, weight_decay=wd)
        want_v *= 0.9                                   # optim/sgd.py's array code
        if wd:
            want_v -= (wd * lr) * want_p
        want_v -= lr * g
        want_p += want_v
    assert _launched() == {kernels.sgd.UPDATE.name}
    # The same operations in the same order (g++ does not fuse a * b + c): bit for bit.
    # (NVCC contracts into FMAs: on a GPU, within an ulp; check --backend cupy bounds it.)
    _same_bits(dp, want_p)
    _same_bits(dv, want_v)


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_cpu_exec_optimizers_fused_over_a_model(gpu, name):
    """The optimizers' fused=True over a model moved to the device: its parameters lie in
    one flat buffer, so one launch a step updates them all, as the array code does."""
    from tinyalexnet.models import get_model
    plain = get_model("small", seed=0)
    fused_model = copy.deepcopy(plain).to("cupy")
    make = (lambda m, f: SGD(m, lr=0.01, fused=f)) if name == "sgd" else \
        (lambda m, f: Adam(m, lr=0.001, weight_decay=5e-4, fused=f))
    a, b = make(plain, False), make(fused_model, True)
    grads = np.random.default_rng(19)
    for _ in range(3):
        for (_, _, ga), (_, _, gb) in zip(plain.named_parameters(),
                                           fused_model.named_parameters()):
            ga[...] = grads.standard_normal(ga.shape).astype(ga.dtype)
            gb[...] = gpu.asarray(ga)
        a.step()
        b.step()
    launches = [n for n, _, _ in cuda_on_cpu.CpuKernel.launches]
    assert fused_model.flat_params() is not None
    kernel = kernels.sgd.UPDATE if name == "sgd" else kernels.adam.UPDATE
    assert launches == [kernel.name] * 3                                    # one a step
    for (k, pa, _), (_, pb, _) in zip(plain.named_parameters(), fused_model.named_parameters()):
        np.testing.assert_allclose(_host(pb), pa, rtol=1e-5, atol=1e-7, err_msg=k)


# ------------------------------------------------------------------------------------ planted bugs
def _pool_check(xp):
    test_cpu_exec_maxpool(xp, (2, 3, 7, 7, 3, 2), "float32", True)


def _relu_check(xp):
    test_cpu_exec_relu(xp, "float32", (3, 4, 5, 7))


def _dropout_check(xp):
    test_cpu_exec_dropout(xp, "float32", 0.5, (64, 300))


def _offset_check(xp):
    test_cpu_exec_dropout_offset_is_the_element_number(xp, 256 * 3 + 17)


def _counter_check(xp):
    test_cpu_exec_dropout_counter_read_from_the_device(xp, 2 ** 31 + 5)


def _lrn_check(xp):
    test_cpu_exec_lrn(xp, "float64", *LRN_CASES[1])


def _col2im_check(xp):
    test_cpu_exec_col2im(xp, (1, 4, 9, 11, 5, 5, 2, 2), "float64")


def _im2col_check(xp):
    test_cpu_exec_im2col(xp, (3, 2, 9, 8, 5, 3, 2, 2), "float64")


def _loss_check(xp):
    test_cpu_exec_cross_entropy(xp, "float32", 7, 10)


def _topk_check(xp):
    test_cpu_exec_below_true(xp, "float32", 7, 10)


def _crop_check(xp):
    test_cpu_exec_crop_standardize(xp, CROP_CASES[3], "random + lighting")


def _centre_check(xp):
    test_cpu_exec_crop_standardize(xp, CROP_CASES[3], "centre")


def _adam_check(xp):
    test_cpu_exec_adam(xp, "float32", (0.9, 0.999), 0.01, False)


def _adam_device_check(xp):
    test_cpu_exec_adam(xp, "float32", (0.9, 0.999), 0.01, True)


def _sgd_check(xp):
    test_cpu_exec_sgd(xp, "float32", 5e-4, False)


# (kernel, text in its body, planted replacement, the test that must then fail)
PLANTED = [
    ("maxpool tie to the last", kernels.maxpool.FORWARD, "if (v > best) best_offset",
     "if (v >= best) best_offset", _pool_check),
    ("maxpool offset transposed", kernels.maxpool.BACKWARD, "argmax[o] == a * k + b",
     "argmax[o] == b * k + a", _pool_check),
    ("relu mask at zero", kernels.relu.FORWARD, "positive[i] = xi > 0;",
     "positive[i] = xi >= 0;", _relu_check),
    ("dropout multiplier", kernels.dropout.FORWARD, "0x846ca68bu", "0x846ca68cu", _dropout_check),
    ("dropout no offset", kernels.dropout.FORWARD, "(unsigned int)i + offset",
     "(unsigned int)i", _offset_check),
    ("dropout device counter not read", kernels.dropout.FORWARD, "counter_device\n        ?",
     "0\n        ?", _counter_check),
    ("dropout device counter unmixed", kernels.dropout.FORWARD,
     "(unsigned long long)*counter_device * 0x9E3779B9ull", "(unsigned long long)*counter_device",
     _counter_check),
    ("dropout scale", kernels.dropout.FORWARD, "(real)kept / scale_divisor", "(real)kept",
     _dropout_check),
    ("lrn window edge", kernels.lrn.FORWARD, "if (c + d < C)  { real a",
     "if (c + d <= C) { real a", _lrn_check),
    ("lrn backward term", kernels.lrn.BACKWARD, "dout[j] * x[j] * scale[j] / D[j]",
     "dout[j] * x[j] / D[j]", _lrn_check),
    ("col2im stride test", kernels.col2im.BATCH_LAST, "left % stride != 0 || ", "", _col2im_check),
    ("col2im padding", kernels.col2im.BATCH_LAST, "int top = h + padding - a;",
     "int top = h - a;", _col2im_check),
    ("im2col stride", kernels.im2col.BATCH_LAST, "int h = oh * stride + a - padding;",
     "int h = oh + a - padding;", _im2col_check),
    ("im2col no zero border", kernels.im2col.BATCH_LAST, "if (h >= 0 && h < H && w >= 0",
     "if (h >= 0 && h <= H && w >= 0", _im2col_check),
    ("im2col batch not fastest", kernels.im2col.BATCH_LAST, "int b = (int)(i % N);",
     "int b = (int)((i / OW) % N);", _im2col_check),
    ("loss without the max", kernels.cross_entropy.ROWS, "if (row[k] > m || row[k] != row[k])",
     "if (row[k] != row[k])", _loss_check),
    ("loss mean", kernels.cross_entropy.MEAN, "sum / (real)N", "sum / (real)(N + 1)", _loss_check),
    ("loss gradient label", kernels.cross_entropy.BACKWARD, "if (labels[row] == k) d -= 1;",
     "if (labels[row] == k) d -= (real)0.5;", _loss_check),
    ("topk ties counted below", kernels.topk.BELOW_TRUE, "if (row[k] < t) count",
     "if (row[k] <= t) count", _topk_check),
    ("topk rows overlap", kernels.topk.BELOW_TRUE, "scores + n * K;", "scores + n;", _topk_check),
    ("crop rows for columns", kernels.crop.CROP_STANDARDIZE, "row = index[b * (w + h) + w + r];",
     "row = index[b * (w + h) + r];", _crop_check),
    ("crop border of the wrong side", kernels.crop.CROP_STANDARDIZE, "row -= pad_top;",
     "row -= pad_left;", _centre_check),
    ("crop lighting dropped", kernels.crop.CROP_STANDARDIZE,
     "long long s = shift_per_image ? b * C + c : c;", "long long s = c;", _crop_check),
    ("adam v without the square", kernels.adam.UPDATE, "one_minus_beta2 * (grad * grad)",
     "one_minus_beta2 * grad", _adam_check),
    ("adam bias correction", kernels.adam.UPDATE, "real c2 = -1 / expm1(t * log_beta2);",
     "real c2 = 1;", _adam_check),
    ("adam step not read", kernels.adam.UPDATE, "step_device ? *step_device : step_value",
     "step_value", _adam_device_check),
    ("sgd weight decay dropped", kernels.sgd.UPDATE, "if (weight_decay != 0) vi",
     "if (0) vi", _sgd_check),
    ("sgd race with a neighbour", kernels.sgd.UPDATE, "velocity[i] = vi;",
     "velocity[i] = vi; if (i + 1 < n) velocity[i + 1] = vi;", _sgd_check),
]


@pytest.mark.parametrize("what,kernel,old,new,check", PLANTED, ids=[p[0] for p in PLANTED])
def test_cpu_exec_catches_a_planted_bug(gpu, monkeypatch, what, kernel, old, new, check):
    assert kernel.body.count(old) == 1, f"the plant site {old!r} is not in {kernel.name} once"
    check(gpu)                                          # as it is: passes
    monkeypatch.setattr(kernel, "body", kernel.body.replace(old, new))
    monkeypatch.setattr(kernel, "_compiled", {})
    with pytest.raises(AssertionError):
        check(gpu)


# ------------------------------------------------------------------------------------ the executor
# What cuda_on_cpu.CpuKernel refuses, each on a real kernel or a planted change of one.
def _relu_run(kernel_source, args_of):
    kernel = cuda_on_cpu.CpuKernel(kernel_source, kernels.relu.FORWARD.name)
    x = np.linspace(-1, 1, 300).astype(np.float32)
    out, positive = np.empty_like(x), np.empty(x.shape, dtype=bool)
    kernel((2,), (256,), args_of(x, out, positive))
    return out, positive


RELU32 = kernels.relu.FORWARD.source("float32")


def test_cpu_exec_the_executor_runs_the_kernel_as_given():
    out, positive = _relu_run(RELU32, lambda x, o, p: (x, o, p, np.int64(x.size)))
    x = np.linspace(-1, 1, 300).astype(np.float32)
    assert np.array_equal(out, np.maximum(x, 0)) and np.array_equal(positive, x > 0)


@pytest.mark.parametrize("what,args_of,message", [
    ("a float64 array for float*", lambda x, o, p: (x.astype(np.float64), o, p, np.int64(300)),
     "is a float64 array for a float*"),
    ("a Python int for long long", lambda x, o, p: (x, o, p, 300), "must be a NumPy scalar"),
    ("an int32 for long long", lambda x, o, p: (x, o, p, np.int32(300)),
     "is a int32 scalar for a long long"),
    ("a strided view", lambda x, o, p: (np.repeat(x, 2)[::2], o, p, np.int64(300)),
     "not C-contiguous"),
    ("overlapping arrays", lambda x, o, p: (x, x, p, np.int64(300)), "overlap"),
    ("too few arguments", lambda x, o, p: (x, o, p), "3 arguments for 4 parameters"),
])
def test_cpu_exec_the_executor_refuses_wrong_arguments(what, args_of, message):
    if cuda_on_cpu.gpp() is None:
        pytest.skip("no g++ on this machine")
    with pytest.raises((TypeError, ValueError), match=message):
        _relu_run(RELU32, args_of)


@pytest.mark.parametrize("what,old,new,message", [
    ("a write past the end", "positive[i] = xi > 0;", "positive[i + 1] = xi > 0;",
     "wrote outside argument 2"),
    ("a write through a cast-away const", "positive[i] = xi > 0;",
     "positive[i] = xi > 0; ((real*)x)[i] = 0;", "argument 0 is const, and changed"),
    ("a read of another thread's output", "out[i] = (xi > 0",
     "if (i > 0) xi += out[i - 1]; out[i] = (xi > 0", "differs when the threads run"),
])
def test_cpu_exec_the_executor_sees_a_planted_mistake(what, old, new, message):
    if cuda_on_cpu.gpp() is None:
        pytest.skip("no g++ on this machine")
    assert RELU32.count(old) == 1
    with pytest.raises(AssertionError, match=message):
        _relu_run(RELU32.replace(old, new), lambda x, o, p: (x, o, p, np.int64(x.size)))


def test_cpu_exec_the_executor_reports_gpp_errors():
    if cuda_on_cpu.gpp() is None:
        pytest.skip("no g++ on this machine")
    with pytest.raises(cuda_on_cpu.CompileError, match="g\\+\\+ could not compile"):
        cuda_on_cpu.CpuKernel(RELU32.replace("positive[i] = xi > 0;", "positive[i] = xi > 0"),
                              kernels.relu.FORWARD.name)
