"""The safetensors file format: host arrays and string metadata, in one file.

This module knows files, not models: it reads and writes `safetensors
<https://github.com/huggingface/safetensors>`_ files with NumPy, :mod:`json` and
:mod:`struct` alone, and holds the format's limits and checks.  A file is:

- 8 bytes: ``N``, the length of the header, a little-endian unsigned 64-bit integer;
- ``N`` bytes: the header, UTF-8 JSON ``{name: {"dtype": "F32", "shape": [25, 2],
  "data_offsets": [begin, end]}, ..., "__metadata__": {str: str}}``;
- the data: each tensor's raw little-endian bytes, row-major, at ``data_offsets``
  (relative to the end of the header), one after the other with no gap.

The dtype codes read and written are ``F64``, ``F32``, ``F16``, ``I64``, ``I32``,
``I16``, ``I8``, ``U64``, ``U32``, ``U16``, ``U8`` and ``BOOL``; ``BF16`` and the FP8
codes have no NumPy dtype and are refused as unknown.

Guarantees:

- Reading never unpickles anything, and reads regular files only: a FIFO, a device, a
  socket is refused (:class:`CheckpointError`) before it is opened in a way that could
  block, a directory raises :class:`IsADirectoryError`.
- The reader checks the whole header before it reads any data: its length (at most
  :data:`MAX_HEADER_BYTES`), its commas and brackets (at most 2**20, an upper bound of
  its JSON values, counted in the raw bytes before they are decoded), the number of
  tensors (at most :data:`MAX_TENSORS`, counted while it is parsed), the JSON, dtypes,
  shapes against offsets, offsets in range, contiguous, no overlap, no trailing bytes;
  and raises :class:`CheckpointError` naming the file and the problem.  The data is
  then read in pieces of at most 16 MiB (32 MiB are kept) to be checked (the digest,
  ``BOOL`` bytes, the values a caller asks about) before it is read as arrays.  So
  refusing any file costs less than its header's size and 64 MiB of memory, and reads
  no data that the header shows to be wrong.  A file of another kind (a pickle, a torch
  ``.pt`` file, a NumPy ``.npz`` or ``.npy`` file, HDF5, gzip, PNG, JPEG, a text or CSV
  file, ...) is recognised and refused as "not a safetensors checkpoint", saying what
  it is or looks like.
- The file carries a SHA-256 in its metadata, ``"portprop.sha256"`` (64 hex digits,
  written by :func:`write_safetensors`, checked and removed from the metadata by
  :func:`read_safetensors`).  It is the SHA-256 of these bytes, one after the other:

  1. the header without that entry, as *canonical JSON*: the parsed header (tensor
     entries and ``"__metadata__"``, less ``"portprop.sha256"``) written by Python's
     ``json.dumps(header, ensure_ascii=True, sort_keys=True, separators=(",", ":"))``
     and encoded as ASCII (so key order, white space and padding do not count);
  2. the data section, byte for byte.

  So a changed tensor byte, dtype, shape, ``data_offsets`` or metadata entry (a damaged
  disk, a bad copy, a hand edit) is refused instead of loading as other weights.  Files
  written by earlier versions of portprop carry ``"portprop.data_sha256"`` instead, the SHA-256 of
  the data section alone; it is still checked (and removed from the metadata), and the
  header of such a file is not covered.  A file with neither (written by another
  safetensors writer) is read unchecked.  The digest detects damage; it is not a
  signature, so it does not make a file from a stranger trustworthy: that rests on the
  reader's checks above and on never unpickling.
- Writing is atomic (:func:`portprop.io.atomic.write_atomically`): the bytes go to a
  file without a name (Linux, ``O_TMPFILE``) or to a hidden temporary file
  (``.<name>.<random>.tmp``) in the target's directory, which is flushed, synced and
  then given the target's name in one rename, and the directory synced.  A failure,
  a crash or a kill at any point leaves an earlier file at that path intact, and on
  Linux leaves no temporary file behind.  The writer refuses, before writing anything,
  a file that the reader would refuse for its header's size.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import math
import os
import stat
import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import numpy as np

from portprop.errors import CheckpointError
from portprop.io.atomic import NotARegularFileError, _file_kind, write_atomically

__all__ = ["MAX_HEADER_BYTES", "MAX_TENSORS", "read_safetensors", "write_safetensors"]

#: Headers longer than this (16 MiB) are refused before they are read, and not written.
#: A header of :data:`MAX_TENSORS` tensors takes about 6 MiB, so this leaves room for
#: long names and metadata, while a refused file costs at most its header and 64 MiB
#: (the JSON parser holds the header's text, then what it holds).
MAX_HEADER_BYTES = 16 * 1024 * 1024
#: Files of more tensors than this are refused while their header is parsed (and not
#: written).
MAX_TENSORS = 65536

_DIGEST_KEY = "portprop.sha256"  # of the canonical header and the data
_DATA_DIGEST_KEY = "portprop.data_sha256"  # of the data alone, in older files
_MAX_HEADER_VALUES = 2**20  # commas and brackets of the header, an upper bound of its values
_CHUNK_BYTES = 16 * 1024 * 1024  # a multiple of every itemsize
_IN_MEMORY_BYTES = 32 * 1024 * 1024  # data up to this size is read once, checked in memory
_MAX_NDIM = 32  # NumPy 1.x holds at most 32 dimensions (2.x: 64)
_MAX_BYTES = int(np.iinfo(np.intp).max)  # the largest array NumPy can describe

# safetensors dtype code -> little-endian NumPy dtype.  BF16 and the FP8 codes have no
# NumPy dtype and are refused as unknown.
_DTYPES: dict[str, np.dtype[Any]] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"),
    "U32": np.dtype("<u4"),
    "U16": np.dtype("<u2"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_CODES = {(dt.kind, dt.itemsize): code for code, dt in _DTYPES.items()}

PathLike = str | os.PathLike[str]


# --------------------------------------------------------------------------------------
# Messages: every name or value from a file is cut, every list is cut and counted
# --------------------------------------------------------------------------------------

_NAME_CHARS = 80
_LISTED = 5
_PROBLEMS = 10


def _bad(path: PathLike, problem: str) -> CheckpointError:
    return CheckpointError(f"{os.fspath(path)!r} is not a valid portprop checkpoint: {problem}")


def _quoted(name: str) -> str:
    """``repr(name)``, cut to its first 80 characters (and saying how long it is)."""
    if len(name) <= _NAME_CHARS:
        return repr(name)
    return f"{name[:_NAME_CHARS]!r}... ({len(name)} characters)"


def _shown(value: Any) -> str:
    """``repr(value)`` (a value read from a file), cut to 80 characters."""
    if isinstance(value, str):
        return _quoted(value)
    text = repr(value)
    return text if len(text) <= _NAME_CHARS else f"{text[:_NAME_CHARS]}... (cut)"


def _listed(names: Sequence[str]) -> str:
    """``['a', 'b']``; of a longer list, the first five names and how many more."""
    shown = f"[{', '.join(_quoted(name) for name in names[:_LISTED])}]"
    return shown if len(names) <= _LISTED else f"{shown} and {len(names) - _LISTED} more"


def _joined(problems: Sequence[str]) -> str:
    """The first ten problems, joined by "; ", and how many more there are."""
    text = "; ".join(problems[:_PROBLEMS])
    if len(problems) > _PROBLEMS:
        text += f"; and {len(problems) - _PROBLEMS} more problems"
    return text


def _size(n: int) -> str:
    """``n`` bytes, for people: ``"100 MiB"``, ``"1.5 TiB"``."""
    units = ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
    power = 0
    while power < len(units) - 1 and n >= 1024 ** (power + 1):
        power += 1
    if power == 0:
        return f"{n} bytes"
    return f"{n / 1024**power:.1f}".removesuffix(".0") + f" {units[power]}"


# --------------------------------------------------------------------------------------
# Files of other formats
# --------------------------------------------------------------------------------------

# The first bytes of files that people mistake for checkpoints, and whether such a file
# may hold a pickle.  A safetensors file may start with any of them (they are the low
# bytes of its header length), so they are only looked at once the file has failed to
# parse as safetensors.
_FOREIGN_FORMATS: tuple[tuple[bytes, str, bool], ...] = (
    (b"PK\x03\x04", "a ZIP archive (such as a torch .pt/.pth file or a NumPy .npz)", True),
    (b"PK\x05\x06", "an empty ZIP archive", True),
    (b"\x93NUMPY", "a NumPy .npy file", True),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file (such as a Keras .h5)", False),
    (b"\x1f\x8b", "a gzip file", False),
    (b"BZh", "a bzip2 file", False),
    (b"\xfd7zXZ\x00", "an xz file", False),
    (b"(\xb5/\xfd", "a Zstandard file", False),
    (b"\x89PNG\r\n\x1a\n", "a PNG image", False),
    (b"\xff\xd8\xff", "a JPEG image", False),
    (b"GIF8", "a GIF image", False),
    (b"%PDF-", "a PDF document", False),
    (b"GGUF", "a GGUF model file", False),
    (b"\x7fELF", "an executable (ELF)", False),
    *((b"\x80" + bytes([protocol]), "a Python pickle", True) for protocol in range(2, 6)),
)
_SNIFF_BYTES = 512
_TEXT_CONTROLS = frozenset("\t\n\r\f\v")


def _foreign_format(f: BinaryIO) -> str | None:
    """What ``f`` is or looks like, if it is a well-known format other than safetensors:
    ``"it is a PNG image, not a safetensors checkpoint; ..."``, ``"it looks like a text
    file, such as CSV (its first line is 'x1,x2,y'), ..."``."""
    f.seek(0)
    start = f.read(_SNIFF_BYTES)
    only = "not a safetensors checkpoint; portprop reads safetensors files only"
    for magic, kind, pickles in _FOREIGN_FORMATS:
        if start.startswith(magic):
            never = ", and never unpickles a file" if pickles else ""
            return f"it is {kind}, {only}{never}"
    text = _as_text(start)
    return None if text is None else f"it looks like {text}, {only}"


