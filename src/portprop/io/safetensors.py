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

- Reading never unpickles anything; the reader checks the whole layout (header size,
  JSON, dtypes, shapes against offsets, offsets in range, contiguous, no overlap, no
  trailing bytes) before it touches the data, and raises :class:`CheckpointError`
  naming the file and the problem.  A pickle, a torch ``.pt`` file, a NumPy ``.npz``
  or ``.npy`` file is recognised and refused as "not a safetensors checkpoint".
- The data section carries its SHA-256 in the metadata (``"portprop.data_sha256"``,
  64 hex digits, written by :func:`write_safetensors`; checked and removed from the
  metadata by :func:`read_safetensors`), so a tensor byte changed after writing (a
  damaged disk, a bad copy, a hand edit) is refused instead of loading as other
  weights.  A file without it (written by another safetensors writer) is read
  unchecked.  The digest detects damage; it is not a signature, so it does not make a
  file from a stranger trustworthy: that rests on the reader's checks above and on
  never unpickling.
- Writing is atomic (:func:`portprop.io.atomic.write_atomically`): the bytes go to a
  file without a name (Linux, ``O_TMPFILE``) or to a hidden temporary file
  (``.<name>.<random>.tmp``) in the target's directory, which is flushed, synced and
  then given the target's name in one rename, and the directory synced.  A failure,
  a crash or a kill at any point leaves an earlier file at that path intact, and on
  Linux leaves no temporary file behind.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import struct
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from portprop.errors import CheckpointError
from portprop.io.atomic import write_atomically

__all__ = ["MAX_HEADER_BYTES", "read_safetensors", "write_safetensors"]

#: Headers longer than this are refused before they are read.
MAX_HEADER_BYTES = 100 * 1024 * 1024

_DIGEST_KEY = "portprop.data_sha256"
_CHUNK_BYTES = 16 * 1024 * 1024
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


def _bad(path: PathLike, problem: str) -> CheckpointError:
    return CheckpointError(f"{os.fspath(path)!r} is not a valid portprop checkpoint: {problem}")


def _size(n: int) -> str:
    """``n`` bytes, for people: ``"100 MiB"``, ``"1.5 TiB"``."""
    units = ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
    power = 0
    while power < len(units) - 1 and n >= 1024 ** (power + 1):
        power += 1
    if power == 0:
        return f"{n} bytes"
    return f"{n / 1024**power:.1f}".removesuffix(".0") + f" {units[power]}"


# The first bytes of files that people mistake for checkpoints.  A safetensors file may
# start with any of them (they are the low bytes of its header length), so they are
# only looked at once the file has failed to parse as safetensors.
_FOREIGN_FORMATS = (
    (b"PK\x03\x04", "a ZIP archive (such as a torch .pt/.pth file or a NumPy .npz)"),
    (b"PK\x05\x06", "an empty ZIP archive"),
    (b"\x93NUMPY", "a NumPy .npy file"),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file (such as a Keras .h5)"),
    (b"\x1f\x8b", "a gzip file"),
    *((b"\x80" + bytes([protocol]), "a Python pickle") for protocol in range(2, 6)),
)


def _foreign_format(f: BinaryIO) -> str | None:
    """What kind of file ``f`` is, if it is a well-known format other than safetensors."""
    f.seek(0)
    start = f.read(8)
    for magic, kind in _FOREIGN_FORMATS:
        if start.startswith(magic):
            return kind
    return None


