"""What :func:`~portprop.fit` returns and whom it calls back: the training's results and hooks.

:class:`History` holds the metrics of each epoch; :class:`TrainingState` is what a
running :func:`~portprop.fit` shares with its callbacks; :class:`Callback` is the base
class of the hooks, and :class:`EarlyStopping` the one that stops a run that no longer
improves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from portprop.module import Module
from portprop.training.validation import number

__all__ = ["Callback", "EarlyStopping", "History", "TrainingState"]

Array = Any


@dataclass
class History:
    """What :func:`fit` returns.

    Attributes
    ----------
    history : dict of str to list of float
        One value per epoch for each of ``"loss"``, ``"accuracy"`` (when asked for),
        ``"val_loss"`` and ``"val_accuracy"`` (with validation data), and ``"lr"`` (when
        a ``schedule`` is given: the learning rate of the epoch's last optimizer step,
        which is the epoch's only one for a schedule stepped per epoch).
    epoch : list of int
        The epochs run, counted from 0.
    time_per_epoch : list of float
        Wall-clock seconds of each epoch, validation included.
    params : dict
        ``epochs``, ``batch_size`` and ``steps`` (batches per epoch) of the run.
    """

    history: dict[str, list[float]] = field(default_factory=dict)
    epoch: list[int] = field(default_factory=list)
    time_per_epoch: list[float] = field(default_factory=list)
    params: dict[str, int] = field(default_factory=dict)

    def __repr__(self) -> str:
        last = ", ".join(f"{k}={v[-1]:.4g}" for k, v in self.history.items() if v)
        return f"History(epochs={len(self.epoch)}{', ' if last else ''}{last})"


@dataclass
class TrainingState:
    """What a running :func:`fit` shares with its callbacks (as ``callback.state``).

    Set :attr:`stop_training` to ``True`` to stop: :func:`fit` finishes the current
    epoch (a request from ``on_batch_end`` ends it after that batch) and returns.
    """

    model: Module
    loss: Any
    optimizer: Any
    epochs: int
    batch_size: int
    steps: int
    log_keys: tuple[str, ...]
    history: History
    epoch: int = 0
    stop_training: bool = False


class Callback:
    """Base class of the objects passed in ``fit(..., callbacks=[...])``.

    :func:`fit` sets :attr:`state` (a :class:`TrainingState`) before calling
    :meth:`on_train_begin`.  ``epoch`` and ``batch`` count from 0; ``logs`` maps the
    names of :attr:`TrainingState.log_keys` to floats.  Every hook does nothing by
    default; override the ones you need.
    """

    state: TrainingState | None = None

    def on_train_begin(self, logs: dict[str, float]) -> None:
        """Before the first epoch; raise here to refuse a run (nothing has changed yet)."""

    def on_epoch_begin(self, epoch: int, logs: dict[str, float]) -> None:
        """Before each epoch."""

    def on_batch_end(self, batch: int, logs: dict[str, float]) -> None:
        """After each optimizer step; ``logs`` holds the batch's ``"loss"`` and ``"size"``.

        Reading the loss costs a device-to-host copy per batch, so :func:`fit` only does
        it when some callback overrides this method.
        """

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        """After each epoch and its validation; ``logs`` holds the epoch's metrics."""

    def on_train_end(self, logs: dict[str, float]) -> None:
        """After the last epoch (not when training raised)."""


class EarlyStopping(Callback):
    """Stop training when a monitored quantity stops improving.

    Parameters
    ----------
    monitor : str, default "val_loss"
        A key of the epoch logs (``"loss"``, ``"accuracy"``, ``"val_loss"``, ...).
    patience : int, default 5
        Epochs without improvement after which training stops.
    min_delta : float, default 0.0
        The smallest change that counts as an improvement.
    mode : {"auto", "min", "max"}, default "auto"
        Whether smaller or larger is better; ``"auto"`` picks ``"max"`` for accuracies
        and ``"min"`` otherwise.
    restore_best_weights : bool, default True
        At the end of training, copy back the parameters of the best epoch.  Each
        improvement keeps a copy of every parameter (``xp.asarray(p.data, copy=True)``).
        The optimizer's state (momentum, moment estimates) is not restored.

    Attributes
    ----------
    best : float
        The best value seen.
    best_epoch, stopped_epoch : int or None
        Counted from 0; ``stopped_epoch`` is ``None`` unless this callback stopped.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        patience: int = 5,
        min_delta: float = 0.0,
        mode: str = "auto",
        restore_best_weights: bool = True,
    ) -> None:
        if not isinstance(monitor, str):
            msg = f"monitor must be a log key such as 'val_loss', got {monitor!r}"
            raise TypeError(msg)
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            msg = f"patience must be an int >= 0, got {patience!r}"
            raise ValueError(msg)
        delta = number(min_delta, "min_delta")
        if delta < 0:
            msg = f"min_delta must be >= 0, got {min_delta!r}"
            raise ValueError(msg)
        if mode not in ("auto", "min", "max"):
            msg = f"mode must be 'auto', 'min' or 'max', got {mode!r}"
            raise ValueError(msg)
        if mode == "auto":
            mode = "max" if "acc" in monitor else "min"
        self.monitor = monitor
        self.patience = patience
        self.min_delta = delta
        self.mode = mode
        self.restore_best_weights = bool(restore_best_weights)
        self._reset()

    def _reset(self) -> None:
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch: int | None = None
        self.stopped_epoch: int | None = None
        self.wait = 0
        self.best_weights: list[Array] | None = None
        self._last_epoch: int | None = None

    def _state(self) -> TrainingState:
        if self.state is None:
            msg = "EarlyStopping is used by portprop.fit(callbacks=[...]), which sets its state"
            raise RuntimeError(msg)
        return self.state

    def on_train_begin(self, logs: dict[str, float]) -> None:  # noqa: ARG002
        state = self._state()
        if self.monitor not in state.log_keys:
            msg = (
                f"EarlyStopping(monitor={self.monitor!r}): fit logs only "
                f"{', '.join(repr(k) for k in state.log_keys)}; pass validation_data= or "
                "validation_split= for 'val_*' keys, and metrics=('loss', 'accuracy') for "
                "accuracies"
            )
            raise ValueError(msg)
        self._reset()

    def _improved(self, current: float) -> bool:
        if math.isnan(current):
            return False
        if self.mode == "min":
            return current < self.best - self.min_delta
        return current > self.best + self.min_delta

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        state = self._state()
        self._last_epoch = epoch
        current = logs[self.monitor]
        if self._improved(current):
            self.best, self.best_epoch, self.wait = current, epoch, 0
            if self.restore_best_weights:
                self.best_weights = _copy_parameters(state.model)
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            state.stop_training = True

    def on_train_end(self, logs: dict[str, float]) -> None:  # noqa: ARG002
        state = self._state()
        weights = self.best_weights
        if weights is None or not self.restore_best_weights or self.best_epoch == self._last_epoch:
            return
        model = state.model
        with model.backend.scope():
            for p, best in zip(model.parameters(), weights, strict=True):
                p.data = model.backend.xp.asarray(best, copy=True)
                p.grad = None

    def __repr__(self) -> str:
        return (
            f"EarlyStopping(monitor={self.monitor!r}, patience={self.patience}, "
            f"min_delta={self.min_delta}, mode={self.mode!r}, "
            f"restore_best_weights={self.restore_best_weights})"
        )


def _copy_parameters(model: Module) -> list[Array]:
    xp = model.backend.xp
    with model.backend.scope():
        return [xp.asarray(p.data, copy=True) for p in model.parameters()]
