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


def gpu_unavailable_reason():
    """Why the CuPy backend cannot be used here, or None when it can."""
    global _gpu_reason
    if _gpu_reason is not None:
        return _gpu_reason or None
    if os.environ.get("TINYALEXNET_DISABLE_GPU"):
        reason = "the GPU is disabled by TINYALEXNET_DISABLE_GPU"
    elif cupy is None:
        reason = (f"CuPy is not installed ({_CUPY_IMPORT_ERROR.__class__.__name__}: "
                  f"{_CUPY_IMPORT_ERROR}); install the CuPy wheel for your CUDA, "
                  "e.g. 'pip install cupy-cuda12x'")
    else:
        try:
            count = cupy.cuda.runtime.getDeviceCount()
            reason = "" if count > 0 else "CuPy found no CUDA device"
        except Exception as err:  # no driver, no device
            reason = f"CuPy is installed but no CUDA GPU is usable ({err})"
    _gpu_reason = reason
    return reason or None


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


def synchronize(xp):
    """Wait for the device to finish its queued work (a no-op for NumPy).

    GPU work is asynchronous: read a clock only after this, or you time the
    launch, not the work.
    """
    if xp is not numpy:
        xp.cuda.get_current_stream().synchronize()
