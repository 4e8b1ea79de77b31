"""Atomic file writes: a file holds its old content or all of its new one, never part.

:func:`write_atomically` is shared by checkpoints, plots and the command line; it
raises the ``OSError`` as it came, for each caller to explain.

Atomic replacement is for regular files and new paths.  What :func:`write_atomically`
does with each kind of path (as editors and ``cp`` do):

- a new path, or a regular file: a new file is written beside it and renamed onto it,
  atomically (see :func:`write_atomically`);
- a symbolic link to a regular file, or to a path where nothing is: the file it leads
  to (its real path) is written atomically, in that file's directory, and the link
  stays a link;
- a character device (``/dev/null``, a terminal) or a FIFO, or a link to one
  (``/dev/stdout``, ``/proc/self/fd/1``): written through, that is opened for writing
  (a FIFO waits for its reader) and written, with no temporary file and no rename, so
  not atomically; the node stays;
- a link that leads to no path (``/proc/self/fd/N`` of a deleted file): written
  through, truncated first, as ``open(path, "wb")`` would;
- a directory: refused, :class:`IsADirectoryError`; a block device or a socket:
  refused, :class:`NotARegularFileError`.

Nothing is written where a path is refused.  A program that writes to its standard
output (``--output -``) writes to ``sys.stdout.buffer`` itself; a path such as
``/dev/stdout`` works here too, as the cases above say.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["STALE_TEMPORARY_SECONDS", "NotARegularFileError", "write_atomically"]

#: A hidden temporary file of the same target that has not been modified for this many
#: seconds is taken to be left by a writer that was killed, and removed by the next
#: successful write of that target.
STALE_TEMPORARY_SECONDS = 15 * 60

# Where Linux shows a process's open files; linking /proc/self/fd/N gives a name to the
# anonymous file open as N (open(2), O_TMPFILE).
_PROC_FD = Path("/proc/self/fd")
# errno values with which open(O_TMPFILE) says that it is not supported: by the file
# system (EOPNOTSUPP), or by a kernel older than 3.11, which takes O_TMPFILE for
# O_DIRECTORY (EISDIR) or refuses the flags (EINVAL).
_NO_TMPFILE = frozenset({errno.EOPNOTSUPP, errno.ENOTSUP, errno.EISDIR, errno.EINVAL, errno.ENOSYS})
# errno values with which linking /proc/self/fd/N says that this system cannot name an
# anonymous file (no /proc, a file system without hard links, ...).
_CANNOT_LINK = frozenset(
    {errno.ENOENT, errno.EXDEV, errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL}
)
_ATTEMPTS = 100


class NotARegularFileError(OSError):
    """The path names a block device or a socket, which :func:`write_atomically` does
    not write to (nor replace)."""


_KINDS: tuple[tuple[Callable[[int], bool], str], ...] = (
    (stat.S_ISREG, "a regular file"),
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISLNK, "a symbolic link"),
)


def _file_kind(mode: int) -> str:
    """``"a FIFO (named pipe)"``, ``"a directory"``, ...: the kind of file ``mode`` (an
    ``st_mode``) describes."""
    for test, kind in _KINDS:
        if test(mode):
            return kind
    return "a file of an unknown kind"


def write_atomically(path: str | os.PathLike[str], write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(f)`` on a new file beside ``path``, sync it and put it at ``path``.

    ``path`` holds either its previous content or the complete new content, never part
    of it, whatever happens: an exception of ``write``, a full disk, a read-only
    directory, a ``KeyboardInterrupt``, a crash, or the process being killed.

    How:

    - On Linux the bytes go to an *anonymous* file, opened with ``O_TMPFILE`` in the
      target's directory.  It has no name while it is written, so a process killed
      mid-write leaves nothing behind: the kernel frees the file.  Once written, it
      is flushed and fsynced, then linked in as ``path`` if there is no file there,
      else linked as a hidden temporary ``.<name>.<random>.tmp`` and renamed onto
      ``path`` with :func:`os.replace`; then the directory is fsynced.
    - Where ``O_TMPFILE`` is not supported (other systems, some file systems), the
      bytes go to a hidden temporary ``.<name>.<random>.tmp`` created in the target's
      directory, which is flushed, fsynced and renamed onto ``path`` in the same way.
      On an error it is removed; a process killed while writing it leaves it behind.

    A temporary file is never read as the file itself: its name is hidden and ends in
    ``.tmp``, and nothing opens it but its writer.  A temporary left by a killed
    writer of the same ``path`` (the fallback, or the instant between link and rename
    on Linux) is removed by the next successful write of ``path``, once it has not
    been modified for :data:`STALE_TEMPORARY_SECONDS` (15 minutes); a younger one may
    belong to a writer that is still at work, and is left alone.

    This is for a new path or a regular file; a symbolic link, a character device, a
    FIFO and the paths that are refused are as the module docstring says.

    Parameters
    ----------
    path : str or path-like
        The file to write; its directory must exist.
    write : callable
        Called once with a binary file object open for writing.

    Raises
    ------
    OSError
        As raised (``PermissionError``, ``ENOSPC``, ``EROFS``, ...), for the caller to
        explain; ``path`` and its directory are then as they were.
        :class:`IsADirectoryError` for a directory, :class:`NotARegularFileError` for a
        block device or a socket, before anything is written.
    """
    target = Path(os.fspath(path))
    mode = _mode(target)
    if mode is not None and not stat.S_ISREG(mode) and _write_through(target, mode, write):
        return
    real = _real_path(target)
    if real is None:
        _write_through(target, stat.S_IFREG, write, truncate=True)
        return
    _replace(real, write)


