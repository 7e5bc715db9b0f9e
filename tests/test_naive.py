"""The layers' readable maths against the slow loop references in tinyalexnet/layers/naive.py.

The references are first checked on examples small enough to work out by hand,
then the layers, on their readable path (``fast = False``: functional.py), are
compared with them on random inputs; test_fast_paths.py compares the fast path
with the readable one.  Also: col2im is the adjoint of im2col, which is what
makes conv's dx right.
"""
import numpy as np
import pytest

from tinyalexnet.backend import as_numpy
from tinyalexnet.layers import Conv2d, LocalResponseNorm, MaxPool2d
from tinyalexnet.layers.im2col import col2im, conv_output_size, im2col
from tinyalexnet.layers.naive import conv2d_naive, lrn_naive, maxpool2d_naive


# --------------------------------------------------------------------------- the references
def test_conv2d_naive_by_hand():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    w = np.ones((1, 1, 2, 2))
    y = conv2d_naive(x, w, np.array([0.5]), stride=2)
    np.testing.assert_array_equal(y[0, 0], [[10.5, 18.5], [42.5, 50.5]])
    # padding 1 around a 1x1 image with a 3x3 kernel: only the centre weight sees it
    w3 = np.arange(9.0).reshape(1, 1, 3, 3)
    assert conv2d_naive(np.full((1, 1, 1, 1), 2.0), w3, np.zeros(1), padding=1)[0, 0, 0, 0] == 8.0


def test_conv2d_naive_groups_by_hand():
    # Two groups of one channel each: output f sees only input channel f.
    x = np.stack([np.ones((2, 2)), 10 * np.ones((2, 2))])[None]          # (1, 2, 2, 2)
    w = np.ones((2, 1, 2, 2))
    y = conv2d_naive(x, w, np.zeros(2), groups=2)
    np.testing.assert_array_equal(y.ravel(), [4.0, 40.0])


def test_maxpool2d_naive_by_hand():
    x = np.array([[1, 5, 2, 0, 3],
                  [4, 0, 9, 1, 1],
                  [0, 2, 3, 8, 2]], dtype=float)[None, None]
    np.testing.assert_array_equal(maxpool2d_naive(x, 3, 2)[0, 0], [[9, 9]])
    np.testing.assert_array_equal(maxpool2d_naive(x, 2, 1)[0, 0],
                                  [[5, 9, 9, 3], [4, 9, 9, 8]])


def test_lrn_naive_by_hand():
    x = np.array([1.0, 2.0, 3.0]).reshape(1, 3, 1, 1)
    y = lrn_naive(x, size=3, alpha=0.5, beta=1.0, k=1.0)
    # D[0] = 1 + 0.5(1+4), D[1] = 1 + 0.5(1+4+9), D[2] = 1 + 0.5(4+9)
    np.testing.assert_allclose(y.ravel(), [1 / 3.5, 2 / 8.0, 3 / 7.5], rtol=1e-15)


# --------------------------------------------------------------------------- readable vs naive
CONV_CASES = [
    # in, out, kernel, stride, padding, groups, input shape
    (3, 4, 3, 1, 0, 1, (2, 3, 6, 6)),
    (4, 6, (3, 2), 2, 1, 2, (2, 4, 9, 8)),
    (6, 9, 3, 2, 1, 3, (1, 6, 7, 5)),
    (4, 4, 3, 1, 1, 4, (2, 4, 5, 5)),
    (3, 8, 11, 4, 0, 1, (1, 3, 27, 31)),   # conv1's kernel and stride
    (4, 8, 5, 1, 2, 2, (2, 4, 7, 7)),      # conv2's kernel, padding and groups
    (2, 2, 2, 3, 0, 1, (1, 2, 8, 7)),      # stride > kernel
]


@pytest.mark.parametrize("cin,cout,k,s,p,g,shape", CONV_CASES)
def test_conv2d_matches_naive(backend_name, randn, cin, cout, k, s, p, g, shape):
    layer = Conv2d(cin, cout, k, stride=s, padding=p, groups=g, rng=0).to(backend_name, "float64")
    layer.fast = False
    rng = np.random.default_rng(1)
    layer.load_state_dict({"bias": rng.standard_normal(cout),
                           "weight": rng.standard_normal(layer.params["weight"].shape)})
    x = randn(*shape, seed=2)
    readable = as_numpy(layer.forward(x))
    slow = conv2d_naive(x, layer.params["weight"], layer.params["bias"], s, p, g)
    assert readable.shape == slow.shape
    np.testing.assert_allclose(readable, slow, rtol=1e-12, atol=1e-12)


