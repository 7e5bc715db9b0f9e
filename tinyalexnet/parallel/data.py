"""Data parallelism: N processes, one model each, every global batch split between them.

    mpiexec -n 2 python -m tinyalexnet train --data-parallel --batch-size 128 ...

Each process holds the whole model.  Every step, each takes its part of the
global batch (``--batch-size`` images, as in one process: rank r of N takes
images r*B/N .. (r+1)*B/N), runs forward and backward on it, and one
all-reduce (parallel/allreduce.py) leaves the whole batch's gradient on every
process; each optimizer then takes the same step, so the weights stay equal
without ever being sent.

N processes compute the step one process computes, up to the order of a sum,
because nothing random depends on which process an image lands on:

- the batch order is the same on every process (a function of seed and epoch);
- random crops, reflections and colour noise are drawn for the whole global
  batch, from the generator seeded by (seed, epoch, step), and each process
  keeps its rows (``Pipeline(..., part=(start, stop, total))``);
- dropout masks are numbered by the element's place in the whole batch
  (``Dropout.first_image``, ``rng.uniform``'s offset), so image k gets the
  mask it gets in one process.

The epoch's last batch may be shorter; it is split as evenly as it goes (parts
differ by at most one image), and each gradient weighted by its part's share.
``--batch-size`` itself must split evenly: refused in one line otherwise.

Rank 0 alone writes the run folder; the others read it (resume) and say
nothing.  A stop (Ctrl-C, SIGTERM) on any process rides on the next step's
all-reduce as a note, and every process stops after the same step: one
checkpoint.  A checkpoint holds nothing per process, so a run may resume on
another number of processes.
"""
from ..errors import TinyAlexNetError
from ..layers.dropout import Dropout
from ..runfolder import ReaderFolder, RunFolder
from .allreduce import make_allreduce
from .strategy import OneProcess

SUMS = ("loss_sum", "correct1", "correct5", "count")         # added over the processes


def part(total, rank, size):
    """(start, stop): the images of a batch of ``total`` that rank ``rank`` of ``size`` takes,
    as even as it goes (the first ``total % size`` ranks take one more)."""
    share, extra = divmod(total, size)
    start = rank * share + min(rank, extra)
    return start, start + share + (rank < extra)


def check_split(batch_size, n_train, size):
    """Refuse, in one line, a batch that does not split over ``size`` processes, and an
    epoch whose last batch is smaller than the number of processes."""
    if batch_size % size:
        lower, higher = batch_size // size * size, (batch_size // size + 1) * size
        fix = f"{lower} or {higher}" if lower else f"{higher}"
        raise TinyAlexNetError(f"--batch-size {batch_size} does not split evenly over {size} "
                               f"processes: give a multiple of {size} (e.g. {fix})")
    last = n_train % batch_size
    if 0 < last < size:
        raise TinyAlexNetError(f"the epoch's last batch holds {last} image{'s' * (last > 1)} "
                               f"({n_train} training images, --batch-size {batch_size}), fewer "
                               f"than the {size} processes: change --batch-size or --limit")


class DataParallel(OneProcess):
    """The Trainer's hooks (parallel/strategy.py) for data parallelism over ``world``;
    ``allreduce``: the engine (default: chosen by the gradient buffer's backend)."""

    def __init__(self, world, allreduce=None):
        self.world, self.rank, self.size = world, world.rank, world.size
        self.first = self.writes = world.rank == 0
        self.evaluate_world = world
        self.allreduce = allreduce
        self.stops = None
        self.agreed = None       # the stop the last step's notes decided on, not yet taken
        self._dropouts = None

    def describe(self):
        return f", data parallel over {self.size} process{'es' * (self.size > 1)}"

    # ---------------------------------------------------------------- starting
    def run_folder(self, make):
        """Rank 0 makes (claims) the folder; the others learn its path and only read it."""
        folder = None
        with self.world.together("claiming the run folder"):
            if self.writes:
                folder = make()
        path = self.world.broadcast_text(folder.path if self.writes else "",
                                         "sharing the run folder's path")
        return folder if self.writes else ReaderFolder(path)

    def claim(self, path):
        """``resume.open_run``'s claim: RunFolder.claim on rank 0, a ReaderFolder elsewhere."""
        return self.run_folder(lambda: RunFolder.claim(path))

    def together(self, what):
        return self.world.together(what)

    def check(self, config, n_train):
        check_split(config.batch_size, n_train, self.size)

    def attach(self, stops):
        self.stops = stops

    # ---------------------------------------------------------------- a step
    def part(self, total):
        return part(total, self.rank, self.size)

    def shard_batches(self, batches):
        for step, indices in batches:
            start, stop = self.part(len(indices))
            yield step, indices[start:stop]

    def begin_step(self, model, total):
        start, stop = self.part(total)
        if self._dropouts is None:
            self._dropouts = [m for _, m in model.named_modules() if isinstance(m, Dropout)]
        for layer in self._dropouts:
            layer.first_image = start
        return start, stop, total

    def average_gradients(self, model, part):
        grads = model.flat_grads()
        if self.allreduce is None:
            self.allreduce = make_allreduce(self.world, grads)
        start, stop, total = part
        signum = self.stops.requested() if self.stops is not None else 0
        notes = self.allreduce(grads, (stop - start) / total, note=signum)
        self.agreed = int(notes.max())

    def agree_stop(self, signum):
        """The largest stop request of all processes: from the last step's notes, or, where
        no step ran since the last decision (an epoch's start or end), asked now."""
        if self.agreed is None:
            self.agreed = int(self.world.exchange("deciding whether to stop", note=signum).max())
        agreed, self.agreed = self.agreed, None
        return agreed

    def total(self, values):
        """An epoch's running numbers (RunningMeter.read) summed over the processes."""
        sums = self.world.sum([values[k] for k in SUMS], "adding up the epoch's numbers")
        out = dict(values, **dict(zip(SUMS, sums.tolist())))
        out["count"] = int(out["count"])
        if "loss" in values:               # a read(), not a checkpoint's partial sums
            n = max(out["count"], 1)
            out.update(loss=out["loss_sum"] / n, acc=out["correct1"] / n,
                       top5_acc=out["correct5"] / n)
        return out
