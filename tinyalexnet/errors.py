"""The project's exceptions.

Every mistake a user can make (a wrong shape, a missing file, a bad checkpoint)
raises one of these with a one-line message saying what was expected and what
came.  The command line prints that line and exits non-zero, with no traceback.

A message that tells its reader what to do names a setting as that reader
writes it: ``--download`` to someone at the command line, ``download=True`` to
someone calling the Python API (:func:`option`).
"""
import contextlib
import contextvars

_COMMAND_LINE = contextvars.ContextVar("tinyalexnet_command_line", default=False)


def option(command_line, python):
    """How a message names a setting: ``command_line`` ("--download") while a command of
    the command line runs (:func:`command_line_words`), ``python`` ("download=True")
    otherwise."""
    return command_line if _COMMAND_LINE.get() else python


@contextlib.contextmanager
def command_line_words():
    """Inside this block, messages name settings as command-line options."""
    token = _COMMAND_LINE.set(True)
    try:
        yield
    finally:
        _COMMAND_LINE.reset(token)


class TinyAlexNetError(Exception):
    """Base class: a user-facing error whose message is one complete line."""


class ConfigError(TinyAlexNetError, ValueError):
    """An invalid setting: an unknown model or init scheme, a learning rate <= 0, a layer's
    kernel size 0 or dropout probability 1, ..."""


class ShapeError(TinyAlexNetError, ValueError):
    """An array of the wrong rank, size, dtype or channel count reached a layer."""


class NonFiniteError(TinyAlexNetError, ValueError):
    """NaN or infinity reached a layer (bad data, or training that diverged).

    Not a ShapeError: the array had the right shape, its numbers were wrong."""


class StateError(TinyAlexNetError, RuntimeError):
    """A call made in the wrong order, e.g. backward() before forward()."""


class BackendUnavailable(TinyAlexNetError, RuntimeError):
    """The requested array backend (CuPy/GPU) cannot be used on this machine."""


class DataError(TinyAlexNetError, ValueError):
    """A data file or folder is missing, truncated, corrupt or of the wrong format."""


class CheckpointError(TinyAlexNetError, ValueError):
    """A checkpoint is missing, cut short, or belongs to another model."""


class RunFolderError(TinyAlexNetError, OSError):
    """A run folder cannot be claimed or written: in use by another run, read-only, full."""

    def __init__(self, message, errno=None, strerror=None):
        OSError.__init__(self, message)
        self.errno, self.strerror = errno, strerror

    def __str__(self):
        return self.args[0]
