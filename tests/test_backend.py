"""The backend module: NumPy always, CuPy when a GPU is usable, a clear reason when not."""
import types

import numpy as np
import pytest

from tinyalexnet import backend
from tinyalexnet.backend import (as_numpy, backend_of, get_array_module, get_backend, is_array,
                                 to_backend)
from tinyalexnet.errors import BackendUnavailable, TinyAlexNetError
from tinyalexnet.layers import Linear
from tinyalexnet.models import alexnet_small


@pytest.fixture
def fresh_gpu_probe(monkeypatch):
    """Forget the cached answer of gpu_unavailable_reason(); monkeypatch restores it."""
    monkeypatch.setattr(backend, "_gpu_reason", None)
    monkeypatch.delenv("TINYALEXNET_DISABLE_GPU", raising=False)
    return monkeypatch


def _fake_cupy(get_count):
    """A CuPy stand-in for the probe: counts devices; arrays, kernels and products are NumPy's."""
    runtime = types.SimpleNamespace(getDeviceCount=get_count)
    return types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=runtime),
                                 ndarray=type("FakeCupyArray", (), {}), arange=np.arange,
                                 matmul=np.matmul)


def _one_line_error(fn, match):
    with pytest.raises(BackendUnavailable, match=match) as info:
        fn()
    assert isinstance(info.value, TinyAlexNetError) and "\n" not in str(info.value)
    return str(info.value)


def test_numpy_backend():
    assert get_backend("numpy") is np
    assert get_array_module(np.zeros(2)) is np
    assert get_array_module(1.5, [1, 2]) is np and get_array_module() is np
    assert backend_of(np.zeros(2)) == "numpy"
    assert is_array(np.zeros(2)) and not is_array([1.0]) and not is_array(1.0)


def test_unknown_backend_names():
    _one_line_error(lambda: get_backend("tpu"), r"unknown backend 'tpu': expected one of numpy, cupy")
    _one_line_error(lambda: to_backend(np.zeros(2), "gpu"), r"unknown backend 'gpu'")
    _one_line_error(lambda: Linear(2, 2).to("cuda"), r"unknown backend 'cuda'")


def test_disabled_gpu_is_reported(fresh_gpu_probe):
    fresh_gpu_probe.setenv("TINYALEXNET_DISABLE_GPU", "1")
    assert not backend.gpu_available()
    msg = _one_line_error(lambda: get_backend("cupy"), "backend 'cupy' is unavailable")
    assert "TINYALEXNET_DISABLE_GPU" in msg
    # The answer is cached: the probe (a CUDA call where CuPy exists) runs once.
    fresh_gpu_probe.delenv("TINYALEXNET_DISABLE_GPU")
    assert "TINYALEXNET_DISABLE_GPU" in backend.gpu_unavailable_reason()


def test_missing_cupy_is_reported_with_the_fix(fresh_gpu_probe):
    fresh_gpu_probe.setattr(backend, "cupy", None)
    fresh_gpu_probe.setattr(backend, "_CUPY_IMPORT_ERROR", ModuleNotFoundError("No module named 'cupy'"))
    msg = _one_line_error(lambda: get_backend("cupy"), "CuPy is not installed")
    assert 'pip install "cupy-cuda12x[ctk]"' in msg and "No module named 'cupy'" in msg
    _one_line_error(lambda: backend.as_cupy(np.zeros(2)), "CuPy is not installed")
    _one_line_error(lambda: Linear(2, 2).to_gpu(), "CuPy is not installed")


def test_cupy_without_a_device_is_reported(fresh_gpu_probe):
    fresh_gpu_probe.setattr(backend, "cupy", _fake_cupy(lambda: 0))
    _one_line_error(lambda: get_backend("cupy"), "CuPy found no CUDA device")


def test_cupy_with_a_broken_driver_is_reported(fresh_gpu_probe):
    def no_driver():
        raise RuntimeError("cudaErrorInsufficientDriver: CUDA driver version is insufficient")

    fresh_gpu_probe.setattr(backend, "cupy", _fake_cupy(no_driver))
    msg = _one_line_error(lambda: get_backend("cupy"), "no CUDA GPU is usable")
    assert "cudaErrorInsufficientDriver" in msg


def test_cupy_with_a_device_is_accepted(fresh_gpu_probe):
    fake = _fake_cupy(lambda: 1)
    fresh_gpu_probe.setattr(backend, "cupy", fake)
    assert backend.gpu_available() and get_backend("cupy") is fake


def test_as_numpy_and_to_backend_on_numpy():
    x = np.arange(6.0).reshape(2, 3)
    assert as_numpy(x) is x                        # no copy when already there
    assert to_backend(x, "numpy") is x
    np.testing.assert_array_equal(as_numpy([[1, 2]]), np.array([[1, 2]]))
    assert backend.synchronize(np) is None


def test_round_trip_through_each_backend(xp, backend_name):
    x = np.random.default_rng(0).standard_normal((3, 4)).astype("float32")
    moved = to_backend(x, backend_name)
    assert get_array_module(moved) is xp and backend_of(moved) == backend_name
    assert moved.dtype == np.float32
    back = as_numpy(moved)
    assert isinstance(back, np.ndarray)
    np.testing.assert_array_equal(back, x)
    backend.synchronize(xp)


def test_models_move_between_backends(xp, backend_name):
    model = alexnet_small()
    reference = {k: p.copy() for k, p in model.state_dict().items()}
    assert model.to(backend_name) is model
    assert model.xp is xp
    assert all(get_array_module(p, g) is xp for _, p, g in model.named_parameters())
    model.to_cpu()
    assert model.xp is np
    for k, p in model.state_dict().items():
        np.testing.assert_array_equal(p, reference[k])
