"""Worker processes that decode images: more than one core, and nothing left behind.

Decoding a JPEG is pure CPU work (about 3 ms for a 500x375 photo, and about
2 ms more to resize it), and one core decodes a few hundred a second, where
one GPU trains on thousands.  Threads do not help much: Pillow releases the
GIL while it decodes, but the Python around it does not.  So decoding runs in
worker *processes*, each with its own interpreter::

    with DecodePool(4) as pool:
        future = pool.submit(decode_files, paths, 3, 256)     # any module-level function
        images = future.result()

``DecodePool`` is ``concurrent.futures.ProcessPoolExecutor`` with the rules that
make it safe to leave running under a training loop:

- **spawn**, not fork: a worker starts as a fresh interpreter, so it inherits
  no threads, locks or open files from the parent (a forked copy of a process
  with threads can deadlock; an inherited ``owner.lock`` would outlive the
  parent);
- **Ctrl-C is the parent's**: the terminal sends SIGINT to every process in
  the foreground group, workers included.  Workers ignore it, so the parent
  alone decides how to stop (finish the step, save, shut the pool down).  A
  worker starts ignoring it from its first instruction: every worker is
  started when the pool is made, and (from the main thread) with SIGINT set
  to "ignore" in the parent for those milliseconds, a setting a new program
  inherits and Python then keeps; otherwise a Ctrl-C while a worker imports
  its modules would kill it with a traceback;
- **no orphans**: each worker asks the kernel for SIGKILL when its parent
  dies (Linux ``prctl(PR_SET_PDEATHSIG)``), so ``kill -9`` of the parent takes
  the workers with it;
- **no zombies**: ``close()`` (also ``with``, and at interpreter exit) cancels
  what has not started, lets each worker finish its task and joins every one.

An exception in a worker (a ``DataError`` for a broken file) comes back to the
parent through ``future.result()`` with its one-line message.  Results travel
back through the pool's pipe as pickles between our own processes; no file is
ever unpickled.
"""
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
from concurrent.futures import ProcessPoolExecutor

from ..errors import DataError

WORKERS_VARIABLE = "TINYALEXNET_DATA_WORKERS"
MAX_DEFAULT_WORKERS = 8
PR_SET_PDEATHSIG = 1


def cores():
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def default_workers():
    """Decoding processes for an image folder when none are asked for.

    ``TINYALEXNET_DATA_WORKERS`` if set; otherwise one core is left for the
    training loop and up to 8 of the others decode.  With fewer than 2 to spare
    it is 0: the prefetch thread decodes (a single worker process would only
    move that work, not add a core).
    """
    value = os.environ.get(WORKERS_VARIABLE)
    if value is not None:
        try:
            n = int(value)
        except ValueError:
            n = -1
        if n < 0:
            raise DataError(f"{WORKERS_VARIABLE}={value!r}: expected a number of worker "
                            "processes, 0 or more")
        return n
    spare = min(MAX_DEFAULT_WORKERS, cores() - 1)
    return spare if spare >= 2 else 0


def _die_with_parent(parent):
    """Ask for SIGKILL when the parent process ends (Linux); elsewhere, nothing."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:           # the parent died before the request was made
        os._exit(1)


def _start_worker(parent):
    signal.signal(signal.SIGINT, signal.SIG_IGN)      # Ctrl-C is for the parent to handle
    _die_with_parent(parent)


class DecodePool(ProcessPoolExecutor):
    """A ProcessPoolExecutor of ``workers`` spawned processes that ignore Ctrl-C and die
    with their parent; ``close()`` joins them all."""

    def __init__(self, workers):
        if workers < 1:
            raise DataError(f"a decoding pool needs at least 1 worker process, got {workers}")
        self.workers = int(workers)
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
        try:
            super().__init__(max_workers=self.workers,
                             mp_context=multiprocessing.get_context("spawn"),
                             initializer=_start_worker, initargs=(os.getpid(),))
            # The pool starts a process for each task while none is idle: start them all.
            for _ in range(self.workers):
                self.submit(int)
        finally:
            if main:
                signal.signal(signal.SIGINT, previous)

    def close(self):
        """Cancel what has not started, wait for what has, join every worker."""
        self.shutdown(wait=True, cancel_futures=True)

    def __exit__(self, *exc):
        self.close()
        return False
