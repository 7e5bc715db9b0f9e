"""Ending a run early: what stops it, what is kept, and the one line that says what next.

Four things end a training run before its last epoch, and each becomes one
exception with a one-line message:

- Ctrl-C or SIGTERM (see ``signals``): the step in progress finishes, the
  state is saved to last.npz, and :class:`Interrupted` gives the command that
  resumes.  A second signal stops at once; if it lands inside a weight update
  the half-updated state is not saved, and the last checkpoint is kept.
- a loss or weights gone NaN or infinite: a NonFiniteError naming the step,
  with the command that resumes from the last (finite) checkpoint at a lower
  learning rate.
- a checkpoint that cannot be written (a full disk): a RunFolderError that
  names the checkpoint still on disk.
- the GPU's memory running out: a TinyAlexNetError suggesting a smaller batch.

Anything else is a bug and passes through with its traceback.  In
``Trainer.fit``::

    with trainer.stops:                       # signals caught, stops translated
        ...
        trainer.stops.step_begins(model)      # what a stop before the update undoes
        with trainer.stops.update():          # weights and counters change together
            optimizer.step(); ...
        trainer.stops.check()                 # a signal came: stop here, between steps
"""
import contextlib
import os
import shlex

from . import backend, checkpoint
from .backend import numpy as np
from .errors import CheckpointError, NonFiniteError, RunFolderError, TinyAlexNetError
from .metrics import LossNotFinite
from .resume import state_name
from .signals import StopRequests, signal_name


class Interrupted(KeyboardInterrupt):
    """Training stopped by Ctrl-C or SIGTERM (``signum``); ``checkpoint`` is where the
    state went (or None)."""

    def __init__(self, message, checkpoint=None, signum=2):
        super().__init__(message)
        self.checkpoint, self.signum = checkpoint, signum


