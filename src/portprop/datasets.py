"""Data: the data sets portprop generates or that come bundled with a dependency (nothing
is ever downloaded), readers for CSV and ``.npz`` files, a stratified split and a
standardizer.

The readers and :func:`train_test_split` work on host NumPy arrays; move the results to
a backend with :func:`portprop.asarray`.
"""

from __future__ import annotations

import codecs
import csv
import importlib
import io
import math
import os
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any, overload

import numpy as np

from portprop.backend import Backend, backend_of, host_generator, resolve
from portprop.module import rank_hint
from portprop.training.validation import as_array

__all__ = [
    "DISK_RADIUS",
    "Standardizer",
    "csv_columns",
    "load_csv",
    "load_digits",
    "load_npz",
    "make_disk",
    "train_test_split",
]

#: Radius of the disk centred at (0.5, 0.5) whose area is 1/2 of the unit square.
DISK_RADIUS = 1.0 / math.sqrt(2.0 * math.pi)


def make_disk(
    n_samples: int = 1000,
    *,
    seed: int | None = None,
    backend: Backend | str | None = None,
    device: Any = None,
    dtype: Any = None,
) -> tuple[Any, Any]:
    """The lecture's disk problem.

    Points uniform in the unit square; the label is 1 inside the disk of radius
    :data:`DISK_RADIUS` centred at ``(0.5, 0.5)`` and 0 outside, so the classes are
    balanced in expectation.

    Returns
    -------
    X : array, shape (n_samples, 2), floating ``dtype`` (default float32)
    y : array, shape (n_samples,), int64 class labels
    """
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        msg = f"n_samples must be a positive int, got {n_samples!r}"
        raise ValueError(msg)
    target, float_dtype = resolve(backend, device, dtype)
    gen = host_generator(seed)
    points = gen.uniform(0.0, 1.0, size=(n_samples, 2))
    inside = ((points - 0.5) ** 2).sum(axis=1) < DISK_RADIUS**2
    X = target.from_host(points, float_dtype)
    y = target.asarray(inside.astype("int64"), copy=True)
    return X, y


# --------------------------------------------------------------------------------------
# Bundled data
# --------------------------------------------------------------------------------------


def load_digits(
    *, backend: Backend | str | None = None, device: Any = None, dtype: Any = None
) -> tuple[Any, Any]:
    """The 8x8 images of handwritten digits bundled with scikit-learn (nothing is
    downloaded): 1797 samples of 64 pixels, 10 classes.

    Pixel values (0 to 16) are divided by 16, so that they lie in ``[0, 1]``.

    Returns
    -------
    X : array, shape (1797, 64), floating ``dtype`` (default float32)
    y : array, shape (1797,), int64 class labels 0 to 9

    Raises
    ------
    ImportError
        If scikit-learn is not installed (``pip install scikit-learn``).
    """
    try:
        sklearn_datasets = importlib.import_module("sklearn.datasets")
    except ImportError as exc:
        msg = (
            "load_digits() reads the digits bundled with scikit-learn, which is not "
            "installed: pip install scikit-learn (or pip install 'portprop[sklearn]')"
        )
        raise ImportError(msg) from exc
    target, float_dtype = resolve(backend, device, dtype)
    bunch = sklearn_datasets.load_digits()
    pixels = np.asarray(bunch.data, dtype=np.float64) / 16.0
    X = target.from_host(pixels, float_dtype)
    y = target.asarray(np.asarray(bunch.target, dtype=np.int64), copy=True)
    return X, y


