"""The strict CuPy stand-in keeps CuPy's rules: if it did not, the [standin] cases of the
suite would prove nothing.  Each rule is checked against what CuPy does (its source and
documentation), not against the stand-in's own output."""
import json
import os
import pickle

import numpy as np
import pytest

import strict_cupy as S
from tinyalexnet import backend

cp, cupyx = S.cupy, S.cupyx
HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture
def x():
    return cp.asarray(np.arange(12, dtype=np.float32).reshape(3, 4))


# ----------------------------------------------------------------------------- its own type

def test_arrays_are_their_own_type_and_tinyalexnet_sees_them_as_cupy(standin, x):
    assert not isinstance(x, np.ndarray) and type(x) is cp.ndarray
    assert backend.get_array_module(x) is cp and backend.backend_of(x) == "cupy"
    assert backend.get_backend("cupy") is cp and backend.gpu_available()
    assert backend.is_array(x)
    assert cp.get_array_module(x) is cp and cp.get_array_module(np.zeros(1)) is np


def test_host_and_device_never_share_memory():
    host = np.zeros(3)
    dev = cp.asarray(host)
    host[0] = 5
    assert float(dev[0]) == 0.0                      # asarray copied the host array in
    back = dev.get()
    back[1] = 7
    assert float(dev[1]) == 0.0                      # get() copied it out


# ----------------------------------------------------------------------------- no silent NumPy

def test_implicit_conversion_to_numpy_raises_as_in_cupy(x):
    with pytest.raises(TypeError, match="Implicit conversion to a NumPy array is not allowed"):
        np.asarray(x)
    with pytest.raises(TypeError, match="Implicit conversion"):
        np.array([x, x])
    with pytest.raises(TypeError, match="Unsupported type <class 'numpy.ndarray'>"):
        x + np.ones((3, 4), np.float32)
    with pytest.raises(TypeError, match="Unsupported type <class 'numpy.ndarray'>"):
        np.ones((3, 4), np.float32) * x
    with pytest.raises(TypeError, match="Unsupported type"):
        cp.maximum(x, np.zeros((3, 4)))
    with pytest.raises(TypeError, match="numpy.mean.. was given a device array"):
        np.mean(x)
    with pytest.raises(TypeError, match="numpy.exp.* was given a device array"):
        np.exp(x)
    with pytest.raises(TypeError):
        cp.ascontiguousarray(np.zeros(3))            # CuPy's takes device arrays only


def test_matplotlib_and_pillow_refuse_device_arrays(x):
    from matplotlib.figure import Figure
    from PIL import Image
    with pytest.raises(TypeError, match="Implicit conversion"):
        Figure().subplots().imshow(x)
    with pytest.raises((TypeError, AttributeError)):
        Image.fromarray(x.astype(cp.uint8))


def test_numpy_scalars_and_python_numbers_work_with_operators_as_in_cupy(x):
    assert type(np.float32(2) * x) is cp.ndarray and (np.float32(2) * x).dtype == np.float32
    assert (x * 2.0).dtype == np.float32 and (1 - x).dtype == np.float32   # weak Python scalars


def test_filling_a_slice_from_a_host_array_is_refused_as_in_cupy(x):
    # CuPy fills a sliced target from a host value only if it is a scalar (cupy issue 2079)
    with pytest.raises(ValueError, match="non-scalar numpy.ndarray cannot be used for fill"):
        x[...] = np.ones((3, 4), np.float32)
    x[0] = np.float32(1.5)
    x[1:, :] = cp.asarray(np.ones((2, 4), np.float32))
    assert S.host_arrays(x)[0, 0] == 1.5 and S.host_arrays(x)[2, 3] == 1.0


# ----------------------------------------------------------------------------- host reads

def test_every_kind_of_host_read_is_counted(x):
    reads = [lambda: float(x[0, 0]), lambda: int(x[0, 0]), lambda: bool(x[0, 0]),
             lambda: x[0, 0].item(), lambda: x.get(), lambda: x.tolist(), lambda: cp.asnumpy(x),
             lambda: repr(x), lambda: str(x), lambda: f"{x[0, 0]:.3f}", lambda: pickle.dumps(x),
             lambda: x[x > 3], lambda: x.nonzero(), lambda: cp.unique(x),
             lambda: 1 if x.any() else 0]
    with S.count_host_reads() as counted:
        for read in reads:
            read()
    assert counted.count == len(reads), counted
    with S.count_host_reads() as counted:
        cp.bincount(cp.asarray([0, 2, 2]), minlength=4)     # CuPy reads min and max back
    assert counted.count == 2


