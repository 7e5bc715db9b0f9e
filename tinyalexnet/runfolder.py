"""Run folders: one owner at a time, and every file written all or nothing.

A training run lives in one folder (``runs/alexnet_small-fashion-mnist-subset-1/``)
that holds its checkpoints and history.  Two rules keep it from being lost:

One owner.  A process that writes to a run folder first *claims* it.  A new
default folder is claimed by creating it (``os.mkdir`` fails if another
process got there first, so two runs started together never share
``runs/...-1``).  Any folder, new or old, is then locked: the owner holds an
exclusive ``flock`` on the folder itself (a file in it could be deleted from
under the lock, and the next process would lock a new file of the same name),
and on ``owner.lock`` inside it, a plain file where it writes its pid and
host for the message another process gets (and the lock where a folder
cannot be locked: Windows, some network file systems).  The kernel drops the
locks when the owner exits, however it exits (``kill -9`` included), so a
crashed run never blocks its folder.

Nothing left behind.  A folder this process made and left holding nothing but
``owner.lock`` (a run that failed before its first checkpoint) is removed
again when it lets go, with the parent folders it made.  The owner also
removes the temporary files of writers that died mid-write (``kill -9``
during a save): a temporary's name holds its writer's pid and host, and one
whose writer is provably gone (same host, no such process) is deleted.

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
import re
import secrets
import socket
import stat

from .errors import RunFolderError

try:
    import fcntl
except ImportError:          # Windows: locks through msvcrt instead
    fcntl = None
    import msvcrt

LOCK_NAME = "owner.lock"

# This machine's name as it goes into a temporary file's name (letters, digits, - and _).
HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:40] or "host"
# ".last.npz.12345@myhost-0f3a9c2e.tmp": the file it will become, its writer's pid and host.
_TEMPORARY = re.compile(r"\..+\.(\d+)@([A-Za-z0-9_-]+)-[0-9a-f]{8}\.tmp")


def temporary_name(name):
    """A hidden name for a file on its way to becoming ``name``, unique to this writer,
    that says who writes it (pid and host): see :meth:`RunFolder.remove_dead_temporaries`."""
    return f".{name}.{os.getpid()}@{HOST}-{secrets.token_hex(4)}.tmp"


# --------------------------------------------------------------------- writing

def write_atomic(path, write, mode="wb"):
    """Create or replace ``path`` all or nothing; ``write(f)`` fills the open file.

    Raises RunFolderError("cannot write PATH: <reason>") if the disk is full,
    the folder read-only, ...; ``path`` is then as it was before.
    """
    path = os.fspath(path)
    folder, name = os.path.split(path)
    # Unique per writer, in the same folder (a rename never crosses file systems).
    tmp = os.path.join(folder, temporary_name(name))
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
    read-only place fails at once, not after an epoch of training.  ``made``
    lists the folders this process created for it (outermost first): if they
    hold nothing but ``owner.lock`` when it lets go, they are removed again.
    """

    def __init__(self, path, made=()):
        self.path = os.fspath(path)
        self.made = list(made)
        self._held = None       # (the folder's descriptor or None, the open owner.lock)

    @property
    def created(self):
        """Whether this process made the folder (it is removed again if left empty)."""
        return bool(self.made)

    # ---------------------------------------------------------------- claiming
    @classmethod
    def new(cls, root, stem):
        """Create and lock ``root/stem-<n>`` with the first n no one has taken."""
        try:
            make_folders(root)   # kept even if left empty: another run may be starting in it
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
            return cls(path, [path])._lock_or_abandon()

    @classmethod
    def claim(cls, path):
        """Lock the folder ``path``, creating it (and its parents) if needed."""
        path = os.fspath(path)
        if os.path.exists(path) and not os.path.isdir(path):
            raise RunFolderError(f"{path}: exists and is not a folder; give a folder for --out")
        try:
            made = make_folders(path)
        except OSError as err:
            raise _cannot("create the run folder", path, err) from None
        return cls(path, made)._lock_or_abandon()

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
        return self._held is not None

    def lock(self):
        """Become the folder's only writer (again); a no-op if this object holds it."""
        if self.locked:
            return self
        if self.made and not os.path.isdir(self.path):
            try:                     # removed when this object let go of it empty: make it again
                self.made = make_folders(self.path)
            except OSError as err:
                raise _cannot("create the run folder", self.path, err) from None
        note_path = os.path.join(self.path, LOCK_NAME)
        folder = note = None
        try:
            folder = _open_folder(self.path)
            if folder is not None:
                held = _try_lock(folder, optional=True)
                if held is None:     # folders cannot be locked here: owner.lock alone
                    os.close(folder)
                    folder = None
                elif not held:
                    raise self._busy(None)
            note = _open_note(note_path)
            if not _try_lock(note.fileno()):
                raise self._busy(note)
            note.seek(0)
            note.truncate()
            note.write(f"pid {os.getpid()} on {socket.gethostname()} since "
                       f"{datetime.datetime.now().isoformat(timespec='seconds')}\n".encode())
            note.flush()
            self._check_writable()
        except BaseException as err:
            if note is not None:
                note.close()         # closing drops the locks
            if folder is not None:
                os.close(folder)
            if isinstance(err, OSError) and not isinstance(err, RunFolderError):
                raise _cannot("write to the run folder", self.path, err) from None
            raise
        self._held = (folder, note)
        self.remove_dead_temporaries()
        return self

    def _busy(self, note):
        owner = _owner_of(note, os.path.join(self.path, LOCK_NAME))
        return RunFolderError(f"{self.path}: in use by {owner}; a run folder has one writer at "
                              f"a time: wait for it to end, or give another --out")

    def _check_writable(self):
        """Create and remove a file as checkpoints will be written (read-only, full...)."""
        probe = os.path.join(self.path, temporary_name("probe"))
        with open(probe, "xb") as f:
            f.write(b"tinyalexnet")
            f.flush()
            os.fsync(f.fileno())
        os.remove(probe)

    def remove_dead_temporaries(self):
        """Delete the temporary files whose writer died mid-write; returns their names.

        Only files named by :func:`temporary_name` whose writer ran on this host
        and is no longer running: a process on another machine, or one that is
        still alive, keeps its file.  (Not on Windows, where there is no
        harmless way to ask whether a process exists.)
        """
        if os.name != "posix":
            return []
        try:
            names = os.listdir(self.path)
        except OSError:
            return []
        removed = []
        for name in names:
            match = _TEMPORARY.fullmatch(name)
            if match is None or match.group(2) != HOST or _alive(int(match.group(1))):
                continue
            try:
                os.remove(os.path.join(self.path, name))
                removed.append(name)
            except OSError:
                pass
        return removed

    def path_now(self):
        """Where the folder is now: ``path``, or where it was moved to while this process
        held it (found through the open folder or lock file, where /proc shows it); None
        if it is gone or cannot be found."""
        if self._held is None:
            return None
        folder, note = self._held
        try:
            here = os.stat(os.path.join(self.path, LOCK_NAME))
            if os.path.samestat(here, os.fstat(note.fileno())):
                return self.path
        except OSError:
            pass
        fd, is_folder = (folder, True) if folder is not None else (note.fileno(), False)
        try:
            where = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return None
        if where.endswith(" (deleted)"):
            return None
        return where if is_folder else os.path.dirname(where)

    def unlock(self):
        """Let another process claim the folder (also what exiting does).  A folder this
        process made that holds nothing but ``owner.lock`` is removed first."""
        held, self._held = getattr(self, "_held", None), None
        if held is None:
            return self
        folder, note = held
        try:
            self._remove_if_empty()      # still locked: nobody else is writing into it
        finally:
            note.close()
            if folder is not None:
                os.close(folder)
        return self

    def abandon(self):
        """Let go of the folder after a failed start: :meth:`unlock`, and remove the folders
        this process made if nothing was written in them."""
        if self.locked:
            return self.unlock()
        self._remove_if_empty()
        return self

    def _remove_if_empty(self):
        if not self.made:
            return
        try:
            if set(os.listdir(self.path)) - {LOCK_NAME}:
                return                   # the run wrote something: it stays
            try:
                os.remove(os.path.join(self.path, LOCK_NAME))
            except FileNotFoundError:
                pass
            for folder in reversed(self.made):
                os.rmdir(folder)         # stops at the first that holds something else
        except OSError:
            pass                         # not ours to clean any more, or gone already

    def __del__(self):
        if getattr(self, "_held", None) is not None:
            self.unlock()        # as the kernel would, but without an unclosed-file warning

    def __enter__(self):
        return self.lock()

    def __exit__(self, *exc):
        self.unlock()
        return False

    def __repr__(self):
        return f"RunFolder({self.path!r}{', locked' if self.locked else ''})"


