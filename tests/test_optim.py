"""Optimizers and learning-rate schedules against hand computations."""
import copy

import numpy as np
import pytest

from tinyalexnet.backend import as_numpy
from tinyalexnet.errors import CheckpointError, ConfigError
from tinyalexnet.layers import Linear, ReLU, Sequential, SoftmaxCrossEntropy
from tinyalexnet.optim import SGD, Adam, ReduceLROnPlateau, StepLR


def _one_param_model(backend_name, w0):
    """A Linear(1, 1) whose weight is w0; its grads are set by hand in the tests."""
    layer = Linear(1, 1, rng=0).to(backend_name, dtype="float64")
    layer.load_state_dict({"weight": np.array([[w0]]), "bias": np.array([0.0])})
    return layer


def _set_grads(layer, xp, gw, gb=0.0):
    layer.grads["weight"][...] = xp.asarray([[gw]])
    layer.grads["bias"][...] = xp.asarray([gb])


def _w(layer):
    return float(as_numpy(layer.params["weight"])[0, 0])


# --------------------------------------------------------------------------- SGD
def test_sgd_paper_rule_two_steps_by_hand(xp, backend_name):
    """v <- m v - wd lr w - lr g;  w <- w + v, worked out on paper for two steps.

    w0 = 1, lr = 0.1, m = 0.9, wd = 0.0005, g1 = 0.5, g2 = -0.2:
      v1 = -0.0005*0.1*1 - 0.1*0.5                          = -0.05005
      w1 = 1 - 0.05005                                       =  0.94995
      v2 = 0.9*(-0.05005) - 0.0005*0.1*0.94995 + 0.1*0.2     = -0.0250924975
      w2 = 0.94995 - 0.0250924975                            =  0.9248575025
    """
    layer = _one_param_model(backend_name, 1.0)
    opt = SGD(layer, lr=0.1, momentum=0.9, weight_decay=0.0005)
    _set_grads(layer, xp, 0.5)
    opt.step()
    assert _w(layer) == pytest.approx(0.94995, abs=1e-15)
    assert float(as_numpy(opt.state["velocity"]["weight"])[0, 0]) == pytest.approx(-0.05005, abs=1e-15)
    _set_grads(layer, xp, -0.2)
    opt.step()
    assert _w(layer) == pytest.approx(0.9248575025, abs=1e-15)
    assert float(as_numpy(opt.state["velocity"]["weight"])[0, 0]) == pytest.approx(-0.0250924975, abs=1e-15)


def test_sgd_paper_rule_on_tensors(xp, backend_name):
    """The same rule on whole weight and bias tensors, with a learning rate change between steps."""
    rng = np.random.default_rng(0)
    layer = Linear(4, 3, rng=0).to(backend_name, dtype="float64")
    w0, b0 = rng.standard_normal((3, 4)), rng.standard_normal(3)
    layer.load_state_dict({"weight": w0, "bias": b0})
    lr, m, wd = 0.03, 0.8, 0.01
    opt = SGD(layer, lr=lr, momentum=m, weight_decay=wd)
    w, b, vw, vb = w0.copy(), b0.copy(), np.zeros_like(w0), np.zeros_like(b0)
    for step, step_lr in enumerate([lr, lr / 10]):
        opt.lr = step_lr
        gw, gb = rng.standard_normal((3, 4)), rng.standard_normal(3)
        layer.grads["weight"][...] = xp.asarray(gw)
        layer.grads["bias"][...] = xp.asarray(gb)
        opt.step()
        vw = m * vw - wd * step_lr * w - step_lr * gw
        vb = m * vb - wd * step_lr * b - step_lr * gb
        w, b = w + vw, b + vb
        np.testing.assert_allclose(as_numpy(layer.params["weight"]), w, rtol=1e-14, atol=1e-15)
        np.testing.assert_allclose(as_numpy(layer.params["bias"]), b, rtol=1e-14, atol=1e-15)
    assert opt.steps == 2


