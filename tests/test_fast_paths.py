"""Every fast path (layers/fast.py) against the readable maths it replaces (layers/functional.py).

Conv2d, MaxPool2d, LocalResponseNorm, ReLU, Dropout, Linear and SoftmaxCrossEntropy run
fast.py's versions by default and functional.py's with ``fast = False``.  On
NumPy that is fast.py's array code; on the stand-in ([standin]) the kernel path,
with each kernel run as its NumPy reference (kernel_references.py); the kernels'
own CUDA source runs in test_kernels_cpu_exec.py.  Here each fast version must give what
the readable one gives, on random inputs with odd and non-square sizes, stride,
padding, groups and ties: exactly where only the order of copies differs,
within float64 rounding where sums run in another order.  The gradient checks
of both paths are in test_layers.py, the loop references in test_naive.py.
"""
import numpy as np
import pytest

from tinyalexnet import backend
from tinyalexnet.layers import (Conv2d, Dropout, Linear, LocalResponseNorm, MaxPool2d, ReLU,
                                SoftmaxCrossEntropy)
from tinyalexnet.layers.fast import col2im_batch_last, im2col_batch_last
from tinyalexnet.layers.im2col import col2im, conv_output_size, im2col
from tinyalexnet.models import get_model

ROUNDING = 1e-12      # float64, the same sums in another order: relative to the largest value


def _rand(xp, shape, seed, dtype="float64"):
    return xp.asarray(np.random.default_rng(seed).standard_normal(shape).astype(dtype))


def _close(a, b, bound=ROUNDING):
    a, b = backend.as_numpy(a), backend.as_numpy(b)
    assert a.shape == b.shape and a.dtype == b.dtype
    assert np.abs(a - b).max() <= bound * max(np.abs(b).max(), 1e-300)


def _both_paths(make, x, dout_seed, dtype="float64"):
    """Forward and backward of the layer ``make()`` builds, once per path: {fast: (out, dx, grads)}."""
    xp = backend.get_array_module(x)
    results = {}
    for fast in (True, False):
        layer = make()
        layer.fast = fast
        out = layer.forward(x)
        dout = _rand(xp, out.shape, dout_seed, dtype)
        dx = layer.backward(dout)
        results[fast] = (out, dx, {k: g.copy() for k, g in layer.grads.items()})
    return results


# --------------------------------------------------------------------------- im2col, col2im
# (N, C, H, W, kh, kw, stride, padding): odd and non-square sizes, stride > 1,
# padding, a batch of one, a kernel as large as the padded input.
IM2COL_CASES = [
    (2, 3, 7, 7, 3, 3, 1, 0),
    (3, 2, 8, 5, 3, 2, 1, 1),
    (1, 4, 9, 11, 5, 5, 2, 2),
    (2, 3, 13, 13, 11, 11, 4, 0),
    (2, 1, 4, 4, 6, 6, 1, 1),
]


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
    _close(fast, ref)                                 # same additions, possibly reordered
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


# --------------------------------------------------------------------------- Conv2d
# (N, C, H, W, F, k, stride, padding, groups)
CONV_CASES = [
    (2, 4, 7, 9, 6, 3, 2, 1, 2),
    (1, 3, 11, 11, 4, 5, 1, 2, 1),
    (3, 4, 8, 8, 4, 3, 1, 0, 4),
    (2, 3, 15, 15, 4, 11, 4, 0, 1),
    (2, 6, 5, 7, 6, (3, 2), 2, 1, 3),
]


@pytest.mark.parametrize("cache_cols", [False, True])
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_fast_path_matches_the_readable_one(xp, backend_name, case, cache_cols):
    N, C, H, W, F, k, s, p, g = case

    def make():
        conv = Conv2d(C, F, k, stride=s, padding=p, groups=g, rng=5).to(backend_name, "float64")
        conv.params["bias"][...] = _rand(xp, (F,), 6)
        conv.cache_cols = cache_cols          # a fast-path option: the readable path ignores it
        return conv

    fast, readable = (_both_paths(make, _rand(xp, (N, C, H, W), 7), 8)[f] for f in (True, False))
    for a, b in zip(fast[:2], readable[:2]):  # out, dx
        _close(a, b)
    _close(fast[2]["weight"], readable[2]["weight"])
    # db: the readable function's sum over (n, oh, ow), written in place: the same bits
    assert backend.as_numpy(fast[2]["bias"]).tobytes() == \
        backend.as_numpy(readable[2]["bias"]).tobytes()


def test_conv_backward_refuses_a_gradient_it_cannot_write_in_place(xp):
    from tinyalexnet.layers import fast
    x, W = _rand(xp, (2, 3, 5, 5), 36), _rand(xp, (4, 3, 3, 3), 37)
    dout = _rand(xp, (2, 4, 3, 3), 38)
    strided = xp.zeros((4, 3, 3, 6))[..., ::2]              # dW's shape, not contiguous
    with pytest.raises(ValueError, match="dW must be C-contiguous"):
        fast.conv_backward(dout, W, x.shape, x=x, dW=strided, db=xp.zeros(4))


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


