"""A strict stand-in for CuPy, for the tests: the GPU's rules, on the CPU.

The CuPy backend cannot be run here (no GPU), but most ways NumPy code breaks on
CuPy are rules, not arithmetic, and NumPy can play them.  This module is an
array library built on NumPy that keeps CuPy 14's rules:

* its arrays are their own type (``strict_cupy.ndarray``), not NumPy arrays, and
  never share memory with host arrays: ``asarray`` copies in, ``get`` copies out;
* nothing converts them to NumPy implicitly: ``numpy.asarray(x)``, ``x + numpy_array``,
  ``x[...] = numpy_array``, matplotlib or Pillow given ``x``, all raise as CuPy does.
  Stricter than CuPy: a ``numpy.*`` function given one raises ``TypeError`` too
  (CuPy would forward ``numpy.exp(x)`` to ``cupy.exp``; code meant for the device
  must say ``xp.exp``).  Python operators with NumPy *scalars* work, as in CuPy;
* every read back to the host is counted (and can be forbidden): ``float()``,
  ``int()``, ``bool()`` (so ``if x.any():``), ``.item()``, ``.get()``, ``.tolist()``,
  ``asnumpy``, printing or formatting values, boolean-mask indexing,
  ``nonzero``/``unique``/``bincount`` (which read sizes back in CuPy);
* reductions and indexing give 0-d arrays, never Python or NumPy scalars;
  ``x[i]`` of a vector is a 0-d *view*, as in CuPy; there is no ``__index__``
  (``range(x)`` fails) and no object, string or datetime dtype;
* only the names CuPy 14 has exist, on the module, its submodules and its arrays
  (``cupy_names.json``, taken from the real package by ``cupy_names_make.py``);
  a name CuPy has that the stand-in lacks says so, rather than pretending;
* the CUDA calls the package makes behave plausibly: ``cuda.get_current_stream()
  .synchronize()``, ``cuda.Event`` / ``get_elapsed_time`` (host clock),
  ``cuda.Device``, ``cuda.runtime.getDeviceProperties``, ``get_default_memory_pool()``
  (it counts every array's bytes, calls ``cuda.MemoryHook``s, and with
  ``set_limit`` raises ``cuda.memory.OutOfMemoryError``), ``fuse`` (runs the
  function as written), ``ElementwiseKernel`` / ``RawKernel`` / ``ReductionKernel``
  (run a Python reference registered with :func:`register_kernel`).

What it cannot tell: speed, float32 results of real GPU kernels, cuBLAS/cuDNN
errors.  Those need a GPU.

How a test uses it
------------------

The ``backend_name`` / ``xp`` fixtures of ``conftest.py`` run every backend-aware
test a third time, with the id ``standin``: ``install(monkeypatch)`` puts the
stand-in where tinyalexnet keeps CuPy (``tinyalexnet.backend.cupy``) and lets the
GPU probe run on it, so ``backend_name`` is ``"cupy"`` and every real code path
(``--backend cupy``, ``to_gpu()``, ``get_backend("cupy")``, ``get_array_module``,
``as_numpy``) meets the stand-in exactly where it would meet CuPy.  A test that
needs the stand-in itself takes the ``standin`` fixture (this module, installed)::

    def test_a_step_reads_nothing(standin):
        ...
        with standin.count_host_reads() as reads:     # counts, by kind and line
            trainer._train_step(...)
        assert reads.count == 0, reads                  # str(reads) lists where

        with standin.cupyx.allow_synchronize(False):  # any host read raises
            trainer._train_step(...)                    # cupyx.DeviceSynchronized

``standin.cupy`` and ``standin.cupyx`` are the stand-in modules;
``standin.host_arrays(x)`` gives the NumPy array behind a stand-in array without
counting a read (for the test's own checks only).  Tests of the device path that
should also run on a real GPU take ``device_name`` (real CuPy or the stand-in) and
``no_sync`` (``with no_sync():`` forbids host reads on either), see conftest.py.

A kernel (``ElementwiseKernel``, ``RawKernel``, ``ReductionKernel``) cannot run
here: register what it computes, written with ``xp`` operations, under its name
(``standin.register_kernel("adam_update", reference)``) and the stand-in calls
that instead, with the kernel call's arguments.
"""
import contextlib
import functools
import json
import os
import sys
import threading
import time
import types
import warnings
import weakref
from collections import Counter

import numpy as np

_HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(_HERE, "cupy_names.json")) as _f:
    NAMES = json.load(_f)
CUPY_VERSION = NAMES["cupy_version"]

# ============================================================================ host reads

_local = threading.local()       # .allowed: host reads allowed in this thread (cupyx's flag)
_recorders = []                  # active count_host_reads() recorders


class DeviceSynchronized(RuntimeError):
    """Raised on a host read inside ``cupyx.allow_synchronize(False)``, as in CuPy."""


