"""Shared fixtures: every backend-aware test runs once per backend.

Three cases (test ids ``[numpy]``, ``[cupy]``, ``[standin]``):

* numpy: the CPU;
* cupy: real CuPy, where a CUDA GPU is present; skipped, with the reason, elsewhere;
* standin: the strict CuPy stand-in of ``strict_cupy.py``, everywhere.  It is
  installed as tinyalexnet's CuPy for the test, so ``backend_name`` is "cupy"
  and every code path that would meet CuPy meets the stand-in instead.
"""
import numpy as np
import pytest

import kernel_references
import strict_cupy
from tinyalexnet import backend

# The stand-in runs each CUDA kernel of the package as its NumPy reference.
kernel_references.register(strict_cupy)

_reason = backend.gpu_unavailable_reason()
BACKENDS = ["numpy",
            pytest.param("cupy", marks=pytest.mark.skipif(
                _reason is not None, reason=f"no GPU backend: {_reason}")),
            "standin"]


@pytest.fixture(params=BACKENDS)
def backend_name(request, monkeypatch):
    """The name of the backend under test: "numpy" or "cupy" (real CuPy or the stand-in)."""
    if request.param == "standin":
        strict_cupy.install(monkeypatch)
        return "cupy"
    return request.param


@pytest.fixture
def standin(monkeypatch):
    """The strict CuPy stand-in (the ``strict_cupy`` module), installed as tinyalexnet's
    CuPy: ``standin.count_host_reads()``, ``standin.cupyx.allow_synchronize(False)``."""
    return strict_cupy.install(monkeypatch)


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


DEVICES = [pytest.param("cupy", marks=pytest.mark.skipif(
               _reason is not None, reason=f"no GPU backend: {_reason}")),
           "standin"]


@pytest.fixture(params=DEVICES)
def device_name(request, monkeypatch):
    """The GPU backend alone, for tests of the device path: real CuPy where a GPU
    exists, the stand-in everywhere.  Always "cupy" (the stand-in is installed as it)."""
    if request.param == "standin":
        strict_cupy.install(monkeypatch)
    return "cupy"


@pytest.fixture
def on_standin(device_name):
    """True when ``device_name`` is the stand-in: host reads can be counted exactly."""
    return backend.cupy is strict_cupy.cupy


@pytest.fixture
def no_sync(device_name):
    """``with no_sync():`` any host read inside raises (cupyx.allow_synchronize(False),
    real or stand-in)."""
    if backend.cupy is strict_cupy.cupy:
        return lambda: strict_cupy.cupyx.allow_synchronize(False)
    import warnings

    import cupyx

    def real():
        warnings.filterwarnings("ignore", message="cupyx.allow_synchronize will be removed")
        return cupyx.allow_synchronize(False)
    return real
