"""tinyalexnet.diagnostics: each result against an independent count or a numerical gradient."""
import numpy as np
import pytest

from tinyalexnet.backend import as_numpy
from tinyalexnet.diagnostics import (dead_units, input_gradient, layer_outputs, occlusion,
                                     relative_change)
from tinyalexnet.errors import ConfigError, ShapeError
from tinyalexnet.gradcheck import numerical_gradient, rel_error
from tinyalexnet.layers import (Conv2d, Dropout, Flatten, Linear, LocalResponseNorm, MaxPool2d,
                                ReLU, Sequential)


def _network(backend_name):
    model = Sequential([("conv1", Conv2d(1, 4, 3, padding=1, rng=0)), ("relu1", ReLU()),
                        ("norm1", LocalResponseNorm(3, 0.1, 0.75, 2.0)),
                        ("pool1", MaxPool2d(3, 2)), ("flatten", Flatten()),
                        ("fc2", Linear(4 * 3 * 3, 6, rng=1)), ("relu2", ReLU()),
                        ("drop2", Dropout(0.5, seed=2)), ("fc3", Linear(6, 3, rng=3))])
    model["conv1"].input_grad = False            # as in the package's models
    return model.to(backend_name, dtype="float64")


def test_layer_outputs_in_order_and_until(backend_name, randn):
    model = _network(backend_name).eval()
    x = randn(2, 1, 7, 7, seed=1)
    outs = layer_outputs(model, x)
    assert list(outs) == list(model.layers)
    np.testing.assert_allclose(as_numpy(outs["fc3"]), as_numpy(model.forward(x)), rtol=1e-12)
    np.testing.assert_array_equal(as_numpy(outs["relu1"]), np.maximum(as_numpy(outs["conv1"]), 0))
    short = layer_outputs(model, x, until="pool1")
    assert list(short) == ["conv1", "relu1", "norm1", "pool1"]
    with pytest.raises(ConfigError, match="no layer 'fc9'"):
        layer_outputs(model, x, until="fc9")


def test_dead_units_counts_channels_and_features(backend_name, xp):
    """Channels 1 and 3 of conv1 and features 0, 2, 5 of fc2 get a bias of -1000: dead for
    any input; the other fc2 features get +10.  Channel 0 copies the input, which is positive
    in the top-left corner only, channel 2 its negative: both are alive, at some positions
    only, so a count of positions instead of channels would differ (3/4 instead of 1/2)."""
    model = _network(backend_name).eval()
    identity = np.zeros((4, 1, 3, 3))
    identity[0, 0, 1, 1], identity[2, 0, 1, 1] = 1.0, -1.0
    model["conv1"].params["weight"][...] = xp.asarray(identity)
    model["conv1"].params["bias"][...] = xp.asarray([0.0, -1000.0, 0.0, -1000.0])
    fc2_bias = np.full(6, 10.0)
    fc2_bias[[0, 2, 5]] = -1000.0
    model["fc2"].params["bias"][...] = xp.asarray(fc2_bias)
    x_host = -np.abs(np.random.default_rng(2).standard_normal((8, 1, 7, 7))) - 0.1
    x_host[:, :, :3, :3] *= -1
    x = xp.asarray(x_host)
    outs = {k: as_numpy(v) for k, v in layer_outputs(model, x).items()}
    alive_conv = [c for c in range(4) if outs["relu1"][:, c].max() > 0]
    alive_fc = [f for f in range(6) if outs["relu2"][:, f].max() > 0]
    assert alive_conv == [0, 2] and alive_fc == [1, 3, 4]         # the set-up is what we meant
    assert (outs["relu1"][:, 0].max(axis=0) > 0).sum() == 9       # channel 0: the corner only
    assert dead_units(model, x) == {"relu1": 2 / 4, "relu2": 3 / 6}


def test_dead_units_needs_every_image():
    """A unit that fires for one image of the batch only is alive."""
    model = Sequential([("fc", Linear(1, 2, rng=0)), ("relu", ReLU())]).to(dtype="float64")
    model["fc"].params["weight"][...] = [[1.0], [-1.0]]
    model["fc"].params["bias"][...] = 0.0
    assert dead_units(model, np.array([[-1.0], [-2.0], [3.0]]))["relu"] == 0.0
    assert dead_units(model, np.array([[1.0], [2.0]]))["relu"] == 0.5


def test_relative_change_by_hand(xp):
    before = {"a": xp.asarray([3.0, 4.0]), "b": xp.asarray([[1.0, 0.0], [0.0, 0.0]])}
    after = {"a": xp.asarray([3.0, 5.0]), "b": xp.asarray([[1.0, 0.0], [0.0, 2.0]])}
    change = relative_change(before, after)
    assert change == {"a": pytest.approx(1 / 5, rel=1e-15), "b": pytest.approx(2.0, rel=1e-15)}


def test_input_gradient_against_numerical_gradient(backend_name, randn, xp):
    """d logit[n, class n] / d x in float64, bound 1e-7 (no input within h of a kink, measured
    ~1e-10); the first layer's input_grad switch is restored."""
    model = _network(backend_name).eval()
    x = randn(3, 1, 7, 7, seed=3)
    classes = [2, 0, 1]
    grad = input_gradient(model, x, classes)
    assert model["conv1"].input_grad is False
    assert grad.shape == x.shape

    def score():
        logits = model.forward(x)
        return sum(logits[n, c] for n, c in enumerate(classes))

    assert rel_error(grad, numerical_gradient(score, x)) < 1e-7
    with pytest.raises(ShapeError, match="3 images but 2 classes"):
        input_gradient(model, x, [0, 1])


def test_occlusion_of_a_linear_model(xp, backend_name):
    """For logits = W x + b, covering a square with 0 removes exactly W[:, square] x[square]
    from the logits: the probabilities follow by hand."""
    rng = np.random.default_rng(4)
    model = Sequential([("flatten", Flatten()), ("fc", Linear(2 * 6 * 6, 4, rng=0))])
    model = model.to(backend_name, dtype="float64")
    x_host = rng.standard_normal((2, 2, 6, 6))
    w = as_numpy(model["fc"].params["weight"]).reshape(4, 2, 6, 6)
    b = as_numpy(model["fc"].params["bias"])
    classes = [3, 1]
    got = as_numpy(occlusion(model, xp.asarray(x_host), classes, size=3, stride=3))
    assert got.shape == (2, 2, 2)                 # the square's corner at 0 and 3, each way
    for n in range(2):
        for r, top in enumerate((0, 3)):
            for c, left in enumerate((0, 3)):
                kept = x_host[n].copy()
                kept[:, top:top + 3, left:left + 3] = 0.0
                logits = (w * kept).sum(axis=(1, 2, 3)) + b
                p = np.exp(logits - logits.max())
                assert got[n, r, c] == pytest.approx(p[classes[n]] / p.sum(), rel=1e-12)
    with pytest.raises(ConfigError, match="must fit"):
        occlusion(model, xp.asarray(x_host), classes, size=7)
