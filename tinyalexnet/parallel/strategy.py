"""What the Trainer asks of the processes that train together: one process, here.

The Trainer holds one such object, ``trainer.parallel``, and calls it at a few
points; alone (:class:`OneProcess`) each call does nothing, so train.py has no
``if parallel:`` branches.  ``parallel/data.py``'s DataParallel answers the same
calls for N processes:

    run_folder(make)          the run folder: made here (alone: ``make()``)
    together(what)            a block that fails on every process if it fails on one
    check(config, n_train)    refuse settings the processes cannot share (a batch that
                              does not split)
    attach(stops)             the run's RunStops, whose stop requests are agreed on
    shard_batches(batches)    (step, indices) of the global batches -> this process's part
    begin_step(model, total)  before a step of ``total`` images: this process's part
                              (start, stop, total), None alone; numbers the dropout masks
    average_gradients(model, part)   after backward: the whole batch's gradient
    agree_stop(signum)        the stop every process takes (a signal number, 0: none)
    total(values)             an epoch's running sums over the processes
    wrap_model(model, name)   the model this process trains (model_parallel.py: its tower)
    whole(model, optimizer)   the two as a checkpoint holds them, whole (every process calls
                              it before rank 0 writes: towers gather their halves)
    evaluate_world            the World ``metrics.evaluate`` shards its data set over

``first`` is the process that speaks (logs, progress bars); ``writes`` the one
that writes the run folder.
"""
import contextlib


class OneProcess:
    """Training in this process alone: every hook is the identity."""

    rank, size = 0, 1
    first = writes = True
    evaluate_world = None

    def run_folder(self, make):
        return make()

    def together(self, what):
        return contextlib.nullcontext()

    def check(self, config, n_train):
        pass

    def attach(self, stops):
        pass

    def shard_batches(self, batches):
        return batches

    def begin_step(self, model, total):
        return None

    def average_gradients(self, model, part):
        pass

    def agree_stop(self, signum):
        return signum

    def total(self, values):
        return values

    def wrap_model(self, model, name):
        return model

    def whole(self, model, optimizer):
        return model, optimizer

    def describe(self):
        return ""