def write_safetensors(
    path: PathLike, tensors: Mapping[str, Any], metadata: Mapping[str, str] | None = None
) -> None:
    """Write host arrays and string metadata to a safetensors file, atomically.

    Parameters
    ----------
    path : str or path-like
        The file to write; an existing file there is replaced only once the new one is
        complete and synced to disk.
    tensors : mapping of str to numpy.ndarray
        Arrays of a dtype listed in the module docstring (``float64``, ``float32``,
        ``int64``, ``bool``, ...); they are stored little-endian and row-major.
    metadata : mapping of str to str, optional
        Stored under ``"__metadata__"``, with ``"portprop.data_sha256"`` (the SHA-256 of
        the data section, which :func:`read_safetensors` checks) added; that key is
        reserved.

    Raises
    ------
    CheckpointError
        If the file cannot be written (read-only directory, full disk, ...); the
        ``OSError`` is chained.
    """
    header: dict[str, Any] = {}
    arrays: list[np.ndarray[Any, Any]] = []
    offset = 0
    for name, value in tensors.items():
        if not isinstance(name, str) or name == "__metadata__":
            msg = f"tensor names must be strings other than '__metadata__', got {name!r}"
            raise ValueError(msg)
        array = np.asarray(value)
        code = _CODES.get((array.dtype.kind, array.dtype.itemsize))
        if code is None:
            msg = f"tensor {name!r} has dtype {array.dtype}, which a checkpoint cannot hold"
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
            msg = f"metadata must map str to str, got {key!r}: {type(value).__name__}"
            raise TypeError(msg)
    if _DIGEST_KEY in metadata:
        msg = f"metadata key {_DIGEST_KEY!r} is reserved: write_safetensors computes it"
        raise ValueError(msg)
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(_raw_bytes(array).data)
    metadata[_DIGEST_KEY] = digest.hexdigest()
    header["__metadata__"] = metadata
    text = json.dumps(header, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    encoded = text.encode("utf-8")
    encoded += b" " * (-(8 + len(encoded)) % 8)  # pad so that the data starts 8-aligned

    def write(f: BinaryIO) -> None:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for array in arrays:
            _write_array(f, array)

    _write_atomically(Path(os.fspath(path)), write)


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
}


def _write_atomically(path: Path, write: Callable[[BinaryIO], None]) -> None:
    try:
        write_atomically(path, write)
    except OSError as exc:
        reason = _WRITE_FAILURES.get(exc.errno or 0, "the operating system refused")
        msg = (
            f"could not write checkpoint {os.fspath(path)!r}: {reason} ({exc}); "
            "an earlier file at that path is unchanged"
        )
        raise CheckpointError(msg) from exc


def read_safetensors(path: PathLike) -> tuple[dict[str, np.ndarray[Any, Any]], dict[str, str]]:
    """Read a safetensors file into host arrays and its string metadata.

    The layout is checked in full before any data is read (see the module docstring);
    nothing is ever unpickled.

    Returns
    -------
    tensors : dict of str to numpy.ndarray
        Writable, native-byte-order arrays, in the order of their data.
    metadata : dict of str to str
        Without ``"portprop.data_sha256"``: when the file has it, the data section was
        checked against it.

    Raises
    ------
    CheckpointError
        If the file is not a well-formed safetensors file, or if its data section does
        not match its recorded SHA-256; the message names the file and the problem.
    OSError
        If the file cannot be opened (``FileNotFoundError``, ...).
    """
    with Path(os.fspath(path)).open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        try:
            header = _read_header(f, size, path)
        except CheckpointError:
            kind = _foreign_format(f)
            if kind is None:
                raise
            problem = (
                f"it is {kind}, not a safetensors checkpoint; portprop reads safetensors "
                "files only, and never unpickles a file"
            )
            raise _bad(path, problem) from None
        metadata = _check_metadata(header.pop("__metadata__", {}), path)
        data_start = f.tell()
        entries = _check_entries(header, size - data_start, path)
        data = bytearray(size - data_start)
        if f.readinto(data) != len(data):
            raise _bad(path, "the file is shorter than when it was opened (truncated)")
    _check_digest(metadata.pop(_DIGEST_KEY, None), data, path)
    tensors: dict[str, np.ndarray[Any, Any]] = {}
    for name, dtype, shape, begin, end in entries:
        if begin == end:
            array = np.zeros(shape, dtype=dtype)
        else:
            array = np.frombuffer(
                data, dtype=dtype, count=(end - begin) // dtype.itemsize, offset=begin
            )
            array = array.reshape(shape)
            if dtype.kind == "b" and np.frombuffer(data, np.uint8, end - begin, begin).max() > 1:
                raise _bad(path, f"tensor {name!r} of dtype BOOL holds bytes other than 0 and 1")
            if not array.flags.aligned or not array.dtype.isnative:
                array = array.astype(dtype.newbyteorder("="))
        tensors[name] = array
    return tensors, metadata