class ReaderFolder:
    """The run folder of a run that another process writes: rank 0 of a data-parallel run
    holds the RunFolder (and its lock); ranks 1..N-1 hold this, its path, and only read
    there (a checkpoint to resume from).  Locking is a no-op: the folder is not theirs."""

    created = locked = False

    def __init__(self, path):
        self.path = os.fspath(path)

    def path_now(self):
        return self.path if os.path.isdir(self.path) else None

    def lock(self):
        return self

    def unlock(self):
        return self

    abandon = unlock

    def __repr__(self):
        return f"ReaderFolder({self.path!r})"


def owner_elsewhere(path):
    """Who holds the run folder ``path``, if another process does ("pid 123 on host since
    ..."), else None.  Only looks: nothing is created or kept locked.  For commands that
    would write beside a checkpoint in a folder a run may be writing (evaluate's picture)."""
    note_path = os.path.join(os.fspath(path), LOCK_NAME)
    opened = []
    try:
        folder = _open_folder(path)
        if folder is not None:
            opened.append(folder)
            if _try_lock(folder, optional=True) is False:
                return _owner_of(None, note_path)
        note = os.open(note_path, os.O_RDONLY | _CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
                       | getattr(os, "O_NONBLOCK", 0))
        opened.append(note)
        if stat.S_ISREG(os.fstat(note).st_mode) and not _try_lock(note):
            return _owner_of(None, note_path)
    except OSError:
        pass                     # no folder, no owner.lock, not lockable: no owner to name
    finally:
        for fd in opened:
            os.close(fd)         # and with it the lock just taken
    return None


