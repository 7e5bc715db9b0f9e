"""Winograd's F(2x2, 3x3) convolution (layers/winograd.py) against im2col, the loops and calculus.

* The transform matrices compute a correlation (1-D, against the sum written out),
  and the Toom-Cook constructor reproduces the published F(4, 3) matrices.
* Forward and backward agree with the im2col convolution (Conv2d) and the loop
  version to float64 rounding, over odd sizes, padding 0/1/2, groups 1/2, a batch of one.
* A float64 central-difference gradient check of dx, dW, db.
* The tile copy and its adjoint, the multiplication count (against a count of
  the products the code really runs), float32 accuracy, and the errors.
"""
import numpy as np
import pytest

from tinyalexnet import backend
from tinyalexnet.errors import ShapeError
from tinyalexnet.gradcheck import check_layer, numerical_gradient, rel_error
from tinyalexnet.layers import Conv2d
from tinyalexnet.layers import winograd as wg
from tinyalexnet.layers.naive import conv2d_naive

# Lavin and Gray (2016), F(4, 3): the matrices as printed in the paper (points 0, +-1, +-2).
PAPER_F43 = {
    "BT": [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
           [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]],
    "G": [[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
          [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]],
    "AT": [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
}

TRANSFORMS = {"F2x2_3x3": wg.F2x2_3x3, "F4x4_3x3": wg.F4x4_3x3,
              "built F(2,3)": wg.winograd_matrices(2, 3, (0, 1, -1)),
              "built F(6,3)": wg.winograd_matrices(6, 3, (0, 1, -1, 2, -2, 0.5, -0.5)),
              "built F(2,5)": wg.winograd_matrices(2, 5, (0, 1, -1, 2, -2))}


def _rand(xp, shape, seed, dtype="float64"):
    return xp.asarray(np.random.default_rng(seed).standard_normal(shape).astype(dtype))


def _rel(a, b):
    """max|a - b| / max|b|, on the host."""
    a, b = backend.as_numpy(a).astype(np.float64), backend.as_numpy(b).astype(np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


# ------------------------------------------------------------------ the matrices
@pytest.mark.parametrize("name", TRANSFORMS)
def test_matrices_compute_a_correlation_1d(name):
    """y = A^T [(G g) * (B^T d)] equals y_i = sum_j d[i + j] g[j], written out as sums."""
    w = TRANSFORMS[name]
    AT, G, BT = (np.array(a) for a in (w.AT, w.G, w.BT))
    n = w.m + w.r - 1
    assert AT.shape == (w.m, n) and G.shape == (n, w.r) and BT.shape == (n, n)
    rng = np.random.default_rng(0)
    for _ in range(20):
        d, g = rng.standard_normal(n), rng.standard_normal(w.r)
        want = [sum(d[i + j] * g[j] for j in range(w.r)) for i in range(w.m)]
        got = AT @ ((G @ g) * (BT @ d))
        assert np.abs(got - want).max() <= 1e-13 * np.abs(want).max()


def test_f23_is_lavin_and_grays():
    """The F(2, 3) of the module docstring: 4 multiplications m0..m3, as in the paper."""
    w = wg.F2x2_3x3
    d, g = np.array([1.0, 2.0, 3.0, 4.0]), np.array([0.5, -1.0, 2.0])
    m = (np.array(w.G) @ g) * (np.array(w.BT) @ d)
    assert m.tolist() == [(d[0] - d[2]) * g[0], (d[1] + d[2]) * (g[0] + g[1] + g[2]) / 2,
                          (d[2] - d[1]) * (g[0] - g[1] + g[2]) / 2, (d[1] - d[3]) * g[2]]


def test_toom_cook_construction_gives_the_papers_f43():
    for key, want in PAPER_F43.items():
        got = np.array(getattr(wg.F4x4_3x3, key))
        assert np.abs(got - np.array(want)).max() <= 1e-15, key


def test_winograd_matrices_rejects_bad_points():
    with pytest.raises(ShapeError, match=r"F\(2, 3\) needs 3 distinct points, got 3 \(2 distinct\)"):
        wg.winograd_matrices(2, 3, (0, 1, 1))
    with pytest.raises(ShapeError, match="needs 5 distinct points, got 3"):
        wg.winograd_matrices(4, 3, (0, 1, -1))


# ------------------------------------------------------------------ against im2col
# (N, C, H, W, F, padding, groups): odd and even sizes, non-square, padding 0/1/2,
# groups 1/2, a batch of one, an input as small as the kernel.
CASES = [
    (2, 4, 7, 9, 6, 1, 2),
    (1, 3, 5, 5, 4, 0, 1),
    (3, 4, 8, 8, 4, 1, 1),
    (2, 2, 6, 7, 4, 2, 2),
    (1, 2, 3, 3, 2, 0, 1),
    (2, 4, 13, 13, 6, 1, 2),
]


def _conv_and_input(xp, backend_name, case, seed, dtype="float64"):
    N, C, H, W, F, p, g = case
    conv = Conv2d(C, F, 3, padding=p, groups=g, rng=seed).to(backend_name, dtype)
    conv.use_winograd = False                   # the reference: im2col
    conv.params["bias"][...] = _rand(xp, (F,), seed + 1, dtype)
    return conv, _rand(xp, (N, C, H, W), seed + 2, dtype)


@pytest.mark.parametrize("w", ["F2x2_3x3", "F4x4_3x3"])
@pytest.mark.parametrize("case", CASES)
def test_forward_and_backward_match_im2col(xp, backend_name, case, w):
    conv, x = _conv_and_input(xp, backend_name, case, 3)
    p, g = case[5], case[6]
    W, b = conv.params["weight"], conv.params["bias"]
    want = conv.forward(x)
    dout = _rand(xp, want.shape, 4)
    want_dx = conv.backward(dout)
    out, cache = wg.winograd_conv2d_forward(x, W, b, p, g, TRANSFORMS[w])
    dx, dW, db = wg.winograd_conv2d_backward(dout, cache)
    assert out.shape == want.shape and dx.shape == x.shape and dW.shape == W.shape
    # The same sums in another order: float64 rounding, ~1e-16 relative (F4x4: ~1e-15).
    assert _rel(out, want) <= 1e-12
    assert _rel(dx, want_dx) <= 1e-12
    assert _rel(dW, conv.grads["weight"]) <= 1e-12
    assert _rel(db, conv.grads["bias"]) <= 1e-12
    assert None is wg.winograd_conv2d_backward(dout, cache, input_grad=False)[0]


def test_keep_tiles_gives_identical_gradients(xp, backend_name):
    """Keeping V from forward (Conv2d.cache_cols) or rebuilding it: the same numbers."""
    case = CASES[0]
    conv, x = _conv_and_input(xp, backend_name, case, 11)
    W, b = conv.params["weight"], conv.params["bias"]
    grads = []
    for keep in (False, True):
        out, cache = wg.winograd_conv2d_forward(x, W, b, case[5], case[6], keep_tiles=keep)
        assert (cache[-1] is not None) == keep
        grads.append(wg.winograd_conv2d_backward(xp.ones_like(out), cache))
    for a, b_ in zip(*grads):
        assert bool(xp.array_equal(a, b_))


def test_forward_matches_the_loops(xp, backend_name):
    case = CASES[0]
    conv, x = _conv_and_input(xp, backend_name, case, 5)
    out, _ = wg.winograd_conv2d_forward(x, conv.params["weight"], conv.params["bias"],
                                        case[5], case[6])
    want = conv2d_naive(x, conv.params["weight"], conv.params["bias"], 1, case[5], case[6])
    assert _rel(out, want) <= 1e-12


@pytest.mark.parametrize("case", CASES[:4])
def test_gradient_check(xp, backend_name, case):
    """float64, central differences (h = 1e-6).  The convolution is linear in x, W and b,
    so central differences are exact up to rounding: bound 1e-8 (measured ~1e-10)."""
    conv, x = _conv_and_input(xp, backend_name, case, 6)
    p, g = case[5], case[6]
    W, b = conv.params["weight"], conv.params["bias"]
    out, cache = wg.winograd_conv2d_forward(x, W, b, p, g)
    dout = _rand(xp, out.shape, 7)
    dx, dW, db = wg.winograd_conv2d_backward(dout, cache)

    def loss():
        return (wg.winograd_conv2d_forward(x, W, b, p, g)[0] * dout).sum()

    bound = 1e-8
    assert rel_error(dx, numerical_gradient(loss, x)) <= bound
    assert rel_error(dW, numerical_gradient(loss, W)) <= bound
    assert rel_error(db, numerical_gradient(loss, b)) <= bound


def test_float32_stays_float32_and_is_accurate(xp, backend_name):
    """An AlexNet conv4-like layer (13x13, groups 2) in float32, against float64 im2col.

    The float32 error (max relative) measured on this project's machine is ~1e-7 for
    im2col and ~2e-7 for F(2x2, 3x3) (`python -m tinyalexnet.bench_conv`); the bound
    leaves room for other BLAS libraries' orders of summation."""
    case = (2, 64, 13, 13, 32, 1, 2)
    conv, x = _conv_and_input(xp, backend_name, case, 8)
    want = conv.forward(x)
    dout = _rand(xp, want.shape, 9)
    want_dx = conv.backward(dout)
    W32, b32, x32 = (a.astype("float32") for a in (conv.params["weight"],
                                                    conv.params["bias"], x))
    out, cache = wg.winograd_conv2d_forward(x32, W32, b32, 1, 2)
    dx, dW, db = wg.winograd_conv2d_backward(dout.astype("float32"), cache)
    assert out.dtype == dx.dtype == dW.dtype == db.dtype == xp.float32
    assert _rel(out, want) <= 2e-6
    assert _rel(dx, want_dx) <= 2e-6
    assert _rel(dW, conv.grads["weight"]) <= 2e-6


# ------------------------------------------------------------------ the pieces
@pytest.mark.parametrize("shape, padding", [((2, 3, 7, 9), 1), ((1, 2, 6, 5), 0),
                                            ((2, 1, 4, 4), 2)])
def test_input_tiles_and_add_tiles_are_adjoint(xp, shape, padding):
    """<tiles(x), dd> == <x, add_tiles(dd)>: what makes dx right; and each tile is
    the padded image's 4x4 block at (2*th, 2*tw), picked by hand."""
    x = _rand(xp, shape, 10)
    d = wg.input_tiles(x, padding)
    N, C, H, W = shape
    TH = -(-(H + 2 * padding - 2) // 2)
    TW = -(-(W + 2 * padding - 2) // 2)
    assert d.shape == (4, 4, C * TH * TW * N)
    x_pad = np.zeros((N, C, 2 * TH + 2, 2 * TW + 2))
    x_pad[:, :, padding:padding + H, padding:padding + W] = backend.as_numpy(x)
    tiles = backend.as_numpy(d).reshape(4, 4, C, TH, TW, N)
    for c, th, tw, n in [(0, 0, 0, 0), (C - 1, TH - 1, TW - 1, N - 1), (0, TH - 1, 0, N - 1)]:
        block = x_pad[n, c, 2 * th:2 * th + 4, 2 * tw:2 * tw + 4]
        assert np.array_equal(tiles[:, :, c, th, tw, n], block)
    dd = _rand(xp, d.shape, 11)
    lhs = float((d * dd).sum())
    rhs = float((x * wg.add_tiles(dd, shape, padding)).sum())
    assert abs(lhs - rhs) <= 1e-12 * max(1.0, abs(lhs))


def test_transform_is_L_t_LT(xp):
    L = xp.asarray(np.random.default_rng(12).standard_normal((3, 5)))
    t = _rand(xp, (5, 5, 7), 13)
    got = backend.as_numpy(wg.transform(L, t))
    Ln, tn = backend.as_numpy(L), backend.as_numpy(t)
    for k in range(7):
        want = Ln @ tn[:, :, k] @ Ln.T
        assert np.abs(got[:, :, k] - want).max() <= 1e-13 * np.abs(want).max()


class CountingNumPy:
    """NumPy, except that ``matmul`` records the multiplications of every product."""

    def __init__(self):
        self.products = []            # (multiplications, inner dimension)

    def __getattr__(self, name):
        return getattr(np, name)

    def matmul(self, a, b, **kw):
        out = np.matmul(a, b, **kw)
        inner = a.shape[-1]
        self.products.append((out.size * inner, inner))
        return out


@pytest.mark.parametrize("case", [(2, 8, 6, 6, 4, 1, 1), (1, 6, 7, 5, 4, 0, 2),
                                  (3, 4, 13, 13, 8, 1, 2)])
def test_multiplication_count(monkeypatch, case):
    """``multiplications`` against the products the forward pass really runs, and its
    ``direct`` count against Conv2d.macs."""
    N, C, H, W, F, p, g = case
    counter = CountingNumPy()
    monkeypatch.setattr(wg, "get_array_module", lambda *a: counter)
    x = np.random.default_rng(14).standard_normal((N, C, H, W))
    conv = Conv2d(C, F, 3, padding=p, groups=g, rng=0).to(dtype="float64")
    wg.winograd_conv2d_forward(x, conv.params["weight"], conv.params["bias"], p, g)
    counts = wg.multiplications((C, H, W), F, p, g, batch=N)
    assert counts["direct"] == conv.macs((C, H, W)) * N
    assert counts["winograd"] == sum(mults for mults, _ in counter.products)
    # the element-wise stage is the one product summing over a group's channels
    assert counts["elementwise"] == sum(mults for mults, inner in counter.products
                                        if inner == C // g)
    OH, OW = H + 2 * p - 2, W + 2 * p - 2
    if OH % 2 == 0 and OW % 2 == 0:     # no overhanging tiles: exactly 36 / 16
        assert counts["direct"] / counts["elementwise"] == 2.25


# ------------------------------------------------------------------ mistakes
def test_wrong_kernel_or_channels_is_a_one_line_error():
    x = np.zeros((1, 4, 5, 5))
    with pytest.raises(ShapeError, match=r"needs 3x3 kernels, got weight shape \(2, 4, 5, 5\)"):
        wg.winograd_conv2d_forward(x, np.zeros((2, 4, 5, 5)), np.zeros(2))
    with pytest.raises(ShapeError, match=r"x \(N, 8, H, W\) expected .* got x \(1, 4, 5, 5\)"):
        wg.winograd_conv2d_forward(x, np.zeros((2, 4, 3, 3)), np.zeros(2), groups=2)


# ------------------------------------------------------------------ the switch in Conv2d
def test_conv2d_switch_applies_to_3x3_stride_1_only():
    assert Conv2d(4, 6, 3, padding=1, groups=2, rng=0).use_winograd is False   # the default
    for kernel, stride, applies in [(3, 1, True), (3, 2, False), (5, 1, False), ((3, 1), 1, False)]:
        conv = Conv2d(4, 6, kernel, stride=stride, rng=0)
        conv.use_winograd = True
        assert conv.winograd_applies() is applies, (kernel, stride)
        conv.fast = False                       # the readable path runs functional.py only
        assert conv.winograd_applies() is False


@pytest.mark.parametrize("cache_cols", [False, True])
def test_conv2d_runs_winograd_when_switched_on(xp, backend_name, monkeypatch, cache_cols):
    """Which path ran is seen from the functions called, and both give the same numbers."""
    calls = []
    for name in ("winograd_conv2d_forward", "winograd_conv2d_backward"):
        real = getattr(wg, name)
        monkeypatch.setattr(wg, name,
                            lambda *a, _real=real, _name=name, **k: calls.append(_name)
                            or _real(*a, **k))
    case = CASES[0]
    conv, x = _conv_and_input(xp, backend_name, case, 12)
    conv.cache_cols = cache_cols
    want = conv.forward(x)
    dout = _rand(xp, want.shape, 13)
    want_dx = conv.backward(dout)
    want_dW = conv.grads["weight"].copy()
    assert calls == []                                        # im2col: Winograd never called
    for g in conv.grads.values():
        g[...] = 0                                            # no stale gradient can pass
    conv.use_winograd = True
    out = conv.forward(x)
    dx = conv.backward(dout)
    assert calls == ["winograd_conv2d_forward", "winograd_conv2d_backward"]
    assert (conv._cache[2][-1] is not None) == cache_cols     # cache_cols keeps the tiles V
    assert _rel(out, want) <= 1e-12 and _rel(dx, want_dx) <= 1e-12
    assert _rel(conv.grads["weight"], want_dW) <= 1e-12
    assert _rel(conv.grads["bias"], dout.sum(axis=(0, 2, 3))) <= 1e-12
    conv.input_grad = False
    conv.forward(x)
    assert conv.backward(dout) is None
    assert _rel(conv.grads["weight"], want_dW) <= 1e-12


def test_conv2d_with_winograd_gradient_check(xp, backend_name):
    """check_layer (float64, central differences, bound 1e-6) on the Winograd path."""
    conv, x = _conv_and_input(xp, backend_name, (2, 4, 5, 7, 6, 1, 2), 14)
    conv.use_winograd = True
    result = check_layer(conv, x)
    assert result.bound == 1e-6
    assert result.passed, str(result)


def test_conv2d_winograd_backward_checks_dout(xp, backend_name):
    conv, x = _conv_and_input(xp, backend_name, CASES[1], 15)
    conv.use_winograd = True
    conv.forward(x)
    with pytest.raises(ShapeError, match="backward expected dout of shape"):
        conv.backward(_rand(xp, (1, 4, 2, 2), 16))