def _site():
    """Where a read happened: the first caller outside this module, and its caller,
    as 'train.py:248 (evaluate) <- cli.py:160 (run_evaluate)'."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename == __file__:
        frame = frame.f_back
    parts = []
    while frame is not None and len(parts) < 2:
        path = frame.f_code.co_filename
        root = os.path.dirname(_HERE)
        if path.startswith(root + os.sep):
            path = path[len(root) + 1:]
        parts.append(f"{path}:{frame.f_lineno} ({frame.f_code.co_name})")
        frame = frame.f_back
    return " <- ".join(parts) or "?"


def _host_read(kind):
    """Every device-to-host read goes through here: counted, or refused."""
    if not getattr(_local, "allowed", True):
        raise DeviceSynchronized(f"Device synchronization was detected while disallowed: "
                                 f"{kind} at {_site()}")
    if _recorders:
        site = _site()
        for r in _recorders:
            r.add(kind, site)


def _wait(kind):
    """A wait for the device that reads nothing (stream/event synchronize): counted apart."""
    if _recorders:
        site = _site()
        for r in _recorders:
            r.waits[(kind, site)] += 1


def _iteration():
    if _recorders:
        site = _site()
        for r in _recorders:
            r.iterations[site] += 1


class HostReads:
    """What a block of code read back from the stand-in device.

    ``count``: host reads (each one a GPU->CPU copy and a wait in CuPy);
    ``kinds``: Counter of read kinds ("float()", "bool()", "get()"...);
    ``sites``: Counter of (kind, "file:line (function)");
    ``waits``: stream/event/device synchronizations (no data read);
    ``iterations``: Python loops over a device array (one launch per element).
    """

    def __init__(self):
        self.sites = Counter()
        self.waits = Counter()
        self.iterations = Counter()

    def add(self, kind, site):
        self.sites[(kind, site)] += 1

    @property
    def count(self):
        return sum(self.sites.values())

    @property
    def kinds(self):
        out = Counter()
        for (kind, _), n in self.sites.items():
            out[kind] += n
        return out

    def at(self, fragment):
        """Reads whose site contains ``fragment`` (e.g. "train.py" or "evaluate")."""
        return sum(n for (_, site), n in self.sites.items() if fragment in site)

    def __str__(self):
        if not self.sites:
            return "no host reads"
        lines = [f"{self.count} host reads:"]
        for (kind, site), n in self.sites.most_common():
            lines.append(f"  {n:5d} x {kind:<14s} at {site}")
        return "\n".join(lines)

    __repr__ = __str__


@contextlib.contextmanager
def count_host_reads():
    """``with count_host_reads() as reads:`` counts the host reads made inside."""
    r = HostReads()
    _recorders.append(r)
    try:
        yield r
    finally:
        _recorders.remove(r)


@contextlib.contextmanager
def _allow_synchronize(allow):
    """cupyx.allow_synchronize: with False, any host read in this thread raises."""
    old = getattr(_local, "allowed", True)
    _local.allowed = allow
    try:
        yield
    finally:
        _local.allowed = old


# ============================================================================ device memory

_MB = 1 << 20
DEVICE_MEMORY = 16 * 1024 * _MB   # what the stand-in device says it has
_hooks = []                       # active cuda.MemoryHook objects


class OutOfMemoryError(MemoryError):
    """cupy.cuda.memory.OutOfMemoryError (a MemoryError, as in CuPy)."""

    def __init__(self, size, total, limit=0):
        self._size, self._total, self._limit = size, total, limit
        msg = (f"Out of memory allocating {size:,} bytes (allocated so far: {total:,} bytes"
               + (f", limit set to: {limit:,} bytes" if limit else "") + ").")
        super().__init__(msg)


class MemoryPool:
    """cupy.cuda.MemoryPool's bookkeeping: every array's bytes, rounded up to 512 as
    CuPy rounds them; a block is freed when the last array using it is collected."""

    def __init__(self):
        self._used = 0
        self._held = 0             # the pool keeps freed blocks: the most ever used
        self._limit = 0
        self._live = {}            # id(root numpy array) -> (bytes, weak reference)

    def used_bytes(self):
        return self._used

    def total_bytes(self):
        return self._held

    def free_bytes(self):
        return self._held - self._used

    def n_free_blocks(self):
        return 0

    def free_all_blocks(self, stream=None):
        self._held = self._used

    def set_limit(self, size=None, fraction=None):
        if fraction is not None:
            size = int(DEVICE_MEMORY * fraction)
        self._limit = int(size or 0)

    def get_limit(self):
        return self._limit

    def _register(self, root):
        key = id(root)
        if key in self._live:
            return
        size = -(-max(root.nbytes, 1) // 512) * 512
        if self._limit and self._used + size > self._limit:
            raise OutOfMemoryError(size, self._used, self._limit)
        for h in _hooks:
            h.malloc_preprocess(device_id=0, size=root.nbytes, mem_size=size)
        # freed when the last array using the memory goes (CPython: at once)
        self._live[key] = (size, weakref.ref(root, functools.partial(self._release, key)))
        self._used += size
        if self._used > self._held:
            self._held = self._used
        for h in _hooks:
            h.malloc_postprocess(device_id=0, size=root.nbytes, mem_size=size, mem_ptr=key,
                                 pmem_id=key)

    def _release(self, key, ref):
        size, _ = self._live.pop(key)
        self._used -= size
        for h in _hooks:
            h.free_preprocess(device_id=0, mem_size=size, mem_ptr=key, pmem_id=key)
            h.free_postprocess(device_id=0, mem_size=size, mem_ptr=key, pmem_id=key)


_pool = MemoryPool()


def _root(a):
    """The numpy array that owns the memory ``a`` looks at."""
    if a.base is None:
        return a
    while True:
        b = a.base
        if isinstance(b, np.ndarray):
            a = b
            continue
        bb = getattr(b, "base", None)       # as_strided's wrapper holds the array as .base
        if isinstance(bb, np.ndarray):
            a = bb
            continue
        return a


class MemoryHook:
    """cupy.cuda.MemoryHook: ``with hook:`` receives the pool's malloc/free calls."""
    name = "MemoryHook"

    def __enter__(self):
        _hooks.append(self)
        return self

    def __exit__(self, *exc):
        _hooks.remove(self)

    def alloc_preprocess(self, **kw):
        pass

    def alloc_postprocess(self, **kw):
        pass

    def malloc_preprocess(self, **kw):
        pass

    def malloc_postprocess(self, **kw):
        pass

    def free_preprocess(self, **kw):
        pass

    def free_postprocess(self, **kw):
        pass


# ============================================================================ the array

_UNSUPPORTED_KINDS = "OUSVMmT"    # object, strings, void/records, datetimes: CuPy has none


_CHECKED = set()