def test_device_work_reads_nothing(x):
    with S.count_host_reads() as counted:
        y = cp.maximum(x * 2 - 1, 0).sum(axis=1)
        z = x[cp.asarray([0, 2])][:, 1:3].T @ x[:2]
        s = x.sum() + y.max()
        _ = x.shape, x.dtype, x.size, len(x), x.ndim, x.strides
        cp.stack([y, y])[0].astype(cp.float64)
        cp.cuda.get_current_stream().synchronize()           # a wait, not a read
    assert counted.count == 0, counted
    assert counted.waits and type(s) is cp.ndarray and z.shape == (2, 4)


def test_reads_name_the_line_that_made_them(x):
    with S.count_host_reads() as counted:
        float(x.sum())
    (kind, site), = counted.sites
    assert kind == "float()" and "test_strict_cupy.py" in site
    assert "test_reads_name_the_line_that_made_them" in str(counted)


def test_allow_synchronize_false_turns_a_read_into_an_error(x):
    with cupyx.allow_synchronize(False):
        y = (x * 2).sum()                                    # device work is fine
        with pytest.raises(cupyx.DeviceSynchronized, match=r"float\(\) at .*test_strict_cupy"):
            float(y)
        with pytest.raises(cupyx.DeviceSynchronized):
            if x.any():
                pass
    assert float(y) == 132.0                                 # allowed again outside


# ----------------------------------------------------------------------------- CuPy semantics

def test_reductions_and_indexing_give_0d_arrays_and_views(x):
    for value in (x.sum(), x.max(), x[1, 2], cp.argmax(x), x.mean(axis=None), cp.sum(x)):
        assert type(value) is cp.ndarray and value.shape == ()
    element = x[1, 2]
    element += 100                                           # CuPy: a view into x
    assert S.host_arrays(x)[1, 2] == 106.0
    assert type(cp.array_equal(x, x)) is cp.ndarray          # not a Python bool, as in CuPy


def test_no_index_protocol_no_object_dtype(x):
    with pytest.raises(TypeError):
        range(cp.asarray(3))                                 # cupy.ndarray has no __index__
    with pytest.raises(TypeError):
        [1, 2, 3][cp.asarray(1)]
    with pytest.raises(ValueError, match="Unsupported dtype object"):
        cp.asarray(np.array([None, 1], dtype=object))
    with pytest.raises(ValueError, match="Unsupported dtype"):
        x.astype(np.str_)


# ----------------------------------------------------------------------------- names

def _cupy_names():
    with open(os.path.join(HERE, "cupy_names.json")) as f:
        return json.load(f)


def test_only_names_cupy_has_exist():
    names = _cupy_names()
    cupy_names = set(names["modules"]["cupy"])
    numpy_only = sorted(n for n in dir(np) if not n.startswith("_") and n not in cupy_names)
    assert len(numpy_only) > 20                              # e.g. nditer, vectorize's kin
    for name in numpy_only:
        with pytest.raises(AttributeError, match="CuPy 14.2.0 has no cupy"):
            getattr(cp, name)
    array_names = set(names["classes"]["cupy.ndarray"])
    for name in ("ctypes", "setflags", "getfield", "resize", "__index__", "__array_interface__",
                 "__round__", "__contains__"):
        assert name not in array_names                       # the data says CuPy lacks them...
        assert not hasattr(cp.asarray([1.0]), name), name    # ...and so does the stand-in
    assert cp.__version__.startswith(names["cupy_version"]) and names["cupy_version"] >= "14"


def test_only_keywords_cupy_takes_are_accepted(x):
    with pytest.raises(TypeError, match="unexpected keyword argument 'where'"):
        cp.add(x, 1, where=x > 2)                       # CuPy's ufuncs have no where=
    with pytest.raises(TypeError, match="unexpected keyword argument 'like'"):
        cp.zeros(3, like=x)
    assert cp.maximum(x, 0, out=x) is x and cp.pad(x, 1, constant_values=2).shape == (5, 6)
    assert cp.sum(x, axis=0, keepdims=True, dtype=cp.float64).shape == (1, 4)


