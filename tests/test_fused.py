"""The optimizers' fused kernels (optim/fused.py) compute what their array code computes.

On NumPy there is no kernel (``fused=True`` changes nothing, and the functions
say so by returning False); on the strict CuPy stand-in the kernel is launched
and runs as its NumPy reference (tests/kernel_references.py), so these tests
check the calls: arguments, checks, one launch per parameter; on a GPU the CUDA
kernels themselves run (the [cupy] cases, and ``check --backend cupy``).  The
kernels' own source runs on the CPU in test_kernels_cpu_exec.py.
"""
import copy

import numpy as np
import pytest

from tinyalexnet import backend
from tinyalexnet.errors import ShapeError
from tinyalexnet.layers import Linear
from tinyalexnet.optim import SGD, Adam, fused


def _steps(layer, optimizer, grads):
    for g in grads:
        for (name, _, grad), value in zip(layer.named_parameters(), g):
            grad[...] = value
        optimizer.step()
    return {name: backend.as_numpy(p) for name, p, _ in layer.named_parameters()}


def _grads(xp, layer, seed):
    rng = np.random.default_rng(seed)
    return [[xp.asarray(rng.standard_normal(p.shape).astype(np.float32) * s)
             for (_, p, _), s in zip(layer.named_parameters(), (1.0, 1e-3))] for _ in range(4)]


@pytest.mark.parametrize("make", [
    pytest.param(lambda m, f, wd: Adam(m, lr=0.01, weight_decay=wd, fused=f), id="adam"),
    pytest.param(lambda m, f, wd: SGD(m, lr=0.01, momentum=0.9, weight_decay=wd, fused=f),
                 id="sgd")])
@pytest.mark.parametrize("wd", [0.0, 0.01])
def test_fused_update_matches_the_array_code(backend_name, xp, make, wd):
    layer = Linear(37, 23, rng=1).to(backend_name)
    grads = _grads(xp, layer, 0)
    plain, fast = layer, copy.deepcopy(layer)
    a, b = make(plain, False, wd), make(fast, True, wd)
    start = {name: backend.as_numpy(p).copy() for name, p, _ in plain.named_parameters()}
    want, got = _steps(plain, a, grads), _steps(fast, b, grads)
    for name in want:
        moved = np.linalg.norm(want[name] - start[name])
        assert moved > 0
        # float32, the same arithmetic in another order: a few units in the last place
        assert np.linalg.norm(got[name] - want[name]) <= 1e-5 * moved, name
        for slot in a.slots:       # the weights' few ulps reach m and v through wd * p
            sa = backend.as_numpy(a.state[slot][name])
            sb = backend.as_numpy(b.state[slot][name])
            assert np.linalg.norm(sb - sa) <= 1e-5 * np.linalg.norm(sa), (slot, name)


def test_fused_functions_say_where_no_kernel_runs(backend_name, xp):
    p, g, m, v = (xp.zeros(5, dtype=xp.float32) for _ in range(4))
    ran = fused.adam_update(p, g, m, v, lr=0.1, step=1, beta1=0.9, beta2=0.999, eps=1e-8,
                            weight_decay=0.0)
    assert ran == (backend_name == "cupy")
    assert fused.sgd_update(p, g, v, lr=0.1, momentum=0.9, weight_decay=0.0) == ran
    half = xp.zeros(5, dtype=xp.float16)             # no kernel is built for float16
    assert not fused.sgd_update(half, half.copy(), half.copy(), lr=0.1, momentum=0.9,
                                weight_decay=0.0)


def test_fused_on_flat_buffers_is_one_launch_for_all_parameters(device_name):
    xp = backend.get_backend(device_name)
    """A model's parameters in one flat buffer: one call updates them all, as per parameter."""
    sizes = (7, 300, 1)
    rng = np.random.default_rng(2)
    parts = [[rng.standard_normal(n).astype(np.float32) for n in sizes] for _ in range(3)]
    flat = [xp.asarray(np.concatenate(p)) for p in parts]          # p, g, velocity
    single = [[xp.asarray(a) for a in p] for p in parts]
    assert fused.sgd_update(*flat, lr=0.05, momentum=0.9, weight_decay=5e-4)
    for p, g, v in zip(*single):
        assert fused.sgd_update(p, g, v, lr=0.05, momentum=0.9, weight_decay=5e-4)
    assert np.array_equal(backend.as_numpy(flat[0]),
                          np.concatenate([backend.as_numpy(p) for p in single[0]]))


def test_fused_learning_rate_and_step_from_device_memory(device_name):
    """lr and Adam's step may be 1-element device arrays: the kernel reads them there."""
    xp = backend.get_backend(device_name)
    rng = np.random.default_rng(3)
    arrays = [rng.standard_normal(50).astype(np.float32) for _ in range(4)]
    arrays[3] = np.abs(arrays[3])
    by_value = [xp.asarray(a) for a in arrays]
    on_device = [xp.asarray(a) for a in arrays]
    settings = dict(beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01)
    for t in (1, 2, 3):
        assert fused.adam_update(*by_value, lr=0.003, step=t, **settings)
        assert fused.adam_update(*on_device, lr=xp.asarray(np.array([0.003])),
                                 step=xp.asarray(np.array([t], dtype=np.int64)), **settings)
    for a, b in zip(by_value, on_device):
        assert np.array_equal(backend.as_numpy(a), backend.as_numpy(b))


def test_fused_refuses_mismatched_arrays_in_one_line(device_name):
    xp = backend.get_backend(device_name)
    p = xp.zeros(6, dtype=xp.float32)
    with pytest.raises(ShapeError, match="sgd_update: g has 5 elements of float32, expected 6"):
        fused.sgd_update(p, xp.zeros(5, dtype=xp.float32), xp.zeros(6, dtype=xp.float32),
                         lr=0.1, momentum=0.9, weight_decay=0.0)
    with pytest.raises(ShapeError, match="float64, expected 6 of float32"):
        fused.adam_update(p, p.copy(), xp.zeros(6), p.copy(), lr=0.1, step=1, beta1=0.9,
                          beta2=0.999, eps=1e-8, weight_decay=0.0)
    strided = xp.zeros(12, dtype=xp.float32)[::2]
    with pytest.raises(ShapeError, match="C-contiguous"):
        fused.sgd_update(p, p.copy(), strided, lr=0.1, momentum=0.9, weight_decay=0.0)
    with pytest.raises(TypeError, match="1-element float64"):
        fused.sgd_update(p, p.copy(), p.copy(), lr=xp.zeros(1, dtype=xp.float32), momentum=0.9,
                         weight_decay=0.0)