# --------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _shown(text: str, limit: int = 40) -> str:
    """``repr(text)``, cut after ``limit`` characters: a message stays short."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


def _few(items: list[str], limit: int = 10) -> str:
    """The first ``limit`` of ``items`` as a list, and how many there are in all."""
    shown = ", ".join(_shown(item) for item in items[:limit])
    return f"[{shown}, ... ({len(items)} in all)]" if len(items) > limit else f"[{shown}]"


#: The byte-order marks of the encodings a CSV file is refused in (longest first: the
#: mark of UTF-32-LE begins with that of UTF-16-LE).
_FOREIGN_BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)
#: How many bytes at the start of a CSV file are looked at for NUL bytes and marks.
_SNIFF = 8192


def _check_text(head: bytes, where: str) -> None:
    """Refuse a file whose first bytes show it is not UTF-8 text."""
    for bom, encoding in _FOREIGN_BOMS:
        if head.startswith(bom):
            msg = (
                f"{where}: expected UTF-8 text, but the file starts with the byte-order mark "
                f"of {encoding} ({bom.hex(' ')}): save it as UTF-8"
            )
            raise ValueError(msg)
    if b"\0" in head:
        msg = (
            f"{where}: expected UTF-8 text, but the file holds NUL bytes (the first at byte "
            f"{head.index(0)}): it is binary (or UTF-16 without a byte-order mark), not CSV"
        )
        raise ValueError(msg)


def _csv_rows(where: str, delimiter: str, limit: int | None) -> list[tuple[int, list[str]]]:
    """The rows of a UTF-8 CSV file that are not blank, with their line numbers (the
    first ``limit`` of them, where given)."""
    rows: list[tuple[int, list[str]]] = []
    with Path(where).open("rb") as raw:
        _check_text(raw.peek(_SNIFF)[:_SNIFF], where)
        with io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as text:
            reader = csv.reader(text, delimiter=delimiter)
            try:
                for row in reader:
                    if any(cell.strip() for cell in row):
                        rows.append((reader.line_num, row))
                        if limit is not None and len(rows) == limit:
                            break
            except UnicodeDecodeError as exc:
                offset = raw.tell() - len(exc.object) + exc.start
                msg = (
                    f"{where}: expected UTF-8 text, but byte {offset} (0x"
                    f"{exc.object[exc.start]:02x}) is not UTF-8 (Latin-1 or Windows-1252 "
                    "text?): save the file as UTF-8"
                )
                raise ValueError(msg) from None
            except csv.Error as exc:
                if "field limit" in str(exc):
                    msg = (
                        f"{where}: line {reader.line_num}: a field is longer than "
                        f"{csv.field_size_limit()} characters, the CSV reader's limit: this "
                        "is not a table of numbers"
                    )
                else:
                    msg = f"{where}: line {reader.line_num}: not valid CSV ({exc})"
                raise ValueError(msg) from None
    return rows


def _csv_table(
    where: str, delimiter: str, header: bool | str, limit: int | None = None
) -> tuple[list[str] | None, list[tuple[int, list[str]]]]:
    """The column names (``None`` without a header) and the data rows of a CSV file."""
    if header not in (True, False, "infer"):
        msg = f"header must be True, False or 'infer', got {header!r}"
        raise ValueError(msg)
    rows = _csv_rows(where, delimiter, limit)
    if not rows:
        msg = f"{where}: the file holds no rows"
        raise ValueError(msg)
    if header == "infer":
        first = rows[0][1]
        second = rows[1][1] if len(rows) > 1 else None
        header = any(
            cell.strip()  # an empty cell is a missing value, not a column name
            and not _is_number(cell)
            and (second is None or (i < len(second) and _is_number(second[i])))
            for i, cell in enumerate(first)
        )
    names = [cell.strip() for cell in rows[0][1]] if header else None
    data = rows[1:] if header else rows
    if not data:
        msg = f"{where}: the file has a header but no data rows"
        raise ValueError(msg)
    return names, data


def csv_columns(
    path: str | os.PathLike[str], *, delimiter: str = ",", header: bool | str = "infer"
) -> tuple[int, list[str] | None]:
    """The number of columns of a CSV file and their names, read from its first rows as
    :func:`load_csv` reads them.

    Returns
    -------
    n_columns : int
    names : list of str, or None
        The header's names, or ``None`` when the file has no header.

    Raises
    ------
    ValueError
        As :func:`load_csv`, for a file that is not UTF-8 CSV text or holds no rows.
    """
    names, data = _csv_table(os.fspath(path), delimiter, header, limit=2)
    return (len(names) if names is not None else len(data[0][1])), names


@overload
def load_csv(
    path: str | os.PathLike[str],
    *,
    label_column: int | str = ...,
    delimiter: str = ...,
    header: bool | str = ...,
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]: ...


@overload
def load_csv(
    path: str | os.PathLike[str],
    *,
    label_column: None,
    delimiter: str = ...,
    header: bool | str = ...,
) -> tuple[np.ndarray[Any, Any], None]: ...


def load_csv(
    path: str | os.PathLike[str],
    *,
    label_column: int | str | None = -1,
    delimiter: str = ",",
    header: bool | str = "infer",
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any] | None]:
    """Features and labels from a CSV file.

    Parameters
    ----------
    path : str or path-like
        A UTF-8 text file (a byte-order mark is skipped); blank lines are skipped.
    label_column : int, str or None, default -1
        The column of the labels, by position (negative counts from the end) or by
        name (which needs a header).  Every other column is a feature.  ``None``: the
        file has no label column, every column is a feature, and ``y`` is ``None``.
    delimiter : str, default ","
    header : bool or "infer", default "infer"
        Whether the first row holds column names.  ``"infer"`` takes it for a header
        when one of its cells is neither empty nor a number where the next row's is a
        number.

    Returns
    -------
    X : numpy.ndarray, shape (n_samples, n_features), float64
    y : numpy.ndarray, shape (n_samples,), or None
        int64 if every label is an integer, else float64 if every label is a number,
        else strings; ``None`` for ``label_column=None``.

    Raises
    ------
    ValueError
        On a file that is not UTF-8 text (another encoding, a binary file), is not
        valid CSV (a field over the reader's limit of 131072 characters), a
        non-numeric feature, a row with the wrong number of fields or a file without
        data; the message names the file, and the line and column where there is one.
    KeyError
        If ``label_column`` names no column.
    """
    where = os.fspath(path)
    names, data = _csv_table(where, delimiter, header)
    n_columns = len(names) if names is not None else len(data[0][1])
    for line, row in data:
        if len(row) != n_columns:
            msg = (
                f"{where}: line {line} has {len(row)} fields but the "
                f"{'header' if names is not None else 'first row'} has {n_columns}"
            )
            raise ValueError(msg)
    label = None
    if label_column is not None:
        if n_columns < 2:
            msg = (
                f"{where}: needs at least one feature column and a label column, found {n_columns}"
            )
            raise ValueError(msg)
        label = _column_index(label_column, names, n_columns, where)
    features = [j for j in range(n_columns) if j != label]
    try:
        X = np.array([[float(row[j]) for j in features] for _, row in data], dtype=np.float64)
    except ValueError:
        line, row, j = next(
            (line, row, j) for line, row in data for j in features if not _is_number(row[j])
        )
        column = f"column {j}" + (f" ({_shown(names[j])})" if names is not None else "")
        found = _shown(row[j]) if row[j].strip() else "an empty field (a missing value)"
        msg = f"{where}: line {line}, {column}: expected a number, found {found}"
        raise ValueError(msg) from None
    X = X.reshape(len(data), len(features))
    if label is None:
        return X, None
    return X, _labels([row[label].strip() for _, row in data])


def _column_index(
    label_column: int | str, names: list[str] | None, n_columns: int, where: str
) -> int:
    if isinstance(label_column, str):
        if names is None:
            msg = (
                f"{where}: label_column={_shown(label_column)} names a column, but the file "
                "has no header; pass the column's position instead"
            )
            raise KeyError(msg)
        if label_column not in names:
            msg = f"{where}: no column named {_shown(label_column)}; the columns are {_few(names)}"
            raise KeyError(msg)
        return names.index(label_column)
    if isinstance(label_column, bool) or not isinstance(label_column, int):
        msg = f"label_column must be an int, a column name or None, got {label_column!r:.100}"
        raise TypeError(msg)
    if not -n_columns <= label_column < n_columns:
        msg = f"{where}: label_column={label_column} is out of range for {n_columns} columns"
        raise KeyError(msg)
    return label_column % n_columns


def _labels(cells: list[str]) -> np.ndarray[Any, Any]:
    try:
        return np.array([int(cell) for cell in cells], dtype=np.int64)
    except (ValueError, OverflowError):
        pass
    try:
        return np.array([float(cell) for cell in cells], dtype=np.float64)
    except ValueError:
        return np.array(cells, dtype=str)


#: The first bytes of a ZIP archive: a member's header, or the end record of an empty one.
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_NPY_MAGIC = b"\x93NUMPY"
#: Deflate expands data at most 1032-fold: a member that claims more is corrupt.
_DEFLATE_RATIO = 1032
#: How zipfile, zlib and NumPy's .npy reader refuse a damaged archive or member.
_DAMAGED = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    OSError,
    ValueError,
    RuntimeError,  # an encrypted member
    NotImplementedError,  # a compression method zipfile lacks
)
_CHUNK = 1 << 20


class _Unreadable(Exception):  # noqa: N818 - private: turned into a ValueError below
    """Why a member of an archive cannot be read, said of the array ("is truncated: ...")."""


def _npy_header(f: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype[Any]]:
    """The shape, Fortran order and dtype of the ``.npy`` data that ``f`` starts with."""
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        msg = f"has .npy format version {version[0]}.{version[1]}; versions 1.0 and 2.0 are read"
        raise _Unreadable(msg)
    return tuple(shape), bool(fortran), dtype


def _read_npy(f: IO[bytes], info: zipfile.ZipInfo) -> np.ndarray[Any, Any]:
    """The array of the archive's member ``info``, open as ``f``: its sizes are checked
    against the archive's before anything is allocated, and nothing is unpickled."""
    shape, fortran, dtype = _npy_header(f)
    if dtype.hasobject:
        msg = (
            f"cannot be read without unpickling: it holds Python objects (dtype {dtype}), and "
            "portprop reads archives as numpy.load(..., allow_pickle=False) does"
        )
        raise _Unreadable(msg)
    if any(n < 0 for n in shape):
        msg = f"is damaged: its header declares the shape {shape}"
        raise _Unreadable(msg)
    nbytes = math.prod(shape) * dtype.itemsize
    stored = info.file_size - f.tell()
    if nbytes != stored:
        msg = (
            f"is damaged or truncated: its header declares shape {shape} of {dtype}, "
            f"{nbytes:,} bytes, but the archive holds {stored:,} bytes of data for it"
        )
        raise _Unreadable(msg)
    stored_raw = info.compress_type == zipfile.ZIP_STORED
    if (stored_raw and info.file_size != info.compress_size) or (
        info.compress_type == zipfile.ZIP_DEFLATED
        and info.file_size > _DEFLATE_RATIO * info.compress_size + _CHUNK
    ):
        msg = (
            f"is damaged: the archive declares {info.file_size:,} bytes for it, from "
            f"{info.compress_size:,} bytes compressed, more than its compression can give"
        )
        raise _Unreadable(msg)
    data = bytearray(nbytes)
    view, done = memoryview(data), 0
    while done < nbytes:
        got = f.readinto(view[done : done + _CHUNK])  # type: ignore[attr-defined]
        if not got:
            msg = f"is truncated: {done:,} of its {nbytes:,} bytes are in the archive"
            raise _Unreadable(msg)
        done += got
    f.read()  # the end of the member, where zipfile checks its CRC-32
    if dtype.itemsize == 0:
        return np.zeros(shape, dtype=dtype)
    array = np.frombuffer(data, dtype=dtype, count=math.prod(shape))
    return array.reshape(shape, order="F" if fortran else "C")


def _npz_member(archive: zipfile.ZipFile, name: str, key: str, where: str) -> np.ndarray[Any, Any]:
    try:
        with archive.open(name) as f:
            return _read_npy(f, archive.getinfo(name))
    except _Unreadable as exc:
        msg = f"{where}: array {_shown(key)} {exc}"
    except _DAMAGED as exc:
        msg = f"{where}: array {_shown(key)} is damaged or truncated ({type(exc).__name__}: {exc})"
    raise ValueError(msg)


def _not_zip(head: bytes) -> str:
    """What a file that is not a ZIP archive looks like, from its first bytes."""
    if head.startswith(_NPY_MAGIC):
        return "holds a single array (an .npy file), not an .npz archive; save X and y with numpy.savez"
    if head.startswith(b"\x80"):
        return "is a Python pickle, not an .npz archive: it cannot be read without unpickling"
    return f"is not an .npz archive (a ZIP file of .npy arrays): it starts with {head!r}"


@overload
def load_npz(
    path: str | os.PathLike[str], *, features: str = ..., labels: str = ...
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]: ...


@overload
def load_npz(
    path: str | os.PathLike[str], *, features: str = ..., labels: None
) -> tuple[np.ndarray[Any, Any], None]: ...


def load_npz(
    path: str | os.PathLike[str], *, features: str = "X", labels: str | None = "y"
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any] | None]:
    """Features and labels from a NumPy ``.npz`` archive (never unpickled).

    Parameters
    ----------
    path : str or path-like
    features : str, default "X"
    labels : str or None, default "y"
        The names of the two arrays in the archive; ``labels=None`` reads the features
        alone, and ``y`` is ``None``.

    Returns
    -------
    X : numpy.ndarray, shape (n_samples, n_features), float64
    y : numpy.ndarray, shape (n_samples,), its dtype as stored; or None

    Raises
    ------
    KeyError
        If the archive has no array of that name (the message lists its arrays).
    ValueError
        If the file is not an ``.npz`` archive (an ``.npy`` file, a pickle), is
        damaged or truncated (each array's size, from its ``.npy`` header, is checked
        against the archive before anything is allocated), holds object arrays, or
        the arrays have the wrong shapes or dtypes.  The message names the file.
    """
    where = os.fspath(path)
    with Path(where).open("rb") as f:
        head = f.read(8)
        if not head.startswith(_ZIP_MAGIC):
            msg = f"{where}: {_not_zip(head)}"
            raise ValueError(msg)
        f.seek(0)
        try:
            archive = zipfile.ZipFile(f)
        except _DAMAGED as exc:
            msg = f"{where}: a damaged or truncated .npz archive ({type(exc).__name__}: {exc})"
            raise ValueError(msg) from None
        with archive:
            members = {name.removesuffix(".npy"): name for name in archive.namelist()}
            arrays = {}
            for role, key in (("features", features), ("labels", labels)):
                if key is None:
                    continue
                if key not in members:
                    msg = (
                        f"{where}: no array named {_shown(key)} for the {role}; the archive "
                        f"holds {_few(list(members))}"
                    )
                    raise KeyError(msg)
                arrays[role] = _npz_member(archive, members[key], key, where)
    X = arrays["features"]
    if X.dtype.kind not in "biuf" or X.ndim != 2:
        msg = (
            f"{where}: array {_shown(features)} must be a 2-D numeric array (samples, "
            f"features), got shape {X.shape} and dtype {X.dtype}"
        )
        raise ValueError(msg)
    if labels is None:
        return X.astype(np.float64), None
    y = arrays["labels"]
    if y.ndim != 1 or y.shape[0] != X.shape[0]:
        msg = (
            f"{where}: array {_shown(labels)} must be 1-D with one label per sample "
            f"({X.shape[0]}), got shape {y.shape}"
        )
        raise ValueError(msg)
    return X.astype(np.float64), y


