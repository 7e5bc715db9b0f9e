"""Gradient checks of every layer, in float64, against central differences.

Each check compares backward() with numerical gradients of L = sum(forward(x) * dout)
for the input and for every parameter (tinyalexnet.gradcheck.check_layer), and
states its bound.  Two kinds of step h are used:

* layers that are linear in each tensor (Conv2d and Linear in x and in W,
  Dropout with a fixed mask, Flatten, ZeroPad2d) and piecewise-linear layers fed
  inputs far from their kinks (ReLU, MaxPool2d): a central difference is exact
  up to rounding at any h, so a large h = 1e-3 keeps rounding small and the
  bound can be 1e-9 (measured errors are ~1e-13);
* smooth non-linear layers (LocalResponseNorm, the loss): h = 1e-6, bound 1e-7
  (measured errors are ~1e-10).

Conv2d, MaxPool2d and LocalResponseNorm have two paths, fast.py's (the default)
and functional.py's readable one (``fast = False``): both are checked here, and
nowhere else (test_fast_paths.py compares the two paths with each other).
"""
import numpy as np
import pytest

from tinyalexnet.backend import as_numpy
from tinyalexnet.errors import StateError
from tinyalexnet.gradcheck import check_layer, check_loss
from tinyalexnet.layers import (BatchNorm2d, Conv2d, Dropout, Flatten, Linear, LocalResponseNorm,
                                MaxPool2d, ReLU, Sequential, SoftmaxCrossEntropy, ZeroPad2d)

LINEAR_H, LINEAR_BOUND = 1e-3, 1e-9    # exact-up-to-rounding cases (see the module docstring)
SMOOTH_H, SMOOTH_BOUND = 1e-6, 1e-7    # smooth non-linear layers


@pytest.fixture(params=[True, False], ids=["fast", "readable"])
def fast(request):
    """Run a two-path layer on fast.py's version and on functional.py's."""
    return request.param


def _f64(layer, backend_name):
    return layer.to(backend_name, dtype="float64")


def _set_random_params(layer, seed):
    """Non-zero biases too, so that a bias gradient summed over the wrong axes shows."""
    rng = np.random.default_rng(seed)
    layer.load_state_dict({k: rng.standard_normal(p.shape) for k, p in layer.state_dict().items()})


def _assert_checked(result, names):
    """Every tensor in ``names`` was checked, and all passed."""
    assert set(result.errors) == set(names), result
    assert result.passed, result


# --------------------------------------------------------------------------- Conv2d
CONV_CASES = [
    # in, out, kernel, stride, padding, groups, input shape
    (3, 4, 3, 1, 0, 1, (2, 3, 5, 5)),            # plain
    (4, 6, (3, 2), 2, 1, 2, (2, 4, 7, 6)),       # groups 2, non-square kernel, stride 2, padding
    (6, 6, 3, 2, 1, 3, (1, 6, 5, 7)),            # groups 3, batch 1, non-square input
    (4, 8, 2, 1, 0, 4, (2, 4, 4, 5)),            # groups 4 (one input channel per group)
    (3, 5, 5, 3, 2, 1, (1, 3, 9, 8)),            # stride 3, padding 2, odd sizes, windows left over
    (2, 3, 1, 1, 0, 1, (2, 2, 3, 3)),            # 1x1 kernel
    (2, 2, (4, 3), 1, 0, 2, (3, 2, 4, 3)),       # kernel as large as the input: 1x1 output
    (2, 4, 3, 2, 2, 2, (1, 2, 2, 3)),            # padding larger than needed, tiny input
]


@pytest.mark.parametrize("cin,cout,k,s,p,g,shape", CONV_CASES)
def test_conv2d_gradients(backend_name, randn, fast, cin, cout, k, s, p, g, shape):
    layer = _f64(Conv2d(cin, cout, k, stride=s, padding=p, groups=g, rng=0), backend_name)
    layer.fast = fast
    _set_random_params(layer, seed=1)
    result = check_layer(layer, randn(*shape, seed=2), h=LINEAR_H, bound=LINEAR_BOUND)
    _assert_checked(result, ["x", "weight", "bias"])


def test_conv2d_without_input_grad_still_fills_param_grads(backend_name, randn, fast):
    layer = _f64(Conv2d(3, 4, 3, padding=1, rng=0), backend_name)
    layer.fast = fast
    layer.input_grad = False                      # what a model's first layer does
    result = check_layer(layer, randn(2, 3, 5, 4), h=LINEAR_H, bound=LINEAR_BOUND)
    _assert_checked(result, ["weight", "bias"])   # no dx to check, the rest still right