def _as_text(start: bytes) -> str | None:
    """``"a text file (...)"`` if ``start`` (a file's first bytes) reads as text.  Not
    below 8 bytes: those are a checkpoint cut short as likely as a line of text."""
    if len(start) < 8:
        return None
    encoding = "utf-8"
    for bom, name in (
        (b"\xef\xbb\xbf", "utf-8-sig"),
        (b"\xff\xfe", "utf-16"),
        (b"\xfe\xff", "utf-16"),
    ):
        if start.startswith(bom):
            encoding = name
            break
    try:
        text = start.decode(encoding)
    except UnicodeDecodeError as exc:
        # a character cut by the end of the sniffed bytes is still text
        if exc.start < len(start) - 4 or len(start) < _SNIFF_BYTES:
            return None
        text = start[: exc.start].decode(encoding)
    text = text.removeprefix("\ufeff")
    if not text.strip() or any(not c.isprintable() and c not in _TEXT_CONTROLS for c in text):
        return None
    first = text.strip().splitlines()[0]
    shown = repr(first[:40]) + ("..." if len(first) > 40 else "")
    if first.startswith(("{", "[")):
        return f"a text file, such as JSON (it starts with {shown})"
    if any(separator in first for separator in ",;\t"):
        return f"a text file, such as CSV (its first line is {shown})"
    return f"a text file (it starts with {shown})"