def make_folders(path):
    """``os.makedirs(path, exist_ok=True)`` without recursion (so a path 2,000 folders deep
    is an OSError such as "File name too long", not a RecursionError).  Returns the
    folders it created, outermost first; if one cannot be made, those made before it
    are removed again and the OSError is raised."""
    path = os.fspath(path)
    missing, p = [], path.rstrip("/" + os.sep) or path
    while p and not os.path.isdir(p):
        missing.append(p)
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    made = []
    try:
        for p in reversed(missing):
            try:
                os.mkdir(p)
            except FileExistsError:
                if os.path.isdir(p):     # made by another process a moment ago
                    continue
                raise
            made.append(p)
    except OSError:
        for p in reversed(made):
            try:
                os.rmdir(p)
            except OSError:
                break
        raise
    return made


# --------------------------------------------------------------------- the system's part

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def _open_folder(path):
    """The folder opened to be locked, or None where folders cannot be opened (Windows)."""
    if fcntl is None or not hasattr(os, "O_DIRECTORY"):
        return None
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)


def _open_note(path):
    """``owner.lock`` opened for reading and writing, created if missing.  Anything but a
    plain file there is refused by name: a symbolic link is not followed (the file it
    points to, outside the folder, would be overwritten), a FIFO is never waited on."""
    flags = (os.O_RDWR | os.O_CREAT | _CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
             | getattr(os, "O_NONBLOCK", 0))
    try:
        fd = os.open(path, flags, 0o644)
    except OSError:
        kind = _not_a_plain_file(path)
        if kind is None:
            raise
        fd = None
    else:
        kind = _not_a_plain_file(path, os.fstat(fd))
        if kind is not None:
            os.close(fd)
    if kind is not None:
        raise RunFolderError(f"{path}: {kind}, not the plain file in which a run folder names "
                             f"its owner; remove it (it holds nothing of the run), or give "
                             f"another --out")
    if hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)
    return os.fdopen(fd, "r+b")


_KINDS = ((stat.S_ISLNK, "is a symbolic link"), (stat.S_ISDIR, "is a folder"),
          (stat.S_ISFIFO, "is a FIFO (named pipe)"), (stat.S_ISSOCK, "is a socket"),
          (stat.S_ISCHR, "is a character device"), (stat.S_ISBLK, "is a block device"))


def file_kind(mode):
    """What a path of ``mode`` (``st_mode`` of os.stat or os.lstat) is, to complete a
    message: "is a folder", "is a FIFO (named pipe)", ...; None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    return next((what for test, what in _KINDS if test(mode)), "is not a regular file")


def _not_a_plain_file(path, st=None):
    """What ``path`` is if not a regular file ("is a symbolic link", ...), else None."""
    if st is None:
        try:
            st = os.lstat(path)
        except OSError:
            return None
    return file_kind(st.st_mode)


def _owner_of(note, path):
    """The owner's line in ``owner.lock`` (open as ``note``, or at ``path``), for a message."""
    text = b""
    try:
        if note is None:
            fd = os.open(path, os.O_RDONLY | _CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
                         | getattr(os, "O_NONBLOCK", 0))
            with os.fdopen(fd, "rb") as f:
                if stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                    text = f.read(200)
        else:
            note.seek(0)
            text = note.read(200)
    except OSError:
        pass
    return text.decode("utf-8", "replace").strip() or "another process"


def _try_lock(fd, optional=False):
    """An exclusive lock on the open descriptor ``fd`` without waiting: True, or False if
    another holds it.  ``optional``: None where this kind of file cannot be locked."""
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError as err:
        if err.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK, errno.EDEADLK):
            return False
        # a folder on NFS (flock emulated by a write lock, which needs a file open for writing)
        if optional and err.errno in (errno.EBADF, errno.EINVAL, errno.ENOLCK,
                                      errno.EOPNOTSUPP):
            return None
        raise
    return True


def _alive(pid):
    """Whether process ``pid`` may exist on this host (False only when it surely does not)."""
    if pid <= 0 or pid == os.getpid():
        return True              # ours, or not a process's number: never removed
    try:
        os.kill(pid, 0)          # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):
        return True              # exists but belongs to another user, or cannot be asked
    return True


def _cannot(what, path, err):
    hint = ""
    if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        hint = "; give --out a folder you can write to"
    elif err.errno == errno.ENOSPC:
        hint = "; free some space or give --out on another disk"
    elif err.errno in (errno.ENOENT, errno.ENOTDIR):
        hint = "; give --out a folder that can be created"
    elif err.errno == errno.ENAMETOOLONG:
        hint = "; give --out a shorter path"
    return RunFolderError(f"cannot {what} {path}: {_reason(err)}{hint}", err.errno, _reason(err))
