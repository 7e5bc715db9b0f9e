"""Stopping on a signal: Ctrl-C (SIGINT), SIGTERM and SIGHUP end a command the same way.

A terminal's Ctrl-C sends SIGINT.  Job schedulers (Slurm, Kubernetes), ``docker
stop`` and a plain ``kill`` send SIGTERM, and some seconds later SIGKILL, which
no program can catch.  Closing the terminal, or losing the SSH connection,
sends SIGHUP.  So all three are handled alike:

- while training (:class:`StopRequests`), the first signal asks the loop to
  stop after the step in progress; the state is then consistent, is saved, and
  the command prints how to resume.  A second signal stops at once.
- anywhere else in a command (loading data, importing the libraries), the
  signal raises ``KeyboardInterrupt`` (:class:`Terminated` for SIGTERM and
  SIGHUP) where the program is, and the command ends with one line and no
  traceback.

Either way the exit status is 128 + the signal's number: 130 for SIGINT, 143
for SIGTERM, 129 for SIGHUP, what a shell shows for a program those signals
stopped.  A signal that was ignored when the program started stays ignored:
under ``nohup`` (SIGHUP ignored) a run goes on when the terminal closes, as
``nohup`` promises.
"""
import signal
import threading

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP")
                     if hasattr(signal, name))          # Windows has no SIGHUP
#: The signals that raise :class:`Terminated` outside training (SIGINT raises
#: Python's own KeyboardInterrupt).
TERMINATING = tuple(s for s in STOP_SIGNALS if s != signal.SIGINT)


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP (``signum``) arrived outside the training loop."""

    def __init__(self, signum=signal.SIGTERM):
        super().__init__()
        self.signum = signum


def exit_code(stop):
    """128 + the signal that stopped the command (``stop``: the exception, or a number)."""
    signum = stop if isinstance(stop, int) else getattr(stop, "signum", signal.SIGINT)
    return 128 + int(signum)


def signal_name(signum):
    return "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


def _raise_terminated(signum, frame):
    raise Terminated(signum)


def _catch(signals, handler):
    """Set ``handler`` for each of ``signals`` not ignored now; {signal: previous handler}.
    Only the main thread can set signal handlers: elsewhere nothing is set."""
    previous = {}
    if threading.current_thread() is not threading.main_thread():
        return previous
    for signum in signals:
        if signal.getsignal(signum) is signal.SIG_IGN:
            continue             # nohup, or a background job: ignored on purpose
        previous[signum] = signal.signal(signum, handler)
    return previous


def _restore(previous):
    for signum, handler in previous.items():
        if handler is None:      # set outside Python: put back the usual behaviour
            handler = signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL
        signal.signal(signum, handler)


class raise_on_sigterm:
    """Make SIGTERM and SIGHUP raise :class:`Terminated` (like Ctrl-C's KeyboardInterrupt)
    until the ``with`` block ends; called without ``with``, for the rest of the program."""

    def __init__(self):
        self._previous = _catch(TERMINATING, _raise_terminated)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        _restore(self._previous)
        return False


class StopRequests:
    """Catch SIGINT, SIGTERM and SIGHUP while training.  The first one sets
    ``requested`` (and ``signum``), so the loop stops after the step it is in; a
    second one interrupts at once.  Only the main thread can own signal handlers;
    elsewhere Ctrl-C arrives as a plain KeyboardInterrupt."""

    def __enter__(self):
        self.requested, self.signum = False, None
        self._previous = _catch(STOP_SIGNALS, self._handler)
        return self

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt if signum == signal.SIGINT else Terminated(signum)
        self.requested, self.signum = True, signum

    def __exit__(self, *exc):
        _restore(self._previous)
        return False


def stopped(stop):
    """The one line a command stopped by ``stop`` (the exception) ends with."""
    signum = getattr(stop, "signum", signal.SIGINT)
    if signum == signal.SIGINT:
        return "interrupted"
    return "terminated" if signum == signal.SIGTERM else f"stopped by {signal_name(signum)}"
