"""The fused Adam kernel computes what Adam's array code computes.

On NumPy there is no kernel (``fused=True`` changes nothing); on the strict CuPy
stand-in the kernel's own operation text runs (tests/kernel_references.py), and
must match the array code step for step; on a GPU the CUDA kernel itself does
(the same test's [cupy] case, and ``check --backend cupy``).
"""
import copy

import numpy as np
import pytest

import kernel_references
from tinyalexnet import backend
from tinyalexnet.layers import Linear
from tinyalexnet.optim import Adam, fused


def _steps(layer, optimizer, grads):
    for g in grads:
        for (name, _, grad), value in zip(layer.named_parameters(), g):
            grad[...] = value
        optimizer.step()
    return {name: backend.as_numpy(p) for name, p, _ in layer.named_parameters()}


@pytest.mark.parametrize("wd", [0.0, 0.01])
def test_fused_adam_matches_the_array_code(backend_name, xp, wd, monkeypatch):
    if backend_name == "cupy" and getattr(xp, "__version__", "").endswith("strict-standin"):
        import strict_cupy
        kernel_references.register(strict_cupy)
    rng = np.random.default_rng(0)
    layer = Linear(37, 23, rng=1).to(backend_name)
    grads = [[xp.asarray(rng.standard_normal(p.shape).astype(np.float32) * s)
              for (_, p, _), s in zip(layer.named_parameters(), (1.0, 1e-3))] for _ in range(4)]
    plain, fast = layer, copy.deepcopy(layer)
    a = Adam(plain, lr=0.01, weight_decay=wd)
    b = Adam(fast, lr=0.01, weight_decay=wd, fused=True)
    start = {name: backend.as_numpy(p).copy() for name, p, _ in plain.named_parameters()}
    want, got = _steps(plain, a, grads), _steps(fast, b, grads)
    for name in want:
        moved = np.linalg.norm(want[name] - start[name])
        assert moved > 0
        # float32, the same arithmetic in another order: a few units in the last place
        assert np.linalg.norm(got[name] - want[name]) <= 1e-5 * moved, name
        for slot in ("m", "v"):
            sa = backend.as_numpy(a.state[slot][name])
            sb = backend.as_numpy(b.state[slot][name])
            assert np.linalg.norm(sb - sa) <= 1e-6 * np.linalg.norm(sa), (slot, name)
    assert (fused.adam_kernel(xp) is None) == (backend_name == "numpy")


def test_the_translation_is_faithful():
    """The reference runs the kernel's text: a changed formula changes its result."""
    code = kernel_references.translate(fused.ADAM_OPERATION, ("p", "m", "v"))
    assert code.splitlines()[0] == "grad = g + wd * p"
    assert "p[...] = p - lr * (m * c1) / (xp.sqrt(v * c2) + eps)" in code