def _check_dtype(dtype):
    if dtype in _CHECKED:
        return dtype
    dtype = np.dtype(dtype)
    if dtype.kind in _UNSUPPORTED_KINDS or (dtype.kind == "f" and dtype.itemsize > 8) or (
            dtype.kind == "c" and dtype.itemsize > 16):
        raise ValueError(f"Unsupported dtype {dtype}")
    _CHECKED.add(dtype)
    return dtype


def _wrap(a):
    """A stand-in array around numpy array ``a`` (a 0-d array for a NumPy scalar)."""
    if isinstance(a, np.generic):
        a = np.asarray(a)
    _check_dtype(a.dtype)
    _pool._register(_root(a))
    x = ndarray.__new__(ndarray)
    x._a = a
    return x


def _wrap_result(r):
    if type(r) is np.ndarray or isinstance(r, (np.ndarray, np.generic)):
        return _wrap(r)
    if isinstance(r, tuple):
        return tuple(_wrap_result(v) for v in r)
    if isinstance(r, list):
        return [_wrap_result(v) for v in r]
    return r


def _host_array_error(what=np.ndarray):
    return TypeError(f"Unsupported type {what}")


def _unwrap(v, where):
    """Stand-in arrays -> their numpy arrays; a host numpy array is refused as CuPy does."""
    t = type(v)
    if t is ndarray:
        return v._a
    if t in _SCALARS:
        return v
    if isinstance(v, np.ndarray):
        raise TypeError(f"Unsupported type {type(v)} (in {where}: a host NumPy array given "
                        "to a device function; move it with xp.asarray first)")
    if t is tuple or t is list:
        return t([_unwrap(u, where) for u in v])
    return v


_SCALARS = frozenset((int, float, bool, complex, str, type(None), slice, type(Ellipsis)))


def _unwrap_kwargs(kwargs, where):
    if not kwargs:
        return kwargs
    return {k: _unwrap(v, where) for k, v in kwargs.items()}


def host_arrays(x):
    """The numpy array behind a stand-in array, with no read counted (for test checks)."""
    return x._a if isinstance(x, ndarray) else x


def _operand(other):
    """A binary operator's other side: device array, Python or NumPy scalar; else refused."""
    if isinstance(other, ndarray):
        return other._a
    if isinstance(other, (bool, int, float, complex, np.generic)):
        return other
    raise TypeError(f"Unsupported type {type(other)}")


def _binary(name, reflected=False):
    op = getattr(np, name)
    comparison = name in ("equal", "not_equal", "less", "less_equal", "greater", "greater_equal")

    def method(self, other):
        if other is None or (comparison and not isinstance(
                other, (ndarray, np.ndarray, bool, int, float, complex, np.generic))):
            return NotImplemented
        o = _operand(other)
        return _wrap(op(o, self._a) if reflected else op(self._a, o))
    return method


def _inplace(name):
    op = getattr(np, name)

    def method(self, other):
        op(self._a, _operand(other), out=self._a)
        return self
    return method


class _Flags:
    """CuPy's flags: c_contiguous, f_contiguous and owndata only."""

    def __init__(self, a):
        self.c_contiguous = bool(a.flags.c_contiguous)
        self.f_contiguous = bool(a.flags.f_contiguous)
        self.owndata = bool(a.flags.owndata)

    def __getitem__(self, name):
        return {"C_CONTIGUOUS": self.c_contiguous, "F_CONTIGUOUS": self.f_contiguous,
                "OWNDATA": self.owndata}[name]


class _Device:
    """cupy.cuda.Device: the one stand-in device, id 0."""

    def __init__(self, device=None):
        self.id = 0 if device is None else int(device)
        if self.id != 0:
            raise CUDARuntimeError("cudaErrorInvalidDevice: invalid device ordinal")

    def __int__(self):
        return self.id

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def __eq__(self, other):
        return isinstance(other, _Device) and other.id == self.id

    __hash__ = object.__hash__

    def __repr__(self):
        return f"<CUDA Device {self.id}>"

    def use(self):
        pass

    def synchronize(self):
        _host_read("Device.synchronize()")      # CuPy declares this one a synchronisation

    @property
    def compute_capability(self):
        return "90"

    @property
    def mem_info(self):
        return DEVICE_MEMORY - _pool.used_bytes(), DEVICE_MEMORY

    @property
    def attributes(self):
        return {"MultiProcessorCount": 132, "WarpSize": 32}


_ALLOWED_ARRAY_NAMES = frozenset(NAMES["classes"]["cupy.ndarray"])


