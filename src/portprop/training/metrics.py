"""The metrics of :func:`~portprop.fit` and :func:`~portprop.evaluate`: their names and their sums.

:data:`METRICS` lists what ``metrics=`` accepts; :class:`Totals` sums the loss and the
correct predictions of an epoch (or of an evaluation) on the device, so that they are
read back to the host once, at its end.  How accuracy compares outputs and targets
(``"argmax"``, ``"onehot"`` or ``"threshold"``) is chosen, and checked against the loss
and the targets, by :func:`portprop.training.validation.accuracy_kind`.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["METRICS", "Totals"]

Array = Any

#: The metric names that ``metrics=`` accepts.  The loss is always reported.
METRICS = ("loss", "accuracy")


class Totals:
    """The loss and the number of correct predictions, summed on the device."""

    def __init__(self, xp: Any, reduction: str, accuracy: str | None) -> None:
        self.xp = xp
        self.mean = reduction != "sum"
        self.accuracy = accuracy
        self.loss: Array | None = None
        self.correct: Array | None = None
        self.samples = 0
        self.elements = 0

    def add(self, value: Array, out: Array, target: Array) -> None:
        n = out.shape[0]
        # With reduction "mean" the batch loss is a mean over the batch: weighting it by
        # the batch size makes the epoch's loss the mean over every sample.
        weighted = value * float(n) if self.mean else value
        self.loss = weighted if self.loss is None else self.loss + weighted
        self.samples += n
        if self.accuracy is None:
            return
        xp = self.xp
        if self.accuracy == "argmax":
            hits = xp.count_nonzero(xp.argmax(out, axis=1) == target)
            self.elements += n
        elif self.accuracy == "onehot":
            hits = xp.count_nonzero(xp.argmax(out, axis=1) == xp.argmax(target, axis=1))
            self.elements += n
        else:  # logits > 0 against targets > 0.5, elementwise
            hits = xp.count_nonzero((out > 0.0) == (target > 0.5))
            self.elements += n * out.shape[1]
        self.correct = hits if self.correct is None else self.correct + hits

    def running_loss(self) -> float:
        if self.loss is None or self.samples == 0:
            return math.nan
        total = float(self.loss)
        return total / self.samples if self.mean else total

    def read(self, prefix: str = "") -> dict[str, float]:
        """The epoch's metrics as Python floats (the one read-back of the epoch)."""
        logs = {prefix + "loss": self.running_loss()}
        if self.accuracy is not None:
            correct = 0.0 if self.correct is None else float(self.correct)
            logs[prefix + "accuracy"] = correct / self.elements if self.elements else math.nan
        return logs
