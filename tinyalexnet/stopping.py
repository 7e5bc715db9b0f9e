"""Ending a run early: what stops it, what is kept, and the one line that says what next.

Four things end a training run before its last epoch, and each becomes one
exception with a one-line message:

- Ctrl-C or SIGTERM (see ``signals``): the step in progress finishes, the
  state is saved to last.npz, and :class:`Interrupted` gives the command that
  resumes.  A second signal stops at once; if it lands inside a weight update
  or while an epoch's files are written, nothing more is saved, and the line
  says which checkpoint is kept.
- a loss or weights gone NaN or infinite: a NonFiniteError naming the step,
  with the command that resumes from the last (finite) checkpoint at a lower
  learning rate.
- a checkpoint that cannot be written (a full disk, a folder moved away): a
  RunFolderError that names the checkpoint still on disk, wherever it now is.
- the GPU's memory running out: a TinyAlexNetError suggesting a smaller batch.

Anything else is a bug and passes through with its traceback.  In
``Trainer.fit``::

    with stops:                         # signals caught, stops translated
        stops.check()                   # a signal came: stop here, between steps
        stops.step_begins()             # before a step: what a stop inside it gives back
        ...the step...
        with stops.ending_epoch():      # the epoch's counters and files change together
            ...

RunStops never reads the trainer: it is handed the run's state, its model,
optimizer and folder, and the functions that save and draw.  Whether a stop
came inside a step's weight update is read from the counters alone: the
optimizer counts a step (``Optimizer.steps``) before it changes a weight, the
run's state after the update, so the two disagree exactly while an update is
under way, and a state is saved only when they agree.
"""
import contextlib
import errno
import os
import shlex

from . import backend, checkpoint
from .backend import numpy as np
from .checkpoint import state_name
from .errors import CheckpointError, NonFiniteError, RunFolderError, TinyAlexNetError
from .signals import StopRequests, signal_name


class Interrupted(KeyboardInterrupt):
    """Training stopped by Ctrl-C or SIGTERM (``signum``); ``checkpoint`` is where the
    state went (or None)."""

    def __init__(self, message, checkpoint=None, signum=2):
        super().__init__(message)
        self.checkpoint, self.signum = checkpoint, signum


