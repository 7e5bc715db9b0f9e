"""The one module that knows about NumPy and CuPy.

Every other file gets its array module from the arrays it is handed::

    xp = get_array_module(x)      # numpy for NumPy arrays, cupy for CuPy arrays
    y = xp.maximum(x, 0)

so the same lines run on the CPU and on a CUDA GPU, with no ``if gpu:`` inside a
layer.  Data moves between the two only where you say so: ``as_numpy``,
``as_cupy``, ``to_backend``, and ``Module.to_gpu()`` / ``to_cpu()`` for models.

CuPy is optional.  Without it, or without a working GPU, everything on the CPU
works and asking for the GPU raises :class:`BackendUnavailable` with the reason.
"""
import os

import numpy

from .errors import BackendUnavailable

BACKENDS = ("numpy", "cupy")

try:  # pragma: no cover - depends on the machine
    import cupy
    _CUPY_IMPORT_ERROR = None
except Exception as err:  # ImportError, or a CUDA library that fails to load
    cupy = None
    _CUPY_IMPORT_ERROR = err

_gpu_reason = None  # cached answer of gpu_unavailable_reason()

INSTALL_HINT = ("install CuPy with its CUDA toolkit extra: pip install \"cupy-cuda12x[ctk]\" "
                "(CUDA 12) or \"cupy-cuda13x[ctk]\" (CUDA 13), with NumPy 2")


def gpu_unavailable_reason():
    """Why the CuPy backend cannot be used here, or None when it can.

    Importing CuPy and counting devices needs only the driver; compiling a
    kernel needs NVRTC and a matrix product needs cuBLAS, both parts of the CUDA
    toolkit that a plain ``cupy-cuda12x`` wheel expects to find on the machine.
    So the probe runs one tiny kernel and one tiny product too: a missing piece
    is reported here, in one line, and not as a traceback from deep inside conv1.
    """
    global _gpu_reason
    if _gpu_reason is not None:
        return _gpu_reason or None
    if os.environ.get("TINYALEXNET_DISABLE_GPU"):
        reason = "the GPU is disabled by TINYALEXNET_DISABLE_GPU"
    elif cupy is None:
        reason = (f"CuPy is not installed ({_one_line(_CUPY_IMPORT_ERROR)}); {INSTALL_HINT}")
    else:
        try:
            count = cupy.cuda.runtime.getDeviceCount()
            reason = "" if count > 0 else "CuPy found no CUDA device"
        except Exception as err:  # no driver, no device
            reason = f"CuPy is installed but no CUDA GPU is usable ({_one_line(err)})"
        if not reason:
            reason = _probe_kernels(cupy) or ""
    _gpu_reason = reason
    return reason or None


def _one_line(err):
    """``"Type: message"`` of an exception, squeezed onto one line."""
    return f"{type(err).__name__}: {' '.join(str(err).split())}"


def _probe_kernels(cp):
    """Launch one elementwise kernel and one matrix product on the GPU.

    Returns None when both launch, else the reason, naming the CUDA piece that is
    probably missing.  Compiling a kernel (NVRTC) and loading cuBLAS happen on the
    host, at the launch, so their failures show here.  Nothing is read back: the
    probe runs on first use of the backend, which may be inside code that must
    not wait for the device; whether the numbers are right is ``check``'s job."""
    try:
        x = cp.arange(6, dtype=numpy.float32) * 2 + 1            # compiled by NVRTC
    except Exception as err:
        return (f"CuPy sees the GPU but cannot compile or run a kernel ({_one_line(err)}); the "
                f"CUDA toolkit's run-time compiler (NVRTC) is probably missing: {INSTALL_HINT}")
    try:
        cp.matmul(x.reshape(2, 3), x.reshape(3, 2))              # cuBLAS
    except Exception as err:
        return (f"CuPy runs kernels but its matrix product fails ({_one_line(err)}); the CUDA "
                f"toolkit's cuBLAS is probably missing: {INSTALL_HINT}")
    return None


def gpu_available():
    """True when CuPy imports and sees at least one CUDA device."""
    return gpu_unavailable_reason() is None


