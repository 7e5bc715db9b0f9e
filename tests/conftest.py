"""Shared fixtures: every backend-aware test runs once per backend.

The CuPy cases run where a CUDA GPU is present and are skipped, with the
reason, everywhere else.
"""
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