def _mode(path: Path) -> int | None:
    """The ``st_mode`` of what ``path`` leads to, or ``None`` if there is nothing."""
    try:
        return path.stat().st_mode
    except FileNotFoundError:
        return None


def _write_through(
    path: Path, mode: int, write: Callable[[BinaryIO], None], *, truncate: bool = False
) -> bool:
    """Open ``path`` (a character device, a FIFO: ``mode``) and call ``write`` on it;
    ``False``, having written nothing, if it has become a regular file meanwhile."""
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), os.fspath(path))
    if not (stat.S_ISCHR(mode) or stat.S_ISFIFO(mode) or stat.S_ISREG(mode)):
        problem = (
            f"it is {_file_kind(mode)}, which portprop does not write to (it writes regular "
            "files, and writes through character devices and FIFOs)"
        )
        raise NotARegularFileError(errno.EINVAL, problem, os.fspath(path))
    flags = os.O_WRONLY | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags | (os.O_TRUNC if truncate else 0))  # a FIFO waits for a reader
    try:
        if not truncate and stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        with os.fdopen(fd, "wb", closefd=False) as f:
            write(f)
        return True
    finally:
        os.close(fd)


def _real_path(path: Path) -> Path | None:
    """The file a symbolic link leads to (``path`` itself if it is not a link), where the
    new file goes; ``None`` for a link that names no path (``/proc/self/fd/N`` of a
    deleted file, of an anonymous file)."""
    if not path.is_symlink():
        return path
    real = Path(os.path.realpath(path))
    if not path.exists():  # a dangling link: its target is created, as editors do
        return real
    try:
        return real if path.samefile(real) else None
    except OSError:
        return None


