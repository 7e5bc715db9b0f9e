"""Run a CUDA kernel's own source on the CPU: g++, every thread in turn.

A kernel that has never run is a guess.  Without a GPU, the next best thing is
to run its exact text: ``CpuKernel(code, name)`` takes what ``cupy.RawKernel``
would take, compiles it as C++ with g++ after a small shim for the CUDA names it
uses (``threadIdx``, ``blockIdx``, ``blockDim``, ``gridDim``, ``__global__``,
``__device__``, ``__forceinline__``, ``__restrict__``; the maths functions are
C++'s, with their float overloads, as in CUDA), and a call
``kernel(grid, block, args)`` runs the kernel function once per thread of the
grid, setting the thread's indices first.  The tests put it in the strict CuPy
stand-in's place of ``RawKernel`` (``install``), so the package's own launch code
meets it exactly where it would meet CuPy.

What a call checks, beyond the numbers the tests compare:

* every argument against the kernel's parameter, read from the compiled function
  type: an array for a pointer (C-contiguous, of the pointee's size and kind:
  float, signed, unsigned or bool) or ``numpy.uint64(0)`` for a null pointer; a
  NumPy scalar of exactly the parameter's size and kind for a value.  (CuPy
  passes a scalar's bytes as they come: a float64 given for a ``float`` would be
  garbage on the GPU, silently.)
* no two array arguments overlap (the kernels promise ``__restrict__``), and an
  array behind a ``const`` pointer is unchanged afterwards;
* no thread writes outside its arrays: each array runs inside a copy with guard
  bytes on both sides, 0xFF (NaN as a float), which must be intact afterwards;
  a read outside gets NaNs and shows in the results;
* the result does not depend on the order in which threads run: the grid runs
  twice, first thread first and last thread first, on separate copies, and the
  two must agree bit for bit (a race between threads, or a thread reading what
  another writes, shows here).

Differences from a GPU it cannot see: float32 denormals are kept (CuPy compiles
with -ftz=true), ``a * b + c`` is not contracted into an FMA (``-ffp-contract=off``;
NVCC contracts), and libm's ``exp``/``pow`` are not CUDA's (both within 2 ulp).
Hence the tolerances of the tests that compare with NumPy.
"""
import atexit
import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile

import numpy as np

import strict_cupy

SHIM = r"""
// ---- CUDA names on the CPU (tests/cuda_on_cpu.py)
#include <math.h>
#include <stddef.h>
#include <algorithm>
#include <type_traits>
#include <utility>
struct tinyalexnet_dim3 { unsigned int x, y, z; };
namespace tinyalexnet_cpu {
    tinyalexnet_dim3 thread, block, block_size, grid_size;
}
#define threadIdx (tinyalexnet_cpu::thread)
#define blockIdx (tinyalexnet_cpu::block)
#define blockDim (tinyalexnet_cpu::block_size)
#define gridDim (tinyalexnet_cpu::grid_size)
#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__ __restrict
using std::min;
using std::max;
#line 1 "kernel.cu"
"""