def test_sgd_without_momentum_or_decay_is_plain_gradient_descent(xp, backend_name):
    layer = _one_param_model(backend_name, 2.0)
    opt = SGD(layer, lr=0.5, momentum=0.0, weight_decay=0.0)
    for g in (1.0, 1.0):
        _set_grads(layer, xp, g)
        opt.step()
    assert _w(layer) == 1.0


# --------------------------------------------------------------------------- Adam
def test_adam_two_steps_by_hand(xp, backend_name):
    """Adam with bias correction, worked out for a scalar.

    lr = 0.1, b1 = 0.9, b2 = 0.999, g1 = 0.5: m1 = 0.05, v1 = 0.00025, m_hat = 0.5,
    v_hat = 0.25, so the first step is lr * 0.5 / (0.5 + eps) = 0.1 (to 1e-9).
    g2 = -0.2: m2 = 0.025, v2 = 0.00028975, m_hat = 0.025 / 0.19, v_hat = 0.00028975 / 0.001999.
    """
    layer = _one_param_model(backend_name, 1.0)
    opt = Adam(layer, lr=0.1, betas=(0.9, 0.999), eps=1e-8)
    _set_grads(layer, xp, 0.5)
    opt.step()
    w1 = 1.0 - 0.1 * 0.5 / (0.5 + 1e-8)
    assert _w(layer) == pytest.approx(w1, abs=1e-15) and abs(w1 - 0.9) < 1e-8
    _set_grads(layer, xp, -0.2)
    opt.step()
    m_hat, v_hat = 0.025 / 0.19, 0.00028975 / 0.001999
    assert _w(layer) == pytest.approx(w1 - 0.1 * m_hat / (np.sqrt(v_hat) + 1e-8), abs=1e-14)
    assert float(as_numpy(opt.state["m"]["weight"])[0, 0]) == pytest.approx(0.025, abs=1e-15)
    assert float(as_numpy(opt.state["v"]["weight"])[0, 0]) == pytest.approx(0.00028975, abs=1e-15)


def test_adam_with_weight_decay_on_tensors(xp, backend_name):
    rng = np.random.default_rng(1)
    layer = Linear(3, 2, rng=0).to(backend_name, dtype="float64")
    w = rng.standard_normal((2, 3))
    layer.load_state_dict({"weight": w, "bias": np.zeros(2)})
    lr, b1, b2, eps, wd = 0.01, 0.8, 0.99, 1e-6, 0.1
    opt = Adam(layer, lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd)
    m = v = np.zeros_like(w)
    for t in (1, 2, 3):
        g = rng.standard_normal((2, 3))
        layer.grads["weight"][...] = xp.asarray(g)
        opt.step()
        g = g + wd * w
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        w = w - lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
        np.testing.assert_allclose(as_numpy(layer.params["weight"]), w, rtol=1e-13, atol=1e-15)


# --------------------------------------------------------------------------- state round trip
def _net_and_batch(backend_name, xp):
    model = Sequential(Linear(5, 8, rng=0), ReLU(), Linear(8, 3, rng=1)).to(backend_name, "float64")
    rng = np.random.default_rng(2)
    return model, xp.asarray(rng.standard_normal((6, 5))), xp.asarray(rng.integers(0, 3, 6))


def _train(model, opt, x, labels, steps):
    loss = SoftmaxCrossEntropy()
    for _ in range(steps):
        loss.forward(model.forward(x), labels)
        model.backward(loss.backward())
        opt.step()


@pytest.mark.parametrize("make", [lambda m: SGD(m, lr=0.1, momentum=0.9, weight_decay=0.01),
                                  lambda m: Adam(m, lr=0.01, weight_decay=0.001)])
