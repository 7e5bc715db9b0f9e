"""Optional: the layers and optimizers against PyTorch on the same weights and inputs.

Skipped where torch is not installed (the project does not depend on it).  In
float64 both sides agree to rounding; every gradient is compared too.  Whole
models are compared with their twin from ``tinyalexnet.torch_twin``, the one the
benchmark times.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from tinyalexnet.errors import TinyAlexNetError  # noqa: E402
from tinyalexnet.layers import (Conv2d, Linear, LocalResponseNorm, MaxPool2d,  # noqa: E402
                                Sequential, SoftmaxCrossEntropy, Tanh)
from tinyalexnet.models import get_model  # noqa: E402
from tinyalexnet.optim import SGD, Adam  # noqa: E402
from tinyalexnet.torch_twin import to_torch  # noqa: E402

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


def _model_pass(model, net, x, labels):
    """Logits and every parameter gradient of one float64 eval-mode pass, in both."""
    loss = SoftmaxCrossEntropy()
    logits = model.forward(x)
    loss.forward(logits, labels)
    model.backward(loss.backward())
    tx = torch.tensor(x)
    ref = net(tx)
    F.cross_entropy(ref, torch.tensor(labels)).backward()
    return logits, ref, {name: (g, dict(net.named_parameters())[name].grad)
                         for name, _, g in model.named_parameters()}


@pytest.mark.parametrize("name", ["alexnet_small", "alexnet32"])
def test_every_model_and_its_torch_twin_agree_with_gradients(name):
    """The benchmark's twin (torch_twin.to_torch): our model and torch's layers with our
    weights give the same logits and the same gradient of every parameter, in float64."""
    model = get_model(name, seed=1).to(dtype="float64").eval()
    net = to_torch(model, torch).eval()
    assert [n for n, _ in net.named_children()] == list(model.layers)
    x = _rand(2, *model.input_shape, seed=14)
    logits, ref, grads = _model_pass(model, net, x, np.array([3, 7]))
    _same(logits, ref)
    assert len(grads) == len(list(net.parameters()))
    for param, (ours, theirs) in grads.items():
        np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-9, atol=1e-12, err_msg=param)


def test_torch_twin_maps_lrn_alpha_groups_and_weights():
    model = get_model("alexnet_small")
    net = to_torch(model, torch)
    assert net.norm1.alpha == pytest.approx(model["norm1"].alpha * model["norm1"].size)
    assert net.conv2.groups == model["conv2"].groups == 2
    assert torch.equal(net.conv2.weight, torch.from_numpy(model["conv2"].params["weight"]))
    assert next(net.parameters()).dtype == torch.float32                # our dtype, no rounding


def test_torch_twin_of_a_layer_it_does_not_know_is_a_clear_error():
    model = Sequential([("conv", Conv2d(1, 2, 3, rng=0)), ("tanh", Tanh())])
    with pytest.raises(TinyAlexNetError, match="no PyTorch equivalent known for layer 'tanh'"):
        to_torch(model, torch)


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