RUNNER = r"""
// ---- the grid, one thread after another (tests/cuda_on_cpu.py)
namespace tinyalexnet_cpu {
template <typename P> void describe_one(long long* d)
{
    typedef typename std::conditional<std::is_pointer<P>::value,
                                      typename std::remove_pointer<P>::type, P>::type V;
    typedef typename std::remove_cv<V>::type U;
    d[0] = std::is_pointer<P>::value;
    d[1] = std::is_const<V>::value;
    d[2] = std::is_same<U, bool>::value ? 'b' : std::is_floating_point<U>::value ? 'f'
         : std::is_signed<U>::value ? 'i' : 'u';
    d[3] = (long long)sizeof(U);
}
template <typename... A> int count(void (*)(A...)) { return (int)sizeof...(A); }
template <typename... A> void describe(void (*)(A...), long long* d)
{
    int k = 0;
    ((describe_one<A>(d + 4 * k), ++k), ...);
}
template <typename... A, size_t... I>
void call(void (*f)(A...), void** args, std::index_sequence<I...>)
{
    f(*static_cast<A*>(args[I])...);
}
template <typename... A>
void run(void (*f)(A...), const unsigned int* g, const unsigned int* b, void** args, int reverse)
{
    grid_size = {g[0], g[1], g[2]};
    block_size = {b[0], b[1], b[2]};
    long long per_block = (long long)b[0] * b[1] * b[2];
    long long total = (long long)g[0] * g[1] * g[2] * per_block;
    for (long long step = 0; step < total; ++step) {
        long long t = reverse ? total - 1 - step : step;
        long long in_block = t % per_block, which = t / per_block;
        thread = {(unsigned int)(in_block % b[0]), (unsigned int)(in_block / b[0] % b[1]),
                  (unsigned int)(in_block / b[0] / b[1])};
        block = {(unsigned int)(which % g[0]), (unsigned int)(which / g[0] % g[1]),
                 (unsigned int)(which / g[0] / g[1])};
        call(f, args, std::index_sequence_for<A...>{});
    }
}
}  // namespace tinyalexnet_cpu

#define TINYALEXNET_EXPORT extern "C" __attribute__((visibility("default")))
TINYALEXNET_EXPORT int tinyalexnet_cpu_count() { return tinyalexnet_cpu::count(&KERNEL); }
TINYALEXNET_EXPORT void tinyalexnet_cpu_describe(long long* d) { tinyalexnet_cpu::describe(&KERNEL, d); }
TINYALEXNET_EXPORT void tinyalexnet_cpu_run(const unsigned int* grid, const unsigned int* block,
                                             void** args, int reverse)
{
    tinyalexnet_cpu::run(&KERNEL, grid, block, args, reverse);
}
"""

FLAGS = ("-std=c++17", "-O1", "-fPIC", "-shared", "-fvisibility=hidden", "-ffp-contract=off",
         "-Wall", "-Werror")
GUARD = 64                      # bytes of 0xFF on each side of every array
_cache_dir = None
_libraries = {}


class CompileError(RuntimeError):
    """g++ refused the kernel's source: the message is g++'s."""


def gpp():
    """The g++ command, or None where the machine has none."""
    return shutil.which(os.environ.get("CXX", "g++"))


def compile_library(code, name):
    """g++'s shared library of ``code`` with the shim and the grid runner, cached by its text."""
    global _cache_dir
    text = SHIM + code + "\n" + RUNNER
    key = hashlib.sha256(f"{name}\0{text}\0{FLAGS}".encode()).hexdigest()[:24]
    if key in _libraries:
        return _libraries[key]
    if _cache_dir is None:
        _cache_dir = tempfile.mkdtemp(prefix="tinyalexnet-cpu-kernels-")
        atexit.register(shutil.rmtree, _cache_dir, ignore_errors=True)
    source = os.path.join(_cache_dir, f"{name}-{key}.cpp")
    library = os.path.join(_cache_dir, f"{name}-{key}.so")
    with open(source, "w") as f:
        f.write(text)
    result = subprocess.run([gpp(), *FLAGS, f"-DKERNEL={name}", "-o", library, source],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise CompileError(f"g++ could not compile kernel {name}:\n{result.stderr}")
    lib = ctypes.CDLL(library)
    lib.tinyalexnet_cpu_count.restype = ctypes.c_int
    lib.tinyalexnet_cpu_describe.argtypes = [ctypes.c_void_p]
    lib.tinyalexnet_cpu_run.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                                        ctypes.c_int]
    count = lib.tinyalexnet_cpu_count()
    described = np.zeros((count, 4), dtype=np.int64)
    lib.tinyalexnet_cpu_describe(described.ctypes.data)
    params = [(bool(p), bool(c), chr(kind), int(size)) for p, c, kind, size in described]
    _libraries[key] = (lib, params)
    return lib, params


def _kind(dtype):
    return {"f": "f", "i": "i", "u": "u", "b": "b"}.get(dtype.kind, "?")


def _ctype_name(kind, size):
    return {("f", 4): "float", ("f", 8): "double", ("b", 1): "bool", ("i", 4): "int",
            ("i", 8): "long long", ("u", 1): "unsigned char", ("u", 4): "unsigned int",
            ("u", 8): "unsigned long long"}.get((kind, size), f"{kind}{size * 8}")


def _dims(d):
    d = tuple(int(v) for v in (d if isinstance(d, tuple) else (d,)))
    return np.array(d + (1,) * (3 - len(d)), dtype=np.uint32)


