"""The ``portprop`` command: train, evaluate and apply an MLP from the shell.

::

    portprop train --dataset digits --save digits.safetensors --plot digits.png
    portprop evaluate digits.safetensors --dataset digits
    portprop predict digits.safetensors samples.csv --output predictions.csv
    portprop backends

``python -m portprop ...`` runs the same command.  ``portprop COMMAND --help`` lists
every option with its default.

train
-----
1. Loads the data set: ``disk`` (the lecture's problem, ``--samples`` points drawn with
   ``--seed``), ``digits`` (scikit-learn's 8x8 digits, nothing downloaded), or a
   ``.csv`` file (``--label-column``) or ``.npz`` archive (``--features-key``,
   ``--labels-key``).
2. Holds out ``--test-size`` of it for testing, then ``--validation-split`` of the rest
   for validation; both splits are shuffled with ``--seed`` and stratified by class.
3. Fits a :class:`~portprop.datasets.Standardizer` on the training part alone and
   scales every part with it.
4. Builds ``Linear`` layers of ``--hidden`` units with ``--activation`` between them
   (and ``Dropout(--dropout)`` after each activation), seeded by ``--seed``, and trains
   them with :func:`portprop.fit` (a progress bar per epoch on a terminal, one line per
   epoch otherwise; ``--quiet`` silences it, ``--verbose`` prints a line per epoch
   always).
5. Prints a table of the loss and accuracy on the train, validation and test parts,
   each computed after training in evaluation mode (no dropout), then the time per
   epoch, the backend and the device.

``--save`` writes a checkpoint (:func:`portprop.save`) whose ``extra`` holds what
``evaluate`` and ``predict`` need: the standardizer's statistics, the loss, the class
labels, how the data were loaded and split, the training settings, the final metrics and
the history.  ``--plot PATH`` draws the loss and accuracy curves (train and validation)
into ``PATH``; for 2-D inputs it also draws the decision boundary, with the test
samples, into a second file ``<stem>_boundary<suffix>`` beside it.

Targets follow the loss:

- ``cross_entropy``: class labels (integers or strings), one output per class;
- ``bce``: exactly two classes, one output (a logit for the second class);
- ``mse``: class labels become one-hot targets (one output per class, the lecture's
  setting, accuracy by argmax); labels that are real, non-integral numbers make a
  regression with one output (no accuracy).

evaluate
--------
Loads a checkpoint (on ``--backend``, default the current one), applies the stored
standardization and prints the loss and accuracy on the data.  ``--split`` picks which
data: ``test`` redoes the train/test split recorded in the checkpoint and evaluates the
test part; ``all`` takes the whole data set; ``auto`` (the default) takes ``test`` when
the data set is the one the model was trained on (same name, or the same file, and for
``disk`` the same samples and seed), so that the numbers repeat ``train``'s test row,
and ``all`` otherwise.  The output says which it used.

predict
-------
Reads features from a ``.csv`` file (the model's number of feature columns, or one more:
the label column, given by ``--label-column``, which is dropped) or an ``.npz`` archive
(``--features-key``), applies the stored standardization and writes one CSV row per
sample: ``prediction`` (the class label) and ``probability_<class>`` for each class, for
a model trained with ``cross_entropy`` or ``bce``; ``prediction`` and ``score_<class>``
(the raw outputs) for ``mse`` on classes; ``prediction`` (or ``prediction_<i>`` per
output) for a regression.  It writes to standard output, or to ``--output`` atomically
(a temporary file renamed onto the target).

Errors
------
A bad flag, an unknown data set, a missing or corrupt file, or a backend that cannot run
here prints one line, ``portprop: error: ...``, on standard error and exits with status
2; an interrupt exits with 130.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import math
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TextIO

import numpy as np

from portprop import plots
from portprop._backend import Backend, describe_backends, dtype_name, get_backend, manual_seed
from portprop._io import write_atomically
from portprop.checkpoint import Checkpoint, load, save
from portprop.datasets import (
    Standardizer,
    load_csv,
    load_digits,
    load_npz,
    make_disk,
    train_test_split,
)
from portprop.errors import PortpropError
from portprop.layers import Dropout, LeakyReLU, Linear, ReLU, Sigmoid, Tanh
from portprop.losses import BCEWithLogitsLoss, CrossEntropyLoss, Loss, MSELoss
from portprop.module import Module, Parameter, Sequential
from portprop.optim import SGD, Adam, AdamW, Optimizer, RMSprop
from portprop.training import evaluate, fit, predict

__all__ = ["main"]

PROG = "portprop"

#: What ``portprop train`` does without options (see the README for what it reaches).
DEFAULTS: dict[str, Any] = {
    "hidden": (128, 64),
    "activation": "relu",
    "loss": "cross_entropy",
    "optimizer": "adam",
    "epochs": 40,
    "batch_size": 64,
    "seed": 0,
    "validation_split": 0.1,
    "test_size": 0.2,
    "samples": 2000,
    "dtype": "float32",
}
#: The learning rate of each optimizer when ``--lr`` is not given.
DEFAULT_LR = {"sgd": 0.05, "adam": 1e-3, "adamw": 1e-3, "rmsprop": 1e-3}
#: The momentum of each optimizer that has one, when ``--momentum`` is not given.
DEFAULT_MOMENTUM = {"sgd": 0.9, "rmsprop": 0.0}

ACTIVATIONS: dict[str, type[Module]] = {
    "relu": ReLU,
    "tanh": Tanh,
    "sigmoid": Sigmoid,
    "leaky_relu": LeakyReLU,
}
LOSSES = ("cross_entropy", "mse", "bce")
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")

#: ``extra["written_by"]`` of the checkpoints that ``portprop train`` writes.
WRITTEN_BY = "portprop train"


class _UserError(ValueError):
    """A request that cannot be carried out; :func:`main` prints it on one line."""


# --------------------------------------------------------------------------------------
# Argument types
# --------------------------------------------------------------------------------------


def _int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            msg = f"expected an integer >= {low}, got {text!r}"
            raise argparse.ArgumentTypeError(msg) from None
        if value < low:
            msg = f"expected an integer >= {low}, got {value}"
            raise argparse.ArgumentTypeError(msg)
        return value

    return parse


def _float_in(
    low: float, high: float, *, low_open: bool, high_open: bool
) -> Callable[[str], float]:
    left, right = "(" if low_open else "[", ")" if high_open else "]"
    shown = f"{left}{low:g}, {'inf' if math.isinf(high) else f'{high:g}'}{right}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            msg = f"expected a number in {shown}, got {text!r}"
            raise argparse.ArgumentTypeError(msg) from None
        too_low = value <= low if low_open else value < low
        too_high = value >= high if high_open else value > high
        if math.isnan(value) or too_low or too_high:
            msg = f"expected a number in {shown}, got {text}"
            raise argparse.ArgumentTypeError(msg)
        return value

    return parse


_positive = _float_in(0.0, math.inf, low_open=True, high_open=True)
_non_negative = _float_in(0.0, math.inf, low_open=False, high_open=True)
_fraction = _float_in(0.0, 1.0, low_open=False, high_open=True)


def _test_size(text: str) -> float | int:
    """A fraction in (0, 1), or a number of samples."""
    try:
        count = int(text)
    except ValueError:
        return _float_in(0.0, 1.0, low_open=True, high_open=True)(text)
    if count < 1:
        msg = f"expected a fraction in (0, 1) or a number of samples >= 1, got {count}"
        raise argparse.ArgumentTypeError(msg)
    return count


def _hidden(text: str) -> tuple[int, ...]:
    """``"128,64"`` -> ``(128, 64)``; ``""`` or ``"none"``: no hidden layer."""
    if text.strip().lower() in ("", "none"):
        return ()
    widths = []
    for part in text.split(","):
        try:
            width = int(part)
        except ValueError:
            width = 0
        if width < 1:
            msg = f"expected comma-separated layer widths >= 1 such as 128,64, got {text!r}"
            raise argparse.ArgumentTypeError(msg)
        widths.append(width)
    return tuple(widths)


def _column(text: str) -> int | str:
    """A column position (negative counts from the end) or a column name."""
    try:
        return int(text)
    except ValueError:
        return text


# --------------------------------------------------------------------------------------
# The parser
# --------------------------------------------------------------------------------------


#: Appended to an option's help: argparse fills in the default.
_DEFAULT = " (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line: ``portprop: error: ...``, status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{PROG}: error: {message} (see '{self.prog} --help')\n")


def _add_data_options(p: argparse.ArgumentParser, *, dataset_required: bool) -> None:
    p.add_argument(
        "--dataset",
        required=dataset_required,
        metavar="DATASET",
        help="'disk', 'digits', or the path of a .csv or .npz file",
    )
    p.add_argument(
        "--label-column",
        type=_column,
        default=-1,
        metavar="COLUMN",
        help="CSV: the label column, by position (negative from the end) or name" + _DEFAULT,
    )
    p.add_argument(
        "--features-key", default="X", metavar="KEY", help="NPZ: the features array" + _DEFAULT
    )
    p.add_argument(
        "--labels-key", default="y", metavar="KEY", help="NPZ: the labels array" + _DEFAULT
    )


def _add_backend_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--backend",
        metavar="NAME",
        help="numpy, torch, torch:cuda, jax, array_api_strict, cupy, ... "
        "(default: $PORTPROP_BACKEND, else numpy); see 'portprop backends'",
    )


def _build_parser() -> _Parser:
    from portprop import __version__  # noqa: PLC0415 - the package is loaded by now

    parser = _Parser(
        prog=PROG,
        description="Train, evaluate and apply multilayer perceptrons with hand-written "
        "back-propagation, on any array API backend.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train(commands)
    _add_evaluate(commands)
    _add_predict(commands)
    bk = commands.add_parser(
        "backends",
        help="list the backends: available (with their devices) or why not",
        description="List every registered backend: available, with its devices, or why not.",
    )
    bk.set_defaults(run=_backends)
    return parser


def _add_train(commands: Any) -> None:
    d = DEFAULTS
    p = commands.add_parser(
        "train",
        help="train an MLP on a data set and print its loss and accuracy",
        description="Train an MLP: split the data (stratified, seeded), standardize it with "
        "the training part's statistics, fit, and print the loss and accuracy on the "
        "train, validation and test parts.",
    )
    _add_data_options(p, dataset_required=True)
    p.add_argument(
        "--samples", type=_int_at_least(2), default=d["samples"], help="disk: points" + _DEFAULT
    )
    p.add_argument(
        "--hidden",
        type=_hidden,
        default=",".join(str(w) for w in d["hidden"]),
        metavar="WIDTHS",
        help="hidden layer widths, comma-separated; 'none' for no hidden layer" + _DEFAULT,
    )
    p.add_argument(
        "--activation", choices=tuple(ACTIVATIONS), default=d["activation"], help=_DEFAULT[1:]
    )
    p.add_argument("--loss", choices=LOSSES, default=d["loss"], help=_DEFAULT[1:])
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=d["optimizer"], help=_DEFAULT[1:])
    p.add_argument(
        "--lr",
        type=_positive,
        metavar="RATE",
        help="learning rate (default: "
        + ", ".join(f"{k} {v:g}" for k, v in DEFAULT_LR.items())
        + ")",
    )
    p.add_argument(
        "--momentum",
        type=_non_negative,
        metavar="M",
        help="sgd and rmsprop only (default: "
        + ", ".join(f"{k} {v:g}" for k, v in DEFAULT_MOMENTUM.items())
        + ")",
    )
    p.add_argument("--epochs", type=_int_at_least(1), default=d["epochs"], help=_DEFAULT[1:])
    p.add_argument(
        "--batch-size",
        type=_int_at_least(1),
        default=d["batch_size"],
        metavar="N",
        help=_DEFAULT[1:],
    )
    _add_backend_option(p)
    p.add_argument("--dtype", choices=("float32", "float64"), default=d["dtype"], help=_DEFAULT[1:])
    p.add_argument(
        "--seed",
        type=_int_at_least(0),
        default=d["seed"],
        help="seeds the disk points, the splits, the initial weights, the shuffling and the "
        "dropout masks" + _DEFAULT,
    )
    p.add_argument(
        "--validation-split",
        type=_fraction,
        default=d["validation_split"],
        metavar="FRACTION",
        help="share of the training part held out for validation, 0 for none" + _DEFAULT,
    )
    p.add_argument(
        "--test-size",
        type=_test_size,
        default=d["test_size"],
        metavar="SIZE",
        help="share (or number) of the samples held out for testing" + _DEFAULT,
    )
    p.add_argument(
        "--dropout",
        type=_fraction,
        default=0.0,
        metavar="P",
        help="dropout probability after each hidden activation, 0 for none" + _DEFAULT,
    )
    p.add_argument("--save", metavar="PATH", help="write the trained model to this checkpoint")
    p.add_argument(
        "--plot",
        metavar="PATH",
        help="draw the loss and accuracy curves into PATH (.png, .svg, .pdf) and, for 2-D "
        "inputs, the decision boundary into <stem>_boundary<suffix> beside it (needs "
        "matplotlib)",
    )
    _add_verbosity(p)
    p.set_defaults(run=_train)


def _add_evaluate(commands: Any) -> None:
    p = commands.add_parser(
        "evaluate",
        help="print a saved model's loss and accuracy on a data set",
        description="Evaluate a checkpoint written by 'portprop train', with the "
        "standardization stored in it.",
    )
    p.add_argument("model", metavar="MODEL", help="a checkpoint written by 'portprop train'")
    _add_data_options(p, dataset_required=True)
    p.add_argument(
        "--split",
        choices=("auto", "test", "all"),
        default="auto",
        help="'test': the test part of the split recorded in the checkpoint; 'all': the "
        "whole data set; 'auto': 'test' for the data set the model was trained on, else "
        "'all'" + _DEFAULT,
    )
    p.add_argument(
        "--samples",
        type=_int_at_least(2),
        help="disk: points (default: the training run's)",
    )
    p.add_argument(
        "--seed",
        type=_int_at_least(0),
        help="disk: the seed of the points (default: the training run's)",
    )
    p.add_argument(
        "--batch-size", type=_int_at_least(1), default=256, metavar="N", help=_DEFAULT[1:]
    )
    _add_backend_option(p)
    p.set_defaults(run=_evaluate)


def _add_predict(commands: Any) -> None:
    p = commands.add_parser(
        "predict",
        help="write a saved model's predictions for new samples as CSV",
        description="Predict with a checkpoint written by 'portprop train', applying the "
        "standardization stored in it, and write CSV: the predicted class and the class "
        "probabilities (or the regression values) of each sample.",
    )
    p.add_argument("model", metavar="MODEL", help="a checkpoint written by 'portprop train'")
    p.add_argument("input", metavar="INPUT", help="a .csv or .npz file of samples")
    p.add_argument(
        "--output", "-o", metavar="OUT.csv", help="write here (atomically) instead of stdout"
    )
    p.add_argument(
        "--label-column",
        type=_column,
        default=-1,
        metavar="COLUMN",
        help="CSV: the column to drop when INPUT has one more column than the model has "
        "features" + _DEFAULT,
    )
    p.add_argument(
        "--features-key", default="X", metavar="KEY", help="NPZ: the features array" + _DEFAULT
    )
    p.add_argument(
        "--batch-size", type=_int_at_least(1), default=256, metavar="N", help=_DEFAULT[1:]
    )
    _add_backend_option(p)
    p.set_defaults(run=_predict)


def _add_verbosity(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--verbose", "-v", action="store_true", help="one line per epoch, always; more details"
    )
    group.add_argument(
        "--quiet", "-q", action="store_true", help="no progress and no notes: the results only"
    )


# --------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------


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
    n_samples, n_features = data.X.shape
    if n_samples == 0:
        msg = f"{data.name}: holds no samples (features of shape {data.X.shape})"
        raise _UserError(msg)
    if n_features == 0:
        msg = f"{data.name}: holds no feature columns (features of shape {data.X.shape})"
        raise _UserError(msg)
    _check_finite(data.X, data.name)
    y = data.y
    if y.dtype.kind not in "biufUS":
        msg = (
            f"{data.name}: the labels must be integers, real numbers, booleans or strings, "
            f"got dtype {y.dtype}"
        )
        raise _UserError(msg)
    if y.dtype.kind == "f":
        bad = ~np.isfinite(y)
        if np.any(bad):
            first = int(np.argmax(bad))
            msg = (
                f"{data.name}: the labels hold {int(bad.sum())} NaN or infinite values (the "
                f"first in sample {first}: {y[first]}); clean the data first"
            )
            raise _UserError(msg)


def _check_finite(X: np.ndarray[Any, Any], name: str) -> None:
    bad = ~np.isfinite(X)
    if np.any(bad):
        row, col = (int(i) for i in np.argwhere(bad)[0])
        msg = (
            f"{name}: the features hold {int(bad.sum())} NaN or infinite values (the first "
            f"in sample {row}, feature {col}); clean the data first"
        )
        raise _UserError(msg)


# --------------------------------------------------------------------------------------
# Targets: what the loss needs, and back
# --------------------------------------------------------------------------------------


@dataclass
class _Task:
    """The loss, and the class labels of a classifier (``None`` for a regression)."""

    loss: str
    classes: list[Any] | None
    n_outputs: int

    @property
    def is_classifier(self) -> bool:
        return self.classes is not None

    @property
    def metrics(self) -> tuple[str, ...]:
        return ("loss", "accuracy") if self.is_classifier else ("loss",)

    def make_loss(self) -> Loss:
        if self.loss == "cross_entropy":
            return CrossEntropyLoss()
        if self.loss == "bce":
            return BCEWithLogitsLoss()
        return MSELoss()

    def indices(self, y: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """Class labels -> their indices in :attr:`classes`."""
        assert self.classes is not None
        index = {c: i for i, c in enumerate(self.classes)}
        try:
            return np.array([index[v] for v in y.tolist()], dtype=np.int64)
        except KeyError as exc:
            msg = (
                f"label {exc.args[0]!r} is not one of the model's classes {_shorten(self.classes)}"
            )
            raise _UserError(msg) from None
        except TypeError:  # unhashable labels cannot be any class
            msg = f"the labels are not class labels like the model's {_shorten(self.classes)}"
            raise _UserError(msg) from None

    def targets(self, y: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """The targets the loss takes, on the host."""
        if self.classes is None:
            if y.dtype.kind not in "biuf":
                msg = f"a regression needs numeric targets, got dtype {y.dtype}"
                raise _UserError(msg)
            return y.astype(np.float64)
        idx = self.indices(y)
        if self.loss == "cross_entropy":
            return idx
        if self.loss == "bce":
            return idx.astype(np.float64).reshape(-1, 1)
        one_hot: np.ndarray[Any, Any] = np.eye(len(self.classes), dtype=np.float64)[idx]
        return one_hot  # mse: one-hot targets


def _shorten(items: Sequence[Any], limit: int = 12) -> str:
    shown = ", ".join(repr(c) for c in items[:limit])
    return f"[{shown}{', ...' if len(items) > limit else ''}]"


def _task_for_training(loss: str, y: np.ndarray[Any, Any]) -> _Task:
    # the labels are finite: _load_data checked them
    if y.dtype.kind == "f" and not np.all(y == np.round(y)):
        if loss == "mse":
            return _Task("mse", None, 1)
        example = float(y[y != np.round(y)][0])
        msg = (
            f"--loss {loss} needs class labels, but the labels are real numbers (such "
            f"as {example!r}); use --loss mse for a regression"
        )
        raise _UserError(msg)
    unique = np.unique(y)
    classes = [c.item() for c in unique]
    classes = [int(c) if isinstance(c, float) else c for c in classes]  # whole numbers
    if len(classes) < 2:
        msg = f"a classifier needs at least 2 classes, but every label is {classes[0]!r}"
        raise _UserError(msg)
    if loss == "bce" and len(classes) != 2:
        msg = (
            f"--loss bce needs exactly 2 classes, the labels hold {len(classes)}; use "
            "--loss cross_entropy"
        )
        raise _UserError(msg)
    return _Task(loss, classes, 1 if loss == "bce" else len(classes))


# --------------------------------------------------------------------------------------
# Model and optimizer
# --------------------------------------------------------------------------------------


def _build_model(
    n_in: int,
    hidden: Sequence[int],
    n_out: int,
    *,
    activation: str,
    dropout: float,
    backend: Backend,
    dtype: Any,
) -> Sequential:
    where = {"backend": backend, "dtype": dtype}
    layers: list[Module] = []
    for width in hidden:
        layers += [Linear(n_in, width, **where), ACTIVATIONS[activation](**where)]
        if dropout > 0:
            layers.append(Dropout(dropout, **where))
        n_in = width
    layers.append(Linear(n_in, n_out, **where))
    return Sequential(*layers)


def _build_optimizer(
    name: str, params: Iterable[Parameter], lr: float | None, momentum: float | None
) -> Optimizer:
    if momentum is not None and name not in DEFAULT_MOMENTUM:
        msg = f"--momentum applies to sgd and rmsprop, not to {name} (whose betas play that part)"
        raise _UserError(msg)
    rate = DEFAULT_LR[name] if lr is None else lr
    if name == "sgd":
        return SGD(
            params, lr=rate, momentum=DEFAULT_MOMENTUM["sgd"] if momentum is None else momentum
        )
    if name == "rmsprop":
        m = DEFAULT_MOMENTUM["rmsprop"] if momentum is None else momentum
        return RMSprop(params, lr=rate, momentum=m)
    if name == "adamw":
        return AdamW(params, lr=rate)
    return Adam(params, lr=rate)


# --------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------


def _table(rows: Sequence[tuple[str, int, dict[str, float]]]) -> str:
    """``split  samples  loss  accuracy`` rows; ``-`` where there is no accuracy."""
    width = max(len("split"), *(len(name) for name, _, _ in rows))
    lines = [f"{'split':<{width}}  {'samples':>7}  {'loss':>8}  {'accuracy':>8}"]
    for name, n, metrics in rows:
        acc = metrics.get("accuracy")
        shown = "-" if acc is None else f"{acc:.4f}"
        lines.append(f"{name:<{width}}  {n:>7}  {metrics['loss']:>8.4f}  {shown:>8}")
    return "\n".join(lines) + "\n"


def _where(model: Module) -> str:
    backend = model.backend
    return f"backend {backend.name}, device {backend.device}, dtype {dtype_name(model.dtype)}"


def _check_parent(path: str | None, option: str) -> None:
    """Fail before training, not after, when an output's directory does not exist."""
    if path is None:
        return
    parent = Path(path).parent
    if not parent.is_dir():
        msg = f"{option} {path!r}: the directory {str(parent)!r} does not exist"
        raise _UserError(msg)


