"""Optional: the layers and optimizers against PyTorch on the same weights and inputs.

Skipped where torch is not installed (the project does not depend on it).  In
float64 both sides agree to rounding; every gradient is compared too.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from tinyalexnet.layers import (Conv2d, Linear, LocalResponseNorm, MaxPool2d,  # noqa: E402
                                SoftmaxCrossEntropy)
from tinyalexnet.models import alexnet_small  # noqa: E402
from tinyalexnet.optim import SGD, Adam  # noqa: E402

RTOL, ATOL = 1e-10, 1e-12


def _t(a):
    return torch.tensor(np.asarray(a), dtype=torch.float64, requires_grad=True)


def _same(ours, theirs):
    np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=RTOL, atol=ATOL)


def _rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


@pytest.mark.parametrize("cin,cout,k,s,p,g", [(3, 4, 3, 1, 0, 1), (4, 6, (3, 2), 2, 1, 2),
                                              (6, 9, 5, 3, 2, 3), (3, 8, 11, 4, 0, 1)])
def test_conv2d_matches_torch(cin, cout, k, s, p, g):
    layer = Conv2d(cin, cout, k, stride=s, padding=p, groups=g, rng=0).to(dtype="float64")
    layer.load_state_dict({"weight": _rand(*layer.params["weight"].shape, seed=1),
                           "bias": _rand(cout, seed=2)})
    x = _rand(2, cin, 23, 19, seed=3)
    out = layer.forward(x)
    dout = _rand(*out.shape, seed=4)
    dx = layer.backward(dout)
    tx, tw, tb = _t(x), _t(layer.params["weight"]), _t(layer.params["bias"])
    ref = F.conv2d(tx, tw, tb, stride=s, padding=p, groups=g)
    ref.backward(torch.tensor(dout))
    _same(out, ref)
    _same(dx, tx.grad)
    _same(layer.grads["weight"], tw.grad)
    _same(layer.grads["bias"], tb.grad)


@pytest.mark.parametrize("k,s", [(3, 2), (2, 2), (3, 1)])
def test_maxpool_matches_torch(k, s):
    x = _rand(2, 3, 11, 8, seed=5)
    layer = MaxPool2d(k, s)
    out = layer.forward(x)
    dout = _rand(*out.shape, seed=6)
    dx = layer.backward(dout)
    tx = _t(x)
    ref = F.max_pool2d(tx, k, s)
    ref.backward(torch.tensor(dout))
    _same(out, ref)
    _same(dx, tx.grad)


@pytest.mark.parametrize("size,alpha,beta,k,scale", [(5, 1e-4, 0.75, 2.0, 30.0),
                                                     (3, 0.1, 0.75, 1.0, 1.0)])
def test_lrn_matches_torch_with_alpha_times_size(size, alpha, beta, k, scale):
    """The paper's alpha is PyTorch's alpha / size: torch's layer needs alpha * size."""
    x = _rand(2, 7, 3, 4, seed=7) * scale
    layer = LocalResponseNorm(size, alpha, beta, k)
    out = layer.forward(x)
    dout = _rand(*out.shape, seed=8)
    dx = layer.backward(dout)
    tx = _t(x)
    ref = F.local_response_norm(tx, size, alpha=alpha * size, beta=beta, k=k)
    ref.backward(torch.tensor(dout))
    _same(out, ref)
    _same(dx, tx.grad)
    # and with torch's alpha used as-is the two really differ
    other = F.local_response_norm(torch.tensor(x), size, alpha=alpha, beta=beta, k=k).numpy()
    assert np.abs(other - out).max() > 1e-6


def test_linear_matches_torch():
    layer = Linear(7, 5, rng=0).to(dtype="float64")
    layer.load_state_dict({"weight": _rand(5, 7, seed=9), "bias": _rand(5, seed=10)})
    x, dout = _rand(3, 7, seed=11), _rand(3, 5, seed=12)
    out = layer.forward(x)
    dx = layer.backward(dout)
    tx, tw, tb = _t(x), _t(layer.params["weight"]), _t(layer.params["bias"])
    ref = F.linear(tx, tw, tb)
    ref.backward(torch.tensor(dout))
    _same(out, ref)
    _same(dx, tx.grad)
    _same(layer.grads["weight"], tw.grad)
    _same(layer.grads["bias"], tb.grad)


def test_softmax_cross_entropy_matches_torch():
    logits, labels = _rand(6, 10, seed=13) * 4, np.array([0, 9, 3, 3, 5, 1])
    loss = SoftmaxCrossEntropy()
    value = loss.forward(logits, labels)
    grad = loss.backward()
    tz = _t(logits)
    ref = F.cross_entropy(tz, torch.tensor(labels))
    ref.backward()
    assert abs(float(value) - ref.item()) < 1e-13
    _same(grad, tz.grad)


def test_small_model_forward_matches_torch():
    """alexnet_small, layer for layer in torch with the same weights, in eval mode."""
    model = alexnet_small(seed=1).to(dtype="float64").eval()
    w = {k: torch.tensor(v) for k, v in model.state_dict().items()}
    x = _rand(2, 3, 32, 32, seed=14)

    def ref(t):
        lrn = dict(size=5, alpha=5e-4, beta=0.75, k=2.0)
        t = F.max_pool2d(F.local_response_norm(F.relu(F.conv2d(t, w["conv1.weight"], w["conv1.bias"], padding=2)), **lrn), 3, 2)
        t = F.max_pool2d(F.local_response_norm(F.relu(F.conv2d(t, w["conv2.weight"], w["conv2.bias"], padding=2, groups=2)), **lrn), 3, 2)
        t = F.relu(F.conv2d(t, w["conv3.weight"], w["conv3.bias"], padding=1))
        t = F.relu(F.conv2d(t, w["conv4.weight"], w["conv4.bias"], padding=1, groups=2))
        t = F.max_pool2d(F.relu(F.conv2d(t, w["conv5.weight"], w["conv5.bias"], padding=1, groups=2)), 3, 2)
        t = F.relu(F.linear(t.flatten(1), w["fc6.weight"], w["fc6.bias"]))
        t = F.relu(F.linear(t, w["fc7.weight"], w["fc7.bias"]))
        return F.linear(t, w["fc8.weight"], w["fc8.bias"])

    _same(model.forward(x), ref(torch.tensor(x)))


def _optimizer_run(make_ours, make_theirs, steps=4):
    rng = np.random.default_rng(15)
    layer = Linear(4, 3, rng=0).to(dtype="float64")
    layer.load_state_dict({"weight": rng.standard_normal((3, 4)), "bias": rng.standard_normal(3)})
    tw, tb = (torch.tensor(layer.params[k].copy(), requires_grad=True) for k in ("weight", "bias"))
    ours, theirs = make_ours(layer), make_theirs([tw, tb])
    for _ in range(steps):
        gw, gb = rng.standard_normal((3, 4)), rng.standard_normal(3)
        layer.grads["weight"][...], layer.grads["bias"][...] = gw, gb
        ours.step()
        tw.grad, tb.grad = torch.tensor(gw), torch.tensor(gb)
        theirs.step()
    _same(layer.params["weight"], tw)
    _same(layer.params["bias"], tb)


def test_sgd_matches_torch_at_constant_lr():
    # The paper's rule and torch's differ in where lr sits, but agree while lr is fixed.
    _optimizer_run(lambda m: SGD(m, lr=0.05, momentum=0.9, weight_decay=0.0005),
                   lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=0.0005))


def test_adam_matches_torch():
    _optimizer_run(lambda m: Adam(m, lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.01),
                   lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.8, 0.99), eps=1e-6,
                                              weight_decay=0.01))
