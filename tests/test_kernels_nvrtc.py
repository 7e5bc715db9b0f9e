"""Every CUDA kernel of the package compiles, from its exact source, with NVRTC (``-k nvrtc``).

NVRTC, CUDA's run-time compiler, is what CuPy compiles a ``RawKernel`` with, and
it needs no GPU.  Each kernel's ``source(dtype)`` (the very text the package
hands to ``cupy.RawKernel``: test_nvrtc_the_tested_text_is_the_launched_text) is
compiled for float32 and float64 and for two GPU generations, with the options
CuPy 14 adds itself (``--std=c++17`` in ``compile_with_cache``, ``-ftz=true``,
``--device-as-default-execution-space`` and the architecture in
``cupy.cuda.compiler``; its include paths do not matter, the kernels include
nothing).  CuPy's own compile path asks the driver for the device's
architecture, so the tests call NVRTC directly with an explicit one.

Compiling proves the text is CUDA: types, syntax, no write through a ``const``
pointer, no ``**``.  That the kernels compute the right numbers is
test_kernels_cpu_exec.py's part (``-k cpu_exec``).
"""
import re

import pytest

from tinyalexnet import kernels

nvrtc = pytest.importorskip(
    "cupy_backends.cuda.libs.nvrtc",
    reason="CuPy is not installed (pip install -r requirements.txt): NVRTC cannot be called")
try:
    NVRTC_VERSION = nvrtc.getVersion()
except Exception as err:                                   # the library itself did not load
    pytest.skip(f"NVRTC does not load ({type(err).__name__}: {err}); install nvidia-cuda-nvrtc",
                allow_module_level=True)

CUPY_OPTIONS = ("--std=c++17", "-ftz=true", "--device-as-default-execution-space")
# Ampere (A100) as PTX, which the driver compiles for newer GPUs; Hopper (H100) as machine
# code (SASS), as CuPy builds for a GPU NVRTC knows.
ARCHES = ("compute_80", "sm_90")
DTYPES = ("float32", "float64")
# Kernels whose float32 version reads float64 numbers on purpose (lr, wd * lr): in double.
READ_DOUBLES = {"tinyalexnet_adam", "tinyalexnet_sgd"}


class NvrtcError(Exception):
    """NVRTC refused the source; the message is its log."""


def compile_cuda(source, name, arch):
    """NVRTC's output (PTX text or a cubin) for ``source``; NvrtcError with the log if it fails,
    or if the log has a warning."""
    program = nvrtc.createProgram(source, f"{name}.cu", (), ())
    try:
        try:
            nvrtc.compileProgram(program, CUPY_OPTIONS + (f"--gpu-architecture={arch}",))
        except nvrtc.NVRTCError:
            raise NvrtcError(nvrtc.getProgramLog(program)) from None
        log = nvrtc.getProgramLog(program).strip("\x00 \n")
        if log:
            raise NvrtcError(f"warnings: {log}")
        if arch.startswith("compute_"):
            return nvrtc.getPTX(program).decode().rstrip("\x00")
        return nvrtc.getCUBIN(program)
    finally:
        nvrtc.destroyProgram(program)


def double_arithmetic(ptx):
    """The PTX instructions that work on float64 numbers."""
    return [line.strip() for line in ptx.splitlines() if re.search(r"\.f64\b", line)]


def _id(kernel):
    return kernel.name.replace("tinyalexnet_", "")


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel", kernels.ALL, ids=_id)
def test_nvrtc_compiles_every_kernel(kernel, dtype, arch):
    out = compile_cuda(kernel.source(dtype), kernel.name, arch)
    if arch.startswith("compute_"):
        # extern "C": the entry point keeps its name, which is what RawKernel looks up
        assert re.search(rf"\.entry\s+{kernel.name}\s*\(", out), f"no entry {kernel.name} in PTX"
        if dtype == "float32" and kernel.name not in READ_DOUBLES:
            # A stray double literal (0.5 instead of (real)0.5) makes float32 code run at
            # 1/64 speed on most GPUs: no float64 arithmetic at all.
            assert not double_arithmetic(out), (f"{kernel.name} float32 does double "
                                                f"arithmetic: {double_arithmetic(out)[:3]}")
    else:
        assert len(out) > 1000                                      # an ELF cubin


# Planted mistakes, each in a real kernel's text: NVRTC must refuse every one.
PLANTED = [
    ("syntax error", kernels.relu.FORWARD, "positive[i] = xi > 0;", "positive[i] = xi > 0"),
    ("Python's ** for a power", kernels.lrn.FORWARD, "real sum = xi * xi;", "real sum = xi ** 2;"),
    ("write to a const input", kernels.relu.FORWARD, "out[i] =", "x[i] ="),
    ("undeclared name", kernels.adam.UPDATE, "real grad = g[i]", "real grad = grads[i]"),
    ("pointer for a value", kernels.maxpool.BACKWARD, "sum += dout[o];", "sum += dout;"),
]


@pytest.mark.parametrize("what,kernel,old,new", PLANTED, ids=[p[0] for p in PLANTED])
def test_nvrtc_refuses_a_planted_mistake(what, kernel, old, new):
    source = kernel.source("float32")
    assert source.count(old) == 1, f"the plant site {old!r} is not in {kernel.name} once"
    compile_cuda(source, kernel.name, "compute_80")                 # as it is: compiles
    with pytest.raises(NvrtcError):
        compile_cuda(source.replace(old, new), kernel.name, "compute_80")


def test_nvrtc_a_planted_double_literal_shows_as_double_arithmetic():
    source = kernels.lrn.FORWARD.source("float32")
    assert not double_arithmetic(compile_cuda(source, "lrn", "compute_80"))
    planted = source.replace("real Di = sum * alpha;", "real Di = sum * 1e-4;")
    assert planted != source
    assert double_arithmetic(compile_cuda(planted, "lrn", "compute_80"))


def test_nvrtc_the_tested_text_is_the_launched_text(monkeypatch):
    """What the package hands to RawKernel is ``source(dtype)``, the text compiled above."""
    handed = {}

    class Recorder:
        def __init__(self, code, name, options=(), **kwargs):
            handed[name] = (code, options)

    fake = type("xp", (), {"RawKernel": Recorder})
    for kernel in kernels.ALL:
        monkeypatch.setattr(kernel, "_compiled", {})
        for dtype in DTYPES:
            kernel.compiled(fake, dtype)
            assert handed[kernel.name] == (kernel.source(dtype), ())
    assert len(handed) == len(kernels.ALL) == len({k.name for k in kernels.ALL})


def test_nvrtc_every_kernel_is_listed():
    """kernels.ALL (what these tests compile) holds every Kernel defined in the package."""
    import importlib
    import pkgutil
    found = set()
    for info in pkgutil.iter_modules(kernels.__path__):
        module = importlib.import_module(f"tinyalexnet.kernels.{info.name}")
        found |= {v for v in vars(module).values() if isinstance(v, kernels.Kernel)}
    assert found == set(kernels.ALL)