def get_backend(name):
    """The array module for a backend name: ``"numpy"`` or ``"cupy"``."""
    if name == "numpy":
        return numpy
    if name == "cupy":
        reason = gpu_unavailable_reason()
        if reason:
            raise BackendUnavailable(f"backend 'cupy' is unavailable: {reason}")
        return cupy
    raise BackendUnavailable(f"unknown backend {name!r}: expected one of {', '.join(BACKENDS)}")


def get_array_module(*arrays):
    """numpy or cupy, whichever owns the arrays (numpy for plain Python values)."""
    if cupy is not None:
        for a in arrays:
            if isinstance(a, cupy.ndarray):
                return cupy
    return numpy


def backend_of(x):
    """The backend name of an array: ``"numpy"`` or ``"cupy"``."""
    return "cupy" if get_array_module(x) is not numpy else "numpy"


def is_array(x):
    """True for a NumPy or CuPy array."""
    return isinstance(x, numpy.ndarray) or (cupy is not None and isinstance(x, cupy.ndarray))


def as_numpy(x):
    """A NumPy array with the values of ``x`` (copied off the GPU if it lives there)."""
    if cupy is not None and isinstance(x, cupy.ndarray):
        return cupy.asnumpy(x)
    return numpy.asarray(x)


def as_cupy(x):
    """A CuPy array with the values of ``x`` (copied to the current GPU)."""
    return get_backend("cupy").asarray(x)


def to_backend(x, name):
    """``x`` as an array of the named backend; no copy if it is there already."""
    if name == "numpy":
        return as_numpy(x)
    if name == "cupy":
        return as_cupy(x)
    raise BackendUnavailable(f"unknown backend {name!r}: expected one of {', '.join(BACKENDS)}")


def check_finite_default(name):
    """Whether layers check every input for NaN/inf when training on backend ``name``.

    The one default that ``train``, ``evaluate``/``predict`` and ``bench`` follow
    (so the benchmark times what training runs): on for NumPy, where a check is
    one cheap pass over an array already in memory and names the first layer
    whose input went bad; off for CuPy, where each check reads a flag back and
    makes the host wait for the GPU at every layer (training there checks the
    running loss every ``--log-every`` steps instead).
    """
    return name == "numpy"


def synchronize(xp):
    """Wait for the device to finish its queued work (a no-op for NumPy).

    GPU work is asynchronous: read a clock only after this, or you time the
    launch, not the work.
    """
    if xp is not numpy:
        xp.cuda.get_current_stream().synchronize()


# ---------------------------------------------------------------------------- several GPUs
def nccl():
    """CuPy's binding of NCCL (``cupy.cuda.nccl``), the GPUs' collectives (parallel/allreduce.py);
    a BackendUnavailable saying why where there is none."""
    get_backend("cupy")
    from cupy.cuda import nccl as module         # noqa: PLC0415 -- only for GPU data parallelism
    if not getattr(module, "available", True):
        raise BackendUnavailable("NCCL is not available to CuPy: pip install nvidia-nccl-cu12 "
                                 "(or -cu13, as CuPy's CUDA)")
    return module


def stream_pointer():
    """The current CUDA stream's handle, where NCCL queues its work after the step's."""
    return get_backend("cupy").cuda.get_current_stream().ptr


def use_device(local_rank):
    """Make GPU ``local_rank % count`` this process's device (one GPU per process on a node)."""
    cp = get_backend("cupy")
    count = cp.cuda.runtime.getDeviceCount()
    cp.cuda.Device(local_rank % count).use()
    return local_rank % count


# ---------------------------------------------------------------------------- GPU errors
# How CUDA libraries word a failed allocation: the runtime and the driver say
# "out of memory", cuBLAS (and cuSOLVER, cuFFT) "..._ALLOC_FAILED", cuRAND
# "..._ALLOCATION_FAILED".  CuPy's own pool raises OutOfMemoryError.
_OUT_OF_MEMORY_WORDS = ("out of memory", "alloc_failed", "allocation_failed")
_GPU_ERRORS = ("memory.OutOfMemoryError", "runtime.CUDARuntimeError", "driver.CUDADriverError",
               "cublas.CUBLASError", "curand.CURANDError")