class RunStops:
    """The stops of one run (see the module's docstring).

    ``state`` (a RunState), ``model``, ``optimizer`` and ``folder`` (its
    RunFolder) are the run's; ``save()`` writes last.npz with the epoch in
    progress and returns its path; ``draw()`` draws the curves; ``config``
    gives the number of epochs and the batch size, ``steps_per_epoch`` the
    length of an epoch.

    Inside ``with``: SIGINT and SIGTERM set a request that :meth:`check` turns
    into a stop between steps, NumPy's overflow warnings are silenced (they
    would only precede the divergence message), and an exception that ends the
    run leaves as the one-line stop it stands for, after the curves of the
    epochs done so far are drawn.
    """

    def __init__(self, state, model, optimizer, folder, config, steps_per_epoch, save, draw,
                 log, agree=None):
        self.state, self.model, self.optimizer, self.folder = state, model, optimizer, folder
        self.config, self.steps_per_epoch = config, steps_per_epoch
        self.save, self.draw, self.log = save, draw, log
        # agree(signum) -> the stop every process takes (parallel/data.py); alone: its own
        self.agree = agree or (lambda signum: signum)
        self.signals = None          # the StopRequests while inside ``with``
        self.step_start = None       # (dropout counters, optimizer steps, global step) of a step
        self.ending = None           # the epoch whose end is being written
        self.epochs_before = 0       # the history's length when ``with`` began
        self._exit = None

    def __enter__(self):
        self.epochs_before = len(self.state.history)
        self.step_start = self.ending = None       # nothing left of an earlier fit()
        with contextlib.ExitStack() as stack:
            self.signals = stack.enter_context(StopRequests())
            stack.enter_context(np.errstate(over="ignore", invalid="ignore", divide="ignore"))
            self._exit = stack.pop_all()
        return self

    def requested(self):
        """The signal that asked this process to stop (0: none yet)."""
        if self.signals is not None and self.signals.requested:
            return self.signals.signum or 2
        return 0

    def check(self):
        """Stop here if Ctrl-C or SIGTERM came since the last check: the one place the
        loop asks whether to stop.  Of several processes, all stop here if one was asked
        (``agree``), so that they stop after the same step."""
        signum = self.agree(self.requested())
        if signum:
            stop = KeyboardInterrupt()
            stop.signum = signum
            raise stop

    def step_begins(self):
        """Before a step: a stop before its update gives back the dropout masks it drew, so
        that the resumed run draws them again."""
        self.step_start = (self.model.get_extra_state(), self.optimizer.steps,
                           self.state.global_step)

    @contextlib.contextmanager
    def ending_epoch(self):
        """The end of an epoch: counters, history and checkpoints change inside this block.
        A stop in it saves nothing more: what reached the disk is kept, and repaired on
        resume (``resume.repair``)."""
        self.ending = self.state.epoch + 1
        yield
        self.ending = None

    def __exit__(self, exc_type, exc, tb):
        try:
            stop = None if exc is None else self._translate(exc)
        finally:
            self._exit.close()       # the caller's signal handlers are back
            self.signals = None
        if stop is None:
            return False             # finished, or a bug: passes through as it is
        try:
            if len(self.state.history) > self.epochs_before:   # the curves of the epochs done
                self.draw()
        except Exception as err:     # must not hide why training stopped
            self.log(f"(history.png not drawn: {err})")
        raise stop from None

    # ---------------------------------------------------------------- the stops
    def _translate(self, exc):
        """The stop ``exc`` stands for, or None if it is none of them."""
        if isinstance(exc, KeyboardInterrupt):
            return self._interrupted(getattr(exc, "signum", None) or self.signals.signum or 2)
        if isinstance(exc, NonFiniteError):
            return self._diverged(exc)
        if isinstance(exc, RunFolderError):
            return RunFolderError(f"{exc}; training stopped: {self._advice(exc)}", exc.errno,
                                  exc.strerror)
        if isinstance(exc, backend.gpu_error_types()) and backend.is_out_of_memory(exc):
            s, batch = self.state, self.config.batch_size
            return TinyAlexNetError(
                f"out of GPU memory at epoch {s.epoch + 1}, step {s.step + 1} with batch size "
                f"{batch} ({str(exc).splitlines()[0]}); try a smaller --batch-size, e.g. "
                f"{max(1, batch // 2)}")
        return None

    def _interrupted(self, signum):
        s = self.state
        what = "interrupted" if signum == 2 else f"stopped by {signal_name(signum)}"
        if self.ending is not None:
            return self._not_saved(f"{what} while the end of epoch {self.ending} was being "
                                   f"saved", signum)
        where = state_name({"epoch": s.epoch, "step": s.step})
        if s.step:
            where += f"/{self.steps_per_epoch}"
        if self.step_start is not None:
            dropout, updates, global_step = self.step_start
            if self.optimizer.steps - updates != s.global_step - global_step:
                # Cut inside an update: the weights are half old, half new.
                return self._not_saved(f"{what} during an update (epoch {s.epoch + 1}, step "
                                       f"{s.step + 1}/{self.steps_per_epoch}), which is not "
                                       f"saved", signum)
            if s.global_step == global_step:
                self.model.set_extra_state(dropout)    # the unfinished step is not counted
        try:
            path = self.save()
        except NonFiniteError as err:    # never save a diverged state over a good one
            return NonFiniteError(f"{what} {where}, not saved: {self._diverged(err)}")
        except RunFolderError as err:
            return RunFolderError(f"{what} {where}, but the checkpoint could not be saved "
                                  f"({err}); {self._advice(err)}", err.errno, err.strerror)
        if path is None:       # another process writes the run (data parallelism: rank 0)
            return Interrupted(f"{what} {where}: saved by the process that writes the run",
                               None, signum)
        return Interrupted(f"{what} {where}: saved {path}; {self._next(path, s.meta())}", path,
                           signum)

    def _not_saved(self, what, signum):
        last, meta = self._last()
        kept = self._kept(last, meta)
        return Interrupted(f"{what}; {kept}" + (f"; {self._next(last, meta)}" if meta else ""),
                           last if meta else None, signum)

    def _diverged(self, err):
        # A layer's own check (NumPy) stops the step in progress; the running
        # loss (GPU) names the first step whose loss was not finite.  Nothing
        # non-finite is ever saved (Trainer.save), so what is on disk is finite.
        s = self.state
        step = getattr(err, "step", s.global_step + 1)
        lr = self.optimizer.lr
        lower = f"{lr / 10:g}"
        last, meta = self._last()
        if meta is not None:
            advice = (f"{self._kept(last, meta)}; continue from it with a lower learning rate: "
                      f"{resume_command(os.path.dirname(last), '--lr', lower)}")
        else:
            advice = (f"no checkpoint was written; start again with a lower learning rate, "
                      f"e.g. --lr {lower}")
        return NonFiniteError(f"training diverged at step {step} (epoch {s.epoch + 1}): {err}; "
                              f"try a lower learning rate than {lr:g}; {advice}")

    # ---------------------------------------------------------------- what to say
    def _last(self):
        """(path, metadata) of the last checkpoint on disk, wherever the run folder is now;
        (path, None) if there is none."""
        folder = self.folder.path_now() or self.folder.path
        path = os.path.join(folder, "last.npz")
        try:
            return path, checkpoint.read_meta(path)
        except CheckpointError:
            return path, None

    def _kept(self, path, meta):
        """What is on disk now: "the last checkpoint RUN/last.npz (after epoch 2) is kept"."""
        moved = os.path.dirname(path) != self.folder.path
        where = (f"the run folder was moved to {os.path.dirname(path)} while training: "
                 if moved else "")
        if meta is None:
            if self.folder.path_now() is None:
                return (f"the run folder {self.folder.path} is gone (moved or removed while "
                        f"training), with what it held")
            return where + "no checkpoint was saved yet"
        return f"{where}the last checkpoint {path} ({state_name(meta)}) is kept"

    def _advice(self, err):
        """What to do after a write failed (``err``): what is kept, and the next command."""
        last, meta = self._last()
        fix = "free some space" if err.errno == errno.ENOSPC else "fix the folder"
        if meta is None:
            return (f"{self._kept(last, meta)}; {fix}, then start the run again (nothing can "
                    f"be resumed)")
        if os.path.dirname(last) != self.folder.path:
            return f"{self._kept(last, meta)}; {self._next(last, meta)}"
        return f"{self._kept(last, meta)}; {fix}, then {self._next(last, meta)}"

    def _next(self, last, meta):
        """The command that goes on from the checkpoint ``last`` (its ``meta``data)."""
        if meta["epoch"] >= self.config.epochs and not meta["step"]:
            return (f"all {self.config.epochs} epochs are done; test it with: "
                    f"{evaluate_command(last)}")
        return f"continue with: {resume_command(os.path.dirname(last))}"


def resume_command(folder, *options):
    """The command line that continues the run in ``folder`` (with ``options`` added)."""
    return " ".join(["python -m tinyalexnet train --resume", shlex.quote(folder), *options])


def evaluate_command(path, ten_crop=False):
    """The command line that tests the checkpoint at ``path``."""
    return " ".join(["python -m tinyalexnet evaluate", shlex.quote(path)]
                    + (["--ten-crop"] if ten_crop else []))


def interrupted_during_test(stop, last, ten_crop=False):
    """The stop for Ctrl-C or SIGTERM (``stop``) during the test that follows training:
    the run itself is complete in ``last``."""
    signum = getattr(stop, "signum", 2)
    what = "interrupted" if signum == 2 else f"stopped by {signal_name(signum)}"
    return Interrupted(f"{what} during the final test; the training is complete and saved in "
                       f"{last}; get the test numbers with: {evaluate_command(last, ten_crop)}",
                       last, signum)