class ndarray:
    """An array on the stand-in device.  Only what cupy.ndarray has exists."""

    __slots__ = ("_a", "__weakref__")
    __array_priority__ = 100      # as CuPy: Python operators defer to it over NumPy's

    def __init__(self, shape, dtype=float, memptr=None, strides=None, order="C"):
        if memptr is not None or strides is not None:
            raise NotImplementedError("strict_cupy.ndarray: memptr/strides are not emulated")
        a = np.empty(shape, dtype=_check_dtype(dtype), order=order)
        _pool._register(a)
        self._a = a

    # ---------------------------------------------------------------- no silent NumPy
    def __array__(self, dtype=None, copy=None):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. "
                        "Please use `.get()` to construct a NumPy array explicitly.")

    _OPERATOR_UFUNCS = frozenset((
        "add", "subtract", "multiply", "true_divide", "divide", "floor_divide", "remainder",
        "power", "matmul", "equal", "not_equal", "less", "less_equal", "greater",
        "greater_equal", "bitwise_and", "bitwise_or", "bitwise_xor", "left_shift",
        "right_shift", "divmod"))

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        # Reached when NumPy holds the other operand: `numpy_array + x`, `np.float32(2) * x`,
        # or `numpy.exp(x)`.  CuPy refuses host arrays; with a NumPy scalar, a Python
        # operator works in CuPy, and so here.
        everything = list(inputs) + list(kwargs.get("out", ()))
        for v in everything:
            if isinstance(v, np.ndarray):
                raise _host_array_error(type(v))
        if method == "__call__" and ufunc.__name__ in self._OPERATOR_UFUNCS and len(inputs) == 2 \
                and "out" not in kwargs:
            return _wrap(ufunc(*(_operand(v) for v in inputs)))
        raise TypeError(f"strict CuPy stand-in: numpy.{ufunc.__name__}.{method} was given a "
                        f"device array; use xp.{ufunc.__name__} with xp = get_array_module(x)")

    def __array_function__(self, func, types, args, kwargs):
        raise TypeError(f"strict CuPy stand-in: numpy.{func.__name__}() was given a device "
                        f"array; use xp.{func.__name__} with xp = get_array_module(x), or "
                        "move the array to the host first (as_numpy)")

    # ---------------------------------------------------------------- reads to the host
    def get(self, stream=None, order="C", out=None, blocking=True):
        _host_read("get()")
        a = np.array(self._a, order=order, copy=True)
        if out is not None:
            out[...] = a
            return out
        return a

    def set(self, arr, stream=None):
        if not isinstance(arr, np.ndarray) or arr.shape != self.shape:
            raise ValueError("Shape mismatch. Old shape: {} / New shape: {}".format(
                self.shape, getattr(arr, "shape", None)))
        self._a[...] = arr

    def item(self):
        if self._a.size != 1:
            raise ValueError("can only convert an array of size 1 to a Python scalar")
        _host_read("item()")
        return self._a.item()

    def tolist(self):
        _host_read("tolist()")
        return self._a.tolist()

    def tobytes(self, order="C"):
        _host_read("tobytes()")
        return self._a.tobytes(order)

    def tofile(self, fid, sep="", format="%s"):
        _host_read("tofile()")
        self._a.tofile(fid, sep, format)

    def __bool__(self):
        if self._a.size == 0:
            warnings.warn("The truth value of an empty array is ambiguous. Returning False, "
                          "but in future this will result in an error.", DeprecationWarning)
            return False
        if self._a.size > 1:
            raise ValueError("The truth value of an array with more than one element is "
                             "ambiguous. Use a.any() or a.all()")
        _host_read("bool()")
        return bool(self._a)

    def __int__(self):
        _host_read("int()")
        return int(np.array(self._a))

    def __float__(self):
        _host_read("float()")
        return float(np.array(self._a))

    def __complex__(self):
        _host_read("complex()")
        return complex(np.array(self._a))

    def __repr__(self):
        _host_read("repr()")
        return repr(np.array(self._a))

    def __str__(self):
        _host_read("str()")
        return str(np.array(self._a))

    def __format__(self, spec):
        _host_read("format()")
        return format(np.array(self._a)[()] if self._a.ndim == 0 else np.array(self._a), spec)

    def __reduce__(self):
        _host_read("pickle")
        return (_unpickle, (np.array(self._a),))

    # ---------------------------------------------------------------- container
    def __len__(self):
        if self._a.ndim == 0:
            raise TypeError("len() of unsized object")
        return self._a.shape[0]

    def __iter__(self):
        if self._a.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        _iteration()
        return (self[i] for i in range(self._a.shape[0]))

    def __getitem__(self, key):
        key = _index(key)
        if not isinstance(key, tuple):
            key = (key,)
        r = self._a[key]
        if isinstance(r, np.generic):
            r = self._a[key + (Ellipsis,)]      # CuPy: a 0-d view, never a scalar
        return _wrap(r)

    def __setitem__(self, key, value):
        key = _index(key)
        basic = all(isinstance(k, (int, np.integer, slice, type(None), type(Ellipsis)))
                    for k in (key if isinstance(key, tuple) else (key,)))
        if isinstance(value, ndarray):
            value = value._a
        elif basic:
            # CuPy fills a slice from a host value only if it is a scalar (cupy#2079)
            v = np.asarray(value)
            if v.shape != ():
                raise ValueError("non-scalar numpy.ndarray cannot be used for fill")
            value = v[()]
        elif isinstance(value, np.ndarray) or isinstance(value, (list, tuple)):
            value = np.array(value)             # CuPy copies it to the device
        self._a[key] = value

    def __delitem__(self, key):
        raise ValueError("cannot delete array elements")

    def __copy__(self):
        return _wrap(self._a.copy())

    def __deepcopy__(self, memo):
        return _wrap(self._a.copy())

    # ---------------------------------------------------------------- attributes
    @property
    def shape(self):
        return self._a.shape

    @shape.setter
    def shape(self, value):
        self._a.shape = value

    @property
    def dtype(self):
        return self._a.dtype

    @property
    def ndim(self):
        return self._a.ndim

    @property
    def size(self):
        return self._a.size

    @property
    def strides(self):
        return self._a.strides

    @property
    def itemsize(self):
        return self._a.itemsize

    @property
    def nbytes(self):
        return self._a.nbytes

    @property
    def flags(self):
        return _Flags(self._a)

    @property
    def base(self):
        return None if self._a.base is None else _wrap(self._a.base) \
            if isinstance(self._a.base, np.ndarray) else None

    @property
    def device(self):
        return _Device(0)

    @property
    def T(self):
        return _wrap(self._a.T)

    @property
    def mT(self):
        return _wrap(self._a.mT)

    @property
    def real(self):
        return _wrap(self._a.real)

    @property
    def imag(self):
        return _wrap(self._a.imag)

    def fill(self, value):
        if isinstance(value, ndarray):
            if value.shape != ():
                raise ValueError("non-scalar cupy.ndarray cannot be used for fill")
            self._a[...] = value._a
            return
        v = np.asarray(value, dtype=self._a.dtype)
        if v.shape != ():
            raise ValueError("non-scalar numpy.ndarray cannot be used for fill")
        self._a.fill(v[()])

    def astype(self, dtype, order="K", casting=None, subok=None, copy=True):
        a = self._a.astype(_check_dtype(dtype), order=order, copy=copy)
        return self if a is self._a else _wrap(a)

    def nonzero(self):
        _host_read("nonzero()")
        return tuple(_wrap(i) for i in self._a.nonzero())

    def __getattr__(self, name):
        # Methods NumPy and CuPy share (sum, reshape, transpose, max, ...), run by NumPy;
        # made once per name, then found on the class.
        if name not in _ALLOWED_ARRAY_NAMES or name.startswith("__"):
            raise AttributeError(f"'cupy.ndarray' object has no attribute {name!r}"
                                 + ("" if name in _ALLOWED_ARRAY_NAMES else
                                    " (CuPy 14 has no such attribute)"))
        if not callable(getattr(self._a, name, None)):
            raise AttributeError(f"strict CuPy stand-in: cupy.ndarray.{name} exists in CuPy 14 "
                                 "but is not emulated here (add it in tests/strict_cupy.py)")
        where = f"ndarray.{name}"

        def method(self, *args, **kwargs):
            target = getattr(self._a, name)
            if not kwargs:
                return _wrap_result(target(*[_unwrap(a, where) for a in args]))
            out = kwargs.get("out")
            r = target(*[_unwrap(a, where) for a in args], **_unwrap_kwargs(kwargs, where))
            if out is not None and r is getattr(out, "_a", None):
                return out
            return _wrap_result(r)
        method.__name__ = name
        setattr(ndarray, name, method)
        return method.__get__(self)


