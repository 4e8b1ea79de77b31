"""Checkpoints: a model, its optimizer's state, the epoch and the random state, in one file.

The file is a `safetensors <https://github.com/huggingface/safetensors>`_ file, read and
written here with NumPy, :mod:`json` and :mod:`struct` alone:

- 8 bytes: ``N``, the length of the header, a little-endian unsigned 64-bit integer;
- ``N`` bytes: the header, UTF-8 JSON ``{name: {"dtype": "F32", "shape": [25, 2],
  "data_offsets": [begin, end]}, ..., "__metadata__": {str: str}}``;
- the data: each tensor's raw little-endian bytes, row-major, at ``data_offsets``
  (relative to the end of the header), one after the other with no gap.

What a portprop checkpoint holds:

=================================  ===================================================
tensor or ``__metadata__`` key     content
=================================  ===================================================
``model.<name>``                   each parameter, by torch name (``model.0.weight``)
``optimizer.state.<i>.<name>``     each array of the optimizer's state of parameter i
``"portprop.checkpoint"``          the format version, ``"1"``
``"architecture"``                 JSON list of layer specs (``{"type": "Linear",
                                   "in_features": 2, "out_features": 25, "bias":
                                   true}``, ``{"type": "ReLU"}``, ...)
``"container"``                    ``"Sequential"``, or ``"layer"`` for a lone layer
``"dtype"``                        the model's dtype, ``"float32"`` or ``"float64"``
``"optimizer"``                    JSON: type, hyperparameters and the non-array state
``"epoch"``, ``"extra"``           JSON: the epoch and the caller's own data
``"rng"``                          JSON: the global host generator's state and each
                                   dropout layer's generator state
``"portprop.version"``             the portprop that wrote the file
``"portprop.data_sha256"``         the SHA-256 of the data section, 64 hex digits
                                   (written by :func:`write_safetensors`; checked and
                                   removed from the metadata by
                                   :func:`read_safetensors`)
=================================  ===================================================

Guarantees:

- Reading never unpickles anything; the reader checks the whole layout (header size,
  JSON, dtypes, shapes against offsets, offsets in range, contiguous, no overlap, no
  trailing bytes) before it touches the data, and raises :class:`CheckpointError`
  naming the file and the problem.  A pickle, a torch ``.pt`` file, a NumPy ``.npz``
  or ``.npy`` file is recognised and refused as "not a safetensors checkpoint".
- Every parameter and every floating array of the optimizer's state is finite: a
  checkpoint with a NaN or an infinity is corrupt, so :func:`load` and
  :func:`load_into` refuse it, and :func:`save` refuses to write one (which would
  replace a good checkpoint with a useless one).
- The data section carries its SHA-256 in the metadata, so a tensor byte changed
  after writing (a damaged disk, a bad copy, a hand edit) is refused instead of
  loading as other weights.  A file without it (written by another safetensors
  writer) is read unchecked.  The digest detects damage; it is not a signature, so
  it does not make a file from a stranger trustworthy: that rests on the reader's
  checks above and on never unpickling.
- Writing is atomic (:func:`portprop._io.write_atomically`): the bytes go to a file
  without a name (Linux, ``O_TMPFILE``) or to a hidden temporary file
  (``.<name>.<random>.tmp``) in the target's directory, which is flushed, synced and
  then given the target's name in one rename, and the directory synced.  A failure,
  a crash or a kill at any point leaves an earlier checkpoint at that path intact,
  and on Linux leaves no temporary file behind.
- Arrays pass through host memory, so a checkpoint written from any backend loads on
  any other with bit-identical values (for the same dtype).
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import struct
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeGuard

import numpy as np

from portprop import layers as _layers
from portprop._backend import (
    Backend,
    asarray,
    backend_of,
    dtype_name,
    host_generator,
    resolve,
)
from portprop._backend import _is_array as _is_backend_array
from portprop._io import write_atomically
from portprop.errors import CheckpointError, StateDictError
from portprop.module import Module, Sequential

__all__ = [
    "FORMAT_VERSION",
    "MAX_HEADER_BYTES",
    "Checkpoint",
    "from_torch_state_dict",
    "load",
    "load_into",
    "read_safetensors",
    "restore_rng",
    "save",
    "to_torch_state_dict",
    "write_safetensors",
]

#: The checkpoint format this portprop writes, and the newest it reads.
FORMAT_VERSION = 1
#: Headers longer than this are refused before they are read.
MAX_HEADER_BYTES = 100 * 1024 * 1024

_FORMAT_KEY = "portprop.checkpoint"
_DIGEST_KEY = "portprop.data_sha256"
_MODEL_PREFIX = "model."
_OPTIMIZER_PREFIX = "optimizer.state."
_CHUNK_BYTES = 16 * 1024 * 1024
_MAX_NDIM = 32  # NumPy 1.x holds at most 32 dimensions (2.x: 64)
_MAX_NESTING = 32  # Sequential within Sequential
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


# --------------------------------------------------------------------------------------
# The safetensors container
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# Architectures: layer specs
# --------------------------------------------------------------------------------------


def _layer_spec(layer: Module) -> dict[str, Any]:
    kind = type(layer).__name__
    if isinstance(layer, Sequential):
        return {"type": "Sequential", "layers": [_layer_spec(child) for child in layer]}
    spec: dict[str, Any] = {"type": kind}
    if type(layer) is _layers.Linear:
        spec.update(
            in_features=layer.in_features,
            out_features=layer.out_features,
            bias=layer.bias is not None,
        )
    elif type(layer) is _layers.LeakyReLU:
        spec["negative_slope"] = layer.negative_slope
    elif type(layer) is _layers.Dropout:
        spec["p"] = layer.p
    elif type(layer) not in _BUILT_IN:
        spec["custom"] = True  # described by name only: load_into(), not load()
    return spec


def _architecture(model: Module) -> tuple[str, list[dict[str, Any]]]:
    if isinstance(model, Sequential):
        return "Sequential", [_layer_spec(layer) for layer in model]
    return "layer", [_layer_spec(model)]


_BUILT_IN: dict[type[Module], str] = {
    _layers.Linear: "Linear",
    _layers.Tanh: "Tanh",
    _layers.ReLU: "ReLU",
    _layers.Sigmoid: "Sigmoid",
    _layers.LeakyReLU: "LeakyReLU",
    _layers.Identity: "Identity",
    _layers.Dropout: "Dropout",
    Sequential: "Sequential",
}


def _spec_problem(spec: Any, where: str, depth: int = 0) -> str | None:
    """Why ``spec`` cannot describe a layer, or ``None``."""
    if depth > _MAX_NESTING:
        return f"{where} nests Sequential layers more than {_MAX_NESTING} deep"
    if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
        return f"{where} must be an object with a string 'type', got {_json_type(spec)}"
    kind = spec["type"]
    if kind == "Linear":
        for key in ("in_features", "out_features"):
            if not (_is_int(spec.get(key)) and spec[key] >= 1):
                return f"{where} (Linear) needs a positive int {key!r}, got {spec.get(key)!r:.80}"
        if not isinstance(spec.get("bias"), bool):
            return f"{where} (Linear) needs a boolean 'bias', got {spec.get('bias')!r:.80}"
    elif kind == "LeakyReLU":
        slope = spec.get("negative_slope")
        if not _is_finite_number(slope):
            return f"{where} (LeakyReLU) needs a number 'negative_slope', got {slope!r:.80}"
    elif kind == "Dropout":
        p = spec.get("p")
        if not (_is_finite_number(p) and 0 <= p < 1):
            return f"{where} (Dropout) needs a number 'p' in [0, 1), got {p!r:.80}"
    elif kind == "Sequential":
        children = spec.get("layers")
        if not isinstance(children, list) or not children:
            return f"{where} (Sequential) needs a non-empty list 'layers'"
        for i, child in enumerate(children):
            problem = _spec_problem(child, f"{where}.{i}", depth + 1)
            if problem:
                return problem
    return None


def _is_finite_number(value: Any) -> TypeGuard[float]:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:  # an int too large for a float
        return False


def _expected_shapes(specs: list[Any], prefix: str = "") -> dict[str, tuple[int, ...]]:
    """The parameter shapes that the specs describe.

    Raises ``_Unbuildable`` for a layer that portprop cannot rebuild, before anything is
    allocated.
    """
    shapes: dict[str, tuple[int, ...]] = {}
    for i, spec in enumerate(specs):
        name = f"{prefix}{i}."
        kind = spec["type"]
        if kind == "Linear":
            shapes[name + "weight"] = (spec["out_features"], spec["in_features"])
            if spec["bias"]:
                shapes[name + "bias"] = (spec["out_features"],)
        elif kind == "Sequential":
            shapes.update(_expected_shapes(spec["layers"], name))
        elif kind not in _REBUILDABLE:
            msg = (
                f"it holds a layer of type {kind!r}, which portprop cannot rebuild; build the "
                "model yourself and restore it with portprop.load_into(path, model)"
            )
            raise _Unbuildable(msg)
    return shapes


_REBUILDABLE = frozenset(("Tanh", "ReLU", "Sigmoid", "LeakyReLU", "Identity", "Dropout"))


def _build_layer(spec: dict[str, Any], backend: Backend, dtype: Any) -> Module:
    kind = spec["type"]
    kw: dict[str, Any] = {"backend": backend, "dtype": dtype}
    if kind == "Linear":
        # seed=0: the weights are overwritten at once; the global generator stays as is
        return _layers.Linear(
            spec["in_features"], spec["out_features"], bias=spec["bias"], seed=0, **kw
        )
    if kind == "LeakyReLU":
        return _layers.LeakyReLU(float(spec["negative_slope"]), **kw)
    if kind == "Sequential":
        return Sequential(*(_build_layer(child, backend, dtype) for child in spec["layers"]))
    simple: dict[str, Any] = {
        "Tanh": _layers.Tanh,
        "ReLU": _layers.ReLU,
        "Sigmoid": _layers.Sigmoid,
        "Identity": _layers.Identity,
    }
    if kind in simple:
        layer: Module = simple[kind](**kw)
        return layer
    if kind == "Dropout":
        return _layers.Dropout(float(spec["p"]), **kw)
    msg = f"it holds a layer of type {kind!r}, which portprop cannot rebuild"
    raise _Unbuildable(msg)


class _Unbuildable(Exception):  # noqa: N818 - internal signal, turned into CheckpointError
    pass


def _named_modules(module: Module, prefix: str = "") -> Iterator[tuple[str, Module]]:
    yield prefix.rstrip("."), module
    for name, child in module.named_children():
        yield from _named_modules(child, f"{prefix}{name}.")


# --------------------------------------------------------------------------------------
# JSON helpers
# --------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """``value`` with NumPy scalars and arrays turned into Python numbers and lists."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _dumps(value: Any, what: str) -> str:
    try:
        return json.dumps(_plain(value), separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        msg = f"{what} must be JSON-serializable (numbers, strings, lists, dicts): {exc}"
        raise TypeError(msg) from None


def _loads(metadata: Mapping[str, str], key: str, path: PathLike, default: Any = None) -> Any:
    if key not in metadata:
        return default
    try:
        return json.loads(metadata[key])
    except (ValueError, RecursionError) as exc:
        raise _bad(path, f"metadata {key!r} is malformed JSON ({exc})") from None


# --------------------------------------------------------------------------------------
# save
# --------------------------------------------------------------------------------------


def save(
    path: PathLike,
    model: Module,
    optimizer: Any = None,
    *,
    epoch: int | None = None,
    extra: Any = None,
) -> None:
    """Save a model (and optionally its optimizer) to a checkpoint file, atomically.

    The global host generator's state (:func:`portprop.manual_seed`) and the state of
    every dropout layer's generator are saved too; :func:`restore_rng` restores them.

    Parameters
    ----------
    path : str or path-like
        The file to write (``.safetensors`` is the usual suffix).  An existing file is
        replaced only once the new one is complete and on disk.
    model : Module
        A :class:`Sequential` or a single layer, on any backend.
    optimizer : optional
        An optimizer with ``state_dict()`` (``{"type", "hyperparameters", "state"}``).
    epoch : int, optional
        The number of completed epochs, returned by :func:`load` as ``epoch``.
    extra : optional
        Any JSON-serializable data of yours (a :class:`~portprop.datasets.Standardizer`'s
        ``to_dict()``, a training history, ...).

    Raises
    ------
    CheckpointError
        If the file cannot be written (the message says why: permission denied, a
        read-only file system, no space left, ...), or if a parameter or an array of
        the optimizer's state holds a NaN or an infinity; an earlier file at ``path``
        is left intact.
    """
    if not isinstance(model, Module):
        msg = f"model must be a portprop Module, got {type(model).__name__}"
        raise TypeError(msg)
    if epoch is not None and not (_is_int(epoch) or isinstance(epoch, np.integer)):
        msg = f"epoch must be an int or None, got {epoch!r}"
        raise TypeError(msg)
    container, specs = _architecture(model)
    tensors: dict[str, Any] = {
        _MODEL_PREFIX + name: model.backend.to_host(p.data) for name, p in model.named_parameters()
    }
    metadata = {
        _FORMAT_KEY: str(FORMAT_VERSION),
        "portprop.version": _portprop_version(),
        "container": container,
        "architecture": json.dumps(specs, separators=(",", ":")),
        "dtype": dtype_name(model.dtype),
        "rng": _dumps(_rng_state(model), "the random state"),
    }
    if epoch is not None:
        metadata["epoch"] = str(int(epoch))
    if extra is not None:
        metadata["extra"] = _dumps(extra, "extra")
    if optimizer is not None:
        scalars, arrays = _split_optimizer_state(optimizer)
        metadata["optimizer"] = _dumps(scalars, "the optimizer's state_dict()")
        tensors.update(arrays)
    for name, array in tensors.items():
        problem = _not_finite(name, np.asarray(array))
        if problem:
            msg = (
                f"cannot save checkpoint {os.fspath(path)!r}: {problem}, as a checkpoint "
                "must (the model diverged?); nothing was written"
            )
            raise CheckpointError(msg)
    write_safetensors(path, tensors, metadata)


def _portprop_version() -> str:
    import portprop  # noqa: PLC0415 - the package imports this module

    return str(portprop.__version__)


def _rng_state(model: Module) -> dict[str, Any]:
    layers = {}
    for name, module in _named_modules(model):
        generator = getattr(module, "generator", None)
        if generator is not None and callable(getattr(generator, "get_state", None)):
            layers[name] = generator.get_state()
    return {"host": host_generator().bit_generator.state, "layers": layers}


def _split_optimizer_state(optimizer: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The optimizer's state dict, its arrays taken out as host tensors."""
    state_dict = getattr(optimizer, "state_dict", None)
    if not callable(state_dict):
        msg = (
            f"{type(optimizer).__name__} has no state_dict(), so its state cannot be saved; "
            "pass optimizer=None to save the model alone"
        )
        raise TypeError(msg)
    full = state_dict()
    if not isinstance(full, Mapping) or not isinstance(full.get("state"), list | tuple):
        msg = (
            f"{type(optimizer).__name__}.state_dict() must return a dict with a 'state' list, "
            f"got {full!r:.200}"
        )
        raise TypeError(msg)
    arrays: dict[str, Any] = {}
    per_param = []
    for i, entries in enumerate(full["state"]):
        scalars = {}
        for name, value in dict(entries).items():
            if _is_backend_array(value) and not isinstance(value, np.generic):
                arrays[f"{_OPTIMIZER_PREFIX}{i}.{name}"] = _to_host(value)
            else:
                scalars[name] = value
        per_param.append(scalars)
    rest = {k: v for k, v in full.items() if k != "state"}
    return {**rest, "state": per_param}, arrays


def _to_host(x: Any) -> np.ndarray[Any, Any]:
    return np.asarray(backend_of(x).to_host(x))


# --------------------------------------------------------------------------------------
# load
# --------------------------------------------------------------------------------------


@dataclass
class Checkpoint:
    """What :func:`load` or :func:`load_into` read.

    Attributes
    ----------
    model : Module
        The model: rebuilt by :func:`load`, the caller's by :func:`load_into`.
    optimizer_state : dict or None
        The optimizer's state dict, its arrays on the model's backend and (for floating
        arrays) in its dtype: pass it to ``optimizer.load_state_dict``.
    epoch : int or None
    extra : object
        The ``extra`` passed to :func:`save` (JSON: tuples come back as lists).
    rng_state : dict or None
        ``{"host": ..., "layers": {name: ...}}``; :func:`restore_rng` applies it.
    architecture : list of dict
        The layer specs.
    dtype : str
        The dtype the model was saved in.
    format_version : int
    path : str
    """

    model: Module
    optimizer_state: dict[str, Any] | None
    epoch: int | None
    extra: Any
    rng_state: dict[str, Any] | None
    architecture: list[dict[str, Any]]
    dtype: str
    format_version: int
    path: str


@dataclass
class _Contents:
    version: int
    container: str
    architecture: list[dict[str, Any]]
    dtype: str
    params: dict[str, np.ndarray[Any, Any]]
    optimizer: dict[str, Any] | None
    epoch: int | None
    extra: Any
    rng: dict[str, Any] | None


def _read(path: PathLike) -> _Contents:
    tensors, metadata = read_safetensors(path)
    version = _check_version(metadata, path)
    container = metadata.get("container", "Sequential")
    if container not in ("Sequential", "layer"):
        raise _bad(path, f"metadata 'container' must be 'Sequential' or 'layer', got {container!r}")
    if "architecture" not in metadata:
        raise _bad(path, "the metadata has no 'architecture'")
    specs = _loads(metadata, "architecture", path)
    if not isinstance(specs, list) or not specs:
        raise _bad(path, f"the architecture must be a non-empty JSON list, got {specs!r:.200}")
    if container == "layer" and len(specs) != 1:
        raise _bad(path, f"a lone layer's architecture must hold one spec, got {len(specs)}")
    for i, spec in enumerate(specs):
        problem = _spec_problem(spec, f"layer {i}")
        if problem:
            raise _bad(path, f"the architecture is malformed: {problem}")
    dtype = metadata.get("dtype", "")
    if dtype not in ("float32", "float64"):
        raise _bad(path, f"metadata 'dtype' must be 'float32' or 'float64', got {dtype!r}")

    params: dict[str, np.ndarray[Any, Any]] = {}
    optimizer_arrays: dict[str, np.ndarray[Any, Any]] = {}
    for name, array in tensors.items():
        if name.startswith(_MODEL_PREFIX):
            if array.dtype.kind != "f":
                raise _bad(path, f"parameter {name!r:.100} has dtype {array.dtype}, not a float")
            params[name.removeprefix(_MODEL_PREFIX)] = array
        elif name.startswith(_OPTIMIZER_PREFIX):
            optimizer_arrays[name.removeprefix(_OPTIMIZER_PREFIX)] = array
        else:
            raise _bad(path, f"unexpected tensor {name!r:.100} (neither 'model.' nor 'optimizer.')")
        problem = _not_finite(name, array)
        if problem:
            raise _bad(path, f"{problem}: the file is corrupt")
    optimizer = _read_optimizer(metadata, optimizer_arrays, path)

    epoch = _loads(metadata, "epoch", path)
    if epoch is not None and not _is_int(epoch):
        raise _bad(path, f"metadata 'epoch' must be an int, got {metadata['epoch']!r:.200}")
    rng = _loads(metadata, "rng", path)
    if rng is not None and not (isinstance(rng, dict) and isinstance(rng.get("layers", {}), dict)):
        raise _bad(path, "metadata 'rng' must be an object with a 'layers' object")
    return _Contents(
        version=version,
        container=container,
        architecture=specs,
        dtype=dtype,
        params=params,
        optimizer=optimizer,
        epoch=epoch,
        extra=_loads(metadata, "extra", path),
        rng=rng,
    )


def _not_finite(name: str, array: np.ndarray[Any, Any]) -> str | None:
    """Says how many NaNs and infinities a floating array holds, if any."""
    if array.dtype.kind != "f":
        return None
    finite = np.isfinite(array)
    if finite.all():
        return None
    bad = array[~finite]
    nan = int(np.isnan(bad).sum())
    return (
        f"tensor {name!r:.100} of shape {tuple(array.shape)} holds {nan} NaN and "
        f"{bad.size - nan} infinite values; expected finite values only"
    )


def _index(text: str) -> int | None:
    """``text`` as a number of up to 18 ASCII digits (an index, a version), else None."""
    if text.isascii() and text.isdigit() and len(text) <= 18:
        return int(text)
    return None


def _check_version(metadata: Mapping[str, str], path: PathLike) -> int:
    if _FORMAT_KEY not in metadata:
        raise _bad(path, f"its metadata has no {_FORMAT_KEY!r} entry (not a portprop checkpoint)")
    text = metadata[_FORMAT_KEY]
    version = _index(text)
    if version is None or version < 1:
        raise _bad(path, f"unknown checkpoint format version {text!r:.40}")
    if version > FORMAT_VERSION:
        writer = metadata.get("portprop.version", "a newer portprop")
        msg = (
            f"{os.fspath(path)!r} has checkpoint format version {version} (written by portprop "
            f"{writer:.40}), but this portprop ({_portprop_version()}) reads format version "
            f"{FORMAT_VERSION}; upgrade portprop to load it"
        )
        raise CheckpointError(msg)
    return version


def _read_optimizer(
    metadata: Mapping[str, str], arrays: dict[str, np.ndarray[Any, Any]], path: PathLike
) -> dict[str, Any] | None:
    if "optimizer" not in metadata:
        if arrays:
            raise _bad(path, "it has optimizer tensors but no 'optimizer' metadata")
        return None
    state = _loads(metadata, "optimizer", path)
    if (
        not isinstance(state, dict)
        or not isinstance(state.get("state"), list)
        or not all(isinstance(entry, dict) for entry in state["state"])
    ):
        raise _bad(path, "metadata 'optimizer' must be an object with a 'state' list of objects")
    per_param: list[dict[str, Any]] = state["state"]
    for key, array in arrays.items():
        index, _, name = key.partition(".")
        i = _index(index)
        if i is None or not name:
            raise _bad(
                path, f"tensor {_OPTIMIZER_PREFIX + key!r} is not 'optimizer.state.<i>.<name>'"
            )
        if i >= len(per_param):
            raise _bad(
                path,
                f"tensor {_OPTIMIZER_PREFIX + key!r} is for parameter {i}, but the optimizer "
                f"state has {len(per_param)} entries",
            )
        if name in per_param[i]:
            raise _bad(path, f"optimizer state {i} has {name!r} both as a tensor and in metadata")
        per_param[i][name] = array
    return state


def _optimizer_on(state: dict[str, Any], backend: Backend, dtype: Any) -> dict[str, Any]:
    """The optimizer state with its host arrays moved to ``backend`` (floats in ``dtype``)."""
    converted = []
    for entries in state["state"]:
        moved = {}
        for name, value in entries.items():
            if isinstance(value, np.ndarray) and value.dtype.kind == "f":
                moved[name] = backend.from_host(value, dtype)
            elif isinstance(value, np.ndarray):
                moved[name] = backend.asarray(value, copy=True)
            else:
                moved[name] = value
        converted.append(moved)
    return {**state, "state": converted}


def load(
    path: PathLike, *, backend: Backend | str | None = None, device: Any = None, dtype: Any = None
) -> Checkpoint:
    """Read a checkpoint and rebuild its model.

    Parameters
    ----------
    path : str or path-like
    backend, device : optional
        Where to rebuild the model: the current backend by default (not necessarily the
        one it was saved from: a checkpoint loads on every backend).
    dtype : optional
        The model's dtype; the saved one by default.

    Returns
    -------
    Checkpoint
        ``checkpoint.model`` is ready to use; pass ``checkpoint.optimizer_state`` to a
        new optimizer's ``load_state_dict``, and the checkpoint to :func:`restore_rng`
        to resume training exactly.  Loading leaves the random state as it was.

    Raises
    ------
    CheckpointError
        If the file is not a valid checkpoint, is of a newer format, or holds a layer
        that portprop cannot rebuild; the message names the file.
    """
    contents = _read(path)
    target, float_dtype = resolve(backend, device, contents.dtype if dtype is None else dtype)
    try:
        expected = _expected_shapes(contents.architecture)
    except _Unbuildable as exc:
        msg = f"cannot rebuild the model of checkpoint {os.fspath(path)!r}: {exc}"
        raise CheckpointError(msg) from None
    if contents.container == "layer":  # a lone layer's names have no "0." prefix
        expected = {k.partition(".")[2]: v for k, v in expected.items()}
    problems = _shape_problems(expected, contents.params, "the architecture")
    if problems:
        raise _bad(path, "its tensors do not match its architecture: " + "; ".join(problems))
    host = host_generator()
    saved = host.bit_generator.state
    try:
        layers = [_build_layer(spec, target, float_dtype) for spec in contents.architecture]
        model = layers[0] if contents.container == "layer" else Sequential(*layers)
    except _Unbuildable as exc:
        raise _bad(path, str(exc)) from None
    except (TypeError, ValueError) as exc:  # layers that do not fit together
        raise _bad(path, f"its architecture does not make a model: {exc}") from None
    finally:
        host.bit_generator.state = saved  # building a dropout layer may draw a seed
    try:
        model.load_state_dict(_on_host_as(contents.params, float_dtype))
    except (StateDictError, TypeError, ValueError) as exc:
        raise _bad(path, f"its tensors do not match its architecture: {exc}") from None
    optimizer_state = (
        None
        if contents.optimizer is None
        else _optimizer_on(contents.optimizer, target, float_dtype)
    )
    return Checkpoint(
        model=model,
        optimizer_state=optimizer_state,
        epoch=contents.epoch,
        extra=contents.extra,
        rng_state=contents.rng,
        architecture=contents.architecture,
        dtype=contents.dtype,
        format_version=contents.version,
        path=os.fspath(path),
    )


def _shape_problems(
    expected: Mapping[str, tuple[int, ...]], found: Mapping[str, Any], expecting: str
) -> list[str]:
    """Differences between the parameter shapes ``expecting`` (the model, the
    architecture) has and the checkpoint's tensors."""
    problems = []
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    if missing:
        problems.append(f"{expecting} has parameters that the checkpoint lacks: {missing}")
    if unexpected:
        problems.append(f"the checkpoint has parameters that {expecting} lacks: {unexpected}")
    problems.extend(
        f"parameter {k!r} has shape {tuple(found[k].shape)} in the checkpoint, "
        f"{tuple(expected[k])} in {expecting}"
        for k in expected
        if k in found and tuple(found[k].shape) != tuple(expected[k])
    )
    return problems


def _on_host_as(params: Mapping[str, np.ndarray[Any, Any]], dtype: Any) -> dict[str, Any]:
    """The parameters converted to ``dtype`` on the host, which every backend takes
    (array-api-strict, for one, takes no float16 array)."""
    host = np.dtype(dtype_name(dtype))
    return {name: array.astype(host, copy=False) for name, array in params.items()}


def load_into(path: PathLike, model: Module, optimizer: Any = None) -> Checkpoint:
    """Restore a checkpoint into an existing model (and optimizer), in place.

    The model must have the checkpoint's architecture (its dtype and backend may
    differ: values are converted).  Every difference is checked first: on any, one
    :class:`CheckpointError` lists them all and nothing is changed.

    Returns
    -------
    Checkpoint
        With ``model`` the given model; the random state is not restored (see
        :func:`restore_rng`).

    Raises
    ------
    CheckpointError
        If the file is not a valid checkpoint, or does not fit the model or the
        optimizer (one message lists every difference), or the optimizer refuses the
        saved state; the model and the optimizer are then exactly as they were.
    """
    if not isinstance(model, Module):
        msg = f"model must be a portprop Module, got {type(model).__name__}"
        raise TypeError(msg)
    contents = _read(path)
    container, specs = _architecture(model)
    problems = []
    if container != contents.container:
        problems.append(f"the checkpoint holds a {contents.container}, the model is a {container}")
    problems.extend(_architecture_differences(contents.architecture, specs))
    own = {name: p.shape for name, p in model.named_parameters()}
    problems.extend(_shape_problems(own, contents.params, "the model"))
    optimizer_state = None
    if optimizer is not None:
        optimizer_state, optimizer_problems = _check_optimizer(contents, optimizer, model)
        problems.extend(optimizer_problems)
    if problems:
        msg = (
            f"checkpoint {os.fspath(path)!r} does not fit this model (nothing was loaded): "
            + "; ".join(problems)
        )
        raise CheckpointError(msg)
    # The model first: its load_state_dict converts every array before it assigns any,
    # and the arrays it replaces are kept, to be put back if the optimizer refuses.
    before = [(p, p.data, p.grad) for p in model.parameters()]
    try:
        model.load_state_dict(_on_host_as(contents.params, model.dtype))
    except (StateDictError, TypeError, ValueError) as exc:
        msg = f"checkpoint {os.fspath(path)!r} does not fit this model (nothing was loaded): {exc}"
        raise CheckpointError(msg) from exc
    if optimizer is not None:
        try:
            optimizer.load_state_dict(optimizer_state)
        except BaseException as exc:
            for p, data, grad in before:
                p.data, p.grad = data, grad
            if not isinstance(exc, LookupError | TypeError | ValueError | ArithmeticError):
                raise
            msg = (
                f"checkpoint {os.fspath(path)!r}: {type(optimizer).__name__} refused the saved "
                f"state (nothing was loaded): {exc}"
            )
            raise CheckpointError(msg) from exc
    return Checkpoint(
        model=model,
        optimizer_state=optimizer_state,
        epoch=contents.epoch,
        extra=contents.extra,
        rng_state=contents.rng,
        architecture=contents.architecture,
        dtype=contents.dtype,
        format_version=contents.version,
        path=os.fspath(path),
    )


def _architecture_differences(
    saved: list[dict[str, Any]], own: list[dict[str, Any]], prefix: str = ""
) -> list[str]:
    """Every difference between two lists of layer specs (``prefix`` names nested ones)."""

    def show(spec: dict[str, Any]) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in spec.items() if k not in ("type", "layers"))
        return f"{spec['type']}({fields})"

    if len(saved) != len(own):
        where = f" in layer {prefix[:-1]}" if prefix else ""
        return [
            (
                f"the checkpoint has {len(saved)} layers{where}, the model {len(own)}: "
                f"checkpoint [{', '.join(show(s) for s in saved)}], "
                f"model [{', '.join(show(s) for s in own)}]"
            )
        ]
    problems = []
    for i, (a, b) in enumerate(zip(saved, own, strict=True)):
        label = f"layer {prefix}{i}"
        if a["type"] != b["type"]:
            problems.append(f"{label} is {show(a)} in the checkpoint but {show(b)} in the model")
        elif a["type"] == "Sequential":
            problems.extend(_architecture_differences(a["layers"], b["layers"], f"{prefix}{i}."))
        else:
            problems.extend(
                f"{label} ({a['type']}): {key} is {a.get(key)!r} in the checkpoint, "
                f"{b.get(key)!r} in the model"
                for key in sorted(set(a) | set(b))
                if a.get(key) != b.get(key)
            )
    return problems


def _check_optimizer(
    contents: _Contents, optimizer: Any, model: Module
) -> tuple[dict[str, Any] | None, list[str]]:
    if not callable(getattr(optimizer, "load_state_dict", None)):
        return None, [f"{type(optimizer).__name__} has no load_state_dict()"]
    if contents.optimizer is None:
        return None, ["the checkpoint holds no optimizer state"]
    problems = []
    saved_type = contents.optimizer.get("type")
    own_type = type(optimizer).__name__
    if saved_type is not None and saved_type != own_type:
        problems.append(f"the checkpoint holds {saved_type} state, the optimizer is {own_type}")
    params = getattr(optimizer, "params", None)
    if params is not None and len(params) != len(contents.optimizer["state"]):
        problems.append(
            f"the checkpoint holds state for {len(contents.optimizer['state'])} parameters, "
            f"the optimizer has {len(params)}"
        )
    return _optimizer_on(contents.optimizer, model.backend, model.dtype), problems


# --------------------------------------------------------------------------------------
# Random state
# --------------------------------------------------------------------------------------


def restore_rng(checkpoint: Checkpoint) -> None:
    """Restore the random state saved with a checkpoint, to resume training exactly.

    Sets the global host generator (the one :func:`portprop.manual_seed` seeds) and the
    generator of every dropout layer of ``checkpoint.model``.  Dropout generators are
    each library's own, so their states restore only on the library that saved them;
    on any mismatch a :class:`CheckpointError` says so and nothing is restored.
    """
    rng = checkpoint.rng_state
    if rng is None:
        msg = f"checkpoint {checkpoint.path!r} holds no random state"
        raise CheckpointError(msg)
    modules = dict(_named_modules(checkpoint.model))
    saved_layers = rng.get("layers", {})
    problems = []
    targets = []
    for name, state in saved_layers.items():
        generator = getattr(modules.get(name), "generator", None)
        if generator is None or not callable(getattr(generator, "set_state", None)):
            problems.append(f"the model has no layer {name!r} with a generator")
            continue
        kind = getattr(generator, "kind", None)
        saved_kind = state.get("generator") if isinstance(state, dict) else None
        if kind is not None and saved_kind != kind:
            problems.append(
                f"layer {name!r} was saved with a {saved_kind!r} generator, but now draws with "
                f"a {kind!r} one (a different backend)"
            )
            continue
        targets.append((name, generator, state))
    if problems:
        msg = f"cannot restore the random state of {checkpoint.path!r}: " + "; ".join(problems)
        raise CheckpointError(msg)
    host = host_generator()
    host_before = host.bit_generator.state
    layers_before = [(generator, generator.get_state()) for _, generator, _ in targets]
    try:
        if rng.get("host") is not None:
            host.bit_generator.state = rng["host"]
        for _, generator, state in targets:
            generator.set_state(state)
    except (LookupError, TypeError, ValueError, RuntimeError, ArithmeticError) as exc:
        # a state that a generator refuses (a corrupt file): put everything back
        host.bit_generator.state = host_before
        for generator, state in layers_before:
            generator.set_state(state)
        msg = f"cannot restore the random state of {checkpoint.path!r}: {exc}"
        raise CheckpointError(msg) from exc


# --------------------------------------------------------------------------------------
# torch interoperability
# --------------------------------------------------------------------------------------


def to_torch_state_dict(model: Module) -> dict[str, Any]:
    """The parameters as CPU torch tensors (copies), by torch name: load them into an
    ``nn.Sequential`` of the same layers with ``load_state_dict``."""
    return {
        name: asarray(p.data, backend="torch:cpu", copy=True)
        for name, p in model.named_parameters()
    }


def from_torch_state_dict(model: Module, state_dict: Mapping[str, Any]) -> None:
    """Copy a torch ``state_dict()`` (tensors on any device) into ``model``, converting to
    its backend and dtype; raises :class:`StateDictError` listing every mismatch, with
    nothing changed."""
    detached = {
        name: value.detach() if callable(getattr(value, "detach", None)) else value
        for name, value in state_dict.items()
    }
    model.load_state_dict(detached)
