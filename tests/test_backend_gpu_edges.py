"""The edges of the GPU backend that a machine without a GPU can still test, with a
fake CuPy: the probe that runs a kernel and a matrix product before saying yes, the
recognition of every CUDA library's out-of-memory error, TF32 set explicitly, the
device description.  The real CuPy runs the same code in the GPU run (scripts/gpu_run.py).
"""
import types

import numpy as np
import pytest

from tinyalexnet import backend
from tinyalexnet.errors import BackendUnavailable


class _Error(Exception):
    pass


def _fake_cupy(arange=np.arange, matmul=np.matmul, linalg=None, errors=None):
    """CuPy as far as backend.py sees it: one device; arrays, kernels and products in NumPy."""
    errors = errors or {}
    cuda = types.SimpleNamespace(
        runtime=types.SimpleNamespace(getDeviceCount=lambda: 1,
                                      CUDARuntimeError=errors.get("runtime", _Error)),
        memory=types.SimpleNamespace(OutOfMemoryError=errors.get("pool", _Error)),
        driver=types.SimpleNamespace(CUDADriverError=errors.get("driver", _Error)),
        cublas=types.SimpleNamespace(CUBLASError=errors.get("cublas", _Error)),
        curand=types.SimpleNamespace(CURANDError=errors.get("curand", _Error)))
    return types.SimpleNamespace(cuda=cuda, ndarray=type("FakeCupyArray", (), {}),
                                 arange=arange, asarray=np.asarray, asnumpy=np.asarray,
                                 matmul=matmul,
                                 _core=types.SimpleNamespace(_routines_linalg=linalg))


@pytest.fixture
def fake(monkeypatch):
    """Install a fake CuPy (``fake(**kwargs)``) and forget the cached probe."""
    monkeypatch.setattr(backend, "_gpu_reason", None)
    monkeypatch.delenv("TINYALEXNET_DISABLE_GPU", raising=False)

    def install(**kwargs):
        cp = _fake_cupy(**kwargs)
        monkeypatch.setattr(backend, "cupy", cp)
        return cp
    return install


def _raises(exc):
    def f(*args, **kwargs):
        raise exc
    return f


def test_a_working_gpu_passes_the_probe(fake):
    cp = fake()
    assert backend.gpu_unavailable_reason() is None
    assert backend.get_backend("cupy") is cp


def test_a_kernel_that_cannot_compile_names_nvrtc_and_the_fix(fake):
    fake(arange=_raises(RuntimeError("CuPy failed to load libnvrtc.so.12: cannot open\nshared "
                                     "object file")))
    reason = backend.gpu_unavailable_reason()
    assert "cannot compile or run a kernel" in reason and "NVRTC" in reason
    assert "libnvrtc.so.12" in reason and "\n" not in reason
    assert 'pip install "cupy-cuda12x[ctk]"' in reason and "cupy-cuda13x[ctk]" in reason
    with pytest.raises(BackendUnavailable, match="NVRTC"):
        backend.get_backend("cupy")


def test_a_missing_cublas_is_named(fake):
    fake(matmul=_raises(ImportError("libcublas.so.12: cannot open shared object file")))
    reason = backend.gpu_unavailable_reason()
    assert "matrix product fails" in reason and "cuBLAS" in reason and "libcublas" in reason


def test_the_probe_result_is_kept(fake):
    calls = []

    def arange(*args, **kwargs):
        calls.append(1)
        return np.arange(*args, **kwargs)
    fake(arange=arange)
    backend.gpu_unavailable_reason()
    backend.gpu_unavailable_reason()
    backend.get_backend("cupy")
    assert len(calls) == 1          # one probe


def test_the_probe_reads_nothing_back(standin):
    """It runs on first use, perhaps where the device must not be waited for."""
    with standin.cupyx.allow_synchronize(False):
        assert backend.gpu_unavailable_reason() is None


# ---------------------------------------------------------------------------- out of memory
class PoolOOM(Exception):
    pass


class RuntimeErr(Exception):
    pass


class CublasErr(Exception):
    pass


class CurandErr(Exception):
    pass


class DriverErr(Exception):
    pass


ERRORS = {"pool": PoolOOM, "runtime": RuntimeErr, "cublas": CublasErr, "curand": CurandErr,
          "driver": DriverErr}


@pytest.mark.parametrize("err", [
    PoolOOM("Out of memory allocating 1,073,741,824 bytes (allocated so far: 79,456 bytes)."),
    RuntimeErr("cudaErrorMemoryAllocation: out of memory"),
    CublasErr("CUBLAS_STATUS_ALLOC_FAILED"),
    CurandErr("CURAND_STATUS_ALLOCATION_FAILED"),
    DriverErr("CUDA_ERROR_OUT_OF_MEMORY: out of memory"),
], ids=lambda e: type(e).__name__)
def test_every_cuda_library_out_of_memory_is_recognised(fake, err):
    fake(errors=ERRORS)
    assert isinstance(err, backend.gpu_error_types())
    assert backend.is_out_of_memory(err)