for _name in ("add", "subtract", "multiply", "true_divide", "floor_divide", "remainder",
              "power", "matmul", "bitwise_and", "bitwise_or", "bitwise_xor", "left_shift",
              "right_shift", "divmod"):
    _py = {"true_divide": "truediv", "floor_divide": "floordiv", "remainder": "mod",
           "power": "pow", "bitwise_and": "and", "bitwise_or": "or", "bitwise_xor": "xor",
           "left_shift": "lshift", "right_shift": "rshift", "subtract": "sub",
           "multiply": "mul"}.get(_name, _name)
    setattr(ndarray, f"__{_py}__", _binary(_name))
    setattr(ndarray, f"__r{_py}__", _binary(_name, reflected=True))
    if _name not in ("divmod", "matmul"):        # CuPy has no __imatmul__ either
        setattr(ndarray, f"__i{_py}__", _inplace(_name))
for _name, _ufunc in (("eq", "equal"), ("ne", "not_equal"), ("lt", "less"), ("le", "less_equal"),
                      ("gt", "greater"), ("ge", "greater_equal")):
    setattr(ndarray, f"__{_name}__", _binary(_ufunc))
ndarray.__hash__ = None
ndarray.__neg__ = lambda self: _wrap(np.negative(self._a))
ndarray.__pos__ = lambda self: _wrap(np.positive(self._a))
ndarray.__abs__ = lambda self: _wrap(np.absolute(self._a))
ndarray.__invert__ = lambda self: _wrap(np.invert(self._a))


def _unpickle(a):
    return _wrap(a)


def _index(key):
    """An index for the numpy array behind: device index arrays are used as they are;
    a boolean mask makes CuPy read the number of True values back (a host read)."""
    parts = key if isinstance(key, tuple) else (key,)
    out = []
    for k in parts:
        if isinstance(k, ndarray):
            if k.dtype == np.bool_ and k.ndim > 0:
                _host_read("boolean mask")
            k = k._a
        elif isinstance(k, (np.ndarray, list)):
            if np.asarray(k).dtype == np.bool_:
                _host_read("boolean mask")
            k = np.array(k)                     # copied to the device, as CuPy does
        out.append(k)
    return tuple(out) if isinstance(key, tuple) else out[0]


# ============================================================================ functions

def _check_keywords(name, kwargs, accepted):
    """CuPy's function takes only these keywords (cupy_names.json); NumPy's may take more."""
    if accepted is not None and "**" not in accepted:
        for k in kwargs:
            if k not in accepted:
                raise TypeError(f"{name}() got an unexpected keyword argument {k!r} "
                                f"(CuPy {CUPY_VERSION}'s takes {', '.join(accepted)})")


def _function(np_func, name, module="cupy", accepted=None):
    """cupy.<name>: the NumPy function, on device arrays only, giving device arrays."""
    if accepted is None:
        accepted = NAMES["keywords"].get(module, {}).get(name)

    def f(*args, **kwargs):
        if not kwargs:
            return _wrap_result(np_func(*[_unwrap(a, name) for a in args]))
        _check_keywords(name, kwargs, accepted)
        out = kwargs.get("out")
        if out is not None and not isinstance(out, ndarray):
            raise TypeError(f"{name}: out must be a cupy.ndarray, got {type(out)}")
        r = np_func(*[_unwrap(a, name) for a in args], **_unwrap_kwargs(kwargs, name))
        if out is not None and r is out._a:
            return out
        return _wrap_result(r)
    f.__name__ = f.__qualname__ = name
    f.__doc__ = f"Stand-in for cupy.{name} (NumPy's, on device arrays)."
    return f