class CpuKernel:
    """What ``cupy.RawKernel(code, name)`` is, run on the CPU by g++ (see the module's doc)."""

    launches = []               # (name, grid, block) of every call, for the tests that ask

    def __init__(self, code, name, options=(), backend="nvrtc", **kwargs):
        self.code, self.name, self.options = code, name, options
        self.lib, self.params = compile_library(code, name)

    def __call__(self, grid, block, args, **kwargs):
        grid, block = _dims(grid), _dims(block)
        if len(args) != len(self.params):
            raise TypeError(f"{self.name}: {len(args)} arguments for {len(self.params)} parameters")
        hosts = [strict_cupy.host_arrays(a) if isinstance(a, strict_cupy.ndarray) else a
                 for a in args]
        arrays = [i for i, a in enumerate(hosts) if isinstance(a, np.ndarray)]
        for i in arrays:
            for j in arrays:
                if i < j and np.shares_memory(hosts[i], hosts[j]):
                    raise ValueError(f"{self.name}: arguments {i} and {j} overlap "
                                     "(the kernel's pointers are __restrict__)")
        runs = [self._run(grid, block, hosts, reverse) for reverse in (0, 1)]
        for i in arrays:
            first, second = runs[0][i], runs[1][i]
            if self.params[i][1] and first.tobytes() != hosts[i].tobytes():
                raise AssertionError(f"{self.name}: argument {i} is const, and changed")
            if first.tobytes() != second.tobytes():
                raise AssertionError(f"{self.name}: argument {i} differs when the threads run in "
                                     "the other order (a race, or a thread reading another's "
                                     "output)")
            np.copyto(hosts[i], first.reshape(hosts[i].shape))
        CpuKernel.launches.append((self.name, tuple(grid), tuple(block)))

    def _argument(self, index, value, param):
        """(the bytes the kernel receives as this argument, the array behind a pointer or None)."""
        pointer, const, kind, size = param
        where = f"{self.name}: argument {index}"
        if pointer:
            if isinstance(value, np.uint64) and value == 0:
                return np.zeros(1, dtype=np.uint64), None                     # a null pointer
            if not isinstance(value, np.ndarray):
                raise TypeError(f"{where} must be a device array ({_ctype_name(kind, size)}*), "
                                f"got {type(value).__name__}")
            if not value.flags.c_contiguous:
                raise TypeError(f"{where} is not C-contiguous: the kernel would read it wrong")
            if (_kind(value.dtype), value.dtype.itemsize) != (kind, size):
                raise TypeError(f"{where} is a {value.dtype} array for a "
                                f"{_ctype_name(kind, size)}* parameter")
            guarded = np.full(value.nbytes + 2 * GUARD, 0xFF, dtype=np.uint8)
            guarded[GUARD:GUARD + value.nbytes] = value.reshape(-1).view(np.uint8)
            return guarded, guarded
        if not isinstance(value, np.generic):
            raise TypeError(f"{where} must be a NumPy scalar of C type {_ctype_name(kind, size)}, "
                            f"got {type(value).__name__} {value!r}")
        if (_kind(value.dtype), value.dtype.itemsize) != (kind, size):
            raise TypeError(f"{where} is a {value.dtype} scalar for a {_ctype_name(kind, size)} "
                            "parameter")
        return np.array(value), None

    def _run(self, grid, block, hosts, reverse):
        keep, slots = [], (ctypes.c_void_p * len(hosts))()
        guarded = {}
        for i, (value, param) in enumerate(zip(hosts, self.params)):
            data, buffer = self._argument(i, value, param)
            if buffer is not None:
                guarded[i] = buffer
                address = np.array([buffer.ctypes.data + GUARD], dtype=np.uint64)
            else:
                address = data
            keep.append(address)
            slots[i] = address.ctypes.data          # like cuLaunchKernel: pointers to the values
        self.lib.tinyalexnet_cpu_run(grid.ctypes.data, block.ctypes.data,
                                     ctypes.addressof(slots), reverse)
        results = {}
        for i, buffer in guarded.items():
            if (buffer[:GUARD] != 0xFF).any() or (buffer[-GUARD:] != 0xFF).any():
                raise AssertionError(f"{self.name}: a thread wrote outside argument {i}")
            results[i] = buffer[GUARD:-GUARD].view(hosts[i].dtype).copy()
        return results


def install(monkeypatch):
    """The strict CuPy stand-in, installed, with CpuKernel as its RawKernel; returns the stand-in."""
    standin = strict_cupy.install(monkeypatch)
    monkeypatch.setattr(standin.cupy, "RawKernel", CpuKernel)
    return standin