@pytest.mark.parametrize("err", [
    RuntimeErr("cudaErrorIllegalAddress: an illegal memory access was encountered"),
    CublasErr("CUBLAS_STATUS_NOT_SUPPORTED"),
    MemoryError("out of memory"),                     # the host's, not the GPU's
    ValueError("out of memory"),
], ids=lambda e: f"{type(e).__name__}-{str(e)[:20]}")
def test_other_errors_are_not_out_of_memory(fake, err):
    fake(errors=ERRORS)
    assert not backend.is_out_of_memory(err)


def test_without_cupy_nothing_is_a_gpu_error(monkeypatch):
    monkeypatch.setattr(backend, "cupy", None)
    assert backend.gpu_error_types() == ()
    assert not backend.is_out_of_memory(RuntimeError("out of memory"))


# ---------------------------------------------------------------------------- TF32, device
class _Linalg:
    """cupy._core._routines_linalg's compute-type switch, as CuPy defines it."""
    COMPUTE_TYPE_TBD, COMPUTE_TYPE_DEFAULT, COMPUTE_TYPE_TF32 = 0, 1, 7

    def __init__(self):
        self.types = {}

    def set_compute_type(self, dtype, compute_type):
        self.types[np.dtype(dtype)] = compute_type

    def get_compute_type(self, dtype):
        return self.types.get(np.dtype(dtype), self.COMPUTE_TYPE_DEFAULT)


def test_tf32_is_set_and_read_back_explicitly(fake):
    linalg = _Linalg()
    fake(linalg=linalg)
    backend.set_tf32(True)
    assert linalg.types[np.dtype("float32")] == linalg.COMPUTE_TYPE_TF32
    assert backend.tf32_enabled()
    backend.set_tf32(False)
    assert linalg.types[np.dtype("float32")] == linalg.COMPUTE_TYPE_DEFAULT
    assert not backend.tf32_enabled()


def test_a_cupy_without_the_tf32_switch_says_so(fake):
    fake(linalg=None)
    with pytest.raises(BackendUnavailable, match="no way to set TF32"):
        backend.set_tf32(False)


def test_device_info_describes_the_gpu(fake):
    cp = fake(linalg=_Linalg())
    cp.__version__ = "14.0.1"
    cp.cuda.Device = lambda: types.SimpleNamespace(id=0, compute_capability="90")
    cp.cuda.runtime.getDeviceProperties = lambda i: {"name": b"NVIDIA H100 80GB HBM3",
                                                     "totalGlobalMem": 85 * 2**30}
    cp.cuda.runtime.runtimeGetVersion = lambda: 13000
    cp.cuda.runtime.driverGetVersion = lambda: 13010
    info = backend.device_info("cupy")
    assert info["GPU"].startswith("NVIDIA H100 80GB HBM3 (device 0, compute capability 90")
    assert info["memory"] == "85.0 GiB"
    assert info["CUDA"] == "runtime 13.0, driver supports up to 13.1"
    assert info["CuPy"] == "14.0.1" and info["TF32"] == "off"
    assert backend.device_info("numpy")["NumPy"] == np.__version__


# ---------------------------------------------------------------------------- the command line
class FakeCublasError(Exception):
    pass


def _command_raising(monkeypatch, err):
    """Make 'python -m tinyalexnet info' raise ``err``, as a GPU step could."""
    from tinyalexnet import cli

    def run(args):
        raise err
    help_text, add_arguments, _ = cli.COMMANDS["info"]
    monkeypatch.setitem(cli.COMMANDS, "info", (help_text, add_arguments, run))
    monkeypatch.setattr(backend, "gpu_error_types", lambda: (FakeCublasError,))
    return cli


def test_the_cli_turns_any_gpu_out_of_memory_into_one_line(monkeypatch, capsys):
    cli = _command_raising(monkeypatch, FakeCublasError("CUBLAS_STATUS_ALLOC_FAILED"))
    assert cli.main(["info", "alexnet_small"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: out of GPU memory (")
    assert "CUBLAS_STATUS_ALLOC_FAILED" in err and "--batch-size" in err


def test_the_cli_keeps_the_traceback_of_other_gpu_errors(monkeypatch):
    cli = _command_raising(monkeypatch, FakeCublasError("CUBLAS_STATUS_EXECUTION_FAILED"))
    with pytest.raises(FakeCublasError):
        cli.main(["info", "alexnet_small"])
