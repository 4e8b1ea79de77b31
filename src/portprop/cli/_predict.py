"""``portprop predict``: a saved model's predictions for new samples, as CSV.

The model's outputs become the predicted class and the class probabilities (or the
scores, or the regression values), written to standard output or atomically to a file.
"""

from __future__ import annotations

import argparse
import csv
import io
from typing import Any, TextIO

import numpy as np

from portprop.cli._common import _check_parent
from portprop.cli._data import _predict_features
from portprop.cli._task import _load_saved, _Task
from portprop.io.atomic import write_atomically
from portprop.training import predict


def _softmax(z: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)  # type: ignore[no-any-return]


def _prediction_rows(
    task: _Task, outputs: np.ndarray[Any, Any]
) -> tuple[list[str], list[list[Any]]]:
    """The CSV header and rows for the model's outputs ``(samples, outputs)``."""
    z = outputs.astype(np.float64)
    if task.classes is None:
        header = (
            ["prediction"] if z.shape[1] == 1 else [f"prediction_{i}" for i in range(z.shape[1])]
        )
        return header, [[_number(v) for v in row] for row in z]
    if task.loss == "bce":
        p1 = 0.5 * (1.0 + np.tanh(0.5 * z[:, 0]))  # the logistic function, without overflow
        values = np.stack([1.0 - p1, p1], axis=1)
    elif task.loss == "cross_entropy":
        values = _softmax(z)
    else:
        values = z
    prefix = "score" if task.loss == "mse" else "probability"
    header = ["prediction", *(f"{prefix}_{c}" for c in task.classes)]
    best = np.argmax(values, axis=1)
    rows = [
        [task.classes[int(k)], *(_number(v) for v in row)]
        for k, row in zip(best, values, strict=True)
    ]
    return header, rows


def _number(v: Any) -> str:
    return f"{float(v):.9g}"  # enough digits to recover a float32 exactly


def _predict(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    to_file = args.output not in (None, "-")
    if to_file:
        _check_parent(args.output, "--output")
    saved = _load_saved(args.model, args.backend, err)
    trained_label = saved.source.get("label_column", -1)
    X = _predict_features(args, saved.n_features, trained_label, err)
    features = X if saved.standardizer is None else saved.standardizer.transform(X)
    model = saved.checkpoint.model
    outputs = np.asarray(
        model.backend.to_host(predict(model, features, batch_size=args.batch_size))
    )
    header, rows = _prediction_rows(saved.task, outputs)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    if to_file:
        data = text.getvalue().encode("utf-8")
        write_atomically(args.output, lambda f: f.writelines([data]))
    else:
        out.write(text.getvalue())
    return 0
