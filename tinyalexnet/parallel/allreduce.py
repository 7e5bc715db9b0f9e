"""The gradient average: one all-reduce per step over the model's flat gradient buffer.

After ``model.backward`` every gradient of the model lies in one 1-D array,
``model.flat_grads()`` (layers/module.py).  Rank r computed it on its n_r
images of a global batch of n, as the mean over its own images.  The whole
batch's gradient is the mean over all n images::

    g = (1/n) sum_i g_i = sum_r (n_r / n) * g^(r)          g^(r) = (1/n_r) sum_{i on r} g_i

so each rank scales its buffer by n_r / n (1/N when the batch splits evenly)
and one all-reduce *sums* the buffers: every rank then holds g, and every
rank's optimizer takes the same step from the same weights.

Two engines, chosen by where the buffer lives (:func:`make_allreduce`):

- :class:`HostAllreduce`: MPI on NumPy arrays (mpi4py sends the buffer's memory
  as it is).  Its notes (``World.exchange``) ride beside the sum.
- :class:`NcclAllreduce`: NCCL on CuPy arrays, GPU to GPU without the host.
  The communicator is built as ChainerMN built it: rank 0 asks NCCL for a
  unique id, MPI broadcasts it, every rank joins with it.  The sum is queued on
  the current stream after the backward pass; the host waits only for the MPI
  notes.  Not run yet on a machine with two GPUs: tests/test_parallel_data.py
  checks its calls against a stand-in NCCL, nothing more.

An all-reduce of b bytes over N ranks arranged in a ring sends and receives
2 (N - 1) / N * b per rank (a reduce-scatter, then an all-gather); BENCHMARKS.md,
"Parallel", counts what that means for AlexNet.
"""
from .. import backend


class HostAllreduce:
    """The sum of a NumPy buffer over the ranks with MPI (see the module's docstring)."""

    name = "mpi"

    def __init__(self, world):
        self.world = world

    def __call__(self, grads, scale, note=0, what="the gradient all-reduce"):
        """``grads`` <- sum over ranks of ``scale * grads``, in place; returns every rank's
        note."""
        if scale != 1:
            grads *= grads.dtype.type(scale)
        return self.world.exchange(what, note=note, buf=grads)


class NcclAllreduce:
    """The sum of a CuPy buffer over the ranks with NCCL; ``nccl`` is ``cupy.cuda.nccl``
    (a stand-in in the tests)."""

    name = "nccl"

    def __init__(self, world, nccl=None, stream=None):
        self.world = world
        self.nccl = nccl if nccl is not None else backend.nccl()
        self.stream = stream or backend.stream_pointer
        uid = ",".join(map(str, self.nccl.get_unique_id())) if world.rank == 0 else ""
        uid = world.broadcast_text(uid, "sharing NCCL's unique id")
        self.comm = self.nccl.NcclCommunicator(world.size, tuple(int(v) for v in uid.split(",")),
                                               world.rank)
        self.dtypes = {"float32": self.nccl.NCCL_FLOAT32, "float64": self.nccl.NCCL_FLOAT64}

    def __call__(self, grads, scale, note=0, what="the gradient all-reduce"):
        notes = self.world.exchange(what, note=note)     # who is here, and any stop: the host
        if scale != 1:
            grads *= grads.dtype.type(scale)                 # queued, like the sum
        ptr = grads.data.ptr
        self.comm.allReduce(ptr, ptr, grads.size, self.dtypes[grads.dtype.name],
                            self.nccl.NCCL_SUM, self.stream())
        return notes


def make_allreduce(world, grads):
    """The engine for a buffer like ``grads``: NCCL for a CuPy array, MPI for NumPy."""
    if backend.backend_of(grads) == "cupy":
        return NcclAllreduce(world)
    return HostAllreduce(world)