class ufunc:
    """cupy.ufunc: NumPy's ufunc of the same name, on device arrays."""

    def __init__(self, np_ufunc):
        self._u = np_ufunc
        self.__name__ = np_ufunc.__name__
        self.nin, self.nout, self.nargs = np_ufunc.nin, np_ufunc.nout, np_ufunc.nargs
        self.types = np_ufunc.types
        # CuPy's ufuncs take out, dtype and casting; NumPy's where=, order=, subok= fail there
        self._call = _function(np_ufunc, self.__name__, accepted=("out", "dtype", "casting"))

    def __call__(self, *args, **kwargs):
        return self._call(*args, **kwargs)

    def reduce(self, *args, **kwargs):
        return _function(self._u.reduce, self.__name__ + ".reduce")(*args, **kwargs)

    def accumulate(self, *args, **kwargs):
        return _function(self._u.accumulate, self.__name__ + ".accumulate")(*args, **kwargs)

    def reduceat(self, *args, **kwargs):
        return _function(self._u.reduceat, self.__name__ + ".reduceat")(*args, **kwargs)

    def outer(self, *args, **kwargs):
        return _function(self._u.outer, self.__name__ + ".outer")(*args, **kwargs)

    def at(self, *args, **kwargs):
        return _function(self._u.at, self.__name__ + ".at")(*args, **kwargs)

    def __repr__(self):
        return f"<ufunc '{self.__name__}'>"


def _reading(np_func, name, reads=1):
    """A function that reads sizes back in CuPy (its docs: "may synchronize the device")."""
    f = _function(np_func, name)

    def g(*args, **kwargs):
        for _ in range(reads):
            _host_read(f"{name}()")
        return f(*args, **kwargs)
    g.__name__ = name
    return g


def _to_device(obj, dtype=None, copy=True, order="K", ndmin=0):
    """cupy.array / asarray: host data is copied in; device arrays stay on the device."""
    if isinstance(obj, ndarray):
        a = obj._a
        if dtype is not None and np.dtype(dtype) != a.dtype:
            copy = True
        if not copy and ndmin <= a.ndim:
            return obj
        return _wrap(np.array(a, dtype=dtype, copy=True, order=order, ndmin=ndmin))
    if isinstance(obj, (list, tuple)):
        obj = _unwrap_nested(obj)
    a = np.array(obj, dtype=dtype, copy=True, order=order, ndmin=ndmin)
    return _wrap(a)


def _unwrap_nested(v):
    if isinstance(v, ndarray):
        return v._a
    if isinstance(v, (list, tuple)):
        return [_unwrap_nested(u) for u in v]
    return v


def array(obj, dtype=None, copy=True, order="K", subok=False, ndmin=0, *, blocking=False):
    return _to_device(obj, dtype, copy=bool(copy), order=order, ndmin=ndmin)


def asarray(a, dtype=None, order=None, *, copy=None, blocking=False):
    return _to_device(a, dtype, copy=bool(copy), order=order or "K")


def asanyarray(a, dtype=None, order=None, *, copy=None, blocking=False):
    return asarray(a, dtype, order, copy=copy)


def ascontiguousarray(a, dtype=None):
    if not isinstance(a, ndarray):      # CuPy's takes a cupy.ndarray only
        raise TypeError(f"Argument 'a' has incorrect type (expected cupy._core.core._ndarray_base, "
                        f"got {type(a).__name__})")
    return _wrap(np.ascontiguousarray(a._a, dtype=dtype))


def asnumpy(a, stream=None, order="C", out=None, blocking=True):
    """The one explicit way back to the host (a read when ``a`` is on the device)."""
    if isinstance(a, ndarray):
        return a.get(stream=stream, order=order, out=out, blocking=blocking)
    return np.asarray(a, order=order)


def get_array_module(*args):
    for a in args:
        if isinstance(a, ndarray):
            return cupy
    return np


def _truth(np_func, name):
    """array_equal / allclose / array_equiv: a 0-d device bool in CuPy, not a Python bool."""
    f = _function(np_func, name)

    def g(*args, **kwargs):
        return _wrap(np.asarray(f(*args, **kwargs)))
    g.__name__ = name
    return g


def _where(condition, x=None, y=None):
    if x is None and y is None:
        return _reading(np.where, "where")(condition)
    return _function(np.where, "where")(condition, x, y)


# ---------------------------------------------------------------------------- kernels

KERNEL_REFERENCES = {}


def register_kernel(name, reference):
    """Tell the stand-in how to run the kernel called ``name``: ``reference`` gets the
    same arguments as the kernel call (device arrays) and returns what it returns."""
    KERNEL_REFERENCES[name] = reference


def _kernel_reference(kind, name):
    if name not in KERNEL_REFERENCES:
        raise NotImplementedError(
            f"strict CuPy stand-in: {kind} {name!r} has no reference implementation; "
            f"register one with strict_cupy.register_kernel({name!r}, function)")
    return KERNEL_REFERENCES[name]


class ElementwiseKernel:
    def __init__(self, in_params, out_params, operation, name="kernel", reduce_dims=True,
                 preamble="", no_return=False, return_tuple=False, **kwargs):
        self.in_params, self.out_params, self.operation = in_params, out_params, operation
        self.name, self.preamble = name, preamble

    def __call__(self, *args, **kwargs):
        return _kernel_reference("ElementwiseKernel", self.name)(*args, **kwargs)


class ReductionKernel(ElementwiseKernel):
    def __init__(self, in_params, out_params, map_expr, reduce_expr, post_map_expr, identity,
                 name="reduce_kernel", **kwargs):
        super().__init__(in_params, out_params, map_expr, name)

    def __call__(self, *args, **kwargs):
        return _kernel_reference("ReductionKernel", self.name)(*args, **kwargs)


class RawKernel:
    def __init__(self, code, name, options=(), backend="nvrtc", translate_cucomplex=False,
                 **kwargs):
        self.code, self.name, self.options = code, name, options

    def __call__(self, grid, block, args, **kwargs):
        return _kernel_reference("RawKernel", self.name)(grid, block, args, **kwargs)


def fuse(*args, **kwargs):
    """cupy.fuse: in the stand-in the function simply runs (CuPy fuses it into one kernel;
    the values are the same)."""
    if len(args) == 1 and callable(args[0]) and not kwargs:
        return args[0]
    return lambda f: f


# ============================================================================ cuda