# --------------------------------------------------------------------------- ReLU
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 7), (5,), (3, 2, 1, 1)])
def test_relu_gradients(distinct, shape):
    # Values at least 0.005 from 0, h = 1e-3: no difference crosses the kink.
    result = check_layer(ReLU(), distinct(*shape, seed=3), h=LINEAR_H, bound=LINEAR_BOUND)
    _assert_checked(result, ["x"])


def test_relu_gradient_is_zero_for_negative_inputs(xp, distinct):
    x = distinct(2, 3, 4)
    layer = ReLU()
    layer.forward(x)
    dx = as_numpy(layer.backward(xp.ones_like(x)))
    np.testing.assert_array_equal(dx, (as_numpy(x) > 0).astype(float))


# --------------------------------------------------------------------------- LocalResponseNorm
LRN_CASES = [
    # size, alpha, beta, k, input shape, input scale
    (5, 0.1, 0.75, 2.0, (2, 7, 3, 4), 1.0),      # large alpha: the normalisation matters
    (3, 0.1, 0.75, 1.0, (1, 5, 2, 3), 1.0),      # k = 1, batch 1
    (5, 0.5, 0.5, 2.0, (2, 6, 2, 2), 1.0),       # other beta
    (7, 0.1, 0.75, 2.0, (1, 4, 3, 2), 1.0),      # window wider than the channels
    (1, 0.1, 0.75, 2.0, (2, 3, 2, 2), 1.0),      # window of one channel
    (5, 1e-4, 0.75, 2.0, (2, 8, 3, 3), 30.0),    # the paper's constants, ReLU-sized activations
]


@pytest.mark.parametrize("size,alpha,beta,k,shape,scale", LRN_CASES)
def test_lrn_gradients(randn, fast, size, alpha, beta, k, shape, scale):
    layer = LocalResponseNorm(size, alpha, beta, k)
    layer.fast = fast
    x = randn(*shape, seed=4, scale=scale)
    # The case is only a test of the normalisation if the energy term changes the output:
    # compare with dividing by k^beta alone.
    unnormalised = as_numpy(x) / k ** beta
    change = np.abs(as_numpy(layer.forward(x)) - unnormalised).max() / np.abs(unnormalised).max()
    assert change > 0.01
    result = check_layer(layer, x, h=SMOOTH_H, bound=SMOOTH_BOUND)
    _assert_checked(result, ["x"])


# --------------------------------------------------------------------------- MaxPool2d
POOL_CASES = [
    # kernel, stride, input shape
    (3, 2, (2, 3, 7, 7)),        # the paper's overlapping pool
    (3, 2, (1, 2, 9, 6)),        # non-square, a column the windows never reach
    (2, 2, (2, 2, 6, 4)),        # non-overlapping
    (3, 1, (1, 2, 5, 6)),        # stride 1: heavy overlap
    (2, 3, (2, 1, 8, 7)),        # stride > kernel: pixels no window sees
    (1, 1, (1, 2, 3, 3)),        # identity
    (3, 2, (1, 1, 3, 3)),        # one window
]


@pytest.mark.parametrize("k,s,shape", POOL_CASES)
def test_maxpool_gradients(distinct, fast, k, s, shape):
    # Distinct values 0.01 apart and h = 1e-3: no perturbation changes an arg-max.
    layer = MaxPool2d(k, s)
    layer.fast = fast
    result = check_layer(layer, distinct(*shape, seed=5), h=LINEAR_H, bound=LINEAR_BOUND)
    _assert_checked(result, ["x"])


def test_maxpool_routes_ties_to_one_position(xp, fast):
    # A constant input is all ties: each window's gradient must go to exactly one
    # pixel (the first in row-major order), not be copied to all nine.
    x = xp.ones((1, 1, 5, 5))
    layer = MaxPool2d(3, 2)
    layer.fast = fast
    layer.forward(x)
    dx = as_numpy(layer.backward(xp.ones((1, 1, 2, 2))))
    assert dx.sum() == 4.0
    expected = np.zeros((5, 5))
    for oh in range(2):
        for ow in range(2):
            expected[2 * oh, 2 * ow] += 1.0
    np.testing.assert_array_equal(dx[0, 0], expected)


# --------------------------------------------------------------------------- Dropout
@pytest.mark.parametrize("p,shape", [(0.5, (4, 10)), (0.2, (2, 3, 4, 5)), (0.9, (1, 30))])
def test_dropout_gradients_train(randn, p, shape):
    layer = Dropout(p, seed=7)
    x = randn(*shape, seed=6)
    out = as_numpy(layer.forward(x))
    assert 0 < (out == 0).sum() < out.size        # some units dropped, some kept
    layer.calls = 0                               # check the same mask the test looked at
    result = check_layer(layer, x, h=LINEAR_H, bound=LINEAR_BOUND)
    _assert_checked(result, ["x"])


