"""Run folders: one owner at a time, and every file written all or nothing.

A training run lives in one folder (``runs/alexnet_small-fashion-mnist-subset-1/``)
that holds its checkpoints and history.  Two rules keep it from being lost:

One owner.  A process that writes to a run folder first *claims* it.  A new
default folder is claimed by creating it (``os.mkdir`` fails if another
process got there first, so two runs started together never share
``runs/...-1``).  Any folder, new or old, is then locked: the owner holds an
exclusive ``flock`` on ``owner.lock`` inside it and writes its pid and host
there for the message another process gets.  The kernel drops the lock when
the owner exits, however it exits (``kill -9`` included), so a crashed run
never blocks its folder.

All or nothing.  :func:`write_atomic` writes a new file under a unique
temporary name in the same folder (two writers never share one), flushes it
to the disk (``fsync``) and renames it over the old one (``os.replace``,
atomic).  A crash, a full disk or Ctrl-C at any moment leaves either the old
file or the new one, never half of one.  A failed write raises a one-line
:class:`RunFolderError` (an ``OSError`` too) and removes its temporary file.
"""
import datetime
import errno
import os
import secrets
import socket

from .errors import RunFolderError

try:
    import fcntl
except ImportError:          # Windows: locks through msvcrt instead
    fcntl = None
    import msvcrt

LOCK_NAME = "owner.lock"


# --------------------------------------------------------------------- writing

