"""The argument parser of the ``portprop`` command.

The option types (which turn a flag's text into a checked value or a one-line error),
the parser that prints its errors on one line, each subcommand with its options and
defaults, and the ``backends`` subcommand, which is all option-less listing.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any, NoReturn, TextIO

from portprop.backend import describe_backends
from portprop.cli._common import (
    ACTIVATIONS,
    DEFAULT_LR,
    DEFAULT_MOMENTUM,
    DEFAULTS,
    LOSSES,
    NORMS,
    OPTIMIZERS,
    PRECISIONS,
    PROG,
)
from portprop.cli._evaluate import _evaluate
from portprop.cli._predict import _predict
from portprop.cli._train import _train

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
    p.add_argument(
        "--norm",
        choices=NORMS,
        default=d["norm"],
        help="'layer' or 'batch': a LayerNorm or a BatchNorm1d after each hidden Linear, "
        "before its activation" + _DEFAULT,
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
        "--precision",
        choices=tuple(PRECISIONS),
        default=d["precision"],
        help="bf16 or fp16: compute in bfloat16 or float16 with float32 master weights (fp16 "
        "with dynamic loss scaling); needs --dtype float32 and a backend with that dtype"
        + _DEFAULT,
    )
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
    # distributed training (issue 10)
    p.add_argument(
        "--engine",
        choices=("auto", "torch", "mpi", "local"),
        default="auto",
        help="data-parallel engine: 'auto' uses torch.distributed under torchrun, MPI under "
        "mpirun/mpiexec/srun, else one process; only rank 0 prints and writes files" + _DEFAULT,
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
        "--output",
        "-o",
        metavar="OUT.csv",
        help="write the CSV here ('-': standard output, the default); a regular file is "
        "replaced atomically, a device, pipe or link to one is written through",
    )
    p.add_argument(
        "--label-column",
        type=_column,
        metavar="COLUMN",
        help="CSV: INPUT's label column, which is ignored: by position (negative from the "
        "end) or name; 'none': INPUT has no label column (default: a file with one column "
        "more than the model's features has the training run's label column, else the "
        "last, and a note on standard error says so)",
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


def _backends(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:  # noqa: ARG001
    out.write(describe_backends() + "\n")
    return 0