# --------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------


def write_safetensors(
    path: PathLike, tensors: Mapping[str, Any], metadata: Mapping[str, str] | None = None
) -> None:
    """Write host arrays and string metadata to a safetensors file, atomically.

    Parameters
    ----------
    path : str or path-like
        The file to write; an existing file there is replaced only once the new one is
        complete and synced to disk (a symbolic link stays one: the file it points to is
        replaced; a character device or a FIFO is written to, see
        :func:`portprop.io.atomic.write_atomically`).
    tensors : mapping of str to numpy.ndarray
        At most :data:`MAX_TENSORS` arrays of a dtype listed in the module docstring
        (``float64``, ``float32``, ``int64``, ``bool``, ...); they are stored
        little-endian and row-major.
    metadata : mapping of str to str, optional
        Stored under ``"__metadata__"``, with ``"portprop.sha256"`` (the SHA-256 of the
        header and the data, which :func:`read_safetensors` checks) added; that key and
        ``"portprop.data_sha256"`` are reserved.

    Raises
    ------
    TypeError, ValueError
        For a tensor name, dtype or metadata entry that a file cannot hold, or a header
        that the reader would refuse (over :data:`MAX_HEADER_BYTES`, too many tensors or
        JSON values); nothing is written.
    CheckpointError
        If the file cannot be written (read-only directory, full disk, ...); the
        ``OSError`` is chained.
    """
    if len(tensors) > MAX_TENSORS:
        msg = f"a file holds at most {MAX_TENSORS} tensors, got {len(tensors)}"
        raise ValueError(msg)
    header: dict[str, Any] = {}
    arrays: list[np.ndarray[Any, Any]] = []
    offset = 0
    for name, value in tensors.items():
        if not isinstance(name, str) or name == "__metadata__":
            msg = f"tensor names must be strings other than '__metadata__', got {_shown(name)}"
            raise ValueError(msg)
        array = np.asarray(value)
        code = _CODES.get((array.dtype.kind, array.dtype.itemsize))
        if code is None:
            msg = f"tensor {_quoted(name)} has dtype {array.dtype}, which a checkpoint cannot hold"
            raise TypeError(msg)
        array = np.asarray(array, dtype=_DTYPES[code], order="C")  # keeps 0-d arrays 0-d
        header[name] = {
            "dtype": code,
            "shape": list(array.shape),
            "data_offsets": [offset, offset + array.nbytes],
        }
        offset += array.nbytes
        arrays.append(array)
    metadata = dict(metadata or {})
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            msg = f"metadata must map str to str, got {_shown(key)}: {type(value).__name__}"
            raise TypeError(msg)
    for key in (_DIGEST_KEY, _DATA_DIGEST_KEY):
        if key in metadata:
            msg = f"metadata key {key!r} is reserved: write_safetensors computes it"
            raise ValueError(msg)
    header["__metadata__"] = metadata
    encoded = _encoded(header, arrays)

    def write(f: BinaryIO) -> None:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for array in arrays:
            _write_array(f, array)

    _write_atomically(Path(os.fspath(path)), write)


