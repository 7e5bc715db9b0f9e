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
* every kernel launch is counted as CuPy 14 makes them (an element-wise operation
  one, a view none, a reduction one or two, a matrix product one cuBLAS call plus
  the copies CuPy makes first, fancy indexing k + 2, ...: the rules and where
  CuPy's source says so are in the "launches" section below), and every copy from
  the host to the device with its bytes;
* reductions and indexing give 0-d arrays, never Python or NumPy scalars;
  ``x[i]`` of a vector is a 0-d *view*, as in CuPy; there is no ``__index__``
  (``range(x)`` fails) and no object, string or datetime dtype;
* only the names CuPy 14 has exist, on the module, its submodules and its arrays
  (``cupy_names.json``, taken from the real package by ``cupy_names_make.py``);
  a name CuPy has that the stand-in lacks says so, rather than pretending;
* stream capture as CUDA and CuPy 14 do it (``Stream.begin_capture()`` /
  ``end_capture()`` -> ``Graph``, ``Graph.launch()``): during capture every
  operation runs *and* is recorded as a call over its buffers (the NumPy arrays
  behind the stand-in arrays, Python numbers as they were); a launch re-executes
  the recorded calls on the same buffers, without the Python that made them, and
  counts one launch.  So the classic graph bugs happen here as on a GPU: a Python
  number baked into a call, a counter that never advances, a mask that repeats, a
  buffer replaced after capture (the graph keeps using the old one).  Inside a
  capture a host read or a host-to-device copy raises ``RuntimeError`` (CuPy's
  ``memory.pyx``: "the current stream is capturing, so D2H/H2D transfers are
  disallowed"), a stream synchronize raises, and a cuBLAS product (``matmul``,
  ``dot``, ``@``...) raises ``NotImplementedError`` as CuPy 14's
  ``cupy_backends/cuda/libs/cublas.pyx`` ``setStream`` does;
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

To count what a block of code asks of the device::

        with standin.count_launches() as launches:
            trainer._train_step(...)
        launches.count, launches.names        # kernel launches, by operation
        launches.of("conv1", "forward")       # by the layer (any object) that made them
        launches.copies_in, launches.bytes_in # host-to-device copies and bytes
        launches.float64_count                # launches that touch float64 arrays
        launches.reads.count                  # device-to-host reads, as above
        print(launches)                       # every site, most launches first

``standin.cupy`` and ``standin.cupyx`` are the stand-in modules;
``standin.host_arrays(x)`` gives the NumPy array behind a stand-in array without
counting a read (for the test's own checks only).  Tests of the device path that
should also run on a real GPU take ``device_name`` (real CuPy or the stand-in) and
``no_sync`` (``with no_sync():`` forbids host reads on either), see conftest.py.

A kernel (``ElementwiseKernel``, ``RawKernel``, ``ReductionKernel``) cannot run
here: register what it computes, written with ``xp`` operations, under its name
(``standin.register_kernel("adam_update", reference)``) and the stand-in calls
that instead, with the kernel call's arguments (one launch, whatever it does).
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
    if _capture is not None and not _replaying():
        raise RuntimeError(f"the current stream is capturing, so D2H transfers are disallowed "
                           f"({kind} at {_site()})")
    if not getattr(_local, "allowed", True):
        raise DeviceSynchronized(f"Device synchronization was detected while disallowed: "
                                 f"{kind} at {_site()}")
    if _recorders:
        site = _site()
        for r in _recorders:
            r.add(kind, site)


def _wait(kind):
    """A wait for the device that reads nothing (stream/event synchronize): counted apart."""
    if _capture is not None and not _replaying():
        raise CUDARuntimeError(f"cudaErrorStreamCaptureUnsupported: operation not permitted "
                               f"when stream is capturing ({kind} at {_site()})")
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


# ============================================================================ launches and copies in
#
# On a GPU every array operation is at least one kernel launch, queued by the host: for a
# small network the host's time to launch, not the GPU's arithmetic, bounds the step.  The
# stand-in counts launches as CuPy 14 makes them, and host-to-device copies with their
# bytes.  The rules, with where CuPy's source (v14.2.0) says so:
#
# * an element-wise operation, operator or ufunc, in place or not, is one launch; Python
#   and NumPy scalars travel as kernel arguments (no copy); an empty result launches nothing
#   (cupy/_core/_kernel.pyx, ufunc.__call__ and ElementwiseKernel.__call__ return before
#   the launch when the shape has a zero);
# * a view (basic slicing, reshape or ravel of a contiguous array, transpose, [:, None],
#   as_strided) launches nothing; anything that makes a new array launches once (astype to
#   another dtype, copy, ascontiguousarray of a non-contiguous array, zeros/ones/full/arange,
#   where, ...); empty/empty_like only allocate;
# * a reduction over any set of axes is one kernel (cupy/_core/_reduction.pyx moves the
#   reduced axes last and reduces them in one launch), except that CuPy's default CUB
#   accelerator (cupy/_core/_accelerator.pyx: CUPY_ACCELERATORS defaults to "cub") reduces
#   a whole contiguous array to a 0-d result in two passes: cub.device_reduce
#   (cupy/cuda/cub.pyx; CUB runs one single-tile kernel up to one tile, about
#   _CUB_TILE_ITEMS items, two kernels above) for sum/prod/max/min/argmax/argmin of
#   the dtypes CUB takes, and _cub_reduction.pyx's two-pass block reduction (from 128
#   items) for the others; mean divides afterwards (one more launch,
#   _routines_statistics.pyx), argmax/argmin convert CUB's key (one more);
# * matmul/dot/@ is one cuBLAS call (gemmEx, or gemmStridedBatchedEx for a batch), plus a
#   copy of each operand cuBLAS cannot read as it is: 2-D operands neither C- nor
#   F-contiguous (_routines_linalg.pyx, _mat_to_cublas_contiguous), batched operands that
#   are not C-contiguous (matmul's ascontiguousarray), an operand of another dtype; a batch
#   that broadcasts adds three pointer kernels (_mat_ptrs); an `out` that is not
#   C-contiguous or overlaps an operand adds a copy;
# * indexing with integer arrays (_routines_indexing.pyx): one array is one `take` kernel;
#   k >= 2 arrays are k + 2 (a fill of the combined index, one kernel per index array, the
#   take); assigning through them is the same with a scatter kernel instead of the take,
#   and a value that is not a device array is copied in first (core.array(value));
#   a boolean mask is a scan and a kernel (and a read of the count: see host reads);
#   host index arrays (NumPy, lists) are copied in;
# * assignment through basic slicing: a device value is one copy (none if it is the very
#   same array), a scalar one fill;
# * cupy.pad, constant mode (cupy/_padding/pad.py): a zero border on an array of fewer than
#   4e6 elements (or 1-d) is two launches (fill, copy); otherwise one copy plus one fill per
#   side of each axis whose width is not 0;
# * concatenate/stack (_routines_manipulation.pyx, _concatenate): up to 8 arrays, one copy
#   each; more, of one dtype and small, one kernel, after copying its table of pointers
#   (and of sizes and strides, unless all are contiguous and alike) to the device;
# * a custom kernel (ElementwiseKernel, ReductionKernel, RawKernel) or a cupy.fuse'd
#   function is one launch, whatever its Python reference does here;
# * random draws are one launch each (cupy.random).
#
# Host-to-device copies: asarray/array of host data, ndarray.set, host index arrays, values
# assigned through integer-array indexing, the pointer tables above.  Device-to-host copies
# are the host reads counted above; neither kind is a launch.

_CUB_TILE_ITEMS = 4096           # CUB's reduce tile: 256 threads x 16 items (4-byte types)
_CUB_BLOCK_REDUCE_FROM = 128     # _cub_reduction.pyx: CUB_REDUCE_SIZE_THRESHOLD
_PAD_FAST_BELOW = 4e6            # pad.py: "faster path for 1d arrays or small n-dimensional"
_launch_recorders = []           # active count_launches() recorders


class Launches:
    """What a block of code asked of the stand-in device (``count_launches()``).

    ``count``: kernel launches (cuBLAS calls, memsets and device copies included);
    ``names``: Counter of launches by operation ("multiply", "matmul", "take", ...);
    ``sites``: Counter of launches by (operation, "file:line (function) <- caller");
    ``owners``: Counter of launches by (owner, method), the innermost object of the
    project whose method made them: ("conv1", "forward"), ("Adam", "step"),
    ("RunningMeter", "add"), ("Pipeline", "__call__");
    ``float64``: Counter of the launches that read or write float64 arrays, by site;
    ``copies`` / ``copy_bytes``: host-to-device copies and their bytes, by (what, site);
    ``copy_owners``: the copies by (owner, method);
    ``reads``: the host reads made meanwhile (a HostReads, as count_host_reads() gives).
    """

    def __init__(self):
        self.names = Counter()
        self.sites = Counter()
        self.owners = Counter()
        self.float64 = Counter()
        self.copies = Counter()
        self.copy_bytes = Counter()
        self.copy_owners = Counter()
        self.reads = HostReads()

    @property
    def count(self):
        return sum(self.names.values())

    @property
    def float64_count(self):
        return sum(self.float64.values())

    @property
    def copies_in(self):
        return sum(self.copies.values())

    @property
    def bytes_in(self):
        return sum(self.copy_bytes.values())

    def at(self, fragment):
        """Launches whose site contains ``fragment`` (e.g. "adam.py" or "forward")."""
        return sum(n for (_, site), n in self.sites.items() if fragment in site)

    def of(self, owner, method=None):
        """Launches made by ``owner``'s methods (or its ``method`` alone)."""
        return sum(n for (o, m), n in self.owners.items()
                   if o == owner and (method is None or m == method))

    def __str__(self):
        lines = [f"{self.count} launches ({self.float64_count} in float64), "
                 f"{self.copies_in} host-to-device copies ({self.bytes_in:,} bytes), "
                 f"{self.reads.count} host reads"]
        for (name, site), n in self.sites.most_common():
            lines.append(f"  {n:5d} x {name:<22s} at {site}")
        for (what, site), n in self.copies.most_common():
            lines.append(f"  {n:5d} x copy in {what:<14s} {self.copy_bytes[(what, site)]:>10,} "
                         f"bytes at {site}")
        return "\n".join(lines)

    __repr__ = __str__


@contextlib.contextmanager
def count_launches():
    """``with count_launches() as launches:`` counts kernel launches, host-to-device
    copies and host reads made inside (see ``Launches``)."""
    r = Launches()
    _launch_recorders.append(r)
    _recorders.append(r.reads)
    try:
        yield r
    finally:
        _launch_recorders.remove(r)
        _recorders.remove(r.reads)


@contextlib.contextmanager
def _quiet():
    """Inside: nothing is counted (a kernel's Python reference is one launch, not many)."""
    _local.quiet = getattr(_local, "quiet", 0) + 1
    try:
        yield
    finally:
        _local.quiet -= 1


def _counting():
    return bool(_launch_recorders) and not getattr(_local, "quiet", 0)


def _whose():
    """(owner, method) of the code that launched: the innermost frame that is a method of
    an object defined outside this module, then outward while the object stays the same
    (so a layer's ``_check_input`` counts as its ``forward``).  The owner is named by its
    ``name`` attribute when it has one (a layer in a model: "conv1"), else by its class;
    code that no object's method called is the innermost function's ("evaluate()", "").
    A package kernel (``tinyalexnet.kernels``' ``Kernel.launch``) is never the owner: its
    launch counts for the layer or optimizer that called it."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename == __file__:
        frame = frame.f_back
    owner = method = None
    first = frame.f_code.co_name if frame is not None else "?"
    depth = 0
    while frame is not None and depth < 60:
        depth += 1
        code = frame.f_code
        obj = None
        if code.co_argcount and code.co_varnames[0] == "self":
            obj = frame.f_locals.get("self")
        if owner is None:
            if obj is not None and type(obj).__module__ != __name__ \
                    and not type(obj).__module__.startswith("tinyalexnet.kernels"):
                owner, method = obj, code.co_name
        elif obj is owner:
            method = code.co_name
        else:
            break
        frame = frame.f_back
    if owner is None:                            # a function's own: named after it
        return (first + "()", "")
    name = getattr(owner, "name", None)
    return (name if isinstance(name, str) and name else type(owner).__name__, method)


def _launch(name, n=1, arrays=()):
    """Record ``n`` launches of operation ``name``; ``arrays`` (NumPy arrays or dtypes) are
    what it read and wrote, to tell float64 launches."""
    if n <= 0 or not _counting():
        return
    site, who = _site(), _whose()
    f64 = any(getattr(a, "dtype", a) == np.float64 for a in arrays)
    for r in _launch_recorders:
        r.names[name] += n
        r.sites[(name, site)] += n
        r.owners[who] += n
        if f64:
            r.float64[(name, site)] += n


def _copy_in(what, nbytes):
    """Record one host-to-device copy of ``nbytes`` bytes."""
    _no_copy_in_capture(what)
    if not _counting():
        return
    site, who = _site(), _whose()
    for r in _launch_recorders:
        r.copies[(what, site)] += 1
        r.copy_bytes[(what, site)] += int(nbytes)
        r.copy_owners[who] += 1


# ---------------------------------------------------------------------------- stream capture
# CUDA graphs, as CuPy 14 makes them (cupy/cuda/stream.pyx: Stream.begin_capture,
# end_capture; cupy/cuda/graph.pyx: Graph.launch).  While a stream captures, each
# operation made on it runs (so that the Python around it sees results, as the
# host does on a GPU, where the work is only recorded: the values seen there are
# not computed yet -- code that reads them back fails, below) and is recorded as
# ``(call, results)``: ``call()`` recomputes the operation from the same input
# buffers, ``results`` are the arrays it wrote, into which a replay copies.

_capture = None                  # the _Capture in progress (one at a time), or None

CUBLAS = frozenset(("matmul", "dot", "tensordot", "vdot", "inner", "einsum", "kron"))


class _Capture:
    """A capture in progress.  On a GPU the captured kernels are recorded, not run: the
    device's memory is as it was when the capture ends, and arrays made during it hold
    whatever their memory held.  The stand-in runs each operation (the Python around it
    needs shapes, and a kernel's reference its inputs), so it keeps a copy of every live
    array when the capture begins and puts it back when it ends, and fills the arrays made
    meanwhile with 0xFF bytes (NaN in floats, -1 in integers): code that counts on the
    capture having done the step fails here as on a GPU."""

    def __init__(self, stream):
        self.stream, self.calls = stream, []
        self.saved = {}
        for key, (_, ref) in list(_pool._live.items()):
            root = ref()
            if root is not None:
                self.saved[key] = (ref, root.copy())

    def undo(self):
        for key, (_, ref) in list(_pool._live.items()):
            root = ref()
            if root is None:
                continue
            saved = self.saved.get(key)
            if saved is not None and saved[0]() is root:
                np.copyto(root, saved[1])
            elif root.flags.c_contiguous or root.flags.f_contiguous:
                root.reshape(-1, order="A").view(np.uint8)[...] = 0xFF
        self.saved = {}


def _replaying():
    return getattr(_local, "replaying", 0) > 0


def _record(call, results=None):
    """Record one operation of the capture in progress (none outside one, none inside a
    kernel's reference or a replay: the outer operation is the one recorded)."""
    if _capture is None or getattr(_local, "quiet", 0) or _replaying():
        return
    if _current_stream is not _capture.stream:
        raise CUDARuntimeError("cudaErrorStreamCaptureImplicit: operation would make the legacy "
                               "stream depend on a capturing blocking stream (work issued on "
                               f"another stream during capture, at {_site()})")
    _capture.calls.append((call, results))


def _no_cublas(name):
    if _capture is not None and not _replaying():
        raise NotImplementedError("calling cuBLAS API during stream capture is currently "
                                  f"unsupported ({name} at {_site()})")


def _no_copy_in_capture(what):
    if _capture is not None and not _replaying():
        raise RuntimeError(f"the current stream is capturing, so H2D transfers are disallowed "
                           f"({what} at {_site()})")


def _store(results, raw):
    """A replay's results into the arrays the capture made (a graph writes where it wrote)."""
    if isinstance(results, ndarray):
        target = results._a
        if raw is target or raw is None:
            return
        np.copyto(target, np.asarray(raw), casting="unsafe")
    elif isinstance(results, (tuple, list)) and isinstance(raw, (tuple, list)):
        for r, v in zip(results, raw):
            _store(r, v)


class Graph:
    """cupy.cuda.Graph: made by ``Stream.end_capture()``; ``launch()`` replays the recorded
    calls on their buffers (one launch, whatever they are)."""

    def __init__(self, *args, **kwargs):
        raise NotImplementedError("currently this class cannot be initiated by the user and "
                                  "must be created via stream capture")

    @classmethod
    def _from_calls(cls, calls):
        g = object.__new__(cls)
        g._calls = calls
        return g

    def launch(self, stream=None):
        if _capture is not None and not _replaying():
            raise CUDARuntimeError("strict CuPy stand-in: a graph launched inside a capture is "
                                   "not emulated")
        _launch("graph launch", 1)
        _local.replaying = getattr(_local, "replaying", 0) + 1
        try:
            with _quiet():
                for call, results in self._calls:
                    _store(results, call())
        finally:
            _local.replaying -= 1

    def upload(self, stream=None):
        pass

    def __len__(self):                  # the stand-in's own: how many calls were recorded
        return len(self._calls)


@contextlib.contextmanager
def using_allocator(allocator=None):
    """cupy.cuda.using_allocator: the stand-in's arrays are NumPy's whatever it is."""
    if allocator is not None and not callable(allocator):
        raise TypeError("allocator must be callable")
    yield


# ---------------------------------------------------------------------------- the rules

def _arrays_in(values):
    """The NumPy arrays among (nested) values."""
    out = []
    for v in values:
        if isinstance(v, np.ndarray):
            out.append(v)
        elif isinstance(v, (list, tuple)):
            out.extend(_arrays_in(v))
    return out


def _new_array_launches(result, inputs, wrote):
    """The default rule: a function that wrote into an array (``out=``, or one that returns
    nothing) launched once; one that returns arrays launched once if any of them is new
    memory, and not at all if all are views of its inputs (or empty)."""
    if wrote or result is None:
        return 1
    results = _arrays_in(result if isinstance(result, (list, tuple)) else [result])
    for r in results:
        if isinstance(r, np.generic):
            return 1
        if r.size and not any(np.may_share_memory(r, a) for a in inputs):
            return 1
    return 0


_CUB_ROUTINES = frozenset(("sum", "prod", "max", "min", "amax", "amin", "argmax", "argmin",
                           "mean"))
_REDUCTIONS = _CUB_ROUTINES | frozenset(("all", "any", "count_nonzero", "nansum", "nanprod",
                                         "nanmax", "nanmin", "nanmean", "ptp", "trace"))
_CUB_SUM_DTYPES = frozenset(np.dtype(t) for t in (np.int64, np.uint64, np.float16, np.float32,
                                                  np.float64, np.complex64, np.complex128))
_CUB_DTYPES = _CUB_SUM_DTYPES | frozenset(np.dtype(t) for t in (
    np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32))


def _reduction_launches(name, a, axis, dtype, out):
    """Launches of reduction ``name`` of ``a`` over ``axis`` (see the rules above)."""
    name = {"amax": "max", "amin": "min"}.get(name, name)
    if a.ndim == 0 or a.size == 0:
        return 1
    if axis is None:
        axes = tuple(range(a.ndim))
    else:
        axes = tuple(sorted(k % a.ndim for k in (axis if isinstance(axis, tuple) else (axis,))))
    full = len(axes) == a.ndim
    order = "C" if a.flags.c_contiguous else "F" if a.flags.f_contiguous else None
    if order is not None and name in _CUB_ROUTINES:
        supported = _CUB_SUM_DTYPES if name in ("sum", "prod", "mean") and dtype is None \
            else _CUB_DTYPES
        mean_dtype_ok = name != "mean" or a.dtype.kind in "fc"     # mean sums ints as float64
        if (dtype is None or np.dtype(dtype) == a.dtype) and a.dtype in supported \
                and mean_dtype_ok:
            extra = 1 if name in ("mean", "argmax", "argmin") else 0
            if full:                                            # cub.device_reduce
                return (1 if a.size <= _CUB_TILE_ITEMS else 2) + extra
            trailing = axes == tuple(range(a.ndim - len(axes), a.ndim)) if order == "C" \
                else axes == tuple(range(len(axes)))
            if trailing and name not in ("argmax", "argmin"):  # device_segmented_reduce
                return 1 + extra + (out is not None)
    if full and order is not None and a.size >= _CUB_BLOCK_REDUCE_FROM:
        return 2                                                # two-pass block reduction
    return 1


def _matmul_launches(a, b, out):
    """One cuBLAS call, plus the copies CuPy makes first (see the rules above)."""
    dtype = np.result_type(a.dtype, b.dtype)
    if a.size == 0 or b.size == 0:
        return 1
    n = 1
    if max(a.ndim, b.ndim) <= 2:
        if a.ndim == 1 and b.ndim == 1:
            return 2                            # dot of two vectors: multiply, then sum
        for m in (a, b):
            if not (m.flags.c_contiguous or m.flags.f_contiguous):
                n += 1                          # _mat_to_cublas_contiguous copies it
            if m.dtype != dtype:
                n += 1
        if out is not None and (not out.flags.c_contiguous or np.may_share_memory(out, a)
                                or np.may_share_memory(out, b)):
            n += 1
        return n
    for m in (a, b):
        if not m.flags.c_contiguous or m.dtype != dtype:
            n += 1                              # ascontiguousarray(m, dtype)
    nd = max(a.ndim, b.ndim)                    # a 2-D operand becomes a batch of one
    batch_a = (1,) * (nd - max(a.ndim, 2)) + a.shape[:-2]
    batch_b = (1,) * (nd - max(b.ndim, 2)) + b.shape[:-2]
    if any((x == 1) != (y == 1) for x, y in zip(batch_a, batch_b)):
        n += 3                                  # a broadcast batch: three _mat_ptrs kernels
    if out is not None and (not out.flags.c_contiguous or out.dtype != dtype
                            or np.may_share_memory(out, a) or np.may_share_memory(out, b)):
        n += 1
    return n


def _pad_launches(a, pad_width, mode="constant", **kwargs):
    if mode != "constant":
        return 1 + 2 * a.ndim                   # a copy and a fill of each side (approx.)
    widths = np.broadcast_to(np.asarray(pad_width, dtype=np.int64).reshape(-1, 2)
                             if np.ndim(pad_width) else np.full((1, 2), pad_width),
                             (a.ndim, 2))
    value = kwargs.get("constant_values", 0)
    if isinstance(value, (int, float, np.number)) and value == 0 and (
            a.ndim == 1 or a.size < _PAD_FAST_BELOW):
        return 2 if a.size else 1               # fill the new array, copy a in
    return (1 if a.size else 0) + int(np.count_nonzero(widths))


def _concatenate_launches(arrays, out_dtype, ndim):
    """concatenate/stack of ``arrays`` into an array of ``ndim`` axes."""
    if len(arrays) > 8 and all(a.dtype == out_dtype for a in arrays) and \
            sum(a.nbytes for a in arrays) < 2 * 1024 * 1024 * len(arrays):
        _copy_in("concatenate table", 8 * len(arrays))       # the pointers
        alike = all(a.flags.c_contiguous and a.shape == arrays[0].shape for a in arrays)
        if not alike:
            _copy_in("concatenate table", 8 * len(arrays))   # cumulative sizes
            _copy_in("concatenate table", 8 * len(arrays) * ndim)   # strides
        return 1
    return sum(1 for a in arrays if a.size)


_ALLOCATING = frozenset(("empty", "empty_like"))
_JOINING = frozenset(("concatenate", "stack", "hstack", "vstack", "column_stack", "dstack"))
_REDUCTION_OUT_AT = {"sum": 3, "prod": 3, "mean": 3, "max": 2, "min": 2, "amax": 2,
                     "amin": 2, "argmax": 2, "argmin": 2, "all": 2, "any": 2}


def _count_call(name, args, kwargs, result):
    """Record the launches of ``cupy.<name>(*args, **kwargs)``, or of the method ``name``
    of ``args[0]`` (args and kwargs unwrapped to NumPy, result NumPy's)."""
    if not _counting():
        return
    out = kwargs.get("out")
    if name in _ALLOCATING:
        n = 0
    elif name in _REDUCTIONS and isinstance(args[0], np.ndarray):
        axis = kwargs.get("axis", args[1] if len(args) > 1 else None)
        dtype = kwargs.get("dtype", args[2] if name in ("sum", "prod", "mean") and len(args) > 2
                           else None)
        k = _REDUCTION_OUT_AT.get(name)
        if out is None and k is not None and len(args) > k:
            out = args[k]
        n = _reduction_launches(name, args[0], axis, dtype, out)
    elif name in ("matmul", "dot") and len(args) >= 2:
        if out is None and len(args) > 2:
            out = args[2]
        n = _matmul_launches(np.asarray(args[0]), np.asarray(args[1]), out)
    elif name == "pad":
        n = _pad_launches(*args, **kwargs)
    elif name in _JOINING:
        n = _concatenate_launches(list(args[0]), result.dtype, result.ndim)
    else:
        n = _new_array_launches(result, _arrays_in(list(args) + list(kwargs.values())),
                                out is not None)
    _launch(name, n, _arrays_in(list(args) + [result]))


def _index_arrays(key):
    """The advanced (array) parts of an index already passed through ``_index``."""
    parts = key if isinstance(key, tuple) else (key,)
    return [k for k in parts if isinstance(k, np.ndarray)]


def _getitem_launches(key, result):
    adv = _index_arrays(key)
    if not adv or result.size == 0:
        return 0
    if len(adv) == 1:
        return 2 if adv[0].dtype == np.bool_ else 1          # mask: scan + copy; else take
    return len(adv) + 2                                      # fill, one per array, take


def _setitem_launches(key, target, value):
    """Assignment ``target[key] = value`` (target: the NumPy array; value as given)."""
    adv = _index_arrays(key)
    if not adv:
        if isinstance(value, ndarray):
            v = value._a
            view = target[key]
            if v.size == 0 or view.size == 0 or (
                    v.__array_interface__["data"][0] == view.__array_interface__["data"][0]
                    and v.shape == view.shape and v.strides == view.strides):
                return 0                        # the very same array: CuPy skips it
            return 1
        return 1 if target[key].size else 0     # a fill
    n = 1                                       # the scatter kernel
    if len(adv) == 1 and adv[0].dtype == np.bool_:
        n += 1                                  # the mask's scan
    elif len(adv) > 1:
        n += len(adv) + 1                       # fill, one per array
    if isinstance(value, ndarray):
        if value.dtype != target.dtype:
            n += 1                              # value.astype(a.dtype)
    else:
        _copy_in("assigned value", np.asarray(value, dtype=target.dtype).nbytes)
    return n


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

    def malloc(self, size):
        """The allocator ``cuda.using_allocator`` is given; the stand-in's arrays are NumPy's
        (never called)."""
        raise NotImplementedError("strict CuPy stand-in: MemoryPool.malloc is not emulated")

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
        if name == "matmul":
            _no_cublas("@")
        r = op(o, self._a) if reflected else op(self._a, o)
        a = self._a
        result = _wrap(r)
        _record((lambda: op(o, a)) if reflected else (lambda: op(a, o)), result)
        if _launch_recorders:
            if name == "matmul":
                _launch(name, _matmul_launches(*((o, self._a) if reflected else (self._a, o)),
                                               None), (self._a, o, r))
            else:
                _launch(name, 1 if np.size(r[0] if isinstance(r, tuple) else r) else 0,
                        (self._a, o) + (r if isinstance(r, tuple) else (r,)))
        return result
    return method


def _inplace(name):
    op = getattr(np, name)

    def method(self, other):
        o = _operand(other)
        a = self._a
        op(a, o, out=a)
        _record(lambda: op(a, o, out=a))
        _launch(name, 1 if self._a.size else 0, (self._a, o))
        return self
    return method


def _unary(op):
    def method(self):
        a = self._a
        r = op(a)
        _launch(op.__name__, 1 if r.size else 0, (self._a, r))
        result = _wrap(r)
        _record(lambda: op(a), result)
        return result
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
            operands = [_operand(v) for v in inputs]
            if ufunc.__name__ == "matmul":
                _no_cublas("@")
            r = ufunc(*operands)
            if _launch_recorders:
                arrays = [v for v in operands if isinstance(v, np.ndarray)]
                _launch(ufunc.__name__, _matmul_launches(*operands, None)
                        if ufunc.__name__ == "matmul" else 1, arrays)
            result = _wrap(r)
            _record(functools.partial(ufunc, *operands), result)
            return result
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
        _copy_in("set()", arr.nbytes)
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
            key = key + (Ellipsis,)
            r = self._a[key]                    # CuPy: a 0-d view, never a scalar
        if _launch_recorders:
            _launch("getitem", _getitem_launches(key, r), (self._a, r))
        result = _wrap(r)
        if _index_arrays(key):                  # a gather (a view needs no replay)
            a = self._a
            _record(lambda: a[key], result)
        return result

    def __setitem__(self, key, value):
        key = _index(key)
        basic = all(isinstance(k, (int, np.integer, slice, type(None), type(Ellipsis)))
                    for k in (key if isinstance(key, tuple) else (key,)))
        given = value
        if isinstance(value, ndarray):
            value = value._a
        elif basic:
            # CuPy fills a slice from a host value only if it is a scalar (cupy#2079)
            v = np.asarray(value)
            if v.shape != ():
                raise ValueError("non-scalar numpy.ndarray cannot be used for fill")
            value = v[()]
        elif isinstance(value, np.ndarray) or isinstance(value, (list, tuple)):
            _no_copy_in_capture("assigned value")
            value = np.array(value)             # CuPy copies it to the device
        n = _setitem_launches(key, self._a, given) if _launch_recorders else 0
        self._a[key] = value
        a = self._a
        _record(lambda: a.__setitem__(key, value))
        _launch("setitem", n, (self._a,))

    def __delitem__(self, key):
        raise ValueError("cannot delete array elements")

    def __copy__(self):
        _launch("copy", 1 if self._a.size else 0, (self._a,))
        result = _wrap(self._a.copy())
        _record(self._a.copy, result)
        return result

    def __deepcopy__(self, memo):
        return self.__copy__()

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
            a, v = self._a, value._a
            a[...] = v
            _record(lambda: a.__setitem__(Ellipsis, v))
            _launch("fill", 1 if self._a.size else 0, (self._a,))
            return
        v = np.asarray(value, dtype=self._a.dtype)
        if v.shape != ():
            raise ValueError("non-scalar numpy.ndarray cannot be used for fill")
        self._a.fill(v[()])
        _record(functools.partial(self._a.fill, v[()]))        # the number, baked in
        _launch("fill", 1 if self._a.size else 0, (self._a,))

    def astype(self, dtype, order="K", casting=None, subok=None, copy=True):
        a = self._a.astype(_check_dtype(dtype), order=order, copy=copy)
        if a is self._a:
            return self
        _launch("astype", 1 if a.size else 0, (self._a, a))
        result = _wrap(a)
        _record(functools.partial(self._a.astype, a.dtype, order=order), result)
        return result

    def nonzero(self):
        _host_read("nonzero()")
        _launch("nonzero", 1, (self._a,))
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
            if name in CUBLAS:
                _no_cublas(f"ndarray.{name}")
            if not kwargs:
                unwrapped = [_unwrap(a, where) for a in args]
                r = target(*unwrapped)
                if _launch_recorders:
                    _count_call(name, [self._a] + unwrapped, {}, r)
                result = _wrap_result(r)
                _record(functools.partial(target, *unwrapped), result)
                return result
            out = kwargs.get("out")
            unwrapped, kw = [_unwrap(a, where) for a in args], _unwrap_kwargs(kwargs, where)
            r = target(*unwrapped, **kw)
            if _launch_recorders:
                _count_call(name, [self._a] + unwrapped, kw, r)
            result = out if out is not None and r is getattr(out, "_a", None) \
                else _wrap_result(r)
            _record(functools.partial(target, *unwrapped, **kw), result)
            return result
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
ndarray.__neg__ = _unary(np.negative)
ndarray.__pos__ = _unary(np.positive)
ndarray.__abs__ = _unary(np.absolute)
ndarray.__invert__ = _unary(np.invert)


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
        elif isinstance(k, (np.ndarray, list, tuple)):
            k = np.array(k)                     # copied to the device, as CuPy does
            _copy_in("index array", k.nbytes)
            if k.dtype == np.bool_:
                _host_read("boolean mask")
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
        if name in CUBLAS:
            _no_cublas(name)
        if not kwargs:
            unwrapped = [_unwrap(a, name) for a in args]
            r = np_func(*unwrapped)
            if _launch_recorders:
                _count_call(name, unwrapped, {}, r)
            result = _wrap_result(r)
            if name not in _ALLOCATING:
                _record(functools.partial(np_func, *unwrapped), result)
            return result
        _check_keywords(name, kwargs, accepted)
        out = kwargs.get("out")
        if out is not None and not isinstance(out, ndarray):
            raise TypeError(f"{name}: out must be a cupy.ndarray, got {type(out)}")
        unwrapped, kw = [_unwrap(a, name) for a in args], _unwrap_kwargs(kwargs, name)
        r = np_func(*unwrapped, **kw)
        if _launch_recorders:
            _count_call(name, unwrapped, kw, r)
        result = out if out is not None and r is out._a else _wrap_result(r)
        if name not in _ALLOCATING:
            _record(functools.partial(np_func, *unwrapped, **kw), result)
        return result
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
        r = np.array(a, dtype=dtype, copy=True, order=order, ndmin=ndmin)
        _launch("astype" if r.dtype != a.dtype else "copy", 1 if r.size else 0, (a, r))
        result = _wrap(r)
        _record(functools.partial(np.array, a, dtype=r.dtype, copy=True, order=order,
                                  ndmin=ndmin), result)
        return result
    parts = None
    if isinstance(obj, (list, tuple)):
        parts = _arrays_in([_unwrap_nested(obj)]) if _contains_device(obj) else None
        obj = _unwrap_nested(obj)
    a = np.array(obj, dtype=dtype, copy=True, order=order, ndmin=ndmin)
    if parts:                                   # device arrays gathered on the device
        if _capture is not None:
            raise NotImplementedError("strict CuPy stand-in: cupy.array of a list of device "
                                      "arrays inside a capture is not emulated")
        _launch("array", _concatenate_launches(parts, a.dtype, a.ndim), (a,))
    elif a.nbytes:
        _copy_in("asarray", a.nbytes)
    return _wrap(a)


def _contains_device(v):
    if isinstance(v, ndarray):
        return True
    return isinstance(v, (list, tuple)) and any(_contains_device(u) for u in v)


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
    r = np.ascontiguousarray(a._a, dtype=dtype)
    _launch("ascontiguousarray", 0 if r is a._a or not r.size else 1, (a._a, r))
    result = _wrap(r)
    _record(functools.partial(np.ascontiguousarray, a._a, dtype=r.dtype), result)
    return result


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
        with _quiet():
            r = f(*args, **kwargs)
        _launch(name, 2)                        # an element-wise comparison, then all()
        result = _wrap(np.asarray(r))
        _record(lambda: np.asarray(np_func(*[_unwrap(a, name) for a in args],
                                           **_unwrap_kwargs(kwargs, name))), result)
        return result
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


def _run_kernel(kind, name, args, kwargs):
    """One launch, whatever the Python reference does to compute it."""
    reference = _kernel_reference(kind, name)
    _launch(f"{kind} {name}", 1, [a._a for a in _flat(args) if isinstance(a, ndarray)])
    with _quiet():
        result = reference(*args, **kwargs)
    # replayed by calling the reference again with the same arguments: the same buffers,
    # and the scalars (a NumPy number given for the learning rate...) as they were
    _record(lambda: _kernel_again(reference, args, kwargs, result),
            None if result is None else result)
    return result


def _kernel_again(reference, args, kwargs, result):
    """A kernel's reference run again in a replay; its fresh outputs are copied into the
    capture's (``_store``), those it wrote in place are already where they belong."""
    out = reference(*args, **kwargs)
    if isinstance(out, ndarray):
        return out._a
    if isinstance(out, (tuple, list)):
        return type(out)(o._a if isinstance(o, ndarray) else o for o in out)
    return out


def _flat(values):
    for v in values:
        if isinstance(v, (list, tuple)):
            yield from _flat(v)
        else:
            yield v


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
        return _run_kernel("ElementwiseKernel", self.name, args, kwargs)


class ReductionKernel(ElementwiseKernel):
    def __init__(self, in_params, out_params, map_expr, reduce_expr, post_map_expr, identity,
                 name="reduce_kernel", **kwargs):
        super().__init__(in_params, out_params, map_expr, name)

    def __call__(self, *args, **kwargs):
        return _run_kernel("ReductionKernel", self.name, args, kwargs)


class RawKernel:
    def __init__(self, code, name, options=(), backend="nvrtc", translate_cucomplex=False,
                 **kwargs):
        self.code, self.name, self.options = code, name, options

    def __call__(self, grid, block, args, **kwargs):
        return _run_kernel("RawKernel", self.name, (grid, block, args), kwargs)


def fuse(*args, **kwargs):
    """cupy.fuse: in the stand-in the function simply runs (CuPy fuses it into one kernel;
    the values are the same), and counts as one launch."""
    def fused(f):
        @functools.wraps(f)
        def run(*a, **k):
            _launch(f"fuse {f.__name__}", 1, [v._a for v in a if isinstance(v, ndarray)])
            with _quiet():
                result = f(*a, **k)
            _record(lambda: _kernel_again(f, a, k, result), result)
            return result
        return run
    if len(args) == 1 and callable(args[0]) and not kwargs:
        return fused(args[0])
    return fused


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
    _made = 0

    def __init__(self, null=False, non_blocking=False, ptds=False, priority=None):
        Stream._made += 1
        self.ptr = 0 if null else 0x1000 + Stream._made     # 0: the legacy default stream
        self.non_blocking = bool(non_blocking)
        self._previous = []

    def synchronize(self):
        _wait("Stream.synchronize()")

    def record(self, event=None):
        event = event or Event()
        event.record(self)
        return event

    def wait_event(self, event):
        pass

    def use(self):
        global _current_stream
        _current_stream = self
        return self

    def __enter__(self):
        global _current_stream
        self._previous.append(_current_stream)
        _current_stream = self
        return self

    def __exit__(self, *exc):
        global _current_stream
        _current_stream = self._previous.pop()
        return False

    @property
    def done(self):
        return True

    @property
    def is_non_blocking(self):
        return self.non_blocking

    def begin_capture(self, mode=None):
        global _capture
        if self.ptr == 0:
            raise RuntimeError("cannot capture on the default (legacy) stream")
        if not self.non_blocking:
            raise CUDARuntimeError("strict CuPy stand-in: capture on a blocking stream: the "
                                   "legacy stream's work would join it (make it with "
                                   "non_blocking=True)")
        if _capture is not None:
            raise CUDARuntimeError("cudaErrorIllegalState: a stream is already capturing")
        _capture = _Capture(self)

    def end_capture(self):
        global _capture
        if _capture is None or _capture.stream is not self:
            raise CUDARuntimeError("cudaErrorIllegalState: the stream is not capturing")
        done, _capture = _capture, None
        done.undo()
        return Graph._from_calls(done.calls)

    def is_capturing(self):
        return _capture is not None and _capture.stream is self


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
    "Graph": Graph, "using_allocator": using_allocator,
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
    "scatter_add": lambda a, slices, value: _scatter_add(a, slices, value),
    "empty_pinned": lambda shape, dtype=float, order="C": np.empty(shape, dtype, order),
    "zeros_pinned": lambda shape, dtype=float, order="C": np.zeros(shape, dtype, order),
    "rsqrt": lambda x, out=None: _rsqrt(x),
})


def _scatter_add(a, slices, value):
    """cupyx.scatter_add: a[slices] += value, repeated indices adding up."""
    key = _index(slices)
    n = (_setitem_launches(key, a._a, value) if _index_arrays(key) else 1) \
        if _launch_recorders else 0
    target, v = a._a, _operand(value)
    np.add.at(target, key, v)
    _record(lambda: np.add.at(target, key, v))
    _launch("scatter_add", n, (a._a,))


def _rsqrt(x):
    a = _unwrap(x, "rsqrt")
    r = 1 / np.sqrt(a)
    _launch("rsqrt", 1, (r,))
    result = _wrap(r)
    _record(lambda: 1 / np.sqrt(a), result)
    return result


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