class RunStops:
    """The stops of one Trainer's run (see the module's docstring).

    Inside ``with``: SIGINT and SIGTERM set a request that :meth:`check` turns
    into a stop between steps, NumPy's overflow warnings are silenced (they
    would only precede the divergence message), and an exception that ends the
    run leaves as the one-line stop it stands for, after the curves of the
    epochs done so far are drawn.
    """

    def __init__(self, trainer):
        self.trainer = trainer
        self.signals = None          # the StopRequests while inside ``with``
        self.in_update = False       # inside an update that must not be cut in half
        self.dropout_before = None   # dropout counters before the step in progress
        self.epochs_before = 0       # the history's length when ``with`` began
        self._exit = None

    def __enter__(self):
        self.epochs_before = len(self.trainer.history)
        self.in_update, self.dropout_before = False, None     # nothing left of an earlier fit()
        with contextlib.ExitStack() as stack:
            self.signals = stack.enter_context(StopRequests())
            stack.enter_context(np.errstate(over="ignore", invalid="ignore", divide="ignore"))
            self._exit = stack.pop_all()
        return self

    def check(self):
        """Stop here if Ctrl-C or SIGTERM came since the last check."""
        if self.signals is not None and self.signals.requested:
            raise KeyboardInterrupt

    def step_begins(self, model):
        """Remember the dropout counters: a stop before the update gives back the masks
        the unfinished step drew, so that the resumed run draws them again."""
        self.dropout_before = model.get_extra_state()

    @contextlib.contextmanager
    def update(self):
        """Weights, optimizer state and counters change together inside this block.  A
        stop inside it leaves ``in_update`` set: that state is never saved."""
        self.in_update = True
        yield
        self.in_update = False
        self.dropout_before = None   # the step is done and counted

    def __exit__(self, exc_type, exc, tb):
        try:
            stop = None if exc is None else self._translate(exc)
        finally:
            self._exit.close()       # the caller's signal handlers are back
            self.signals = None
        if stop is None:
            return False             # finished, or a bug: passes through as it is
        t = self.trainer
        try:
            if len(t.history) > self.epochs_before:      # the curves of the epochs done here
                t.plot_history()
        except Exception as err:     # must not hide why training stopped
            t.log(f"(history.png not drawn: {err})")
        raise stop from None

    # ---------------------------------------------------------------- the stops
    def _translate(self, exc):
        """The stop ``exc`` stands for, or None if it is none of them."""
        if isinstance(exc, KeyboardInterrupt):
            return self._interrupted(getattr(exc, "signum", None) or self.signals.signum or 2)
        if isinstance(exc, NonFiniteError):
            return self._diverged(exc)
        if isinstance(exc, RunFolderError):
            return RunFolderError(f"{exc}; training stopped: {self._kept()}; free some space "
                                  f"(or fix the folder), then continue with: "
                                  f"{self.resume_command()}", exc.errno, exc.strerror)
        if isinstance(exc, backend.gpu_error_types()) and backend.is_out_of_memory(exc):
            t = self.trainer
            batch = t.config.batch_size
            return TinyAlexNetError(
                f"out of GPU memory at epoch {t.epoch + 1}, step {t.step + 1} with batch size "
                f"{batch} ({str(exc).splitlines()[0]}); try a smaller --batch-size, e.g. "
                f"{max(1, batch // 2)}")
        return None

    def _interrupted(self, signum):
        t = self.trainer
        where = f"epoch {t.epoch + 1}, step {t.step}/{t.steps_per_epoch}"
        what = "interrupted" if signum == 2 else f"stopped by {signal_name(signum)}"
        last = t.path("last.npz")
        saved = os.path.exists(last)
        if self.in_update:
            # Cut inside an update: the state in memory is half old, half new.
            return Interrupted(f"{what} during an update at {where}; {self._kept()}"
                               + (f"; continue with: {self.resume_command()}" if saved else ""),
                               last if saved else None, signum)
        if self.dropout_before is not None:
            # The step in progress is not counted: give back the dropout masks it drew.
            t.model.set_extra_state(self.dropout_before)
        try:
            bad = t.meter.read()["first_bad"] if t.meter is not None else None
            if bad is not None:
                raise LossNotFinite(bad + 1)
            path = t.save("last.npz", t.meter)
        except NonFiniteError as err:    # never save a diverged state over a good one
            return NonFiniteError(f"{what} at {where}, not saved: {self._diverged(err)}")
        except RunFolderError as err:
            return RunFolderError(f"{what} at {where}, but the checkpoint could not be saved "
                                  f"({err}); {self._kept()}"
                                  + (f"; continue with: {self.resume_command()}" if saved
                                     else ""), err.errno, err.strerror)
        return Interrupted(f"{what} at {where}: saved {path}; continue with: "
                           f"{self.resume_command()}", path, signum)

    def _diverged(self, err):
        # A layer's own check (NumPy) stops the step in progress; the running
        # loss (GPU) names the first step whose loss was not finite.  Nothing
        # non-finite is ever saved (Trainer.save), so what is on disk is finite.
        t = self.trainer
        step = getattr(err, "step", t.global_step + 1)
        lr = t.optimizer.lr
        lower = f"{lr / 10:g}"
        if os.path.exists(t.path("last.npz")):
            advice = (f"{self._kept()}; continue from it with a lower learning rate: "
                      f"{self.resume_command('--lr', lower)}")
        else:
            advice = (f"no checkpoint was written; start again with a lower learning rate, "
                      f"e.g. --lr {lower}")
        return NonFiniteError(f"training diverged at step {step} (epoch {t.epoch + 1}): {err}; "
                              f"try a lower learning rate than {lr:g}; {advice}")

    # ---------------------------------------------------------------- what to say
    def resume_command(self, *options):
        """The command line that continues this run (with ``options`` added)."""
        return " ".join(["python -m tinyalexnet train --resume",
                         shlex.quote(self.trainer.out_dir), *options])

    def _kept(self):
        """What is on disk now: "the last checkpoint RUN/last.npz (after epoch 2) is kept"."""
        path = self.trainer.path("last.npz")
        try:
            meta = checkpoint.read_meta(path)
        except CheckpointError:
            return "no checkpoint was saved"
        return f"the last checkpoint {path} ({state_name(meta)}) is kept"

