"""Atomic file writes, shared by checkpoints, plots and the command line."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["write_atomically"]


def write_atomically(path: str | os.PathLike[str], write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(f)`` on a hidden temporary file beside ``path``, flush and fsync it,
    rename it onto ``path`` and fsync the directory.

    On any failure (an exception of ``write``, a full disk, a read-only directory, a
    ``KeyboardInterrupt``) the temporary file is removed and ``path`` is left as it
    was.  ``OSError`` propagates as is, for the caller to explain.  The temporary name
    is ``.<name>.<random>.tmp``, which no reader mistakes for the file itself.
    """
    target = Path(os.fspath(path))
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
    _fsync_directory(target.parent)


def _create_temporary(path: Path) -> tuple[int, Path]:
    """A new hidden file ``.<name>.<random>.tmp`` beside ``path`` (mode 0666 less the
    umask, as a plain ``open`` would give)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        temporary = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            return os.open(temporary, flags, 0o666), temporary
        except FileExistsError:
            continue
    msg = f"could not create a temporary file beside {os.fspath(path)!r}"
    raise FileExistsError(msg)


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable (POSIX; Windows cannot open a directory)."""
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
