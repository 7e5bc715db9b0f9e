"""BatchNorm2d: forward against a per-channel loop, gradient checks in both modes, the
running averages, train/eval, the state_dict under PyTorch's names, and (when torch is
installed) torch.nn.BatchNorm2d itself.

Gradient checks: float64, central differences with h = 1e-6; batch normalisation is
smooth (no kinks), so the bound is 1e-7 (a correct backward gives about 1e-9).
"""
import numpy as np
import pytest

from tinyalexnet import init
from tinyalexnet.backend import as_numpy
from tinyalexnet.errors import ConfigError, ShapeError
from tinyalexnet.gradcheck import check_layer
from tinyalexnet.layers import BatchNorm2d, Conv2d, ReLU, Sequential

BOUND = 1e-7
SHAPE = (3, 4, 5, 2)        # odd sizes: a swapped axis shows


def _loop_forward(x, gamma, beta, eps, mean=None, var=None):
    """The equation, one channel at a time, on the host: an independent count."""
    x = as_numpy(x)
    out = np.empty_like(x)
    for c in range(x.shape[1]):
        values = x[:, c].ravel()
        m = values.sum() / values.size if mean is None else mean[c]
        v = ((values - m) ** 2).sum() / values.size if var is None else var[c]
        out[:, c] = gamma[c] * (x[:, c] - m) / np.sqrt(v + eps) + beta[c]
    return out


def _layer(xp, C=4, seed=1):
    layer = BatchNorm2d(C).to("cupy" if xp.__name__ != "numpy" else "numpy", "float64")
    rng = np.random.default_rng(seed)
    layer.params["weight"][...] = xp.asarray(rng.uniform(0.5, 2.0, C))
    layer.params["bias"][...] = xp.asarray(rng.standard_normal(C))
    return layer


def test_forward_in_training_mode_is_the_batch_standardised(xp, randn):
    x = randn(*SHAPE, scale=3.0) + 5.0
    layer = _layer(xp)
    gamma, beta = as_numpy(layer.params["weight"]), as_numpy(layer.params["bias"])
    out = layer.forward(x)
    np.testing.assert_allclose(as_numpy(out), _loop_forward(x, gamma, beta, 1e-5),
                               rtol=1e-12, atol=1e-12)
    # with gamma 1, beta 0 every channel has mean 0 and variance 1 (up to eps)
    plain = BatchNorm2d(4).to(dtype="float64").to("numpy")
    y = plain.forward(as_numpy(x))
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=(0, 2, 3)), 1, atol=1e-4)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_gradients(xp, randn, training):
    layer = _layer(xp)
    layer.buffers["running_mean"][...] = xp.asarray([0.5, -1.0, 2.0, 0.0])
    layer.buffers["running_var"][...] = xp.asarray([1.5, 0.3, 4.0, 1.0])
    layer.train(training)
    result = check_layer(layer, randn(*SHAPE, seed=2, scale=2.0) + 1.0, bound=BOUND)
    assert result.passed, str(result)
    assert set(result.errors) == {"x", "weight", "bias"}


def test_the_backward_of_fixed_statistics_would_fail_the_training_check():
    """The two extra terms matter: training's dx without them is far from the numerical one."""
    from tinyalexnet.layers import functional
    from tinyalexnet.gradcheck import numerical_gradient, rel_error
    x = np.random.default_rng(3).standard_normal(SHAPE)
    gamma, beta = np.ones(4), np.zeros(4)
    dout = np.random.default_rng(4).standard_normal(SHAPE)
    mean, var = functional.batch_statistics(x)
    wrong, _, _ = functional.batchnorm_backward(dout, x, gamma, mean, var, batch_stats=False)

    def loss():
        m, v = functional.batch_statistics(x)
        return (functional.batchnorm_forward(x, gamma, beta, m, v) * dout).sum()
    assert rel_error(wrong, numerical_gradient(loss, x)) > 0.1


def test_running_averages_follow_pytorchs_rule(xp, randn):
    layer = _layer(xp)
    mean, var = np.zeros(4), np.ones(4)
    for step in range(3):
        x = randn(*SHAPE, seed=10 + step, scale=2.0) + step
        layer.forward(x)
        host = as_numpy(x)
        M = host.size // host.shape[1]
        for c in range(4):                                   # by hand, channel by channel
            values = host[:, c].ravel()
            m = values.sum() / M
            unbiased = ((values - m) ** 2).sum() / (M - 1)
            mean[c] = 0.9 * mean[c] + 0.1 * m
            var[c] = 0.9 * var[c] + 0.1 * unbiased
    np.testing.assert_allclose(as_numpy(layer.buffers["running_mean"]), mean, rtol=1e-12)
    np.testing.assert_allclose(as_numpy(layer.buffers["running_var"]), var, rtol=1e-12)
    assert int(as_numpy(layer.buffers["num_batches_tracked"])) == 3