def test_the_stand_in_itself_invents_no_name():
    """What strict_cupy.py implements by hand is also checked against CuPy's lists."""
    names = _cupy_names()
    own = {n for n in vars(S.ndarray) if not n.startswith("_") or n.startswith("__")}
    own -= {"__module__", "__doc__", "__slots__", "__weakref__", "__init__", "__dict__",
            "__getattr__", "__deepcopy__", "__copy__", "__array_priority__", "_OPERATOR_UFUNCS",
            "__qualname__", "__firstlineno__", "__static_attributes__"}
    assert own <= set(names["classes"]["cupy.ndarray"]), own - set(names["classes"]["cupy.ndarray"])
    modules = {"cupy": cp, "cupy.cuda": cp.cuda, "cupy.cuda.runtime": cp.cuda.runtime,
               "cupy.cuda.memory": cp.cuda.memory, "cupy.linalg": cp.linalg,
               "cupy.random": cp.random, "cupy.lib.stride_tricks": cp.lib.stride_tricks,
               "cupyx": cupyx}
    for name, module in modules.items():
        # _core: CuPy's private module, for its TF32 switch (_routines_linalg.set_compute_type
        # and get_compute_type, as in CuPy 14's source); the name lists hold public names only
        implemented = set(module.__dict__["_impl"]) - {"__version__", "_core"}
        assert implemented <= set(names["modules"][name]), (name, implemented -
                                                             set(names["modules"][name]))


def test_names_the_package_uses_resolve():
    for name in ("asarray", "zeros", "empty_like", "matmul", "maximum", "pad", "stack", "where",
                 "ascontiguousarray", "isfinite", "float32", "uint32", "inf", "newaxis", "cuda",
                 "get_default_memory_pool", "asnumpy", "fuse", "ElementwiseKernel", "RawKernel"):
        assert name in _cupy_names()["modules"]["cupy"]
        getattr(cp, name)
    cp.lib.stride_tricks.as_strided
    cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)["name"].decode()


# ----------------------------------------------------------------------------- the device

def test_memory_pool_counts_bytes_and_calls_hooks():
    pool = cp.get_default_memory_pool()
    events = []

    class Hook(cp.cuda.MemoryHook):
        def malloc_postprocess(self, **kw):
            events.append(("malloc", kw["mem_size"]))

        def free_postprocess(self, **kw):
            events.append(("free", kw["mem_size"]))

    before = pool.used_bytes()
    with Hook():
        a = cp.zeros(1000, dtype=cp.float32)                 # 4000 bytes -> 4096 (512-byte units)
        view = a[10:20]
        assert pool.used_bytes() - before == 4096
        del a, view
    assert pool.used_bytes() == before
    assert events == [("malloc", 4096), ("free", 4096)]


def test_pool_limit_raises_cupys_out_of_memory_error():
    pool = cp.get_default_memory_pool()
    pool.set_limit(size=pool.used_bytes() + (1 << 20))             # 1 MiB more; 8 MiB asked
    try:
        with pytest.raises(cp.cuda.memory.OutOfMemoryError, match="Out of memory allocating"):
            cp.zeros(1 << 20, dtype=cp.float64)
    finally:
        pool.set_limit(size=0)


def test_events_time_between_records():
    start, end = cp.cuda.Event(), cp.cuda.Event()
    with pytest.raises(cp.cuda.runtime.CUDARuntimeError):
        cp.cuda.get_elapsed_time(start, end)                 # not recorded yet
    start.record()
    end.record()
    end.synchronize()
    assert cp.cuda.get_elapsed_time(start, end) >= 0.0


def test_kernels_run_a_registered_reference(monkeypatch):
    monkeypatch.setattr(S, "KERNEL_REFERENCES", {})
    square = cp.ElementwiseKernel("T x", "T y", "y = x * x", "standin_square")
    with pytest.raises(NotImplementedError, match="register_kernel"):
        square(cp.asarray([3.0]))
    S.register_kernel("standin_square", lambda a: a * a)
    assert float(square(cp.asarray([3.0]))[0]) == 9.0
    assert cp.fuse()(lambda a: a + 1)(cp.asarray([1.0])).shape == (1,)


# ----------------------------------------------------------------------------- launches

def launches_of(f):
    """(launches, host-to-device copies, their bytes) of f()."""
    with S.count_launches() as counted:
        f()
    return counted.count, counted.copies_in, counted.bytes_in


@pytest.fixture
def m():
    """Three contiguous float32 matrices 4x6 on the stand-in device."""
    return [cp.asarray(np.arange(24, dtype=np.float32).reshape(4, 6) + k) for k in range(3)]


