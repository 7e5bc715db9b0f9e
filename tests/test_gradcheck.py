"""The gradient checker itself: it must pass right gradients and catch wrong ones."""
import numpy as np
import pytest

from tinyalexnet.backend import as_numpy
from tinyalexnet.gradcheck import (GradCheckResult, check_function, check_layer, check_loss,
                                   check_model, numerical_gradient, rel_error)
from tinyalexnet.layers import (Conv2d, Dropout, Flatten, Linear, MaxPool2d, ReLU, Sequential,
                                SoftmaxCrossEntropy)


def test_rel_error_values(xp):
    a = xp.asarray([1.0, 2.0])
    assert rel_error(a, a) == 0.0
    assert rel_error(a, -a) == 1.0                                   # unrelated: about 1
    assert rel_error(a, xp.asarray([1.0, 2.5])) == pytest.approx(0.5 / 4.5, rel=1e-15)
    assert rel_error(xp.zeros(3), xp.zeros(3)) == 0.0                # no division by zero
    assert rel_error(xp.zeros((0,)), xp.zeros((0,))) == 0.0
    assert rel_error(xp.zeros(2), xp.asarray([0.0, 1e-20])) == pytest.approx(1e-8)
    assert np.isnan(rel_error(a, xp.asarray([1.0, np.nan])))         # never silently passes
    with pytest.raises(ValueError, match=r"\(2,\) vs \(3,\)"):
        rel_error(a, xp.zeros(3))


def test_numerical_gradient_of_a_known_function(xp):
    x = xp.asarray(np.random.default_rng(0).standard_normal((3, 4)))
    before = as_numpy(x).copy()
    grad = numerical_gradient(lambda: (x ** 3).sum() + (x[0] * x[1]).sum(), x, h=1e-5)
    expected = 3 * before ** 2
    expected[0] += before[1]
    expected[1] += before[0]
    assert rel_error(as_numpy(grad), expected) < 1e-9
    np.testing.assert_array_equal(as_numpy(x), before)               # x restored exactly


def test_numerical_gradient_at_chosen_entries(xp):
    """With indices, the same central differences at those flat positions only, in order."""
    x = xp.asarray(np.random.default_rng(1).standard_normal((3, 5)))
    before = as_numpy(x).copy()
    picked = [13, 0, 7]
    grad = numerical_gradient(lambda: (x ** 3).sum(), x, h=1e-5, indices=picked)
    assert grad.shape == (3,)
    assert rel_error(as_numpy(grad), 3 * before.reshape(-1)[picked] ** 2) < 1e-9
    np.testing.assert_array_equal(as_numpy(x), before)


def test_numerical_gradient_needs_contiguous_arrays(xp):
    x = xp.zeros((4, 4))[:, ::2]
    with pytest.raises(ValueError, match="C-contiguous"):
        numerical_gradient(lambda: x.sum(), x)


class _DoubledDx(Linear):
    def backward(self, dout):
        return 2 * super().backward(dout)


class _NoBiasGrad(Linear):
    def backward(self, dout):
        dx = super().backward(dout)
        self.grads["bias"][...] = 0.0
        return dx


class _TransposedWeightGrad(Linear):
    def backward(self, dout):
        dx = super().backward(dout)
        x = self._cache[1]
        self.grads["weight"][...] = (x.T @ dout).T[::-1]              # rows in the wrong order
        return dx


@pytest.mark.parametrize("cls,bad", [(_DoubledDx, "x"), (_NoBiasGrad, "bias"),
                                     (_TransposedWeightGrad, "weight")])
def test_check_layer_catches_a_wrong_backward(backend_name, randn, cls, bad):
    layer = cls(4, 3, rng=0).to(backend_name, dtype="float64")
    layer.load_state_dict({"weight": np.random.default_rng(1).standard_normal((3, 4)),
                           "bias": np.ones(3)})
    result = check_layer(layer, randn(5, 4))
    assert not result and not result.passed
    assert result.errors[bad] > 1e-2                                  # clearly wrong
    assert all(e < 1e-9 for name, e in result.errors.items() if name != bad)
    text = str(result)
    assert "FAIL" in text and bad in text and "bound 1e-06" in text