@pytest.mark.parametrize("shape", [(4, 10), (1, 2, 3, 3)])
def test_dropout_gradients_eval(randn, shape):
    layer = Dropout(0.5).eval()
    x = randn(*shape, seed=8)
    np.testing.assert_array_equal(as_numpy(layer.forward(x)), as_numpy(x))
    result = check_layer(layer, x, h=LINEAR_H, bound=LINEAR_BOUND)
    _assert_checked(result, ["x"])


# --------------------------------------------------------------------------- Flatten, ZeroPad2d
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 7, 1, 3), (3, 4)])
def test_flatten_gradients(randn, shape):
    result = check_layer(Flatten(), randn(*shape, seed=9), h=LINEAR_H, bound=LINEAR_BOUND)
    _assert_checked(result, ["x"])


@pytest.mark.parametrize("p,shape", [(1, (2, 3, 4, 5)), (2, (1, 1, 3, 2)), (0, (2, 2, 2, 2))])
def test_zeropad_gradients(randn, p, shape):
    layer = ZeroPad2d(p)
    out = layer.forward(randn(*shape, seed=10))
    assert out.shape == shape[:2] + (shape[2] + 2 * p, shape[3] + 2 * p)
    result = check_layer(layer, randn(*shape, seed=10), h=LINEAR_H, bound=LINEAR_BOUND)
    _assert_checked(result, ["x"])


# --------------------------------------------------------------------------- Linear
@pytest.mark.parametrize("fin,fout,batch", [(7, 5, 3), (1, 1, 1), (12, 3, 1), (4, 9, 6)])
def test_linear_gradients(backend_name, randn, fin, fout, batch):
    layer = _f64(Linear(fin, fout, rng=0), backend_name)
    _set_random_params(layer, seed=11)
    result = check_layer(layer, randn(batch, fin, seed=12), h=LINEAR_H, bound=LINEAR_BOUND)
    _assert_checked(result, ["x", "weight", "bias"])


# --------------------------------------------------------------------------- SoftmaxCrossEntropy
@pytest.mark.parametrize("n,k,scale", [(4, 5, 1.0), (1, 3, 1.0), (6, 10, 5.0), (3, 2, 0.1)])
def test_softmax_cross_entropy_gradients(xp, randn, n, k, scale):
    labels = xp.asarray(np.random.default_rng(13).integers(0, k, n))
    result = check_loss(SoftmaxCrossEntropy(), randn(n, k, seed=14, scale=scale), labels,
                        h=SMOOTH_H, bound=SMOOTH_BOUND)
    _assert_checked(result, ["logits"])


def test_softmax_cross_entropy_backward_scales_with_dout(xp, randn):
    loss = SoftmaxCrossEntropy()
    loss.forward(randn(3, 4), xp.asarray([0, 3, 1]))
    np.testing.assert_allclose(as_numpy(loss.backward(2.5)), 2.5 * as_numpy(loss.backward()),
                               rtol=1e-15)


def test_softmax_cross_entropy_keeps_the_device_labels_and_backward_gives_new_arrays(xp):
    logits = xp.asarray(np.random.default_rng(3).standard_normal((4, 3)).astype(np.float32))
    labels = np.array([0, 2, 1, 2])                        # on the host, as the trainer has them
    loss = SoftmaxCrossEntropy()
    with pytest.raises(StateError, match="before forward"):
        loss.labels
    loss.forward(logits, labels)
    assert type(loss.labels) is type(logits) and as_numpy(loss.labels).tolist() == [0, 2, 1, 2]
    once = loss.backward()
    twice = loss.backward(xp.asarray(2.0))                 # a float64 dout: float32 out
    assert twice.dtype == np.float32 and twice is not once
    np.testing.assert_array_equal(as_numpy(twice), 2 * as_numpy(once))
    once[...] = 0                                          # the caller's array, not the layer's
    assert float(abs(loss.backward()).sum()) > 0


def test_softmax_cross_entropy_value(xp, randn):
    logits = randn(5, 4, seed=15)
    labels = np.array([0, 3, 1, 1, 2])
    z = as_numpy(logits)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    expected = -np.log(p[np.arange(5), labels]).mean()
    loss = SoftmaxCrossEntropy()
    value = loss.forward(logits, xp.asarray(labels))
    assert value.shape == ()
    assert abs(float(value) - expected) < 1e-14
    np.testing.assert_allclose(as_numpy(loss.probs), p, rtol=1e-13)
    # All-equal logits: every class has probability 1/K, the loss is log K.
    assert abs(float(loss.forward(xp.zeros((3, 7)), xp.asarray([0, 1, 6]))) - np.log(7)) < 1e-14


