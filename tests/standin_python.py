"""Run a Python command line with the strict CuPy stand-in as tinyalexnet's CuPy.

    python tests/standin_python.py -m tinyalexnet check --backend cupy
    python tests/standin_python.py scripts/gpu_run.py --describe

tests/test_gpu_run.py hands it to scripts/gpu_run.py (``--python``) to rehearse the
GPU run's CuPy path on the CPU: each step's process meets the stand-in
(strict_cupy.py) wherever it would meet CuPy.
"""
import os
import runpy
import sys

_TESTS = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [_TESTS, os.path.dirname(_TESTS)]      # the stand-in, and this checkout's package
import kernel_references  # noqa: E402
import strict_cupy  # noqa: E402


class _ForTheProcess:
    """What strict_cupy.install needs of pytest's monkeypatch, for a whole process."""

    def setattr(self, obj, name, value):
        setattr(obj, name, value)

    def delenv(self, name, raising=True):
        os.environ.pop(name, None)


strict_cupy.install(_ForTheProcess())
kernel_references.register(strict_cupy)       # each CUDA kernel as its NumPy reference
if len(sys.argv) > 2 and sys.argv[1] == "-m":
    module, sys.argv = sys.argv[2], [sys.argv[2]] + sys.argv[3:]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
else:
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")
