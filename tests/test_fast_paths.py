"""Every fast path against its plain reference.

The layers run tuned versions of a few operations (batch-last im2col/col2im,
buffered max pooling, ...).  Each is checked here against the version written
to be read (``im2col``/``col2im``, the loops in ``layers/naive.py``), and every
backward pass that changed for speed is gradient-checked in float64.
"""
import numpy as np
import pytest

from tinyalexnet import backend
from tinyalexnet.gradcheck import check_layer
from tinyalexnet.layers import Conv2d, LocalResponseNorm, MaxPool2d, ReLU
from tinyalexnet.layers.im2col import (col2im, col2im_batch_last, conv_output_size, im2col,
                                       im2col_batch_last)
from tinyalexnet.layers.naive import conv2d_naive, lrn_naive, maxpool2d_naive
from tinyalexnet.models import get_model

# (N, C, H, W, kh, kw, stride, padding): odd and non-square sizes, stride > 1,
# padding, a batch of one, a kernel as large as the padded input.
IM2COL_CASES = [
    (2, 3, 7, 7, 3, 3, 1, 0),
    (3, 2, 8, 5, 3, 2, 1, 1),
    (1, 4, 9, 11, 5, 5, 2, 2),
    (2, 3, 13, 13, 11, 11, 4, 0),
    (2, 1, 4, 4, 6, 6, 1, 1),
]


def _rand(xp, shape, seed, dtype="float64"):
    return xp.asarray(np.random.default_rng(seed).standard_normal(shape).astype(dtype))


def _batch_last_to_reference(cols, N, OH, OW):
    """Reorder batch-last columns (oh, ow, n) into the reference order (n, oh, ow)."""
    xp = backend.get_array_module(cols)
    K = cols.shape[0]
    return xp.ascontiguousarray(cols.reshape(K, OH, OW, N).transpose(0, 3, 1, 2)).reshape(K, -1)


@pytest.mark.parametrize("case", IM2COL_CASES)
def test_im2col_batch_last_holds_the_reference_columns(xp, case):
    N, C, H, W, kh, kw, s, p = case
    x = _rand(xp, (N, C, H, W), 0)
    OH, OW = conv_output_size(H, kh, s, p), conv_output_size(W, kw, s, p)
    fast = im2col_batch_last(x, kh, kw, s, p)
    assert fast.shape == (C * kh * kw, OH * OW * N)
    assert fast.flags.c_contiguous
    # A copy of the same numbers in another order: equality is exact.
    ref = im2col(x, kh, kw, s, p)
    assert bool(xp.array_equal(_batch_last_to_reference(fast, N, OH, OW), ref))


@pytest.mark.parametrize("case", IM2COL_CASES)
def test_col2im_batch_last_matches_reference_and_is_the_adjoint(xp, case):
    N, C, H, W, kh, kw, s, p = case
    OH, OW = conv_output_size(H, kh, s, p), conv_output_size(W, kw, s, p)
    cols = _rand(xp, (C * kh * kw, OH * OW * N), 1)
    fast = col2im_batch_last(cols, (N, C, H, W), kh, kw, s, p)
    ref = col2im(_batch_last_to_reference(cols, N, OH, OW), (N, C, H, W), kh, kw, s, p)
    assert fast.shape == (N, C, H, W) and fast.flags.c_contiguous
    # Same additions, possibly in another order: float64 rounding only.
    assert float(xp.abs(fast - ref).max()) <= 1e-12 * float(xp.abs(ref).max())
    # <im2col(x), cols> == <x, col2im(cols)>: what makes dx right.
    x = _rand(xp, (N, C, H, W), 2)
    lhs = float((im2col_batch_last(x, kh, kw, s, p) * cols).sum())
    rhs = float((x * fast).sum())
    assert abs(lhs - rhs) <= 1e-10 * max(1.0, abs(lhs))


def test_im2col_batch_last_keeps_float32(xp):
    x = _rand(xp, (2, 3, 6, 6), 3, dtype="float32")
    assert im2col_batch_last(x, 3, 3, 1, 1).dtype == xp.float32
    cols = _rand(xp, (27, 36 * 2), 4, dtype="float32")
    assert col2im_batch_last(cols, (2, 3, 6, 6), 3, 3, 1, 1).dtype == xp.float32


# (N, C, H, W, F, k, stride, padding, groups)
CONV_CASES = [
    (2, 4, 7, 9, 6, 3, 2, 1, 2),
    (1, 3, 11, 11, 4, 5, 1, 2, 1),
    (3, 4, 8, 8, 4, 3, 1, 0, 4),
    (2, 3, 15, 15, 4, 11, 4, 0, 1),
]


@pytest.mark.parametrize("cache_cols", [False, True])
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_forward_matches_the_loops(xp, backend_name, case, cache_cols):
    N, C, H, W, F, k, s, p, g = case
    conv = Conv2d(C, F, k, stride=s, padding=p, groups=g, rng=5).to(backend_name, "float64")
    conv.params["bias"][...] = _rand(xp, (F,), 6)
    conv.cache_cols = cache_cols
    x = _rand(xp, (N, C, H, W), 7)
    got = backend.as_numpy(conv.forward(x))
    want = conv2d_naive(x, conv.params["weight"], conv.params["bias"], s, p, g)
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-12 * np.abs(want).max()


@pytest.mark.parametrize("cache_cols", [False, True])
@pytest.mark.parametrize("case", CONV_CASES[:3])
def test_conv_backward_gradient_check(xp, backend_name, case, cache_cols):
    N, C, H, W, F, k, s, p, g = case
    conv = Conv2d(C, F, k, stride=s, padding=p, groups=g, rng=8).to(backend_name, "float64")
    conv.cache_cols = cache_cols
    result = check_layer(conv, _rand(xp, (N, C, H, W), 9))
    # Convolution is linear: central differences are exact up to rounding.
    assert result.bound == 1e-6
    assert result.passed, str(result)