class CUDARuntimeError(RuntimeError):
    pass


class Event:
    """cupy.cuda.Event: the host clock when recorded (the stand-in runs synchronously)."""

    def __init__(self, block=False, disable_timing=False, interprocess=False):
        self._t = None
        self.disable_timing = disable_timing

    def record(self, stream=None):
        self._t = time.perf_counter()

    def synchronize(self):
        _wait("Event.synchronize()")

    @property
    def done(self):
        return True


def get_elapsed_time(start_event, end_event):
    """Milliseconds between two recorded events."""
    for e in (start_event, end_event):
        if e._t is None or e.disable_timing:
            raise CUDARuntimeError("cudaErrorInvalidResourceHandle: invalid resource handle")
    return (end_event._t - start_event._t) * 1000.0


class Stream:
    """cupy.cuda.Stream: work runs at once in the stand-in; synchronize is a counted wait."""

    null = None

    def __init__(self, null=False, non_blocking=False, ptds=False, priority=None):
        self.ptr = 0

    def synchronize(self):
        _wait("Stream.synchronize()")

    def record(self, event=None):
        event = event or Event()
        event.record(self)
        return event

    def wait_event(self, event):
        pass

    def use(self):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    @property
    def done(self):
        return True


Stream.null = Stream(null=True)
_current_stream = Stream.null


def get_current_stream(device_id=-1):
    return _current_stream


def _device_properties(device):
    _Device(device)
    return {"name": b"strict CuPy stand-in (NumPy on the CPU)", "totalGlobalMem": DEVICE_MEMORY,
            "major": 9, "minor": 0, "multiProcessorCount": 132, "clockRate": 1_980_000,
            "warpSize": 32, "l2CacheSize": 50 * _MB}


def _mem_get_info():
    return DEVICE_MEMORY - _pool.used_bytes(), DEVICE_MEMORY


# ============================================================================ the modules

_NOT_EMULATED = object()   # a name CuPy has whose NumPy namesake would mislead (host arrays)


class _Namespace(types.ModuleType):
    """A module that has exactly the names CuPy's module of the same name has.

    ``impl`` maps names to what the stand-in gives; a name CuPy has and ``impl``
    lacks is served from ``numpy_source`` when NumPy has it with the same meaning
    (functions, ufuncs, dtypes, constants), and otherwise raises an AttributeError
    that says the stand-in does not emulate it.
    """

    def __init__(self, name, impl, numpy_source=None):
        super().__init__(name)
        self.__dict__["_names"] = NAMES["modules"].get(name, {})
        self.__dict__["_impl"] = impl
        self.__dict__["_numpy"] = numpy_source

    def __getattr__(self, name):
        names, impl = self.__dict__["_names"], self.__dict__["_impl"]
        if name in impl and impl[name] is not _NOT_EMULATED:
            value = impl[name]
        elif name not in names:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r} "
                                 f"(CuPy {CUPY_VERSION} has no {self.__name__}.{name})")
        elif name in impl:
            raise AttributeError(f"strict CuPy stand-in: {self.__name__}.{name} exists in CuPy "
                                 f"{CUPY_VERSION} but is not emulated (add it in "
                                 "tests/strict_cupy.py)")
        else:
            value = self._from_numpy(name, names[name])
        self.__dict__[name] = value             # cache
        return value

    def _from_numpy(self, name, kind):
        source = self.__dict__["_numpy"]
        target = getattr(source, name, None) if source is not None else None
        if target is None:
            raise AttributeError(f"strict CuPy stand-in: {self.__name__}.{name} exists in CuPy "
                                 f"{CUPY_VERSION} but is not emulated (add it in "
                                 "tests/strict_cupy.py)")
        if kind == "ufunc" and isinstance(target, np.ufunc):
            return ufunc(target)
        if kind == "function" and callable(target) and not isinstance(target, type):
            return _function(target, name, self.__name__)
        if kind == "type" and isinstance(target, type) and (
                issubclass(target, (np.generic, np.dtype)) or target in (np.finfo, np.iinfo)):
            return target                       # dtypes and scalar types are NumPy's in CuPy too
        if kind == "type" and isinstance(target, type) and issubclass(target, Exception):
            return target
        raise AttributeError(f"strict CuPy stand-in: {self.__name__}.{name} ({kind}) exists in "
                             f"CuPy {CUPY_VERSION} but is not emulated (add it in "
                             "tests/strict_cupy.py)")

    def __dir__(self):
        return sorted(set(self.__dict__["_names"]) | set(self.__dict__["_impl"]))


# CuPy's constants are plain Python numbers (and None), as NumPy's are
CONSTANTS = {"pi": np.pi, "e": np.e, "euler_gamma": np.euler_gamma, "inf": np.inf,
             "Inf": np.inf, "Infinity": np.inf, "infty": np.inf, "PINF": np.inf,
             "NINF": -np.inf, "nan": np.nan, "NaN": np.nan, "NAN": np.nan, "PZERO": 0.0,
             "NZERO": -0.0, "newaxis": None}


def _stride_tricks():
    def as_strided(x, shape=None, strides=None):
        return _wrap(np.lib.stride_tricks.as_strided(_unwrap(x, "as_strided"), shape, strides))
    return _Namespace("cupy.lib.stride_tricks", {
        "as_strided": as_strided,
        "sliding_window_view": _function(np.lib.stride_tricks.sliding_window_view,
                                         "sliding_window_view")})


class _Lib(types.ModuleType):
    def __init__(self):
        super().__init__("cupy.lib")
        self.stride_tricks = _stride_tricks()

    def __getattr__(self, name):
        raise AttributeError(f"strict CuPy stand-in: cupy.lib.{name} is not emulated")


cuda_memory = _Namespace("cupy.cuda.memory", {
    "OutOfMemoryError": OutOfMemoryError, "MemoryPool": MemoryPool})