def test_conv2d_float32_matches_float64_naive(xp, backend_name):
    """The path training runs (fast, float32) against the loops in float64."""
    rng = np.random.default_rng(3)
    layer = Conv2d(4, 6, 3, stride=2, padding=1, groups=2, rng=0).to(backend_name)
    x = rng.standard_normal((2, 4, 9, 9))
    fast = as_numpy(layer.forward(xp.asarray(x, dtype="float32")))
    slow = conv2d_naive(x.astype("float32").astype("float64"),
                        as_numpy(layer.params["weight"]).astype("float64"),
                        as_numpy(layer.params["bias"]).astype("float64"), 2, 1, 2)
    assert fast.dtype == np.float32
    np.testing.assert_allclose(fast, slow, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k,s,shape", [(3, 2, (2, 3, 9, 9)), (3, 2, (1, 2, 8, 11)),
                                       (2, 2, (2, 2, 6, 6)), (3, 1, (1, 3, 6, 5)),
                                       (2, 3, (2, 2, 9, 7)), (5, 2, (1, 2, 11, 9))])
def test_maxpool_matches_naive(randn, k, s, shape):
    x = randn(*shape, seed=4)
    layer = MaxPool2d(k, s)
    layer.fast = False
    np.testing.assert_array_equal(as_numpy(layer.forward(x)), maxpool2d_naive(x, k, s))


@pytest.mark.parametrize("size,alpha,beta,k,shape,scale", [
    (5, 1e-4, 0.75, 2.0, (2, 9, 4, 4), 30.0),    # the paper's constants
    (5, 0.1, 0.75, 2.0, (2, 7, 3, 5), 1.0),
    (3, 0.3, 0.5, 1.0, (1, 4, 2, 2), 1.0),
    (7, 0.1, 0.75, 2.0, (1, 3, 2, 3), 1.0),      # window wider than the channels
])
def test_lrn_matches_naive(randn, size, alpha, beta, k, shape, scale):
    x = randn(*shape, seed=5, scale=scale)
    layer = LocalResponseNorm(size, alpha, beta, k)
    layer.fast = False
    readable = as_numpy(layer.forward(x))
    np.testing.assert_allclose(readable, lrn_naive(x, size, alpha, beta, k), rtol=1e-13, atol=1e-15)


# --------------------------------------------------------------------------- im2col / col2im
IM2COL_CASES = [(3, 3, 1, 0), (3, 2, 2, 1), (5, 5, 1, 2), (2, 2, 3, 0), (11, 11, 4, 0),
                (1, 1, 1, 0), (3, 3, 2, 3)]


@pytest.mark.parametrize("kh,kw,s,p", IM2COL_CASES)
def test_col2im_is_the_adjoint_of_im2col(randn, kh, kw, s, p):
    """<col2im(c), x> == <c, im2col(x)> for every x and c: col2im is im2col's transpose."""
    shape = (2, 3, 13, 12)
    x = randn(*shape, seed=6)
    cols = im2col(x, kh, kw, s, p)
    c = randn(*cols.shape, seed=7)
    lhs = float((col2im(c, shape, kh, kw, s, p) * x).sum())
    rhs = float((c * cols).sum())
    assert abs(lhs - rhs) <= 1e-12 * (abs(lhs) + abs(rhs))


@pytest.mark.parametrize("kh,kw,s,p", IM2COL_CASES)
def test_im2col_columns_are_the_windows(randn, kh, kw, s, p):
    N, C, H, W = 2, 3, 13, 12
    x = randn(N, C, H, W, seed=8)
    OH, OW = conv_output_size(H, kh, s, p), conv_output_size(W, kw, s, p)
    cols = as_numpy(im2col(x, kh, kw, s, p))
    assert cols.shape == (C * kh * kw, N * OH * OW)
    padded = np.pad(as_numpy(x), ((0, 0), (0, 0), (p, p), (p, p)))
    rng = np.random.default_rng(9)
    for _ in range(20):   # spot-check columns: column n*OH*OW + oh*OW + ow is window (n, oh, ow)
        n, oh, ow = rng.integers(N), rng.integers(OH), rng.integers(OW)
        window = padded[n, :, oh * s:oh * s + kh, ow * s:ow * s + kw]
        np.testing.assert_array_equal(cols[:, n * OH * OW + oh * OW + ow], window.ravel())