def test_conv_cache_cols_gives_identical_gradients(xp, backend_name):
    x = _rand(xp, (2, 4, 9, 9), 10, dtype="float32")
    dout = None
    grads = []
    for cache in (False, True):
        conv = Conv2d(4, 6, 3, padding=1, groups=2, rng=11).to(backend_name)
        conv.cache_cols = cache
        y = conv.forward(x)
        dout = _rand(xp, y.shape, 12, dtype="float32") if dout is None else dout
        dx = conv.backward(dout)
        grads.append([backend.as_numpy(a) for a in (dx, conv.grads["weight"], conv.grads["bias"])])
    for a, b in zip(*grads):
        assert a.dtype == np.float32
        assert np.array_equal(a, b)


def test_conv_without_input_grad_still_fills_weight_grads(xp, backend_name):
    conv = Conv2d(3, 4, 3, rng=13).to(backend_name, "float64")
    x = _rand(xp, (2, 3, 6, 6), 14)
    dout = _rand(xp, (2, 4, 4, 4), 15)
    conv.forward(x)
    conv.backward(dout)
    want = backend.as_numpy(conv.grads["weight"]).copy()
    conv.input_grad = False
    conv.forward(x)
    assert conv.backward(dout) is None
    assert np.array_equal(backend.as_numpy(conv.grads["weight"]), want)


# (N, C, H, W, kernel, stride)
POOL_CASES = [(2, 3, 7, 7, 3, 2), (1, 2, 9, 6, 3, 2), (2, 2, 8, 8, 2, 2), (3, 1, 5, 7, 3, 1)]


@pytest.mark.parametrize("case", POOL_CASES)
def test_maxpool_forward_matches_the_loops(xp, backend_name, case):
    N, C, H, W, k, s = case
    pool = MaxPool2d(k, s)
    x = _rand(xp, (N, C, H, W), 16, dtype="float32")
    got = pool.forward(x)
    assert got.dtype == xp.float32
    assert np.array_equal(backend.as_numpy(got), maxpool2d_naive(x, k, s))


@pytest.mark.parametrize("case", POOL_CASES)
def test_maxpool_backward_gradient_check(xp, case):
    N, C, H, W, k, s = case
    # Distinct values at least 1/n apart (n >> h = 1e-6): no ties, no maximum within
    # h of a runner-up, so pooling is linear around x and central differences are
    # exact up to rounding; hence a bound far below the usual 1e-6.
    n = N * C * H * W
    values = np.random.default_rng(17).permutation(n).astype("float64") / n
    x = xp.asarray(values.reshape(N, C, H, W))
    result = check_layer(MaxPool2d(k, s), x, bound=1e-8)
    assert result.passed, str(result)


def test_maxpool_ties_go_to_the_first_offset(xp):
    # A window of equal values: the whole gradient goes to its top-left pixel.
    pool = MaxPool2d(3, 2)
    x = xp.ones((1, 1, 3, 3), dtype=xp.float32)
    pool.forward(x)
    dx = backend.as_numpy(pool.backward(xp.ones((1, 1, 1, 1), dtype=xp.float32)))
    want = np.zeros((1, 1, 3, 3), np.float32)
    want[0, 0, 0, 0] = 1
    assert np.array_equal(dx, want)


def test_lrn_matches_the_loops_and_gradient_check(xp, backend_name):
    x = _rand(xp, (2, 7, 4, 5), 18)
    lrn = LocalResponseNorm(5, 1e-2, 0.75, 2.0)   # a large alpha makes the window matter
    got = backend.as_numpy(lrn.forward(x))
    want = lrn_naive(x, 5, 1e-2, 0.75, 2.0)
    assert np.abs(got - want).max() <= 1e-13
    result = check_layer(lrn, x)
    assert result.passed, str(result)


def test_relu_backward_gradient_check(xp):
    # Inputs kept away from the kink at 0.
    x = _rand(xp, (3, 4, 5), 19)
    x = x + xp.sign(x) * 0.1
    result = check_layer(ReLU(), x, bound=1e-8)
    assert result.passed, str(result)


@pytest.mark.parametrize("name", ["small", "alexnet32"])
def test_no_float64_upcast_in_a_float32_training_step(xp, backend_name, name):
    """Every activation and every gradient of a float32 model stays float32."""
    model = get_model(name, seed=0).to(backend_name)
    batch = 2
    x = _rand(xp, (batch,) + model.input_shape, 20, dtype="float32")
    h = x
    for layer_name, layer in model.layers.items():
        h = layer.forward(h)
        assert h.dtype == xp.float32, f"{layer_name} forward gave {h.dtype}"
    d = xp.ones(h.shape, dtype=xp.float32) / h.size
    for layer_name, layer in reversed(model.layers.items()):
        d = layer.backward(d)
        assert d is None or d.dtype == xp.float32, f"{layer_name} backward gave {d.dtype}"
    for pname, p, g in model.named_parameters():
        assert p.dtype == g.dtype == xp.float32, pname


def test_lrn_with_numpy_float64_constants_keeps_float32(xp):
    # Constants read from a file or computed with NumPy arrive as float64 scalars.
    lrn = LocalResponseNorm(5, np.float64(1e-4), np.float64(0.75), np.float64(2.0))
    x = _rand(xp, (2, 6, 3, 3), 21, dtype="float32")
    y = lrn.forward(x)
    assert y.dtype == xp.float32
    assert lrn.backward(xp.ones_like(y)).dtype == xp.float32