# --------------------------------------------------------------------------- Linear
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_linear_fast_path_matches_the_readable_one(xp, backend_name, dtype):
    def make():
        layer = Linear(7, 5, rng=30).to(backend_name, dtype)
        layer.params["bias"][...] = _rand(xp, (5,), 31, dtype)
        return layer

    fast, readable = (_both_paths(make, _rand(xp, (4, 7), 32, dtype), 33, dtype)[f]
                      for f in (True, False))
    # The same products and sum, written in place instead of copied: the same bits.
    for a, b in [*zip(fast[:2], readable[:2])] + [(fast[2][k], readable[2][k]) for k in fast[2]]:
        assert a.dtype == b.dtype and backend.as_numpy(a).tobytes() == backend.as_numpy(b).tobytes()


@pytest.mark.parametrize("name", ["small", "alexnet32"])
def test_fast_backward_fills_the_flat_gradient_buffer(xp, backend_name, name):
    """Conv2d and Linear write their gradients into the model's flat buffer (``out=``): it
    holds the readable path's gradients, and the layers' grads are still views of it."""
    x = _rand(xp, (2,) + get_model(name).input_shape, 34)
    flat = {}
    for fast in (True, False):
        model = get_model(name, seed=0).to(backend_name, "float64").set_fast(fast)
        model.flat_grads()[...] = xp.nan                  # whatever backward leaves unwritten
        out = model.forward(x)
        model.backward(_rand(xp, out.shape, 35))
        assert model.flat_buffers() is not None           # no gradient was replaced
        flat[fast] = model.flat_grads()
    _close(flat[True], flat[False])                       # NaN anywhere fails


# --------------------------------------------------------------------------- MaxPool2d
# (N, C, H, W, kernel, stride)
POOL_CASES = [(2, 3, 7, 7, 3, 2), (1, 2, 9, 6, 3, 2), (2, 2, 8, 8, 2, 2), (3, 1, 5, 7, 3, 1),
              (2, 1, 8, 7, 2, 3)]


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("case", POOL_CASES)
def test_maxpool_fast_path_matches_the_readable_one(xp, case, ties):
    N, C, H, W, k, s = case
    x = _rand(xp, (N, C, H, W), 16)
    if ties:   # values from {-1, 0, 1}: most windows hold several maxima
        x = xp.sign(xp.round(x))
    fast, readable = (_both_paths(lambda: MaxPool2d(k, s), x, 17)[f] for f in (True, False))
    # The same maxima, and every dout routed to the same pixel in the same order: exact.
    for a, b in zip(fast[:2], readable[:2]):
        assert a.dtype == b.dtype and np.array_equal(backend.as_numpy(a), backend.as_numpy(b))


# --------------------------------------------------------------------------- LocalResponseNorm
LRN_CASES = [(5, 1e-2, 0.75, 2.0, (2, 7, 4, 5)), (3, 0.5, 0.5, 1.0, (1, 4, 3, 2)),
             (7, 0.1, 0.75, 2.0, (2, 3, 2, 2)), (1, 0.1, 1.0, 2.0, (1, 2, 3, 3))]


@pytest.mark.parametrize("size,alpha,beta,k,shape", LRN_CASES)
def test_lrn_fast_path_matches_the_readable_one(xp, size, alpha, beta, k, shape):
    x = _rand(xp, shape, 18) * 3
    fast, readable = (_both_paths(lambda: LocalResponseNorm(size, alpha, beta, k), x, 19)[f]
                      for f in (True, False))
    for a, b in zip(fast[:2], readable[:2]):
        _close(a, b)


# --------------------------------------------------------------------------- ReLU, Dropout
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_relu_fast_path_matches_the_readable_one(xp, dtype):
    x = _rand(xp, (3, 4, 5, 7), 22, dtype)
    x[0, 0, 0, :3] = 0.0                              # the kink itself: slope 0
    fast, readable = (_both_paths(ReLU, x, 23, dtype)[f] for f in (True, False))
    for a, b in zip(fast[:2], readable[:2]):          # the same comparisons: exact
        assert a.dtype == b.dtype and np.array_equal(backend.as_numpy(a), backend.as_numpy(b))


@pytest.mark.parametrize("p", [0.5, 0.1, 0.3])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dropout_fast_path_draws_the_readable_mask(xp, dtype, p):
    x = _rand(xp, (6, 37), 24, dtype)
    runs = {}
    for fast in (True, False):
        layer = Dropout(p, seed=7)
        layer.fast = fast
        outs = [layer.forward(x) for _ in range(2)]   # two masks: the counter moves on
        dx = layer.backward(_rand(xp, x.shape, 25, dtype))
        runs[fast] = [backend.as_numpy(a) for a in outs + [dx]]
        assert layer.calls == 2
    for a, b in zip(runs[True], runs[False]):         # the same hash, the same bits
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
    assert not np.array_equal(runs[True][0] == 0, runs[True][1] == 0)