def test_optimizer_state_dict_round_trip_continues_identically(xp, backend_name, make):
    model, x, labels = _net_and_batch(backend_name, xp)
    opt = make(model)
    _train(model, opt, x, labels, 3)
    params = {k: as_numpy(p).copy() for k, p in model.state_dict().items()}
    saved = copy.deepcopy({"hyper": opt.state_dict()["hyper"], "steps": opt.steps,
                           "state": {k: as_numpy(a) for k, a in opt.state_dict()["state"].items()}})
    _train(model, opt, x, labels, 3)                      # the original run goes on

    resumed, _, _ = _net_and_batch(backend_name, xp)
    resumed.load_state_dict(params)
    opt2 = make(resumed)
    opt2.lr = 123.0                                       # overwritten by the saved hyperparameters
    opt2.load_state_dict(saved)
    assert opt2.steps == 3 and opt2.lr == opt.lr
    _train(resumed, opt2, x, labels, 3)
    for (name, p, _), (_, q, _) in zip(model.named_parameters(), resumed.named_parameters()):
        np.testing.assert_array_equal(as_numpy(p), as_numpy(q), err_msg=name)


def test_optimizer_state_dict_names_slots_by_parameter():
    model = Sequential(Linear(2, 2, rng=0))
    opt = SGD(model)
    _train(model, opt, np.ones((1, 2)), np.array([1]), 1)
    sd = opt.state_dict()
    assert set(sd["state"]) == {"velocity/0.weight", "velocity/0.bias"}
    assert sd["hyper"] == {"lr": 0.01, "momentum": 0.9, "weight_decay": 0.0005}


def test_optimizer_load_state_dict_rejects_other_models():
    model = Sequential(Linear(2, 2, rng=0))
    opt = SGD(model)
    _train(model, opt, np.ones((1, 2)), np.array([1]), 1)
    sd = opt.state_dict()
    other = SGD(Sequential(Linear(3, 2, rng=0)))
    with pytest.raises(CheckpointError, match=r"velocity/0.weight.*\(2, 2\).*\(2, 3\)"):
        other.load_state_dict(sd)
    with pytest.raises(CheckpointError, match="velocity/0.weight"):
        SGD(Sequential([("fc", Linear(2, 2, rng=0))])).load_state_dict(sd)
    with pytest.raises(CheckpointError):
        Adam(model).load_state_dict(sd)                   # SGD's slots are not Adam's


def test_optimizer_state_follows_the_model_dtype():
    model, x, labels = _net_and_batch("numpy", np)
    model.to(dtype="float32")
    opt = SGD(model, lr=0.1)
    _train(model, opt, x.astype("float32"), labels, 1)
    model.to(dtype="float64")
    _train(model, opt, x, labels, 1)
    assert all(a.dtype == np.float64 for a in opt.state["velocity"].values())
    assert all(p.dtype == np.float64 for _, p, _ in model.named_parameters())


@pytest.mark.parametrize("make,match", [
    (lambda m: SGD(m, lr=0), "lr"), (lambda m: SGD(m, lr=-1.0), "lr"),
    (lambda m: SGD(m, momentum=1.0), "momentum"), (lambda m: SGD(m, weight_decay=-1), "weight_decay"),
    (lambda m: Adam(m, betas=(0.9, 1.0)), "beta2"), (lambda m: Adam(m, betas=(0.9,)), "betas"),
    (lambda m: Adam(m, eps=0), "eps"), (lambda m: SGD(m, lr="0.1"), "lr"),
])
def test_invalid_hyperparameters(make, match):
    with pytest.raises(ConfigError, match=match) as info:
        make(Sequential(Linear(2, 2, rng=0)))
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- schedules
class _Opt:
    def __init__(self, lr):
        self.lr = lr


def test_step_lr():
    opt = _Opt(0.1)
    sched = StepLR(opt, step_size=2, gamma=0.1)
    lrs = []
    for _ in range(5):
        sched.step()
        lrs.append(opt.lr)
    np.testing.assert_allclose(lrs, [0.1, 0.01, 0.01, 0.001, 0.001], rtol=1e-12)
    resumed = StepLR(_Opt(opt.lr), step_size=2)
    resumed.load_state_dict(sched.state_dict())
    resumed.step()                                         # epoch 6: the next division
    assert resumed.optimizer.lr == pytest.approx(1e-4)


