"""From a kernel's CUDA text to a launch: the full source, its compilation, its grid.

Every kernel of the package is a :class:`Kernel`: a name and a CUDA body that
uses the type ``real`` for its numbers.  ``Kernel.source(dtype)`` is the exact
text CuPy compiles, the body after a short prelude::

    typedef float real;                   (double for float64)
    __device__ long long thread_index()   (this thread's number in the whole grid)

so one body serves float32 and float64, and the tests compile and run that same
text (``tests/test_kernels_nvrtc.py`` with NVRTC, ``tests/test_kernels_cpu_exec.py``
with g++ on the CPU).  A ``cupy.RawKernel`` is made from it on first use, once
per (kernel, dtype), and CuPy compiles it with NVRTC on the first launch.

The rules every kernel keeps, so that a CPU can run it thread by thread:

* one thread per output element: ``i = thread_index(); if (i >= n) return;``
  and the thread writes only its own outputs; no shared memory, no atomics, no
  ``__syncthreads``: nothing depends on the order in which threads run;
* every argument is a device array (a pointer to its first element: the array
  must be C-contiguous) or a NumPy scalar of exactly the parameter's C type
  (``xp.int64`` for ``long long``, ``x.dtype.type`` for ``real``...): CuPy passes
  a scalar's bytes as they are and would not notice a float64 given for a float;
* a number that changes between steps (the learning rate, the step count) comes
  as a pair ``(const T* device, T value)``: read from device memory when the
  pointer is given, else the value (``device_or_value``), so that a replayed
  CUDA graph can change it without the host.
"""
from ..backend import get_array_module

REAL = {"float32": "float", "float64": "double"}   # the dtypes every kernel is built for
BLOCK = 256                                        # threads per block

PRELUDE = """\
// tinyalexnet: {name}, real = {ctype}
typedef {ctype} real;

__device__ __forceinline__ long long thread_index()
{{
    return (long long)blockIdx.x * blockDim.x + threadIdx.x;
}}
"""


def runs_on(*arrays):
    """True where these arrays' backend compiles kernels (CuPy) and all are float32 or float64."""
    xp = get_array_module(*arrays)
    return (getattr(xp, "RawKernel", None) is not None
            and all(str(a.dtype) in REAL for a in arrays))


class Kernel:
    """One CUDA kernel: ``name`` (its ``extern "C"`` function) and ``body`` (CUDA, in ``real``)."""

    def __init__(self, name, body):
        if f"void {name}(" not in body:
            raise ValueError(f"kernel {name}: the body defines no function {name}")
        self.name, self.body = name, body
        self._compiled = {}

    def __repr__(self):
        return f"Kernel({self.name!r})"

    def source(self, dtype):
        """The exact CUDA text compiled for ``dtype`` ("float32" or "float64")."""
        return PRELUDE.format(name=self.name, ctype=REAL[str(dtype)]) + self.body

    def compiled(self, xp, dtype):
        """The ``xp.RawKernel`` for ``dtype``, made once (CuPy compiles it at the first launch)."""
        key = (xp.RawKernel, str(dtype))        # a test may swap RawKernel: key on the class
        if key not in self._compiled:
            self._compiled[key] = xp.RawKernel(self.source(dtype), self.name)
        return self._compiled[key]

    def launch(self, xp, dtype, threads, args):
        """Run ``threads`` threads (one per output element) with ``args``, in blocks of BLOCK."""
        if threads <= 0:
            return
        grid = ((threads + BLOCK - 1) // BLOCK,)
        self.compiled(xp, dtype)(grid, (BLOCK,), tuple(args))


def device_or_value(xp, value, ctype):
    """The ``(pointer, value)`` pair of a number that may live in device memory.

    ``value`` a 1-element device array of dtype ``ctype``: (the array, 0), and the
    kernel reads it; a Python number: (a null pointer, the number as ``ctype``).
    """
    scalar = getattr(xp, ctype)
    if isinstance(value, xp.ndarray):
        if str(value.dtype) != ctype or value.size != 1:
            raise TypeError(f"a device scalar must be a 1-element {ctype} array, got "
                            f"{value.size} elements of {value.dtype}")
        return value, scalar(0)
    return xp.uint64(0), scalar(value)          # a null pointer: eight zero bytes


def contiguous(*arrays):
    """The arrays as C-contiguous ones (the same array when it already is: no copy)."""
    xp = get_array_module(*arrays)
    return [xp.ascontiguousarray(a) for a in arrays]