def _encoded(header: dict[str, Any], arrays: list[np.ndarray[Any, Any]]) -> bytes:
    """The header with its digest, as the file holds it (UTF-8, padded so that the data
    starts 8-aligned); ``ValueError`` if the reader would refuse it."""
    try:
        digest = hashlib.sha256(_canonical(header))
        for array in arrays:
            digest.update(_raw_bytes(array).data)
        header["__metadata__"][_DIGEST_KEY] = digest.hexdigest()
        text = json.dumps(header, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        encoded = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        msg = f"tensor names and metadata must be valid Unicode text: {exc}"
        raise ValueError(msg) from None
    encoded += b" " * (-(8 + len(encoded)) % 8)
    if len(encoded) > MAX_HEADER_BYTES:
        msg = (
            f"the header would be {len(encoded)} bytes ({_size(len(encoded))}), over the "
            f"limit of {MAX_HEADER_BYTES} bytes ({_size(MAX_HEADER_BYTES)}) that readers "
            "accept: the metadata is too large"
        )
        raise ValueError(msg)
    values = _header_values(encoded)
    if values > _MAX_HEADER_VALUES:
        msg = (
            f"the header would hold {values} commas and brackets, more than the "
            f"{_MAX_HEADER_VALUES} that the reader accepts: the metadata is too large"
        )
        raise ValueError(msg)
    return encoded


def _canonical(header: Mapping[str, Any]) -> bytes:
    """The header (without the digest) as canonical JSON: the first bytes that the
    digest covers (see the module docstring)."""
    text = json.dumps(header, ensure_ascii=True, sort_keys=True, separators=(",", ":"))
    return text.encode("ascii")


def _header_values(raw: bytes) -> int:
    """An upper bound of the number of JSON values in ``raw`` (less one): its commas and
    opening brackets, counted without decoding it."""
    return raw.count(b",") + raw.count(b"[") + raw.count(b"{")


def _raw_bytes(array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """A contiguous array's bytes as a flat ``uint8`` view (no copy)."""
    return array.reshape(-1).view(np.uint8)


def _write_array(f: BinaryIO, array: np.ndarray[Any, Any]) -> None:
    """Write a contiguous array's bytes, in chunks (no copy of the whole array)."""
    data = _raw_bytes(array)
    f.writelines(data[i : i + _CHUNK_BYTES].data for i in range(0, data.size, _CHUNK_BYTES))


_WRITE_FAILURES = {
    errno.EACCES: "permission denied: the directory is not writable by this user",
    errno.EPERM: "permission denied: the directory is not writable by this user",
    errno.EROFS: "the file system is read-only",
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "no space left: the disk quota is exceeded",
    errno.ENOENT: "the directory does not exist",
    errno.ENOTDIR: "a part of the directory path is not a directory",
    errno.EISDIR: "the path is a directory",
    errno.EFBIG: "the file would be larger than this process or the file system allows",
    errno.EPIPE: "the reader of the pipe went away",
    errno.ELOOP: "the path is a loop of symbolic links",
}


def _write_atomically(path: Path, write: Callable[[BinaryIO], None]) -> None:
    try:
        write_atomically(path, write)
    except OSError as exc:
        if isinstance(exc, NotARegularFileError):
            reason = "the path is neither a regular file nor a character device or a FIFO"
        else:
            reason = _WRITE_FAILURES.get(exc.errno or 0, "the operating system refused")
        msg = (
            f"could not write checkpoint {os.fspath(path)!r}: {reason} ({exc}); "
            "an earlier file at that path is unchanged"
        )
        raise CheckpointError(msg) from exc


# --------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------


def read_safetensors(path: PathLike) -> tuple[dict[str, np.ndarray[Any, Any]], dict[str, str]]:
    """Read a safetensors file into host arrays and its string metadata.

    The header is checked in full before any data is read, and the data is checked
    (the digest, ``BOOL`` bytes) before it is read as arrays (see the module
    docstring); nothing is ever unpickled.

    Returns
    -------
    tensors : dict of str to numpy.ndarray
        Writable, native-byte-order arrays, in the order of their data.
    metadata : dict of str to str
        Without ``"portprop.sha256"`` and ``"portprop.data_sha256"``: when the file has
        them, the file was checked against them.

    Raises
    ------
    CheckpointError
        If the file is not a regular file or not a well-formed safetensors file, or if
        its header or data does not match its recorded SHA-256; the message names the
        file and the problem.
    OSError
        If the file cannot be opened (``FileNotFoundError``, ``IsADirectoryError``, ...).
    """
    with _open_safetensors(path) as reader:
        reader.check()
        return reader.arrays(), reader.metadata


class _Tensor(NamedTuple):
    """A tensor as the header describes it."""

    name: str
    code: str
    dtype: np.dtype[Any]
    shape: tuple[int, ...]
    begin: int
    end: int


class _Values(NamedTuple):
    """What a floating tensor holds: its NaNs, its infinities, its largest finite
    magnitude (0.0 without finite values)."""

    nan: int
    inf: int
    largest: float


@contextlib.contextmanager
def _open_safetensors(path: PathLike) -> Iterator[_Reader]:
    """The file at ``path``, open, its header read and checked (a :class:`_Reader`)."""
    with _open_regular(path) as f:
        yield _Reader(f, path)


def _open_regular(path: PathLike) -> io.BufferedReader:
    """``path`` opened for reading if it is a regular file (links followed), without
    opening anything else: a FIFO would block, a device could act."""
    name = os.fspath(path)
    _check_regular(Path(name).stat().st_mode, path)
    nonblocking = getattr(os, "O_NONBLOCK", 0)
    flags = os.O_RDONLY | nonblocking | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(name, flags)
    try:
        _check_regular(os.fstat(fd).st_mode, path)  # replaced since the stat
        if nonblocking:
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _check_regular(mode: int, path: PathLike) -> None:
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), os.fspath(path))
    problem = (
        f"it is {_file_kind(mode)}, not a regular file; portprop reads checkpoints from "
        "regular files only"
    )
    raise _bad(path, problem)


