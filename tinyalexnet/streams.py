"""Standard output and error that never stop a command, and text they can always show.

Where a command's output goes can stop taking it: ``train | head -1`` closes
the pipe after one line (EPIPE), ``> /dev/full`` is a full disk (ENOSPC), a
closed terminal or SSH session is an I/O error (EIO).  Python raises at the
next ``print``, wherever that is: in the middle of training, between two
saves.  Inside :func:`guarded` the first such error is remembered, the rest
of the output goes to the null device, and the command goes on as if nothing
happened (training trains and saves).  At the end :meth:`Guard.finish` says
in one line what was lost, unless the reader simply stopped reading (a
closed pipe: ``head`` had what it wanted).

A file or class name that is not valid UTF-8 reaches Python with its bad
bytes as stand-ins (surrogates) that no encoding can write; :func:`printable`
shows them as ``\\xNN`` escapes, as Python shows them in error messages.
"""
import contextlib
import errno
import io
import os
import sys


def printable(text, encoding="utf-8"):
    """``text`` as ``encoding`` can write it: bytes it cannot hold become ``\\xNN``."""
    try:
        raw = os.fsencode(text)          # surrogates back to the bytes they stand for
    except UnicodeError:
        raw = text.encode("utf-8", "backslashreplace")
    return raw.decode(encoding, "backslashreplace")


class GuardedStream:
    """A text stream (``sys.stdout``) whose first write error is kept in ``error``
    instead of raised; from then on its output goes to the null device."""

    def __init__(self, stream):
        self.stream, self.error = stream, None

    def write(self, text):
        if self.error is None:
            try:
                return self.stream.write(text)
            except UnicodeEncodeError:
                return self.write(printable(text, self.stream.encoding or "utf-8"))
            except OSError as err:
                self._lost(err)
        return len(text)

    def flush(self):
        if self.error is None:
            try:
                self.stream.flush()
            except OSError as err:
                self._lost(err)

    def _lost(self, err):
        self.error = err             # nothing more is written to the stream
        # What its buffer still holds would fail again when it is flushed or closed
        # (Python's own flush at exit included): it goes to the null device instead.
        try:
            fd = self.stream.fileno()
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, fd)
            os.close(null)
        except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
            pass                     # not a real file (tests capture output)

    def __getattr__(self, name):         # encoding, isatty, fileno, ...
        return getattr(self.stream, name)


class Guard:
    """``sys.stdout`` and ``sys.stderr`` guarded while a command runs (see the module)."""

    def __enter__(self):
        self.saved = sys.stdout, sys.stderr
        self.stdout, self.stderr = GuardedStream(sys.stdout), GuardedStream(sys.stderr)
        if sys.stdout is not None:       # None: no output at all (pythonw), print skips it
            sys.stdout = self.stdout
        if sys.stderr is not None:
            sys.stderr = self.stderr
        return self

    def finish(self, code):
        """The command's exit code, after saying what was lost (one line on stderr): a
        command that succeeded but could not show its output exits with 2."""
        with contextlib.suppress(Exception):
            self.stdout.flush()
        err = self.stdout.error
        if err is None or err.errno == errno.EPIPE:
            return code                  # all shown, or the reader stopped reading
        reason = err.strerror or str(err)
        print(f"error: cannot write to standard output ({reason}); the command went on, and "
              f"what it printed from then on was lost", file=sys.stderr)
        return code or 2

    def __exit__(self, *exc):
        sys.stdout, sys.stderr = self.saved
        return False


def guarded():
    """``with guarded() as out: ... return out.finish(code)``: see the module."""
    return Guard()