cuda_runtime = _Namespace("cupy.cuda.runtime", {
    "CUDARuntimeError": CUDARuntimeError,
    "getDeviceCount": lambda: 1,
    "getDevice": lambda: 0,
    "setDevice": lambda device: _Device(device) and None,
    "getDeviceProperties": _device_properties,
    "runtimeGetVersion": lambda: 13000,
    "driverGetVersion": lambda: 13000,
    "memGetInfo": _mem_get_info,
    "deviceSynchronize": lambda: _wait("runtime.deviceSynchronize()"),
    "is_hip": False,
})

cuda = _Namespace("cupy.cuda", {
    "Device": _Device, "Event": Event, "Stream": Stream, "MemoryPool": MemoryPool,
    "MemoryHook": MemoryHook, "memory": cuda_memory, "runtime": cuda_runtime,
    "get_current_stream": get_current_stream, "get_elapsed_time": get_elapsed_time,
    "is_available": lambda: True, "get_device_id": lambda: 0,
    "get_local_runtime_version": lambda: 13000,
})

linalg = _Namespace("cupy.linalg", {}, np.linalg)
random = _Namespace("cupy.random", {   # NumPy's generators would hand out host arrays
    name: _NOT_EMULATED for name in ("default_rng", "get_random_state", "set_random_state",
                                     "RandomState", "BitGenerator")}, np.random)


class _RoutinesLinalg(types.ModuleType):
    """``cupy._core._routines_linalg``'s compute-type switch (TF32 for float32 products),
    as CuPy 14 has it: unset until the first ``get_compute_type``, which reads
    ``CUPY_TF32``.  The stand-in's products are NumPy's whatever it says."""
    COMPUTE_TYPE_TBD, COMPUTE_TYPE_DEFAULT, COMPUTE_TYPE_PEDANTIC = 0, 1, 2
    COMPUTE_TYPE_FP16, COMPUTE_TYPE_FP32, COMPUTE_TYPE_FP64 = 3, 4, 5
    COMPUTE_TYPE_BF16, COMPUTE_TYPE_TF32 = 6, 7

    def __init__(self):
        super().__init__("cupy._core._routines_linalg")
        self.compute_types = {}

    def set_compute_type(self, dtype, compute_type):
        if not 0 <= compute_type <= 7:
            raise ValueError(f"Unknown compute type: {compute_type}")
        self.compute_types[np.dtype(dtype).char.lower()] = compute_type

    def get_compute_type(self, dtype):
        key = np.dtype(dtype).char.lower()
        if self.compute_types.get(key, 0) == self.COMPUTE_TYPE_TBD:
            tf32 = key == "f" and int(os.getenv("CUPY_TF32", "0")) > 0
            self.compute_types[key] = self.COMPUTE_TYPE_TF32 if tf32 else self.COMPUTE_TYPE_DEFAULT
        return self.compute_types[key]


_core = types.ModuleType("cupy._core")
_core._routines_linalg = _RoutinesLinalg()

cupy = _Namespace("cupy", {
    **CONSTANTS,
    "__version__": CUPY_VERSION + "+strict-standin",
    "ndarray": ndarray, "ufunc": ufunc,
    "array": array, "asarray": asarray, "asanyarray": asanyarray,
    "ascontiguousarray": ascontiguousarray, "asnumpy": asnumpy,
    "get_array_module": get_array_module,
    "get_default_memory_pool": lambda: _pool,
    "is_available": lambda: True,
    "cuda": cuda, "linalg": linalg, "random": random, "lib": _Lib(), "_core": _core,
    "fuse": fuse, "ElementwiseKernel": ElementwiseKernel, "RawKernel": RawKernel,
    "ReductionKernel": ReductionKernel,
    "bincount": _reading(np.bincount, "bincount", reads=2),   # any(x < 0) and max(x)
    "nonzero": _reading(np.nonzero, "nonzero"),
    "flatnonzero": _reading(np.flatnonzero, "flatnonzero"),
    "argwhere": _reading(np.argwhere, "argwhere"),
    "unique": _reading(np.unique, "unique"),
    "compress": _reading(np.compress, "compress"),
    "extract": _reading(np.extract, "extract"),
    "where": _where,
    "array_equal": _truth(np.array_equal, "array_equal"),
    "array_equiv": _truth(np.array_equiv, "array_equiv"),
    "allclose": _truth(np.allclose, "allclose"),
}, np)

cupyx = _Namespace("cupyx", {
    "allow_synchronize": _allow_synchronize,
    "DeviceSynchronized": DeviceSynchronized,
    "scatter_add": lambda a, slices, value: np.add.at(a._a, _index(slices), _operand(value)),
    "empty_pinned": lambda shape, dtype=float, order="C": np.empty(shape, dtype, order),
    "zeros_pinned": lambda shape, dtype=float, order="C": np.zeros(shape, dtype, order),
    "rsqrt": lambda x, out=None: _wrap(1 / np.sqrt(_unwrap(x, "rsqrt"))),
})


# ============================================================================ installing

def install(monkeypatch):
    """Make the stand-in tinyalexnet's CuPy for one test (``monkeypatch`` undoes it).

    The GPU probe's cached answer is cleared so that it runs again, on the stand-in.
    Returns this module (counters, ``cupy``, ``cupyx``).
    """
    from tinyalexnet import backend
    monkeypatch.setattr(backend, "cupy", cupy)
    monkeypatch.setattr(backend, "_CUPY_IMPORT_ERROR", None)
    monkeypatch.setattr(backend, "_gpu_reason", None)
    monkeypatch.delenv("TINYALEXNET_DISABLE_GPU", raising=False)
    _pool.set_limit(0)
    _local.allowed = True
    _core._routines_linalg.compute_types.clear()        # CUPY_TF32 is read afresh
    return sys.modules[__name__]
