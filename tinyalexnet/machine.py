"""What the benchmark needs to know about the machine: the CPU and its BLAS, how
busy other programs keep it, and how much memory a training step takes.

Used by ``bench`` (and ``check`` prints the CPU and BLAS lines).  Linux gives
the most here (``/proc``); elsewhere a reading that cannot be taken is None
and the report says "n/a".

* ``cpu_name``, ``cores_available``, ``blas_info``, ``device_line``: one line
  each for the report.  NumPy's matrix products run in OpenBLAS, which picks
  its kernels for the CPU it detects (``OPENBLAS_CORETYPE`` overrides it); the
  kernel can change a CPU result by a factor of two, so the report names it.
* ``OtherLoad``: the share of the CPUs other programs used while we timed;
  ``load_line``: the one line every report prints about it, with the warning
  above ``TOO_BUSY``.
* Peak memory of a step.  On the CPU: ``peak_rss_in_fresh_process`` runs the
  benchmark again in a new process, which builds one framework, runs two steps
  and reports (``report_peak_rss``) its peak resident memory (VmHWM) above what
  it held after its imports.  A fresh process, because a process's high-water
  mark never goes down: in the benchmark's own process it would still count
  the other framework, or PyTorch's import.  On the GPU: ``cupy_pool_peak``,
  the high-water mark of bytes the CuPy pool handed out during one step.
"""
import gc
import json
import os
import platform
import subprocess
import sys
import time

from .errors import TinyAlexNetError


# ---------------------------------------------------------------------------- CPU and BLAS
def cpu_name():
    """The CPU's model name (``/proc/cpuinfo``), or what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cores_available():
    """The cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def blas_info():
    """(threads or None, a line naming NumPy's BLAS, its kernel and its threads).

    threadpoolctl reads them from the loaded library where it is installed."""
    coretype = os.environ.get("OPENBLAS_CORETYPE")
    env = f"OPENBLAS_CORETYPE={coretype}" if coretype else "OPENBLAS_CORETYPE unset"
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None, f"NumPy BLAS: unknown (install threadpoolctl to see it); {env}"
    for info in threadpool_info():
        if info.get("user_api") == "blas":
            kernel = info.get("architecture") or "?"
            text = (f"NumPy BLAS: {info.get('internal_api')} {info.get('version')}, "
                    f"kernel {kernel}, {info.get('num_threads')} threads; {env}")
            return info.get("num_threads"), text
    return None, f"NumPy BLAS: not found by threadpoolctl; {env}"


def device_line(backend_name, threads):
    """What a backend computes on, in one line: the GPU, or the CPU and its BLAS threads."""
    if backend_name == "cupy":
        from . import backend
        info = backend.device_info("cupy")
        return (f"GPU {info['GPU']}, {info['memory']}; CUDA {info['CUDA']}; CuPy {info['CuPy']}, "
                f"NumPy {info['NumPy']}")
    return f"CPU {cpu_name()}, {cores_available()} cores available, {threads or '?'} BLAS threads"


# ---------------------------------------------------------------------------- other programs
class OtherLoad:
    """How busy *other* programs kept the CPUs between ``start()`` and ``stop()``.

    Linux only (``/proc/stat``): all CPUs' busy time minus this process's own,
    as a fraction of the CPUs' capacity over the interval.  Two cores shared with
    a busy neighbour make NumPy's two BLAS threads wait for each other, and a
    step can take ten times as long; the report flags timings taken that way.
    """

    def _read(self):
        try:
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        # user, nice, system, irq, softirq, steal (a hypervisor's other guests count too)
        busy = sum(fields[i] for i in (0, 1, 2, 5, 6, 7) if i < len(fields))
        own = os.times()
        return busy / os.sysconf("SC_CLK_TCK"), own.user + own.system, time.perf_counter()

    def start(self):
        self.begin = self._read()
        return self

    def stop(self):
        """The fraction (0..1) of the CPUs other programs used, or None where unknown."""
        end = self._read()
        if self.begin is None or end is None:
            return None
        busy, own, wall = (b - a for a, b in zip(self.begin, end))
        cpus = os.cpu_count() or 1
        return max(0.0, (busy - own) / (wall * cpus))


# Above this share of the CPUs taken by other programs, timings are not to be trusted: on
# two shared cores a busy neighbour can make a step ten times slower (BENCHMARKS.md).
TOO_BUSY = 0.05


def load_line(fraction):
    """The report's line about ``OtherLoad().stop()``'s ``fraction``, warning above TOO_BUSY."""
    note = "  -- too busy: timings unreliable, run again" if fraction >= TOO_BUSY else ""
    return f"other programs kept the CPUs {100 * fraction:.0f}% busy while timing{note}"


# ---------------------------------------------------------------------------- CPU memory
def rss_bytes():
    """Resident memory of this process now (Linux), or None."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return None


def peak_rss_bytes():
    """The most resident memory this process has held.

    Linux: VmHWM, the high-water mark of this process's own address space.  (Not
    ``ru_maxrss``: after fork + exec it also counts what the *parent* held at the
    fork, here the benchmark with PyTorch loaded.)  Elsewhere: ``ru_maxrss``.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024   # macOS: bytes, Linux: KiB


def reset_peak_rss():
    """Start VmHWM afresh from the current resident size (Linux 4.0+); False if we cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def report_peak_rss(step, rss_before, steps=2):
    """The probe's side, in the fresh process: forget the building, run ``step`` ``steps``
    times, print ``{"rss_before", "peak_rss"}`` as the last line of JSON."""
    gc.collect()
    reset_peak_rss()
    for _ in range(steps):
        step()
    print(json.dumps({"rss_before": rss_before, "peak_rss": peak_rss_bytes()}))


def peak_rss_in_fresh_process(argv, what):
    """Run ``python argv`` (a probe that ends with ``report_peak_rss``) in a new process.

    Returns the peak resident bytes of its steps above what it held after its
    imports, or None where that cannot be read.  The package's folder is put on
    the child's path, so the probe runs this very code from any working folder.
    """
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise TinyAlexNetError(f"bench: the memory probe for {what} failed: "
                               f"{done.stderr.strip().splitlines()[-1:] or done.returncode}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["rss_before"] is None:
        return None
    return result["peak_rss"] - result["rss_before"]


# ---------------------------------------------------------------------------- GPU memory
def cupy_pool_peak(xp, run):
    """(peak bytes in use from the CuPy pool while ``run()`` executes, bytes the pool holds).

    A ``MemoryHook`` follows every allocation and free of the pool; ``run``
    must leave the device drained (call synchronize at its end).
    """
    pool = xp.get_default_memory_pool()

    class PeakHook(xp.cuda.MemoryHook):
        name = "tinyalexnet-bench-peak"

        def __init__(self, in_use):
            super().__init__()
            self.in_use = self.peak = in_use

        def malloc_postprocess(self, **kw):
            self.in_use += kw["mem_size"]
            self.peak = max(self.peak, self.in_use)

        def free_postprocess(self, **kw):
            self.in_use -= kw["mem_size"]

    hook = PeakHook(pool.used_bytes())
    with hook:
        run()
    return hook.peak, pool.total_bytes()