def test_eval_mode_uses_the_running_averages_and_changes_nothing(xp, randn):
    layer = _layer(xp)
    layer.forward(randn(*SHAPE, seed=20, scale=2.0))
    before = {k: as_numpy(v).copy() for k, v in layer.buffers.items()}
    layer.eval()
    x = randn(*SHAPE, seed=21)
    out = layer.forward(x)
    gamma, beta = as_numpy(layer.params["weight"]), as_numpy(layer.params["bias"])
    want = _loop_forward(x, gamma, beta, 1e-5, before["running_mean"], before["running_var"])
    np.testing.assert_allclose(as_numpy(out), want, rtol=1e-12, atol=1e-12)
    for k, v in layer.buffers.items():
        np.testing.assert_array_equal(as_numpy(v), before[k])
    # one image alone gives the same output as inside its batch: no batch dependence
    np.testing.assert_allclose(as_numpy(layer.forward(x[:1])), as_numpy(out[:1]), rtol=1e-12)


def test_state_dict_has_pytorchs_names_and_order():
    model = Sequential([("conv1", Conv2d(1, 3, 3, rng=0)), ("bn1", BatchNorm2d(3)),
                        ("relu1", ReLU())])
    assert list(model.state_dict()) == [
        "conv1.weight", "conv1.bias", "bn1.weight", "bn1.bias", "bn1.running_mean",
        "bn1.running_var", "bn1.num_batches_tracked"]
    # the optimizer sees parameters only
    assert [n for n, _, _ in model.named_parameters()] == [
        "conv1.weight", "conv1.bias", "bn1.weight", "bn1.bias"]
    assert model["bn1"].buffers["num_batches_tracked"].dtype == np.int64
    model.to(dtype="float64")
    assert model["bn1"].buffers["running_var"].dtype == np.float64
    assert model["bn1"].buffers["num_batches_tracked"].dtype == np.int64   # a count stays int


def test_state_dict_round_trip():
    a, b = BatchNorm2d(3), BatchNorm2d(3)
    a.forward(np.random.default_rng(0).standard_normal((4, 3, 2, 2)).astype(np.float32))
    b.load_state_dict({k: v.copy() for k, v in a.state_dict().items()})
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(b.state_dict()[k], v)
    assert int(b.buffers["num_batches_tracked"]) == 1
    with pytest.raises(ShapeError, match="running_mean"):
        b.load_state_dict({**a.state_dict(), "running_mean": np.zeros(4, np.float32)})


def test_init_model_leaves_the_scale_at_one():
    model = Sequential([("conv1", Conv2d(1, 3, 3, draw=False)), ("bn1", BatchNorm2d(3)),
                        ("relu1", ReLU())])
    for scheme in ("paper", "he"):
        init.init_model(model, scheme, seed=0)
        np.testing.assert_array_equal(model["bn1"].params["weight"], 1.0)
        np.testing.assert_array_equal(model["bn1"].params["bias"], 0.0)
        assert float(abs(model["conv1"].params["weight"]).max()) > 0      # the conv was drawn


def test_settings_and_inputs_are_checked():
    with pytest.raises(ConfigError, match="BatchNorm2d: num_features"):
        BatchNorm2d(0)
    with pytest.raises(ConfigError, match="BatchNorm2d: eps"):
        BatchNorm2d(3, eps=0)
    with pytest.raises(ShapeError, match="expected 3 channels"):
        BatchNorm2d(3).forward(np.zeros((2, 4, 2, 2), np.float32))
    with pytest.raises(ShapeError, match="more than one value per channel"):
        BatchNorm2d(3).forward(np.zeros((1, 3, 1, 1), np.float32))
    one = BatchNorm2d(3).eval()
    assert one.forward(np.zeros((1, 3, 1, 1), np.float32)).shape == (1, 3, 1, 1)


# ------------------------------------------------------------------ against PyTorch
def test_matches_torch_batchnorm2d():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    ours = BatchNorm2d(4, eps=1e-5, momentum=0.1).to(dtype="float64")
    ours.params["weight"][...] = rng.uniform(0.5, 2, 4)
    ours.params["bias"][...] = rng.standard_normal(4)
    theirs = torch.nn.BatchNorm2d(4, eps=1e-5, momentum=0.1).double()
    theirs.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in ours.state_dict().items()})
    for step in range(3):                                    # training: outputs, gradients, stats
        x = rng.standard_normal(SHAPE) * 2 + step
        dout = rng.standard_normal(SHAPE)
        out = ours.forward(x)
        dx = ours.backward(dout)
        tx = torch.from_numpy(x).requires_grad_(True)
        tout = theirs(tx)
        tout.backward(torch.from_numpy(dout))
        np.testing.assert_allclose(out, tout.detach().numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(ours.grads["weight"], theirs.weight.grad.numpy(), rtol=1e-9)
        np.testing.assert_allclose(ours.grads["bias"], theirs.bias.grad.numpy(), rtol=1e-9)
        theirs.zero_grad()
    state = theirs.state_dict()
    assert list(state) == list(ours.state_dict())
    for k, v in ours.state_dict().items():
        np.testing.assert_allclose(np.asarray(v), state[k].numpy(), rtol=1e-12)
    ours.eval(), theirs.eval()
    x = rng.standard_normal(SHAPE)
    np.testing.assert_allclose(ours.forward(x), theirs(torch.from_numpy(x)).detach().numpy(),
                               rtol=1e-10, atol=1e-12)