def test_each_elementwise_operation_is_one_launch_and_a_view_is_none(m):
    a, b, c = m
    assert launches_of(lambda: a * b + c) == (2, 0, 0)          # two kernels, a temporary
    assert launches_of(lambda: cp.maximum(a, 0.5)) == (1, 0, 0)  # a scalar is an argument
    assert launches_of(lambda: a.__iadd__(b)) == (1, 0, 0)
    assert launches_of(lambda: -a) == (1, 0, 0)
    assert launches_of(lambda: (a[1:, ::2], a.T, a[:, None], a.reshape(24))) == (0, 0, 0)
    assert launches_of(lambda: a.T.reshape(24)) == (1, 0, 0)    # not viewable: a copy
    assert launches_of(lambda: a[:0] * 2) == (0, 0, 0)          # empty: CuPy returns early
    assert launches_of(lambda: np.float32(2) * a) == (1, 0, 0)


def test_making_arrays(m):
    a = m[0]
    assert launches_of(lambda: cp.zeros(3)) == (1, 0, 0)        # memset
    assert launches_of(lambda: cp.full((2, 2), 3.0)) == (1, 0, 0)
    assert launches_of(lambda: cp.arange(5)) == (1, 0, 0)
    assert launches_of(lambda: (cp.empty(3), cp.empty_like(a))) == (0, 0, 0)   # only memory
    assert launches_of(lambda: a.astype(np.float32, copy=False)) == (0, 0, 0)
    assert launches_of(lambda: a.astype(np.float16)) == (1, 0, 0)
    assert launches_of(lambda: a.copy()) == (1, 0, 0)
    assert launches_of(lambda: cp.ascontiguousarray(a)) == (0, 0, 0)
    assert launches_of(lambda: cp.ascontiguousarray(a.T)) == (1, 0, 0)
    assert launches_of(lambda: cp.where(a > 3, a, 0.0)) == (2, 0, 0)


def test_host_to_device_copies_are_counted_with_their_bytes(m):
    a = m[0]
    host = np.zeros((5, 7), np.float32)
    assert launches_of(lambda: cp.asarray(host)) == (0, 1, 140)
    assert launches_of(lambda: cp.asarray(a)) == (0, 0, 0)      # already on the device
    assert launches_of(lambda: cp.asarray(a, dtype=np.float64)) == (1, 0, 0)
    assert launches_of(lambda: cp.asarray(2.5, dtype=np.float64)) == (0, 1, 8)
    assert launches_of(lambda: a.set(np.ones((4, 6), np.float32))) == (0, 1, 96)
    # a host index array is copied in first, then one take kernel
    assert launches_of(lambda: a[np.array([0, 2])]) == (1, 1, 16)
    # integer-array assignment of a Python number: core.array(value) copies it in
    idx = cp.arange(2)
    assert launches_of(lambda: a.__setitem__(idx, 2.0)) == (1, 1, 4)
    with S.count_launches() as counted:
        float(a[0, 0])                                          # a read is not a launch
    assert (counted.count, counted.reads.count) == (0, 1)


def test_assignment_through_slices(m):
    a, b, _ = m
    assert launches_of(lambda: a.__setitem__(Ellipsis, 0.0)) == (1, 0, 0)   # a fill
    assert launches_of(lambda: a.__setitem__(slice(None), b)) == (1, 0, 0)  # a copy
    assert launches_of(lambda: a.__setitem__(Ellipsis, a)) == (0, 0, 0)     # the same array
    assert launches_of(lambda: a.fill(1.0)) == (1, 0, 0)


def test_reductions_as_cupy_launches_them():
    x = cp.asarray(np.ones((8, 3, 5, 5), np.float32))
    assert launches_of(lambda: x.sum(axis=(0, 2, 3))) == (1, 0, 0)   # one kernel, 3 axes
    assert launches_of(lambda: x.sum(axis=(2, 3))) == (1, 0, 0)      # CUB segmented reduce
    assert launches_of(lambda: x.max(axis=1, keepdims=True)) == (1, 0, 0)
    assert launches_of(lambda: x[:, :, ::2].sum()) == (1, 0, 0)      # not contiguous: no CUB
    big = cp.asarray(np.ones(10_000, np.float32))
    small = cp.asarray(np.ones(100, np.float32))
    assert launches_of(lambda: big.sum()) == (2, 0, 0)          # CUB DeviceReduce: 2 passes
    assert launches_of(lambda: small.sum()) == (1, 0, 0)        # one tile
    assert launches_of(lambda: small.mean()) == (2, 0, 0)       # sum, then divide
    assert launches_of(lambda: big.argmax()) == (3, 0, 0)       # 2 passes, key conversion
    assert launches_of(lambda: (big > 0).all()) == (3, 0, 0)    # compare; block reduce x2
    assert launches_of(lambda: (small > 0).sum()) == (2, 0, 0)  # compare; bool: no CUB sum