def _boundary_path(path: str) -> Path:
    p = Path(path)
    return p.with_name(f"{p.stem}_boundary{p.suffix or '.png'}")


# --------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------


def _train(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    backend = get_backend(backend=args.backend)
    dtype = backend.float_dtype(args.dtype)
    _check_parent(args.save, "--save")
    _check_parent(args.plot, "--plot")
    if args.plot:
        plots.require_matplotlib()

    def note(text: str) -> None:
        if not args.quiet:
            err.write(text + "\n")

    data = _load_data(
        args.dataset,
        samples=args.samples,
        seed=args.seed,
        label_column=args.label_column,
        features_key=args.features_key,
        labels_key=args.labels_key,
    )
    task = _task_for_training(args.loss, data.y)
    stratify = task.is_classifier
    X_train, X_test, y_train, y_test = train_test_split(
        data.X, data.y, test_size=args.test_size, stratify=stratify, seed=args.seed
    )
    parts = {"train": (X_train, y_train)}
    if args.validation_split > 0:
        X_train, X_val, y_train, y_val = train_test_split(
            X_train, y_train, test_size=args.validation_split, stratify=stratify, seed=args.seed
        )
        parts = {"train": (X_train, y_train), "validation": (X_val, y_val)}
    parts["test"] = (X_test, y_test)
    standardizer = Standardizer().fit(X_train)
    scaled = {k: (standardizer.transform(X), task.targets(y)) for k, (X, y) in parts.items()}

    manual_seed(args.seed)
    n_features = data.X.shape[1]
    model = _build_model(
        n_features,
        args.hidden,
        task.n_outputs,
        activation=args.activation,
        dropout=args.dropout,
        backend=backend,
        dtype=dtype,
    )
    optimizer = _build_optimizer(args.optimizer, model.parameters(), args.lr, args.momentum)
    loss = task.make_loss()
    kind = f"{len(task.classes)} classes" if task.classes is not None else "regression"
    sizes = ", ".join(f"{k} {v[0].shape[0]}" for k, v in parts.items())
    note(f"data: {data.name}: {data.X.shape[0]} samples, {n_features} features, {kind}; {sizes}")
    note(
        f"model: {' -> '.join(str(w) for w in (n_features, *args.hidden, task.n_outputs))} "
        f"({args.activation}{f', dropout {args.dropout:g}' if args.dropout else ''}), "
        f"loss {args.loss}, {type(optimizer).__name__} lr {optimizer.lr:g}; {_where(model)}"
    )
    if args.verbose:
        note(repr(model))

    history = fit(
        model,
        loss,
        optimizer,
        *scaled["train"],
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        validation_data=scaled.get("validation"),
        metrics=task.metrics,
        verbose=0 if args.quiet else 2 if args.verbose else 1,
    )
    results = {k: evaluate(model, loss, X, t, metrics=task.metrics) for k, (X, t) in scaled.items()}
    epochs = len(history.epoch)
    total = sum(history.time_per_epoch)
    out.write(_table([(k, scaled[k][0].shape[0], results[k]) for k in scaled]))
    out.write(f"time per epoch: {total / epochs:.3g} s ({epochs} epochs, {total:.3g} s in all)\n")
    out.write(f"{_where(model)}\n")

    if args.save:
        extra = {
            "written_by": WRITTEN_BY,
            "standardizer": standardizer.to_dict(),
            "loss": task.loss,
            "classes": task.classes,
            "data": data.source,
            "split": {
                "test_size": args.test_size,
                "validation_split": args.validation_split,
                "seed": args.seed,
                "stratify": stratify,
            },
            "training": {
                "hidden": list(args.hidden),
                "activation": args.activation,
                "dropout": args.dropout,
                "optimizer": args.optimizer,
                "lr": optimizer.lr,
                "epochs": epochs,
                "batch_size": args.batch_size,
                "seed": args.seed,
                "backend": model.backend.name,
            },
            "metrics": results,
            "history": history.history,
        }
        save(args.save, model, optimizer, epoch=epochs, extra=extra)
        note(f"saved the model to {args.save}")
    if args.plot:
        title = f"{data.name}: {args.loss}, {type(optimizer).__name__}"
        plots.plot_history(history, args.plot, title=title)
        note(f"wrote the learning curves to {args.plot}")
        if n_features == 2 and task.classes is not None:
            boundary = _boundary_path(args.plot)
            plots.plot_decision_boundary(
                model,
                X_test,
                task.indices(y_test),
                boundary,
                standardizer,
                class_names=task.classes,
                title=f"Decision boundary and test samples ({data.name})",
            )
            note(f"wrote the decision boundary to {boundary}")
    return 0


@dataclass
class _Saved:
    """A checkpoint and what ``portprop train`` stored beside the model."""

    checkpoint: Checkpoint
    task: _Task
    standardizer: Standardizer | None
    n_features: int
    extra: dict[str, Any]


def _linears(model: Module) -> list[Linear]:
    return [m for m in model.modules() if isinstance(m, Linear)]


def _load_saved(path: str, backend: str | None, err: TextIO) -> _Saved:
    ckpt = load(path, backend=backend)
    linears = _linears(ckpt.model)
    if not linears:
        msg = f"{path!r} holds a model without a Linear layer; portprop train writes MLPs"
        raise _UserError(msg)
    n_features, n_outputs = linears[0].in_features, linears[-1].out_features
    extra = ckpt.extra
    if not (isinstance(extra, dict) and extra.get("written_by") == WRITTEN_BY):
        # A checkpoint saved by pp.save(): use its model as it is.
        err.write(
            f"{PROG}: note: {path} was not written by 'portprop train': no standardization "
            f"is applied, and its {n_outputs} output(s) are read as "
            f"{'class scores' if n_outputs > 1 else 'a regression'}\n"
        )
        if n_outputs > 1:
            task = _Task("cross_entropy", list(range(n_outputs)), n_outputs)
        else:
            task = _Task("mse", None, 1)
        return _Saved(ckpt, task, None, n_features, {})
    try:
        standardizer = Standardizer.from_dict(extra["standardizer"])
        loss, classes = extra["loss"], extra["classes"]
    except (KeyError, TypeError, ValueError) as exc:
        msg = f"{path!r}: the standardization stored in the checkpoint is unusable ({exc})"
        raise _UserError(msg) from None
    expected = None if classes is None else 1 if loss == "bce" else len(classes)
    if (
        loss not in LOSSES
        or not (classes is None or isinstance(classes, list))
        or (expected is not None and expected != n_outputs)
        or (classes is None and n_outputs != 1)
        or standardizer.mean_ is None
        or standardizer.mean_.shape[0] != n_features
    ):
        msg = (
            f"{path!r}: the checkpoint's extra (loss {loss!r}, classes, standardizer) does "
            f"not fit its model of {n_features} inputs and {n_outputs} outputs"
        )
        raise _UserError(msg)
    return _Saved(ckpt, _Task(loss, classes, n_outputs), standardizer, n_features, extra)


def _same_source(saved: dict[str, Any], current: dict[str, Any]) -> bool:
    keys = ("dataset", "path", "samples", "seed", "label_column", "features_key", "labels_key")
    return all(saved.get(k) == current.get(k) for k in keys)


def _evaluate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    saved = _load_saved(args.model, args.backend, err)
    recorded = saved.extra.get("data") or {}
    split = saved.extra.get("split")
    samples = args.samples or recorded.get("samples") or DEFAULTS["samples"]
    seed = args.seed
    if seed is None:
        seed = recorded.get("seed", DEFAULTS["seed"]) if recorded.get("dataset") == "disk" else 0
    data = _load_data(
        args.dataset,
        samples=int(samples),
        seed=int(seed),
        label_column=args.label_column,
        features_key=args.features_key,
        labels_key=args.labels_key,
    )
    if data.X.shape[1] != saved.n_features:
        msg = (
            f"{data.name} has {data.X.shape[1]} features, but the model of {args.model!r} "
            f"takes {saved.n_features}"
        )
        raise _UserError(msg)
    which = args.split
    if which == "auto":
        which = "test" if split and _same_source(recorded, data.source) else "all"
    X, y = data.X, data.y
    label = "all"
    if which == "test":
        if not isinstance(split, dict):
            msg = f"{args.model!r} records no train/test split; use --split all"
            raise _UserError(msg)
        _, X, _, y = train_test_split(
            X,
            y,
            test_size=split["test_size"],
            stratify=bool(split["stratify"]),
            seed=int(split["seed"]),
        )
        label = "test"
    task = saved.task
    model = saved.checkpoint.model
    features = X if saved.standardizer is None else saved.standardizer.transform(X)
    metrics = evaluate(
        model,
        task.make_loss(),
        features,
        task.targets(y),
        batch_size=args.batch_size,
        metrics=task.metrics,
    )
    if label == "test":
        out.write(f"{data.name}: the test split recorded in {args.model}\n")
    else:
        out.write(f"{data.name}: every sample\n")
    out.write(_table([(label, X.shape[0], metrics)]))
    out.write(f"{_where(model)}\n")
    return 0


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
    _check_finite(features, args.input)
    return features


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
    if args.output:
        _check_parent(args.output, "--output")
    saved = _load_saved(args.model, args.backend, err)
    X = _predict_features(args, saved.n_features)
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
    if args.output:
        data = text.getvalue().encode("utf-8")
        write_atomically(args.output, lambda f: f.writelines([data]))
    else:
        out.write(text.getvalue())
    return 0


def _backends(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:  # noqa: ARG001
    out.write(describe_backends() + "\n")
    return 0


# --------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------


def _message(exc: BaseException) -> str:
    """One line for the user."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}"
    elif isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        text = exc.args[0]  # KeyError's str() would quote it
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``portprop`` command with ``argv`` (default ``sys.argv[1:]``).

    Returns the exit status: 0 on success, 2 for a usage error or a request that cannot
    be carried out (a one-line ``portprop: error: ...`` on standard error), 130 when
    interrupted.  Internal errors propagate with their traceback.
    """
    parser = _build_parser()
    try:
        args = parser.parse_args(None if argv is None else list(argv))
    except SystemExit as exc:  # --help and --version (0), bad flags (2)
        return exc.code if isinstance(exc.code, int) else 2
    try:
        status: int = args.run(args, sys.stdout, sys.stderr)
    except BrokenPipeError:
        # the reader of our output went away (portprop predict ... | head): stop quietly
        with contextlib.suppress(OSError, ValueError, AttributeError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return 1
    except (PortpropError, OSError, ValueError, KeyError, ImportError) as exc:
        sys.stderr.write(f"{PROG}: error: {_message(exc)}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted\n")
        return 130
    return status


if __name__ == "__main__":
    raise SystemExit(main())