def test_softmax_cross_entropy_is_stable_for_huge_logits(xp):
    logits = xp.asarray([[1000.0, 0.0, -1000.0], [0.0, 800.0, 800.0]])
    loss = SoftmaxCrossEntropy()
    value = float(loss.forward(logits, xp.asarray([0, 1])))
    # Row 1: p(label) = 1, loss 0.  Row 2: two equal winners, loss log 2.  Mean: log(2) / 2.
    assert abs(value - np.log(2) / 2) < 1e-12
    grad = as_numpy(loss.backward())
    assert np.isfinite(grad).all()
    np.testing.assert_allclose(grad, [[0, 0, 0], [0, -0.25, 0.25]], atol=1e-15)


# --------------------------------------------------------------------------- Sequential
def test_sequential_gradients(backend_name, randn):
    model = _f64(Sequential(Linear(6, 5, rng=0), ReLU(), Linear(5, 4, rng=1)), backend_name)
    _set_random_params(model, seed=16)
    result = check_layer(model, randn(3, 6, seed=17), h=SMOOTH_H, bound=SMOOTH_BOUND)
    _assert_checked(result, ["x", "0.weight", "0.bias", "2.weight", "2.bias"])


def test_sequential_backward_runs_layers_in_reverse(xp):
    order = []

    class Tap(ReLU):
        def __init__(self, tag):
            super().__init__()
            self.tag = tag

        def forward(self, x):
            order.append(("f", self.tag))
            return super().forward(x)

        def backward(self, dout):
            order.append(("b", self.tag))
            return super().backward(dout)

    model = Sequential(Tap(1), Tap(2), Tap(3))
    model.forward(xp.ones((2, 3)))
    model.backward(xp.ones((2, 3)))
    assert order == [("f", 1), ("f", 2), ("f", 3), ("b", 3), ("b", 2), ("b", 1)]


# --------------------------------------------------------------------------- shared behaviour
LAYERS_WITH_PARAMS = [
    (lambda: Conv2d(3, 4, 3, padding=1, groups=1, rng=0), (2, 3, 5, 5)),
    (lambda: Linear(6, 4, rng=0), (3, 6)),
    (lambda: BatchNorm2d(3), (2, 3, 4, 4)),
]


@pytest.mark.parametrize("make,shape", LAYERS_WITH_PARAMS)
def test_backward_overwrites_grads_instead_of_adding(backend_name, randn, make, shape):
    layer = _f64(make(), backend_name)
    x = randn(*shape)
    out = layer.forward(x)
    dout = randn(*out.shape, seed=1)
    layer.backward(dout)
    first = {k: as_numpy(g).copy() for k, g in layer.grads.items()}
    layer.backward(dout)
    for k, g in layer.grads.items():
        np.testing.assert_array_equal(as_numpy(g), first[k])


ALL_LAYERS = [
    (lambda: Conv2d(3, 4, 3, stride=2, padding=1, groups=1, rng=0), (2, 3, 6, 5)),
    (lambda: ReLU(), (2, 3, 4, 4)),
    (lambda: LocalResponseNorm(5, 1e-4, 0.75, 2.0), (2, 6, 4, 4)),
    (lambda: BatchNorm2d(6), (2, 6, 4, 4)),
    (lambda: MaxPool2d(3, 2), (2, 3, 7, 7)),
    (lambda: Dropout(0.5), (2, 10)),
    (lambda: Flatten(), (2, 3, 2, 2)),
    (lambda: Linear(6, 4, rng=0), (3, 6)),
    (lambda: ZeroPad2d(2), (2, 3, 4, 4)),
]


@pytest.mark.parametrize("make,shape", ALL_LAYERS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_layers_keep_the_dtype(xp, backend_name, make, shape, dtype):
    """float32 (training) and float64 (gradient checks) both stay what they are, on each path."""
    layer = make().to(backend_name, dtype=dtype)
    x = xp.asarray(np.random.default_rng(0).standard_normal(shape), dtype=dtype)
    for fast in ((True, False) if hasattr(layer, "fast") else (None,)):
        layer.fast = fast
        out = layer.forward(x)
        assert out.dtype == dtype
        dx = layer.backward(xp.ones(out.shape, dtype=dtype))
        assert dx.dtype == dtype and dx.shape == shape
        for g in layer.grads.values():
            assert g.dtype == dtype