def _check_digest(recorded: str | None, data: bytearray, path: PathLike) -> None:
    """Raise unless the data section hashes to the SHA-256 the metadata records (if any)."""
    if recorded is None:
        return
    if len(recorded) != 64 or not all(c in "0123456789abcdef" for c in recorded):
        raise _bad(
            path, f"metadata {_DIGEST_KEY!r} must be 64 lowercase hex digits, got {recorded!r:.80}"
        )
    actual = hashlib.sha256(data).hexdigest()
    if actual != recorded:
        raise _bad(
            path,
            f"the data section's SHA-256 is {actual[:16]}..., but the metadata records "
            f"{recorded[:16]}...: tensor bytes changed after the file was written (the file "
            "is corrupt)",
        )


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
    try:
        header = json.loads(
            raw.decode("utf-8"),
            object_pairs_hook=_object_without_duplicates,
            parse_constant=_refuse_constant,
        )
    except UnicodeDecodeError as exc:
        raise _bad(path, f"the header is not UTF-8 ({exc})") from None
    except (ValueError, RecursionError) as exc:
        raise _bad(path, f"the header is malformed JSON ({exc})") from None
    if not isinstance(header, dict):
        raise _bad(path, f"the header must be a JSON object, got {_json_type(header)}")
    return header


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            msg = f"duplicate key {key!r}"
            raise ValueError(msg)
        result[key] = value
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
                f"'__metadata__' values must be strings, but {key!r} is {_json_type(value)}",
            )
    return metadata


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_entries(
    header: dict[str, Any], data_size: int, path: PathLike
) -> list[tuple[str, np.dtype[Any], tuple[int, ...], int, int]]:
    entries = []
    for name, entry in header.items():
        where = f"tensor {name!r:.100}"
        if not isinstance(entry, dict):
            raise _bad(path, f"{where} must be a JSON object, got {_json_type(entry)}")
        keys = set(entry)
        if keys != {"dtype", "shape", "data_offsets"}:
            missing = sorted({"dtype", "shape", "data_offsets"} - keys)
            extra = sorted(keys - {"dtype", "shape", "data_offsets"})
            raise _bad(path, f"{where} has missing keys {missing} and unknown keys {extra}")
        code, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if not isinstance(code, str) or code not in _DTYPES:
            raise _bad(
                path,
                f"{where} has unknown dtype {code!r:.80}; this reader knows {', '.join(_DTYPES)}",
            )
        if not isinstance(shape, list) or not all(_is_int(n) and n >= 0 for n in shape):
            raise _bad(
                path, f"{where} has shape {shape!r:.200}; expected a list of non-negative ints"
            )
        itemsize = _DTYPES[code].itemsize
        if len(shape) > _MAX_NDIM or math.prod(n for n in shape if n) * itemsize > _MAX_BYTES:
            raise _bad(
                path,
                f"{where} has shape {shape!r:.200}; a NumPy array has at most {_MAX_NDIM} "
                f"dimensions, and {_MAX_BYTES} bytes when the zero ones are left out",
            )
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(_is_int(n) for n in offsets)
        ):
            raise _bad(
                path, f"{where} has data_offsets {offsets!r:.200}; expected [begin, end] (ints)"
            )
        begin, end = offsets
        if not 0 <= begin <= end:
            raise _bad(
                path,
                f"{where} has data_offsets {offsets} out of range: expected 0 <= begin <= end",
            )
        if end > data_size:
            raise _bad(
                path,
                f"{where} has data_offsets {offsets} out of range: its data would end at "
                f"byte {end}, but the data section holds {data_size} bytes (the file is "
                "truncated or corrupt)",
            )
        dtype = _DTYPES[code]
        needed = math.prod(shape) * dtype.itemsize
        if end - begin != needed:
            raise _bad(
                path,
                f"{where} of dtype {code} and shape {shape} needs {needed} bytes, but its "
                f"data_offsets {offsets} span {end - begin}",
            )
        entries.append((name, dtype, tuple(shape), begin, end))
    entries.sort(key=lambda e: (e[3], e[4]))
    covered, previous = 0, ""
    for name, _, _, begin, end in entries:
        if begin < covered:
            raise _bad(
                path,
                f"the data of tensors {previous!r:.100} (up to byte {covered}) and "
                f"{name!r:.100} (data_offsets [{begin}, {end}]) overlap",
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