def _replace(target: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write ``target`` (a regular file, or a new one) atomically."""
    fd = _open_anonymous(target.parent)
    if fd is None:
        _write_named(target, write)
    else:
        _write_anonymous(fd, target, write)
    _fsync_directory(target.parent)
    _remove_stale_temporaries(target)


def _open_anonymous(directory: Path) -> int | None:
    """An anonymous file (``O_TMPFILE``) in ``directory``, or ``None`` where the system
    or the file system cannot make one."""
    flag = getattr(os, "O_TMPFILE", 0)
    if not flag or not _PROC_FD.is_dir():
        return None
    try:
        # mode 0666 less the umask, as a plain open() would give the file
        return os.open(directory, flag | os.O_RDWR, 0o666)
    except OSError as exc:
        if exc.errno in _NO_TMPFILE:
            return None
        raise


def _write_anonymous(fd: int, target: Path, write: Callable[[BinaryIO], None]) -> None:
    try:
        with os.fdopen(fd, "wb", closefd=False) as f:
            write(f)
            f.flush()
        os.fsync(fd)
        try:
            _link_into_place(fd, target)
        except OSError as exc:
            if exc.errno not in _CANNOT_LINK:
                raise
            # this system cannot name the file: copy it into a named temporary
            _write_named(target, lambda f: _copy(fd, f))
    finally:
        os.close(fd)  # an anonymous file that was never linked is freed here


def _link_into_place(fd: int, target: Path) -> None:
    """Give the anonymous file ``fd`` the name ``target``, replacing any file there."""
    source = f"{_PROC_FD}/{fd}"
    directory = os.open(target.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        try:
            _link(source, target.name, directory)
        except FileExistsError:
            pass  # replace the existing file below, in one rename
        else:
            return
        for _ in range(_ATTEMPTS):
            temporary = _temporary_name(target)
            try:
                _link(source, temporary, directory)
                break
            except FileExistsError:
                continue
        else:
            msg = f"could not create a temporary file beside {os.fspath(target)!r}"
            raise FileExistsError(msg)
        try:
            os.replace(temporary, target.name, src_dir_fd=directory, dst_dir_fd=directory)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary, dir_fd=directory)
            raise
    finally:
        os.close(directory)


def _link(source: str, name: str, directory: int) -> None:
    # With a dir_fd, os.link calls linkat(), which follows the /proc link when asked
    # to; without one it calls link(), which does not, and fails with EXDEV.
    os.link(source, name, src_dir_fd=directory, dst_dir_fd=directory, follow_symlinks=True)


def _copy(fd: int, f: BinaryIO) -> None:
    offset = 0
    while chunk := os.pread(fd, 1 << 20, offset):
        f.write(chunk)
        offset += len(chunk)


def _write_named(target: Path, write: Callable[[BinaryIO], None]) -> None:
    fd, temporary = _create_temporary(target)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        temporary.replace(target)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise


def _temporary_name(target: Path) -> str:
    return f".{target.name}.{secrets.token_hex(6)}.tmp"


def _create_temporary(path: Path) -> tuple[int, Path]:
    """A new hidden file ``.<name>.<random>.tmp`` beside ``path`` (mode 0666 less the
    umask, as a plain ``open`` would give)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(_ATTEMPTS):
        temporary = path.parent / _temporary_name(path)
        try:
            return os.open(temporary, flags, 0o666), temporary
        except FileExistsError:
            continue
    msg = f"could not create a temporary file beside {os.fspath(path)!r}"
    raise FileExistsError(msg)


def _remove_stale_temporaries(target: Path) -> None:
    """Remove the temporaries of ``target`` that killed writers left (see
    :func:`write_atomically`); never raises."""
    pattern = re.compile(rf"\.{re.escape(target.name)}\.[0-9a-f]{{12}}\.tmp")
    cutoff = time.time() - STALE_TEMPORARY_SECONDS
    try:
        entries = os.scandir(target.parent)
    except OSError:
        return
    with entries:
        for entry in entries:
            if not pattern.fullmatch(entry.name):
                continue
            with contextlib.suppress(OSError):
                info = entry.stat(follow_symlinks=False)
                if stat.S_ISREG(info.st_mode) and info.st_mtime < cutoff:
                    Path(entry.path).unlink()


def _fsync_directory(directory: Path) -> None:
    """Make the new name durable (POSIX; Windows cannot open a directory)."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:
        # some file systems cannot sync a directory; the file itself is already synced
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)