class _Reader:
    """A safetensors file open for reading, whose header passed every check.

    ``tensors`` (in the order of their data) and ``metadata`` (without the digests) are
    what the header says; nothing of the data has been read.  :meth:`check` reads the
    data in pieces and checks it, then :meth:`arrays` gives it as arrays.
    """

    def __init__(self, f: io.BufferedReader, path: PathLike) -> None:
        self.path = path
        self._f = f
        size = os.fstat(f.fileno()).st_size
        try:
            header = _read_header(f, size, path)
        except CheckpointError:
            kind = _foreign_format(f)
            if kind is None:
                raise
            raise _bad(path, kind) from None
        metadata = _check_metadata(header.pop("__metadata__", {}), path)
        self._digest = _recorded_digest(metadata, _DIGEST_KEY, path)
        self._data_digest = _recorded_digest(metadata, _DATA_DIGEST_KEY, path)
        self._start = f.tell()
        self._size = size - self._start
        self.tensors = _check_entries(header, self._size, path)
        self.metadata = {
            k: v for k, v in metadata.items() if k not in (_DIGEST_KEY, _DATA_DIGEST_KEY)
        }
        self._data: bytearray | None = None
        self._checked: bytes | None = None

    def check(self, *, values: bool = False) -> dict[str, _Values]:
        """Read the data once, in pieces of at most 16 MiB (data up to 32 MiB is kept),
        and check its digests and ``BOOL`` bytes; with ``values``, also say what each
        floating tensor holds.  Raises :class:`CheckpointError`."""
        digest = hashlib.sha256(self._canonical_header())
        data_digest = digest
        if self._data_digest is not None and self._digest is not None:
            data_digest = hashlib.sha256()
        keep = self._size <= _IN_MEMORY_BYTES
        self._data = bytearray(self._size) if keep else None
        piece = None if keep else bytearray(_CHUNK_BYTES)
        summaries: dict[str, _Values] = {}
        self._f.seek(self._start)
        for tensor in self.tensors:
            floating = values and tensor.dtype.kind == "f"
            summary = _Values(0, 0, 0.0)
            for chunk in self._pieces(tensor, piece):
                digest.update(chunk)
                if data_digest is not digest:
                    data_digest.update(chunk)
                if floating:
                    summary = _combined(summary, _summary(np.frombuffer(chunk, tensor.dtype)))
                elif tensor.dtype.kind == "b" and np.frombuffer(chunk, np.uint8).max() > 1:
                    name = _quoted(tensor.name)
                    raise _bad(
                        self.path, f"tensor {name} of dtype BOOL holds bytes other than 0 and 1"
                    )
            if floating:
                summaries[tensor.name] = summary
        for recorded, actual, what, changed in (
            (self._digest, digest, "the SHA-256 of its header and data", "the file changed"),
            (self._data_digest, data_digest, "the data section's SHA-256", "tensor bytes changed"),
        ):
            if recorded is not None and actual.hexdigest() != recorded:
                problem = (
                    f"{what} is {actual.hexdigest()[:16]}..., but its metadata records "
                    f"{recorded[:16]}...: {changed} after it was written (the file is corrupt, "
                    "or was edited)"
                )
                raise _bad(self.path, problem)
        self._checked = digest.digest()
        return summaries

    def arrays(self) -> dict[str, np.ndarray[Any, Any]]:
        """The tensors, as writable native-byte-order arrays in the order of their data;
        after :meth:`check`, and the same bytes (else :class:`CheckpointError`)."""
        if self._checked is None:
            msg = "check() the data before reading it"
            raise RuntimeError(msg)
        data, self._data = self._data, None
        if data is None:  # too large to have been kept: read it again, as it was checked
            data = bytearray(self._size)
            self._f.seek(self._start)
            self._read_into(memoryview(data))
            digest = hashlib.sha256(self._canonical_header())
            digest.update(data)
            if digest.digest() != self._checked:
                problem = (
                    "the file changed while it was being read (its data is not what was checked)"
                )
                raise _bad(self.path, problem)
        tensors: dict[str, np.ndarray[Any, Any]] = {}
        for name, _, dtype, shape, begin, end in self.tensors:
            if begin == end:
                array = np.zeros(shape, dtype=dtype)
            else:
                count = (end - begin) // dtype.itemsize
                array = np.frombuffer(data, dtype=dtype, count=count, offset=begin).reshape(shape)
                if not array.flags.aligned or not array.dtype.isnative:
                    array = array.astype(dtype.newbyteorder("="))
            tensors[name] = array
        return tensors

    def _canonical_header(self) -> bytes:
        """The first bytes that the digest covers: the header without the digest, as
        canonical JSON (see the module docstring); none for a file without the digest."""
        if self._digest is None:
            return b""
        metadata = dict(self.metadata)
        if self._data_digest is not None:
            metadata[_DATA_DIGEST_KEY] = self._data_digest
        header: dict[str, Any] = {
            t.name: {"dtype": t.code, "shape": list(t.shape), "data_offsets": [t.begin, t.end]}
            for t in self.tensors
        }
        header["__metadata__"] = metadata
        return _canonical(header)

    def _pieces(self, tensor: _Tensor, piece: bytearray | None) -> Iterator[memoryview]:
        """The tensor's bytes, read in pieces of at most 16 MiB (into the kept data, or
        into ``piece``)."""
        begin = tensor.begin
        while begin < tensor.end:
            end = min(tensor.end, begin + _CHUNK_BYTES)
            if piece is None:
                assert self._data is not None
                view = memoryview(self._data)[begin:end]
            else:
                view = memoryview(piece)[: end - begin]
            self._read_into(view)
            yield view
            begin = end

    def _read_into(self, view: memoryview) -> None:
        while len(view):
            n = self._f.readinto(view)
            if not n:
                raise _bad(self.path, "the file is shorter than when it was opened (truncated)")
            view = view[n:]