def test_matrix_products_are_one_cublas_call_plus_the_copies_cupy_makes(m):
    a, b, _ = m
    assert launches_of(lambda: a @ b.T) == (1, 0, 0)             # b.T is F-contiguous
    assert launches_of(lambda: a.T @ b) == (1, 0, 0)
    assert launches_of(lambda: a[:, ::2] @ b[:3]) == (2, 0, 0)    # neither C nor F: copied
    w = cp.asarray(np.ones((2, 5, 7), np.float32))
    y = cp.asarray(np.ones((2, 5, 9), np.float32))
    z = cp.asarray(np.ones((2, 7, 3), np.float32))
    assert launches_of(lambda: cp.matmul(w, z)) == (1, 0, 0)     # gemmStridedBatchedEx
    assert launches_of(lambda: cp.matmul(w.transpose(0, 2, 1), y)) == (2, 0, 0)   # copied
    # a 2-D weight against a batch broadcasts: gemmBatched after three pointer kernels
    w2 = cp.asarray(np.ones((7, 5), np.float32))
    assert launches_of(lambda: cp.matmul(w2, y)) == (4, 0, 0)
    out = cp.empty((4, 4), np.float32)
    assert launches_of(lambda: cp.matmul(a, b.T, out=out)) == (1, 0, 0)


def test_fancy_indexing_as_cupy_launches_it(m):
    a = m[0]
    labels = cp.asarray(np.array([1, 0, 5, 2]))
    rows = cp.arange(4)
    assert launches_of(lambda: a[rows, labels]) == (4, 0, 0)     # fill, 2 index kernels, take
    assert launches_of(lambda: a[:, labels]) == (1, 0, 0)        # one take
    assert launches_of(lambda: a.ravel()[labels]) == (1, 0, 0)
    # get (4), subtract (1), scatter back (fill, 2 index kernels, scatter: 4)
    assert launches_of(lambda: a.__setitem__((rows, labels), a[rows, labels] - 1)) == (9, 0, 0)


def test_pad_and_concatenate_as_cupy_launches_them(m):
    a = m[0]
    x = cp.asarray(np.ones((2, 3, 4, 4), np.float32))
    widths = ((0, 0), (0, 0), (1, 1), (2, 0))
    assert launches_of(lambda: cp.pad(x, widths)) == (2, 0, 0)   # fill with 0, copy x in
    assert launches_of(lambda: cp.pad(x, widths, constant_values=1.0)) == (4, 0, 0)
    large = cp.asarray(np.ones((1, 1, 2000, 2001), np.float32))  # 4e6 elements or more
    assert launches_of(lambda: cp.pad(large, widths)) == (4, 0, 0)   # copy, 3 filled sides
    assert launches_of(lambda: cp.concatenate([a, a, a])) == (3, 0, 0)
    assert launches_of(lambda: cp.stack([a] * 9)) == (1, 1, 72)  # one kernel and its table
    assert launches_of(lambda: cp.stack([a[:, :3]] * 9)) == (1, 3, 72 + 72 + 216)


def test_a_custom_kernel_is_one_launch_whatever_its_reference_does(m, monkeypatch):
    a, b, _ = m

    def reference(x, y, z):
        z[...] = x * y + x / y - 1

    monkeypatch.setitem(S.KERNEL_REFERENCES, "counted_kernel", reference)
    kernel = cp.ElementwiseKernel("T x, T y", "T z", "z = x * y + x / y - 1", "counted_kernel")
    out = cp.empty_like(a)
    assert launches_of(lambda: kernel(a, b, out)) == (1, 0, 0)
    assert launches_of(lambda: cp.fuse(lambda x, y: x * y + x)(a, b)) == (1, 0, 0)


