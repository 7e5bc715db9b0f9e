"""Shared fixtures: every backend-aware test runs once per backend.

The CuPy cases run where a CUDA GPU is present and are skipped, with the
reason, everywhere else.
"""
import numpy as np
import pytest

from tinyalexnet import backend

_reason = backend.gpu_unavailable_reason()
BACKENDS = ["numpy", pytest.param("cupy", marks=pytest.mark.skipif(
    _reason is not None, reason=f"no GPU backend: {_reason}"))]


@pytest.fixture(params=BACKENDS)
def backend_name(request):
    """The name of the backend under test: "numpy" or "cupy"."""
    return request.param


@pytest.fixture
def xp(backend_name):
    """The array module of the backend under test."""
    return backend.get_backend(backend_name)


@pytest.fixture
def randn(xp):
    """``randn(*shape, seed=0, scale=1.0)``: float64 N(0, scale^2) numbers on the backend
    under test, drawn on the host so that every backend sees the same values."""
    def make(*shape, seed=0, scale=1.0):
        return xp.asarray(np.random.default_rng(seed).standard_normal(shape) * scale)
    return make


@pytest.fixture
def distinct(xp):
    """``distinct(*shape, seed=0, gap=0.01)``: float64 values, all different, at least
    ``gap`` apart and at least gap/2 away from 0, in random order.

    For piecewise-linear layers (ReLU, max pooling): a central difference with a step
    below gap/2 never crosses a kink or changes an arg-max, so it is exact."""
    def make(*shape, seed=0, gap=0.01):
        n = int(np.prod(shape))
        values = (np.arange(n) - n // 2 + 0.5) * gap            # symmetric around 0, no zero
        return xp.asarray(np.random.default_rng(seed).permutation(values).reshape(shape))
    return make
