"""Reading and checking the data the ``portprop`` command gets.

A data set named by ``--dataset`` (``disk``, ``digits``, a ``.csv`` or ``.npz`` file),
loaded onto the host as float64 features and labels and refused, naming the file, when
no model can be trained or evaluated on it; and the features that ``portprop predict``
reads.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from portprop.cli._common import PROG, _UserError
from portprop.datasets import csv_columns, load_csv, load_digits, load_npz, make_disk
from portprop.training.validation import require_features, require_finite, require_samples


@dataclass
class _Data:
    """Host features (float64) and labels, and where they came from."""

    X: np.ndarray[Any, Any]
    y: np.ndarray[Any, Any]
    source: dict[str, Any]  # recorded in the checkpoint, compared by evaluate
    name: str


def _load_data(
    dataset: str,
    *,
    samples: int,
    seed: int,
    label_column: int | str,
    features_key: str,
    labels_key: str,
) -> _Data:
    if dataset == "disk":
        X, y = make_disk(samples, seed=seed, backend="numpy", dtype="float64")
        source: dict[str, Any] = {"dataset": "disk", "samples": samples, "seed": seed}
        data = _Data(np.asarray(X), np.asarray(y), source, f"disk ({samples} points, seed {seed})")
    elif dataset == "digits":
        X, y = load_digits(backend="numpy", dtype="float64")
        data = _Data(np.asarray(X), np.asarray(y), {"dataset": "digits"}, "digits")
    else:
        path = Path(dataset)
        suffix = path.suffix.lower()
        if suffix not in (".csv", ".npz"):
            if path.exists():
                kind = f"a {suffix} file" if suffix else "a file without a suffix"
                msg = f"{dataset!r}: cannot read {kind}: expected a .csv or .npz file"
                raise _UserError(msg)
            msg = (
                f"unknown dataset {dataset!r}: expected 'disk', 'digits', or the path of a "
                ".csv or .npz file"
            )
            raise _UserError(msg)
        if suffix == ".csv":
            X, y = load_csv(path, label_column=label_column)
        else:
            X, y = load_npz(path, features=features_key, labels=labels_key)
        source = {
            "dataset": "file",
            "path": str(path.resolve()),
            "label_column": label_column,
            "features_key": features_key,
            "labels_key": labels_key,
        }
        data = _Data(X, y, source, str(path))
    _check_data(data)
    return data


def _check_data(data: _Data) -> None:
    """Refuse data that no model can be trained or evaluated on, naming the file."""
    require_samples(data.X, data.name, "a model")
    require_features(data.X, data.name, "a model")
    require_finite(data.X, data.name)
    y = data.y
    if y.dtype.kind not in "biufUS":
        msg = (
            f"{data.name}: the labels must be integers, real numbers, booleans or strings, "
            f"got dtype {y.dtype}"
        )
        raise _UserError(msg)
    if y.dtype.kind == "f":
        require_finite(y, f"{data.name} (labels)")


def _is_none(label_column: int | str | None) -> bool:
    return isinstance(label_column, str) and label_column.lower() == "none"


def _which_column(j: int, count: int, names: list[str] | None) -> str:
    """Column ``j`` of ``count`` as the user sees it: "the last column ('label')"."""
    where = {0: "the first column", count - 1: "the last column"}.get(j, f"column {j}")
    return where + (f" ({names[j][:40]!r})" if names is not None else "")


def _trained_column(trained: int | str, count: int, names: list[str] | None) -> int:
    """The training run's label column in a file of ``count`` columns, else the last."""
    if isinstance(trained, str):
        return names.index(trained) if names is not None and trained in names else count - 1
    return trained % count if -count <= trained < count else count - 1


def _csv_features(
    source: str, label_column: int | str | None, n_features: int, trained: int | str, err: TextIO
) -> np.ndarray[Any, Any]:
    """The features of a CSV file for a model of ``n_features`` inputs: every column, or
    every column but the label column (see ``portprop predict --help``); ``trained`` is
    the label column of the training run, taken when ``label_column`` is ``None``."""
    count, names = csv_columns(source)
    shown = f"{count} column{'s' if count != 1 else ''}"
    if _is_none(label_column) or (label_column is None and count == n_features):
        if count != n_features:
            msg = (
                f"{source} has {shown}, but the model takes {n_features} features "
                "(--label-column none: every column is a feature)"
            )
            raise _UserError(msg)
        X, _ = load_csv(source, label_column=None)
        return X
    if count != n_features + 1:
        if label_column is None:
            hint = " (give those, or those and a label column)" if count > n_features else ""
            msg = (
                f"{source} has {shown}, but the model takes {n_features} feature"
                f"{'s' if n_features != 1 else ''}{hint}"
            )
        else:
            msg = (
                f"{source} has {shown}, but with --label-column {label_column} the model "
                f"needs {n_features + 1}: {n_features} features and the label column"
            )
        raise _UserError(msg)
    if label_column is not None:
        X, _ = load_csv(source, label_column=label_column)
    else:
        j = _trained_column(trained, count, names)
        X, _ = load_csv(source, label_column=j)
        err.write(
            f"{PROG}: note: {source}: {shown} for a model of {n_features} features: "
            f"{_which_column(j, count, names)} taken as the label column and ignored "
            "(--label-column none refuses such a file)\n"
        )
    return X


def _predict_features(
    args: argparse.Namespace, n_features: int, trained_label: int | str, err: TextIO
) -> np.ndarray[Any, Any]:
    """The features ``predict`` reads from ``args.input``, float64 ``(samples, n_features)``."""
    path = Path(args.input)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        try:
            X, _ = load_npz(path, features=args.features_key, labels=None)
        except KeyError as exc:
            msg = f"{exc.args[0]} (choose with --features-key)"
            raise _UserError(msg) from None
    elif suffix == ".csv":
        X = _csv_features(args.input, args.label_column, n_features, trained_label, err)
    elif path.exists():
        msg = f"{args.input!r}: cannot read {suffix or 'a file without suffix'}: expected .csv or .npz"
        raise _UserError(msg)
    else:
        raise FileNotFoundError(2, "No such file or directory", args.input)
    if X.shape[1] != n_features:
        msg = (
            f"{args.input}: expected numeric features of shape (samples, {n_features}), got "
            f"shape {X.shape}"
        )
        raise _UserError(msg)
    require_finite(X, args.input)
    return X