def test_launches_are_told_by_site_owner_and_float64(m):
    a = m[0]

    class Layer:
        name = "conv9"

        def forward(self, x):
            return self._inner(x) + 1

        def _inner(self, x):
            return x.astype(np.float64) * 2

    with S.count_launches() as counted:
        Layer().forward(a)
    assert counted.count == 3 and counted.float64_count == 3
    assert counted.owners == {("conv9", "forward"): 3}
    assert counted.of("conv9") == 3 and counted.at("test_strict_cupy.py") == 3
    assert "3 launches (3 in float64)" in str(counted)


# ---------------------------------------------------------------------------- stream capture
def _capture(fn):
    """Capture ``fn()`` on a non-blocking stream: (graph, what fn returned)."""
    stream = S.cupy.cuda.Stream(non_blocking=True)
    with stream:
        stream.begin_capture()
        out = fn()
        graph = stream.end_capture()
    return graph, out


def test_graph_capture_runs_nothing_and_a_replay_runs_the_recorded_calls():
    """As on a GPU: the capture leaves the device as it was (arrays made during it hold
    garbage: NaN), and each launch re-runs the calls on the same buffers, one launch."""
    cp = S.cupy
    w = cp.asarray(np.arange(4.0))
    graph, y = _capture(lambda: _step(w))
    assert np.array_equal(S.host_arrays(w), np.arange(4.0))          # not run
    assert np.isnan(S.host_arrays(y)).all()                            # not yet computed
    with S.count_launches() as launches:
        graph.launch()
    assert launches.count == 1 and launches.names["graph launch"] == 1
    want = np.arange(4.0)
    want = want - 0.5 * (want * 2.0 + 1.0)                             # _step, by hand
    assert np.array_equal(S.host_arrays(w), want)
    assert np.array_equal(S.host_arrays(y), np.arange(4.0) * 2.0 + 1.0)
    graph.launch()                                                     # again: from the new w
    assert np.array_equal(S.host_arrays(w), want - 0.5 * (want * 2.0 + 1.0))


def _step(w, lr=0.5):
    y = w * 2.0 + 1.0
    w -= lr * y
    return y


def test_graph_replay_keeps_python_numbers_as_they_were_captured():
    """A Python number is baked into the graph: changing it later changes nothing; a value
    in a device array that the host rewrites between launches does."""
    cp = S.cupy
    w, lr_device = cp.zeros(3), cp.asarray(np.array([1.0]))
    box = {"lr": 1.0}
    graph, _ = _capture(lambda: (w.__isub__(box["lr"]), w.__isub__(lr_device)))
    box["lr"] = 100.0                   # the host's number: not seen by the replay
    lr_device.fill(10.0)                # the device's: seen
    graph.launch()
    assert np.array_equal(S.host_arrays(w), np.full(3, -11.0))


def test_graph_capture_refuses_reads_copies_in_and_cublas_as_cupy_14_does():
    cp = S.cupy
    x = cp.asarray(np.ones((2, 2)))
    stream = cp.cuda.Stream(non_blocking=True)
    for bad, error, words in [(lambda: float(x.sum()), RuntimeError, "D2H"),
                              (lambda: cp.asarray(np.ones(2)), RuntimeError, "H2D"),
                              (lambda: x @ x, NotImplementedError, "cuBLAS"),
                              (lambda: cp.matmul(x, x), NotImplementedError, "cuBLAS"),
                              (lambda: stream.synchronize(), S.CUDARuntimeError, "capturing")]:
        with stream:
            stream.begin_capture()
            with pytest.raises(error, match=words):
                bad()
            stream.end_capture()
    with pytest.raises(RuntimeError, match="legacy"):
        cp.cuda.Stream.null.begin_capture()
    other = cp.cuda.Stream(non_blocking=True)
    other.begin_capture()
    try:
        with pytest.raises(S.CUDARuntimeError, match="another stream"):
            x + 1                       # work on the current (legacy) stream meanwhile
    finally:
        other.end_capture()


def test_graph_replay_writes_into_the_arrays_the_capture_made():
    """An array replaced after capture is not the graph's: the graph keeps writing the one it
    captured (the classic stale-buffer bug is reproduced, not hidden)."""
    cp = S.cupy
    src = cp.asarray(np.arange(3.0))
    graph, out = _capture(lambda: src * 3.0)
    src = cp.asarray(np.full(3, 7.0))   # a new buffer: the graph still reads the old one
    graph.launch()
    assert np.array_equal(S.host_arrays(out), np.arange(3.0) * 3.0)
