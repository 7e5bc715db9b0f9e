"""Stopping on a signal: Ctrl-C (SIGINT) and SIGTERM end a command the same way.

A terminal's Ctrl-C sends SIGINT.  Job schedulers (Slurm, Kubernetes), ``docker
stop`` and a plain ``kill`` send SIGTERM, and some seconds later SIGKILL, which
no program can catch.  So both are handled alike:

- while training (:class:`StopRequests`), the first signal asks the loop to
  stop after the step in progress; the state is then consistent, is saved, and
  the command prints how to resume.  A second signal stops at once.
- anywhere else in a command (loading data, importing the libraries), the
  signal raises ``KeyboardInterrupt`` (:class:`Terminated` for SIGTERM) where
  the program is, and the command ends with one line and no traceback.

Either way the exit status is 128 + the signal's number: 130 for SIGINT, 143
for SIGTERM, what a shell shows for a program those signals stopped.
"""
import signal
import threading

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived outside the training loop."""
    signum = signal.SIGTERM


def exit_code(stop):
    """128 + the signal that stopped the command (``stop``: the exception, or a number)."""
    signum = stop if isinstance(stop, int) else getattr(stop, "signum", signal.SIGINT)
    return 128 + int(signum)


def signal_name(signum):
    return "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


def _raise_terminated(signum, frame):
    raise Terminated


class raise_on_sigterm:
    """Make SIGTERM raise :class:`Terminated` (like Ctrl-C's KeyboardInterrupt) until the
    ``with`` block ends; called without ``with``, for the rest of the program."""

    def __init__(self):
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, _raise_terminated)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
        return False


class StopRequests:
    """Catch SIGINT and SIGTERM while training.  The first one sets ``requested``
    (and ``signum``), so the loop stops after the step it is in; a second one
    interrupts at once.  Only the main thread can own signal handlers; elsewhere
    Ctrl-C arrives as a plain KeyboardInterrupt."""

    def __enter__(self):
        self.requested, self.signum = False, None
        self._previous = {}
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handler)
        return self

    def _handler(self, signum, frame):
        if self.requested:
            raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt
        self.requested, self.signum = True, signum

    def __exit__(self, *exc):
        for signum, previous in self._previous.items():
            if previous is None:     # set outside Python: put back the usual behaviour
                previous = signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL
            signal.signal(signum, previous)
        return False
