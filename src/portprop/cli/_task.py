"""The task of a model: its loss, its classes, and the targets the loss takes.

``portprop train`` finds it from the labels (:func:`_task_for_training`); ``evaluate``
and ``predict`` read it back, with the standardization, from the checkpoint that
``train`` wrote (:func:`_load_saved`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import numpy as np

from portprop.cli._common import LOSSES, PROG, WRITTEN_BY, _UserError
from portprop.datasets import Standardizer
from portprop.io import Checkpoint, load
from portprop.layers import Linear
from portprop.losses import BCEWithLogitsLoss, CrossEntropyLoss, Loss, MSELoss
from portprop.module import Module


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