def test_check_layer_passes_and_reports(backend_name, randn):
    layer = Linear(4, 3, rng=0).to(backend_name, dtype="float64")
    result = check_layer(layer, randn(2, 4), bound=1e-7)
    assert result and set(result.errors) == {"x", "weight", "bias"}
    assert isinstance(result, GradCheckResult) and result.bound == 1e-7
    assert str(result).splitlines()[-1].strip() == "PASS"
    assert "Linear" in str(result)
    assert set(check_layer(layer, randn(2, 4), params=False).errors) == {"x"}


def test_check_layer_holds_dropout_masks_fixed(randn):
    layer = Dropout(0.5, seed=3)
    result = check_layer(layer, randn(4, 6), h=1e-3, bound=1e-9)
    assert result, result          # would fail if every evaluation drew a new mask
    assert layer.calls == 1        # and the layer's counter is as after one forward


def test_check_loss_catches_a_wrong_loss_gradient(xp, randn):
    class HalfGrad(SoftmaxCrossEntropy):
        def backward(self, dout=1.0):
            return super().backward(dout) / 2

    labels = xp.asarray([0, 2, 1])
    assert check_loss(SoftmaxCrossEntropy(), randn(3, 4), labels, bound=1e-7)
    result = check_loss(HalfGrad(), randn(3, 4), labels)
    assert not result and result.errors["logits"] > 0.1


def test_check_function(xp, randn):
    def forward(a, b):
        return a * b + xp.sin(a)

    def backward(dout):
        return dout * (y + xp.cos(x)), dout * x

    x, y = randn(3, 2, seed=1), randn(3, 2, seed=2)
    good = check_function(forward, backward, [x, y], bound=1e-7)
    assert good and set(good.errors) == {"input 0", "input 1"}
    assert set(check_function(forward, lambda d: (None, d * x), [x, y]).errors) == {"input 1"}
    bad = check_function(forward, lambda d: (d * y, d * x), [x, y])   # forgot d sin(a) / da
    assert not bad and bad.errors["input 0"] > 1e-2 and bad.errors["input 1"] < 1e-7


def _small_network(conv=Conv2d):
    return Sequential([("conv1", conv(2, 3, 3, padding=1, rng=0)), ("relu1", ReLU()),
                       ("pool1", MaxPool2d(3, 2)), ("flatten", Flatten()),
                       ("fc2", Linear(3 * 3 * 3, 6, rng=1)), ("relu2", ReLU()),
                       ("drop2", Dropout(0.5, seed=2)), ("fc3", Linear(6, 4, rng=3))])


class _LeakyGradConv(Conv2d):
    """A planted bug: the weight gradient is off by 1% of itself."""
    def backward(self, dout):
        dx = super().backward(dout)
        self.grads["weight"] *= 1.01
        return dx


def test_check_model_passes_a_correct_network(backend_name, randn):
    """Every tensor is sampled (or fully checked when small); bound 1e-6 in float64, with
    dropout in training mode (the same mask at every evaluation)."""
    model = _small_network().to(backend_name, dtype="float64").train()
    x, labels = randn(3, 2, 7, 7, seed=4), np.array([0, 3, 1])
    result = check_model(model, SoftmaxCrossEntropy(), x, labels, samples=10, bound=1e-6)
    assert list(result.errors) == ["x", "conv1.weight", "conv1.bias", "fc2.weight", "fc2.bias",
                                   "fc3.weight", "fc3.bias"]
    assert result.passed, result.errors


def test_check_model_catches_a_wrong_weight_gradient(backend_name, randn):
    model = _small_network(_LeakyGradConv).to(backend_name, dtype="float64")
    model["conv1"].input_grad = False                 # as the models' first layer: no x
    x, labels = randn(3, 2, 7, 7, seed=4), np.array([0, 3, 1])
    result = check_model(model, SoftmaxCrossEntropy(), x, labels, samples=10, bound=1e-6)
    assert "x" not in result.errors
    assert not result.passed
    assert result.errors["conv1.weight"] > 1e-3                 # about 0.5%: caught
    assert max(e for k, e in result.errors.items() if k != "conv1.weight") < 1e-6