def _cuda_attribute(path):
    """``cupy.cuda.<path>``, or None where CuPy (or that library) is missing."""
    obj = getattr(cupy, "cuda", None)
    try:
        for part in path.split("."):
            obj = getattr(obj, part, None)   # cupy.cuda.cublas loads cuBLAS on first use
    except Exception:                        # a library that does not load: not its errors
        return None
    return obj


def gpu_error_types():
    """The exception types of CuPy and the CUDA libraries it calls (empty without CuPy)."""
    found = [_cuda_attribute(path) for path in _GPU_ERRORS]
    return tuple(t for t in found if isinstance(t, type) and issubclass(t, BaseException))


def is_out_of_memory(err):
    """True when ``err`` says the GPU ran out of memory, whichever part of CUDA said it.

    Catch ``gpu_error_types()`` and ask this; re-raise what it says no to::

        except backend.gpu_error_types() as err:
            if not backend.is_out_of_memory(err):
                raise
    """
    types = gpu_error_types()
    if not types or not isinstance(err, types):
        return False
    pool_error = _cuda_attribute("memory.OutOfMemoryError")
    if isinstance(pool_error, type) and isinstance(err, pool_error):
        return True
    text = str(err).lower()
    return any(word in text for word in _OUT_OF_MEMORY_WORDS)


# ---------------------------------------------------------------------------- the device
def _cupy_linalg():
    """CuPy's matrix-product settings (``cupy._core._routines_linalg``), or a clear error."""
    linalg = getattr(getattr(get_backend("cupy"), "_core", None), "_routines_linalg", None)
    if linalg is None or not hasattr(linalg, "set_compute_type"):
        raise BackendUnavailable("this CuPy offers no way to set TF32 "
                                 "(cupy._core._routines_linalg.set_compute_type is missing)")
    return linalg


def set_tf32(enabled):
    """Allow (True) or forbid (False) TF32 tensor cores in CuPy's float32 matrix products.

    TF32 keeps float32's range but rounds the operands to 10 mantissa bits
    (about 3 significant digits) inside the product: several times faster on
    GPUs from Ampere on, and less exact.  CuPy decides once, at its first
    float32 product, from the environment variable ``CUPY_TF32``; this sets the
    choice explicitly at any time, so a program does not depend on when its
    environment was read.  (On GPUs older than Ampere, CuPy warns and stays
    without TF32; ``tf32_enabled()`` says what it chose.)
    """
    linalg = _cupy_linalg()
    linalg.set_compute_type(numpy.float32, linalg.COMPUTE_TYPE_TF32 if enabled
                            else linalg.COMPUTE_TYPE_DEFAULT)


def tf32_enabled():
    """True when CuPy's float32 matrix products may use TF32 (as CuPy itself reports it)."""
    linalg = _cupy_linalg()
    return linalg.get_compute_type(numpy.float32) == linalg.COMPUTE_TYPE_TF32


def _version(v):
    """CUDA's integer versions, 12040 -> "12.4"."""
    return f"{v // 1000}.{v % 1000 // 10}"


def device_info(name):
    """What the backend ``name`` computes on: ``{what: text}``, for ``check`` and ``bench``."""
    xp = get_backend(name)
    if xp is numpy:
        return {"backend": "numpy (CPU)", "NumPy": numpy.__version__}
    dev = xp.cuda.Device()
    props = xp.cuda.runtime.getDeviceProperties(dev.id)
    gpu = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    info = {"backend": "cupy (CUDA GPU)", "GPU": f"{gpu} (device {dev.id}, compute capability "
            f"{dev.compute_capability})",
            "memory": f"{props['totalGlobalMem'] / 2**30:.1f} GiB",
            "CUDA": f"runtime {_version(xp.cuda.runtime.runtimeGetVersion())}, driver supports "
                    f"up to {_version(xp.cuda.runtime.driverGetVersion())}",
            "CuPy": xp.__version__, "NumPy": numpy.__version__}
    try:
        info["TF32"] = "on" if tf32_enabled() else "off"
    except BackendUnavailable as err:
        info["TF32"] = f"unknown ({err})"
    return info