def _summary(array: np.ndarray[Any, Any]) -> _Values:
    magnitude = np.abs(array)
    finite = np.isfinite(magnitude)
    if finite.all():
        return _Values(0, 0, float(magnitude.max()) if magnitude.size else 0.0)
    nan = int(np.isnan(array).sum())
    kept = magnitude[finite]
    return _Values(nan, array.size - kept.size - nan, float(kept.max()) if kept.size else 0.0)


def _combined(a: _Values, b: _Values) -> _Values:
    return _Values(a.nan + b.nan, a.inf + b.inf, max(a.largest, b.largest))


def _recorded_digest(metadata: Mapping[str, str], key: str, path: PathLike) -> str | None:
    recorded = metadata.get(key)
    if recorded is None:
        return None
    if len(recorded) != 64 or not all(c in "0123456789abcdef" for c in recorded):
        raise _bad(
            path, f"metadata {key!r} must be 64 lowercase hex digits, got {_shown(recorded)}"
        )
    return recorded


def _read_header(f: BinaryIO, size: int, path: PathLike) -> dict[str, Any]:
    if size == 0:
        raise _bad(path, "the file is empty (0 bytes)")
    if size < 8:
        raise _bad(
            path,
            f"the file is truncated: it has {size} bytes, but a checkpoint starts with an "
            "8-byte header length",
        )
    (length,) = struct.unpack("<Q", f.read(8))
    if length > MAX_HEADER_BYTES:
        raise _bad(
            path,
            f"its header length is {length} bytes ({_size(length)}), over the limit of "
            f"{MAX_HEADER_BYTES} bytes ({_size(MAX_HEADER_BYTES)}): the file is corrupt or "
            "not a safetensors checkpoint",
        )
    if length > size - 8:
        raise _bad(
            path,
            f"its header length ({length} bytes) is larger than the rest of the file "
            f"({size - 8} bytes): the file is truncated or not a safetensors checkpoint",
        )
    raw = f.read(length)
    if len(raw) != length:
        raise _bad(path, "the file is shorter than when it was opened (truncated)")
    values = _header_values(raw)
    if values > _MAX_HEADER_VALUES:
        raise _bad(
            path,
            f"its header holds {values} commas and brackets, more than the "
            f"{_MAX_HEADER_VALUES} this reader accepts: the file is corrupt or not a "
            "safetensors checkpoint",
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _bad(path, f"the header is not UTF-8 ({exc})") from None
    del raw  # the header is held once while it is parsed
    try:
        header = json.loads(
            text, object_pairs_hook=_Objects(MAX_TENSORS + 2), parse_constant=_refuse_constant
        )
    except _TooManyObjectsError:
        raise _bad(
            path, f"its header holds more than {MAX_TENSORS} tensors, the most this reader accepts"
        ) from None
    except (ValueError, RecursionError) as exc:
        raise _bad(path, f"the header is malformed JSON ({exc})") from None
    if not isinstance(header, dict):
        raise _bad(path, f"the header must be a JSON object, got {_json_type(header)}")
    return header


class _TooManyObjectsError(Exception):
    pass


class _Objects:
    """The ``object_pairs_hook`` of a header: a dict, refusing duplicate keys, and more
    than ``limit`` objects in all (the tensors, the header and its metadata)."""

    def __init__(self, limit: int) -> None:
        self.left = limit

    def __call__(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        self.left -= 1
        if self.left < 0:
            raise _TooManyObjectsError
        result = dict(pairs)
        if len(result) < len(pairs):
            seen: set[str] = set()
            for key, _ in pairs:
                if key in seen:
                    msg = f"duplicate key {_quoted(key)}"
                    raise ValueError(msg)
                seen.add(key)
        return result


def _refuse_constant(name: str) -> Any:
    msg = f"{name} is not valid JSON"
    raise ValueError(msg)


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    for kind, label in names.items():
        if isinstance(value, kind):
            return label
    if value is None:
        return "null"
    return "a number"


def _check_metadata(metadata: Any, path: PathLike) -> dict[str, str]:
    if not isinstance(metadata, dict):
        raise _bad(path, f"'__metadata__' must be a JSON object, got {_json_type(metadata)}")
    for key, value in metadata.items():
        if not isinstance(value, str):
            raise _bad(
                path,
                f"'__metadata__' values must be strings, but {_quoted(key)} is {_json_type(value)}",
            )
    return metadata


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _entry_problem(entry: Any, data_size: int) -> str | None:
    """What is wrong with a tensor's header entry (``"has unknown dtype ..."``), if
    anything."""
    if not isinstance(entry, dict):
        return f"must be a JSON object, got {_json_type(entry)}"
    if entry.keys() != _ENTRY_KEYS:
        missing = sorted(_ENTRY_KEYS - entry.keys())
        extra = sorted(entry.keys() - _ENTRY_KEYS)
        return f"has missing keys {missing} and unknown keys {_listed(extra)}"
    code, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(code, str) or code not in _DTYPES:
        return f"has unknown dtype {_shown(code)}; this reader knows {', '.join(_DTYPES)}"
    if not isinstance(shape, list) or not all(_is_int(n) and n >= 0 for n in shape):
        return f"has shape {_shown(shape)}; expected a list of non-negative ints"
    itemsize = _DTYPES[code].itemsize
    if len(shape) > _MAX_NDIM or math.prod(n for n in shape if n) * itemsize > _MAX_BYTES:
        return (
            f"has shape {_shown(shape)}; a NumPy array has at most {_MAX_NDIM} dimensions, "
            f"and {_MAX_BYTES} bytes when the zero ones are left out"
        )
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(map(_is_int, offsets)):
        return f"has data_offsets {_shown(offsets)}; expected [begin, end] (ints)"
    begin, end = offsets
    if not 0 <= begin <= end:
        return f"has data_offsets {_shown(offsets)} out of range: expected 0 <= begin <= end"
    if end > data_size:
        return (
            f"has data_offsets {_shown(offsets)} out of range: its data would end at byte "
            f"{_shown(end)}, but the data section holds {data_size} bytes (the file is "
            "truncated or corrupt)"
        )
    needed = math.prod(shape) * itemsize
    if end - begin != needed:
        return (
            f"of dtype {code} and shape {shape} needs {needed} bytes, but its data_offsets "
            f"{offsets} span {end - begin}"
        )
    return None


_ENTRY_KEYS = frozenset(("dtype", "shape", "data_offsets"))


def _check_entries(header: dict[str, Any], data_size: int, path: PathLike) -> list[_Tensor]:
    """The tensors the header describes, in the order of their data, once each entry and
    the layout of the data are checked."""
    entries = []
    for name, entry in header.items():
        problem = _entry_problem(entry, data_size)
        if problem:
            raise _bad(path, f"tensor {_quoted(name)} {problem}")
        code, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
        entries.append(_Tensor(name, code, _DTYPES[code], tuple(shape), begin, end))
    entries.sort(key=lambda e: (e.begin, e.end))
    covered, previous = 0, ""
    for name, _, _, _, begin, end in entries:
        if begin < covered:
            raise _bad(
                path,
                f"the data of tensors {_quoted(previous)} (up to byte {covered}) and "
                f"{_quoted(name)} (data_offsets [{begin}, {end}]) overlap",
            )
        if begin > covered:
            raise _bad(
                path,
                f"bytes {covered} to {begin} of the data belong to no tensor: the "
                "data_offsets do not cover the data contiguously",
            )
        covered, previous = end, name
    if covered < data_size:
        raise _bad(
            path,
            f"the data section holds {data_size} bytes, but the tensors cover {covered}: "
            f"{data_size - covered} extra bytes follow the last tensor (trailing data)",
        )
    return entries
