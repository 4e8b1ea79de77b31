"""The task of a model: its loss, its classes, and the targets the loss takes.

``portprop train`` finds it from the labels (:func:`_task_for_training`); ``evaluate``
and ``predict`` read it back, with the standardization, from the checkpoint that
``train`` wrote (:func:`_load_saved`).
"""

from __future__ import annotations

import math
import reprlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, TextIO

import numpy as np

from portprop.cli._common import LOSSES, PROG, WRITTEN_BY, _UserError
from portprop.datasets import Standardizer
from portprop.errors import CheckpointError
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
    """A checkpoint and what ``portprop train`` stored beside the model, checked."""

    checkpoint: Checkpoint
    task: _Task
    standardizer: Standardizer | None
    n_features: int
    source: dict[str, Any]  # how the data were loaded (extra["data"]); {} if not recorded
    split: dict[str, Any] | None  # how they were split (extra["split"])


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
        return _Saved(ckpt, task, None, n_features, {}, None)
    check = _ExtraCheck(path, extra)
    try:
        standardizer = Standardizer.from_dict(extra.get("standardizer"))  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        check.fail("['standardizer']", f"usable statistics ({exc})")
    if standardizer.mean_ is None or standardizer.mean_.shape[0] != n_features:
        length = None if standardizer.mean_ is None else standardizer.mean_.shape[0]
        check.fail("['standardizer']", f"the statistics of {n_features} features", length)
    task = _Task(check.loss(), check.classes(n_outputs), n_outputs)
    return _Saved(ckpt, task, standardizer, n_features, check.source(), check.split())


def _is_int(value: Any, low: int, high: int | None = None) -> bool:
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        and value >= low
        and (high is None or value < high)
    )


def _is_label(value: Any) -> bool:
    """A class label as JSON holds it: a string, a bool, an int or a finite float."""
    return isinstance(value, str | int) or (isinstance(value, float) and math.isfinite(value))


#: Seeds as ``portprop train`` takes them: what every backend's generator accepts.
_SEED_BOUND = 2**63
_SEED = "an int in [0, 2**63)"

#: The entries of ``extra["data"]`` and ``extra["split"]``: a check and what it expects.
_SOURCE_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "dataset": (lambda v: v in ("disk", "digits", "file"), "'disk', 'digits' or 'file'"),
    "samples": (lambda v: _is_int(v, 2), "an int >= 2"),
    "seed": (lambda v: _is_int(v, 0, _SEED_BOUND), _SEED),
    "path": (lambda v: isinstance(v, str), "a str"),
    "label_column": (lambda v: isinstance(v, str) or _is_int(v, -_SEED_BOUND), "an int or a str"),
    "features_key": (lambda v: isinstance(v, str), "a str"),
    "labels_key": (lambda v: isinstance(v, str), "a str"),
}
_SPLIT_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "test_size": (
        lambda v: _is_int(v, 1) or (isinstance(v, float) and 0.0 < v < 1.0),
        "a fraction in (0, 1) or an int >= 1",
    ),
    "stratify": (lambda v: isinstance(v, bool), "a bool"),
    "seed": (lambda v: _is_int(v, 0, _SEED_BOUND), _SEED),
}


class _ExtraCheck:
    """The checks of the ``extra`` that ``portprop train`` wrote: JSON from a file, which
    may hold anything; each error names the file and the entry, with a bounded repr."""

    def __init__(self, path: str, extra: dict[str, Any]) -> None:
        self.path, self.extra = path, extra

    def fail(self, key: str, expected: str, value: Any = ...) -> NoReturn:
        got = "" if value is ... else f", got {reprlib.repr(value)}"
        msg = (
            f"{self.path}: the checkpoint's extra{key} must be {expected}{got}: the metadata "
            f"that '{WRITTEN_BY}' wrote beside the model is damaged"
        )
        raise CheckpointError(msg)

    def loss(self) -> str:
        loss = self.extra.get("loss")
        if not (isinstance(loss, str) and loss in LOSSES):
            self.fail("['loss']", f"one of {LOSSES}", loss)
        return loss

    def classes(self, n_outputs: int) -> list[Any] | None:
        loss, classes = self.extra.get("loss"), self.extra.get("classes")
        if classes is None:
            if n_outputs != 1 or loss != "mse":
                self.fail("['classes']", f"the class labels of a {loss} classifier")
            return None
        expected = 2 if loss == "bce" else n_outputs
        if loss == "bce" and n_outputs != 1:
            self.fail("['loss']", f"'cross_entropy' or 'mse' for {n_outputs} outputs")
        if not (isinstance(classes, list) and len(classes) == expected):
            self.fail("['classes']", f"a list of {expected} class labels", classes)
        if not all(_is_label(c) for c in classes) or len(set(classes)) != len(classes):
            what = "distinct strings, ints or finite floats"
            self.fail("['classes']", what, classes)
        return classes

    def _entries(
        self, name: str, rules: dict[str, tuple[Callable[[Any], bool], str]], required: bool
    ) -> dict[str, Any]:
        entries = self.extra.get(name)
        if not isinstance(entries, dict):
            self.fail(f"[{name!r}]", "a dict", entries)
        for key, (ok, expected) in rules.items():
            if key in entries and not ok(entries[key]):
                self.fail(f"[{name!r}][{key!r}]", expected, entries[key])
            if required and key not in entries:
                self.fail(f"[{name!r}]", f"a dict with {key!r}", entries)
        return entries

    def source(self) -> dict[str, Any]:
        if self.extra.get("data") is None:
            return {}
        return self._entries("data", _SOURCE_RULES, required=False)

    def split(self) -> dict[str, Any] | None:
        if self.extra.get("split") is None:
            return None
        return self._entries("split", _SPLIT_RULES, required=True)
