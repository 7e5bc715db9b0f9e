"""Real training runs on 2 MPI processes, for the tests that stop, hang or kill one rank.

``start(tmp_path, name, mode, timeout)`` launches a long run of small steps (``mode``:
``["--data-parallel"]`` or ``["--model-parallel", "2"]``) and returns once it trains;
``rank_pid`` finds one rank's process; ``hang_rank_1`` stops rank 1; ``finish`` waits for the run to end and returns its
output, which must hold no traceback.
"""
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tinyalexnet.parallel import launch

ROOT = Path(__file__).resolve().parent.parent


def start(tmp_path, name, mode, timeout="8"):
    """A run of many small steps on 2 ranks, some steps in: (Popen, out folder, log file)."""
    pytest.importorskip("mpi4py")
    out = tmp_path / name
    log = open(tmp_path / f"{name}.log", "w+")
    proc = launch.start(2, ["train", *mode, "--rank-timeout", timeout, "--epochs", "3",
                            "--out", out, "--limit", "3000", "--val-fraction", "0",
                            "--batch-size", "8", "--no-progress"],
                        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=log,
                        stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        log.seek(0)
        if "training 'alexnet_small'" in log.read():
            time.sleep(2.0)                  # some steps in
            return proc, out, log
        if proc.poll() is not None:
            raise AssertionError("the run ended before it trained")
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("the run did not start training")


def rank_pid(out, rank, timeout=120):
    """The pid of rank ``rank`` of the run writing ``out`` (its command line names it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read().split(b"\0")
                with open(f"/proc/{pid}/environ", "rb") as f:
                    env = f.read().split(b"\0")
            except OSError:
                continue
            if (os.fsencode(str(out)) in cmd and b"mpiexec" not in cmd[0]
                    and f"OMPI_COMM_WORLD_RANK={rank}".encode() in env):
                return int(pid)
        time.sleep(0.2)
    raise AssertionError(f"rank {rank} of the run in {out} never started")


def finish(proc, log, limit=60):
    """The run's output, once it has ended (within ``limit`` seconds), without a traceback."""
    try:
        proc.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"the run did not end within {limit} s")
    log.seek(0)
    text = log.read()
    assert "Traceback" not in text, text
    return text


def hang_rank_1(proc, out, log, limit=60):
    """Stop rank 1 (SIGSTOP: alive, never answers) and wait for the run to end without it:
    (its output, seconds from the stop to the end).  Rank 1 is killed afterwards."""
    pid = rank_pid(out, 1)
    os.kill(pid, signal.SIGSTOP)
    started = time.monotonic()
    try:
        text = finish(proc, log, limit)
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return text, time.monotonic() - started