def test_reduce_on_plateau_divides_by_ten_after_patience():
    opt = _Opt(0.01)
    sched = ReduceLROnPlateau(opt, factor=0.1, patience=1, threshold=1e-3)
    errors = [0.9, 0.8, 0.8, 0.85, 0.7, 0.6999, 0.71, 0.5]
    # 0.8 (same) is one bad epoch; 0.85 a second: reduce.  0.6999 is within the
    # 1e-3 relative threshold of 0.7, so not an improvement; 0.71 bad again: reduce.
    expected = [0.01, 0.01, 0.01, 0.001, 0.001, 0.001, 0.0001, 0.0001]
    lrs = []
    for e in errors:
        sched.step(e)
        lrs.append(opt.lr)
    np.testing.assert_allclose(lrs, expected, rtol=1e-12)
    assert sched.reductions == 2 and sched.best == 0.5


def test_reduce_on_plateau_stops_after_max_reductions():
    opt = _Opt(1.0)
    sched = ReduceLROnPlateau(opt, patience=0, max_reductions=3)   # the paper: three times
    sched.step(1.0)
    for _ in range(10):
        sched.step(2.0)                                    # never improves
    assert opt.lr == pytest.approx(1e-3) and sched.reductions == 3


def test_reduce_on_plateau_state_round_trip():
    a = ReduceLROnPlateau(_Opt(1.0), patience=2)
    for e in (1.0, 1.1, 1.2):
        a.step(e)
    b = ReduceLROnPlateau(_Opt(1.0), patience=2)
    b.load_state_dict(a.state_dict())
    a.step(1.3)
    b.step(1.3)
    assert a.optimizer.lr == b.optimizer.lr == pytest.approx(0.1)
    assert a.state_dict() == b.state_dict()


@pytest.mark.parametrize("make,match", [
    (lambda o: StepLR(o, 0), "step_size"), (lambda o: StepLR(o, 2, gamma=0), "gamma"),
    (lambda o: ReduceLROnPlateau(o, factor=1.0), "factor"),
    (lambda o: ReduceLROnPlateau(o, patience=-1), "patience"),
    (lambda o: ReduceLROnPlateau(o, max_reductions=-1), "max_reductions"),
])
def test_invalid_schedule_settings(make, match):
    with pytest.raises(ConfigError, match=match):
        make(_Opt(0.1))


@pytest.mark.parametrize("make", [lambda m: SGD(m, lr=0.1, momentum=0.9, weight_decay=0.01),
                                  lambda m: Adam(m, lr=0.01, weight_decay=0.001)])
def test_the_update_of_the_flat_buffers_is_the_update_of_each_parameter(xp, backend_name, make):
    """One update over the model's flat buffers gives, bit for bit, what one update per
    parameter gives (the same element-wise arithmetic)."""
    flat, x, labels = _net_and_batch(backend_name, xp)
    loose = copy.deepcopy(flat)
    for _, m in loose.named_modules():        # the same values, no longer in one buffer
        for key in m.params:
            m.params[key], m.grads[key] = m.params[key].copy(), m.grads[key].copy()
    assert flat.flat_buffers() is not None and loose.flat_buffers() is None
    opt_flat, opt_loose = make(flat), make(loose)
    start = as_numpy(flat.flat_params()).copy()
    _train(flat, opt_flat, x, labels, 3)
    _train(loose, opt_loose, x, labels, 3)
    assert not np.array_equal(as_numpy(flat.flat_params()), start)
    for (name, p, _), (_, q, _) in zip(flat.named_parameters(), loose.named_parameters()):
        np.testing.assert_array_equal(as_numpy(p), as_numpy(q), err_msg=name)
        for slot in opt_flat.slots:
            np.testing.assert_array_equal(as_numpy(opt_flat.state[slot][name]),
                                          as_numpy(opt_loose.state[slot][name]), err_msg=slot)
