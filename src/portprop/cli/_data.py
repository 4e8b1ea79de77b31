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
from typing import Any

import numpy as np

from portprop.cli._common import _UserError
from portprop.datasets import load_csv, load_digits, load_npz, make_disk
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


def _predict_features(args: argparse.Namespace, n_features: int) -> np.ndarray[Any, Any]:
    path = Path(args.input)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            if args.features_key not in archive.files:
                msg = (
                    f"{args.input}: no array named {args.features_key!r}; the archive holds "
                    f"{archive.files} (choose with --features-key)"
                )
                raise _UserError(msg)
            X = archive[args.features_key]
    elif suffix == ".csv":
        # load_csv splits off one column: the label column if the file has one ...
        X, _ = load_csv(path, label_column=args.label_column)
        columns = X.shape[1] + 1
        if columns == n_features:  # ... else a feature: take every column, in order
            X, last = load_csv(path, label_column=-1)
            if last.dtype.kind not in "biuf":
                msg = f"{args.input}: the last column holds {last[0]!r}, not a number"
                raise _UserError(msg)
            X = np.concatenate([X, last.astype(np.float64).reshape(-1, 1)], axis=1)
        elif columns != n_features + 1:
            msg = (
                f"{args.input} has {columns} columns, but the model takes {n_features} "
                f"features (give those, or those and a label column)"
            )
            raise _UserError(msg)
    elif path.exists():
        msg = f"{args.input!r}: cannot read {suffix or 'a file without suffix'}: expected .csv or .npz"
        raise _UserError(msg)
    else:
        raise FileNotFoundError(2, "No such file or directory", args.input)
    if X.ndim != 2 or X.shape[1] != n_features or X.dtype.kind not in "biuf":
        msg = (
            f"{args.input}: expected numeric features of shape (samples, {n_features}), got "
            f"shape {X.shape} and dtype {X.dtype}"
        )
        raise _UserError(msg)
    features: np.ndarray[Any, Any] = X.astype(np.float64)
    require_finite(features, args.input)
    return features