def test_dropout_offset_draws_the_slice_of_the_whole_batch(xp):
    """A process holding images 2..4 of a batch of 5 draws their bits of the whole mask."""
    from tinyalexnet.layers import fast
    x = _rand(xp, (5, 3, 4), 26, "float32")
    whole, keep = fast.dropout_forward(x, 0.5, 3, 11)
    part, part_keep = fast.dropout_forward(x[2:], 0.5, 3, 11, offset=2 * 3 * 4)
    assert np.array_equal(backend.as_numpy(part_keep), backend.as_numpy(keep)[2:])
    assert backend.as_numpy(part).tobytes() == backend.as_numpy(whole)[2:].tobytes()
    shifted, _ = fast.dropout_forward(x[2:], 0.5, 3, 11, offset=2 * 3 * 4 + 1)
    assert not np.array_equal(backend.as_numpy(shifted), backend.as_numpy(whole)[2:])


# --------------------------------------------------------------------------- the loss
@pytest.mark.parametrize("N,K", [(7, 10), (1, 3), (4, 1000)])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cross_entropy_fast_path_matches_the_readable_one(xp, N, K, dtype):
    logits = _rand(xp, (N, K), 27, dtype) * 30        # large logits: the max must be taken
    labels = np.random.default_rng(28).integers(0, K, N)
    got = {}
    for fast in (True, False):
        loss_fn = SoftmaxCrossEntropy()
        loss_fn.fast = fast
        loss = loss_fn.forward(logits, labels)
        d1 = loss_fn.backward()
        d2 = loss_fn.backward(0.5)                     # again, scaled: nothing was overwritten
        got[fast] = [backend.as_numpy(a) for a in (loss, d1, d2)]
    bound = 1e-5 if dtype == "float32" else 1e-13     # sums and exp in another order
    for a, b in zip(got[True], got[False]):
        assert a.dtype == b.dtype == dtype and a.shape == b.shape
        assert np.abs(a - b).max() <= bound * max(np.abs(b).max(), 1.0)
    np.testing.assert_allclose(got[True][2], 0.5 * got[True][1], rtol=1e-6)


# --------------------------------------------------------------------------- whole models
@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("name", ["small", "alexnet32"])
def test_no_float64_upcast_in_a_float32_training_step(xp, backend_name, name, fast):
    """Every activation and every gradient of a float32 model stays float32, on either path."""
    model = get_model(name, seed=0).to(backend_name).set_fast(fast)
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


def test_set_fast_switches_every_layer_that_has_both_paths():
    model = get_model("small", seed=0)
    switchable = [n for n, m in model.named_modules() if hasattr(m, "fast")]
    assert sorted(switchable) == sorted(
        n for n, m in model.named_modules()
        if isinstance(m, (Conv2d, MaxPool2d, LocalResponseNorm, ReLU, Dropout, Linear)))
    assert all(model[n].fast for n in switchable)                # fast by default
    model.set_fast(False)
    assert not any(model[n].fast for n in switchable)


@pytest.mark.parametrize("fast", [True, False])
def test_lrn_with_numpy_float64_constants_keeps_float32(xp, fast):
    # Constants read from a file or computed with NumPy arrive as float64 scalars.
    lrn = LocalResponseNorm(5, np.float64(1e-4), np.float64(0.75), np.float64(2.0))
    lrn.fast = fast
    x = _rand(xp, (2, 6, 3, 3), 21, dtype="float32")
    y = lrn.forward(x)
    assert y.dtype == xp.float32
    assert lrn.backward(xp.ones_like(y)).dtype == xp.float32


def test_numpy_never_meets_a_kernel(monkeypatch):
    """On NumPy every fast path is array code, CuPy importable or not: no kernel is built."""
    from tinyalexnet import kernels
    from tinyalexnet.optim import SGD, Adam

    def refuse(*args, **kwargs):
        raise AssertionError("a CUDA kernel was asked for on NumPy")

    monkeypatch.setattr(kernels.Kernel, "compiled", refuse)
    assert not kernels.runs_on(np.zeros(3, dtype=np.float32))
    model = get_model("small", seed=0)
    loss_fn = SoftmaxCrossEntropy()
    x = _rand(np, (2,) + model.input_shape, 29, "float32")
    for optimizer in (SGD(model, fused=True), Adam(model, fused=True)):
        loss_fn.forward(model.forward(x), np.array([1, 2]))
        model.backward(loss_fn.backward())
        optimizer.step()