# --------------------------------------------------------------------------------------
# Splitting and scaling
# --------------------------------------------------------------------------------------


def train_test_split(
    X: Any, y: Any, test_size: float = 0.2, stratify: bool = True, seed: int = 0
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Shuffle host arrays and split them, as ``X_train, X_test, y_train, y_test``.

    Parameters
    ----------
    X : array-like, shape (n_samples, ...)
    y : array-like, shape (n_samples,)
    test_size : float or int, default 0.2
        A fraction in ``(0, 1)`` (the count is rounded up) or a number of samples.
    stratify : bool, default True
        Keep each class's share the same in both parts (within one sample).  Needs
        class labels: pass ``stratify=False`` for real-valued targets.
    seed : int, default 0
        Seed of the shuffle; the same seed gives the same split.
    """
    X, y = np.asarray(as_array(X, "X")), np.asarray(as_array(y, "y"))
    n = X.shape[0] if X.ndim else 0
    if y.ndim != 1 or y.shape[0] != n:
        msg = f"y must be 1-D with one label per sample of X ({n}), got shape {y.shape}"
        raise ValueError(msg)
    if n < 2:
        msg = f"train_test_split needs at least 2 samples, got {n}"
        raise ValueError(msg)
    n_test = _test_count(test_size, n)
    rng = np.random.default_rng(seed)
    if stratify:
        if y.dtype.kind == "f" and not np.all(np.isfinite(y) & (y == np.round(y))):
            msg = (
                "stratify=True needs class labels, but y holds non-integral floats; "
                "pass stratify=False for a regression target"
            )
            raise ValueError(msg)
        _, inverse = np.unique(y, return_inverse=True)
        counts = np.bincount(inverse)
        exact = counts * n_test / n
        share = np.floor(exact).astype(np.int64)
        # the remaining test samples go to the classes with the largest remainders
        order = rng.permutation(len(counts))
        order = order[np.argsort(share[order] - exact[order], kind="stable")]
        share[order[: n_test - int(share.sum())]] += 1
        test = np.concatenate(
            [rng.permutation(np.flatnonzero(inverse == c))[: share[c]] for c in range(len(counts))]
        )
    else:
        test = rng.permutation(n)[:n_test]
    in_test = np.zeros(n, dtype=bool)
    in_test[test] = True
    train_idx = rng.permutation(np.flatnonzero(~in_test))
    test_idx = rng.permutation(np.flatnonzero(in_test))
    return X[train_idx], X[test_idx], y[train_idx], y[test_idx]


def _test_count(test_size: float, n: int) -> int:
    if isinstance(test_size, bool) or not isinstance(test_size, int | float | np.number):
        msg = f"test_size must be a fraction or a number of samples, got {test_size!r}"
        raise TypeError(msg)
    if isinstance(test_size, int | np.integer):
        count = int(test_size)
        if not 1 <= count < n:
            msg = f"test_size={count} must leave both parts non-empty: between 1 and {n - 1}"
            raise ValueError(msg)
        return count
    if not 0.0 < float(test_size) < 1.0:
        msg = f"test_size must be a fraction in (0, 1) or a count, got {test_size!r}"
        raise ValueError(msg)
    return min(max(math.ceil(float(test_size) * n), 1), n - 1)


class Standardizer:
    """Scale each feature to mean 0 and variance 1: ``(X - mean_) / scale_``.

    Fitted on the host in float64; :meth:`transform` and :meth:`inverse_transform` take
    host arrays and arrays of any backend, compute in the array's namespace and return
    an array of the same backend, device and floating dtype (float64 for integers on
    NumPy).

    Attributes
    ----------
    mean_, scale_ : numpy.ndarray, shape (n_features,), float64
        The mean and the standard deviation of each feature (1 where a feature is
        constant, so that it maps to 0 instead of dividing by zero).
    """

    def __init__(self) -> None:
        self.mean_: np.ndarray[Any, Any] | None = None
        self.scale_: np.ndarray[Any, Any] | None = None

    def fit(self, X: Any) -> Standardizer:
        """Compute the mean and scale of each column of ``X``, shape (n_samples, n_features)."""
        X = as_array(X, "X")
        host = backend_of(X).to_host(X)
        if host.ndim != 2 or host.shape[0] < 1 or host.dtype.kind not in "biuf":
            msg = (
                "X must be a non-empty 2-D numeric array (samples, features), got shape "
                f"{host.shape} and dtype {host.dtype}.{rank_hint('X', host.ndim)}"
            )
            raise ValueError(msg)
        host = host.astype(np.float64)
        bad = ~np.isfinite(host)
        if np.any(bad):  # the statistics would be NaN, and so would every scaled value
            row, col = (int(i) for i in np.argwhere(bad)[0])
            what = "NaN" if np.isnan(host[row, col]) else "infinity"
            msg = (
                f"Input X contains {what} (first at sample {row}, feature {col}; "
                f"{int(bad.sum())} NaN or infinite values in all): the Standardizer needs "
                "finite values"
            )
            raise ValueError(msg)
        mean = host.mean(axis=0)
        std = host.std(axis=0)
        # as scikit-learn does: a scale this close to 0 is a constant feature
        self.mean_ = mean
        self.scale_ = np.where(std < 10 * np.finfo(np.float64).eps, 1.0, std)
        return self

    def transform(self, X: Any) -> Any:
        """``(X - mean_) / scale_``, in the namespace of ``X``."""
        X, mean, scale = self._prepare(X)
        return (X - mean) / scale

    def inverse_transform(self, X: Any) -> Any:
        """``X * scale_ + mean_``, in the namespace of ``X``."""
        X, mean, scale = self._prepare(X)
        return X * scale + mean

    def fit_transform(self, X: Any) -> Any:
        """:meth:`fit`, then :meth:`transform`."""
        return self.fit(X).transform(X)

    def _prepare(self, X: Any) -> tuple[Any, Any, Any]:
        if self.mean_ is None or self.scale_ is None:
            msg = "this Standardizer is not fitted yet: call fit(X) first"
            raise RuntimeError(msg)
        X = as_array(X, "X")
        backend = backend_of(X, names=("X",))
        xp = backend.xp
        if X.ndim != 2 or X.shape[1] != self.mean_.shape[0]:
            msg = (
                f"X must have shape (n_samples, {self.mean_.shape[0]}), the number of features "
                f"the Standardizer was fitted on, got {tuple(X.shape)}"
            )
            raise ValueError(msg)
        if xp.isdtype(X.dtype, "real floating"):
            dtype = X.dtype
        else:
            dtype = backend.float_dtype("float64" if backend.supports("float64") else "float32")
            X = xp.astype(X, dtype)
        mean = backend.asarray(self.mean_, dtype=dtype)
        scale = backend.asarray(self.scale_, dtype=dtype)
        return X, mean, scale

    def to_dict(self) -> dict[str, list[float]]:
        """The fitted values as plain lists (JSON: a checkpoint's ``extra``); float64 values
        survive JSON exactly."""
        if self.mean_ is None or self.scale_ is None:
            msg = "this Standardizer is not fitted yet: call fit(X) first"
            raise RuntimeError(msg)
        return {"mean": self.mean_.tolist(), "scale": self.scale_.tolist()}

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> Standardizer:
        """A fitted Standardizer from :meth:`to_dict`."""
        if not isinstance(state, Mapping) or not {"mean", "scale"} <= state.keys():
            msg = f"state must be a dict with 'mean' and 'scale', got {state!r:.200}"
            raise ValueError(msg)
        mean = np.asarray(state["mean"], dtype=np.float64)
        scale = np.asarray(state["scale"], dtype=np.float64)
        if mean.ndim != 1 or mean.shape != scale.shape:
            msg = f"mean and scale must be 1-D of one length, got {mean.shape} and {scale.shape}"
            raise ValueError(msg)
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(scale)) and np.all(scale > 0)):
            msg = "mean must be finite and scale finite and positive"
            raise ValueError(msg)
        fitted = cls()
        fitted.mean_, fitted.scale_ = mean, scale
        return fitted

    def __repr__(self) -> str:
        if self.mean_ is None:
            return "Standardizer()"
        return f"Standardizer(n_features={self.mean_.shape[0]})"