def write_atomic(path, write, mode="wb"):
    """Create or replace ``path`` all or nothing; ``write(f)`` fills the open file.

    Raises RunFolderError("cannot write PATH: <reason>") if the disk is full,
    the folder read-only, ...; ``path`` is then as it was before.
    """
    path = os.fspath(path)
    folder, name = os.path.split(path)
    # Unique per writer, in the same folder (a rename never crosses file systems).
    tmp = os.path.join(folder, f".{name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "x" + mode.lstrip("w")) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        try:
            os.remove(tmp)
        except OSError:
            pass
        if isinstance(err, OSError) and not isinstance(err, RunFolderError):
            raise RunFolderError(f"cannot write {path}: {_reason(err)}", err.errno,
                                 _reason(err)) from None
        raise
    fsync_dir(folder or ".")
    return path


def write_text_atomic(path, text):
    """:func:`write_atomic` for a text file (UTF-8)."""
    return write_atomic(path, lambda f: f.write(text.encode("utf-8")))


def fsync_dir(folder):
    """Make a rename in ``folder`` durable (POSIX); harmless where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _reason(err):
    return err.strerror or str(err) or type(err).__name__


# --------------------------------------------------------------------- owning

class RunFolder:
    """The folder of one run, owned by this process while ``locked``.

        run = RunFolder.claim("runs/demo")         # or RunFolder.new("runs", "alexnet32-mnist")
        ...write into run.path...
        run.unlock()                               # or: with run: ...

    ``claim`` and ``new`` check that files can be created in the folder, so a
    read-only place fails at once, not after an epoch of training.
    """

    def __init__(self, path, created=False):
        self.path = os.fspath(path)
        self.created = created      # made by this process: removed again by abandon()
        self._lock_file = None

    # ---------------------------------------------------------------- claiming
    @classmethod
    def new(cls, root, stem):
        """Create and lock ``root/stem-<n>`` with the first n no one has taken."""
        try:
            os.makedirs(root, exist_ok=True)
        except OSError as err:
            raise _cannot("create the run folder", os.path.join(root, f"{stem}-1"), err) from None
        n = 1
        while True:
            path = os.path.join(root, f"{stem}-{n}")
            try:
                os.mkdir(path)       # atomic: exactly one process creates each name
            except FileExistsError:
                n += 1
                continue
            except OSError as err:
                raise _cannot("create the run folder", path, err) from None
            return cls(path, created=True)._lock_or_abandon()

    @classmethod
    def claim(cls, path):
        """Lock the folder ``path``, creating it (and its parents) if needed."""
        path = os.fspath(path)
        if os.path.exists(path) and not os.path.isdir(path):
            raise RunFolderError(f"{path}: exists and is not a folder; give a folder for --out")
        created = False
        if not os.path.isdir(path):
            try:
                os.makedirs(path)
                created = True
            except FileExistsError:      # made by someone else a moment ago: claim it too
                pass
            except OSError as err:
                raise _cannot("create the run folder", path, err) from None
        return cls(path, created=created)._lock_or_abandon()

    def _lock_or_abandon(self):
        try:
            self.lock()
        except BaseException:
            self.abandon()
            raise
        return self

    # ---------------------------------------------------------------- locking
    @property
    def locked(self):
        return self._lock_file is not None

    def lock(self):
        """Become the folder's only writer (again); a no-op if this object holds it."""
        if self.locked:
            return self
        lock_path = os.path.join(self.path, LOCK_NAME)
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as err:
            raise _cannot("write to the run folder", self.path, err) from None
        f = os.fdopen(fd, "r+b")
        try:
            if not _try_lock(f):
                f.seek(0)
                owner = f.read(200).decode("utf-8", "replace").strip() or "another process"
                raise RunFolderError(f"{self.path}: in use by {owner}; a run folder has one "
                                     f"writer at a time: wait for it to end, or give another "
                                     f"--out")
            f.seek(0)
            f.truncate()
            f.write(f"pid {os.getpid()} on {socket.gethostname()} since "
                    f"{datetime.datetime.now().isoformat(timespec='seconds')}\n".encode())
            f.flush()
            self._check_writable()
        except BaseException as err:
            f.close()                    # closing drops the lock
            if isinstance(err, OSError) and not isinstance(err, RunFolderError):
                raise _cannot("write to the run folder", self.path, err) from None
            raise
        self._lock_file = f
        return self

    def _check_writable(self):
        """Create and remove a file as checkpoints will be written (read-only, full...)."""
        probe = os.path.join(self.path, f".probe.{os.getpid()}-{secrets.token_hex(4)}.tmp")
        with open(probe, "xb") as f:
            f.write(b"tinyalexnet")
            f.flush()
            os.fsync(f.fileno())
        os.remove(probe)

    def path_now(self):
        """Where the folder is now: ``path``, or where it was moved to while this process
        held it (found through the open lock file, where /proc shows it); None if it is
        gone or cannot be found."""
        f = self._lock_file
        try:
            here = os.stat(os.path.join(self.path, LOCK_NAME))
            if f is None or os.path.samestat(here, os.fstat(f.fileno())):
                return self.path
        except OSError:
            pass
        if f is None:
            return None
        try:
            lock_path = os.readlink(f"/proc/self/fd/{f.fileno()}")
        except OSError:
            return None
        return None if lock_path.endswith(" (deleted)") else os.path.dirname(lock_path)

    def unlock(self):
        """Let another process claim the folder (also what exiting does)."""
        f, self._lock_file = getattr(self, "_lock_file", None), None
        if f is not None:
            f.close()
        return self

    def abandon(self):
        """Unlock; and if this process made the folder and nothing was written, remove it."""
        self.unlock()
        if self.created:
            try:
                leftover = set(os.listdir(self.path)) - {LOCK_NAME}
                if not leftover:
                    try:
                        os.remove(os.path.join(self.path, LOCK_NAME))
                    except FileNotFoundError:
                        pass
                    os.rmdir(self.path)
            except OSError:
                pass             # not ours to clean any more, or gone already
            self.created = False

    def __del__(self):
        self.unlock()            # as the kernel would, but without an unclosed-file warning

    def __enter__(self):
        return self.lock()

    def __exit__(self, *exc):
        self.unlock()
        return False

    def __repr__(self):
        return f"RunFolder({self.path!r}{', locked' if self.locked else ''})"


def _try_lock(f):
    """An exclusive lock on the open file ``f`` without waiting; False if another holds it."""
    try:
        if fcntl is not None:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
    except OSError as err:
        if err.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK, errno.EDEADLK):
            return False
        raise
    return True


def _cannot(what, path, err):
    hint = ""
    if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        hint = "; give --out a folder you can write to"
    elif err.errno == errno.ENOSPC:
        hint = "; free some space or give --out on another disk"
    elif err.errno in (errno.ENOENT, errno.ENOTDIR):
        hint = "; give --out a folder that can be created"
    return RunFolderError(f"cannot {what} {path}: {_reason(err)}{hint}", err.errno, _reason(err))
