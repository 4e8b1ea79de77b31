"""What the ``portprop`` subcommands share.

The command's name, what ``portprop train`` does without options, the choices of
activation, loss and optimizer, the mark of the checkpoints it writes, the error of a
request that cannot be carried out, and the helpers that print results and check output
paths.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from portprop.backend import dtype_name
from portprop.layers import ELU, GELU, LeakyReLU, ReLU, Sigmoid, SiLU, Softplus, Tanh
from portprop.module import Module

PROG = "portprop"

#: What ``portprop train`` does without options (see the README for what it reaches).
DEFAULTS: dict[str, Any] = {
    "hidden": (128, 64),
    "activation": "relu",
    "norm": "none",
    "precision": "fp32",
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
    "gelu": GELU,
    "silu": SiLU,
    "elu": ELU,
    "softplus": Softplus,
}
#: ``--precision``: the dtype the forward and backward passes compute in
#: (:class:`portprop.MixedPrecision`), with the float32 parameters as master weights.
PRECISIONS = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
#: ``--norm``: a normalization layer between each hidden ``Linear`` and its activation.
NORMS = ("none", "layer", "batch")
LOSSES = ("cross_entropy", "mse", "bce")
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")

#: ``extra["written_by"]`` of the checkpoints that ``portprop train`` writes.
WRITTEN_BY = "portprop train"


class _UserError(ValueError):
    """A request that cannot be carried out; :func:`~portprop.cli.main` prints it on one line."""


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
