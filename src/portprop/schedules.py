r"""Learning-rate schedules: they set ``optimizer.lr`` as training goes.

A schedule sets the optimizer's ``lr`` when it is created (the rate of the first epoch,
or batch) and again at each :meth:`Schedule.step`.  When to call ``step``:

- :class:`StepLR`, :class:`ExponentialLR`: once after each epoch (``interval == "epoch"``);
- :class:`CosineWithWarmup`: once after each batch (``interval == "batch"``), so that
  ``total_steps`` counts optimizer steps;
- :class:`ReduceLROnPlateau`: once after each epoch, as ``step(metric)`` with the
  monitored value, usually the validation loss (``needs_metric`` is ``True``).

Each one matches the torch scheduler of the same name (``LambdaLR`` with the usual
warmup-then-cosine factor for :class:`CosineWithWarmup`).  Their state is plain Python
values (:meth:`Schedule.state_dict`), saved with the optimizer's to resume training.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from portprop.errors import StateDictError
from portprop.optim import Optimizer, _hyper

__all__ = ["CosineWithWarmup", "ExponentialLR", "ReduceLROnPlateau", "Schedule", "StepLR"]


def _integer(value: Any, name: str, low: int) -> int:
    """``value`` as a Python int ``>= low`` (an integer of any library, never a bool)."""
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)
    except TypeError:
        msg = f"{name} must be an int, got {value!r}"
        raise TypeError(msg) from None
    if number < low:
        msg = f"{name} must be an int >= {low}, got {value!r}"
        raise ValueError(msg)
    return number


class Schedule:
    """Base class: sets ``optimizer.lr`` at creation and at each :meth:`step`.

    Attributes
    ----------
    optimizer : Optimizer
    base_lr : float
        The optimizer's ``lr`` when the schedule was created.
    step_count : int
        How many times :meth:`step` was called (torch's ``last_epoch``).
    interval : {"epoch", "batch"}
        When the training loop calls :meth:`step`.
    needs_metric : bool
        Whether :meth:`step` takes the monitored value.

    A subclass lists its constructor's settings in ``_SETTINGS`` (kept as attributes of
    the same names), checks them in :meth:`_validated` and gives the rate after ``n``
    steps in :meth:`_lr_at`.
    """

    interval: ClassVar[Literal["epoch", "batch"]] = "epoch"
    needs_metric: ClassVar[bool] = False
    _SETTINGS: ClassVar[tuple[str, ...]] = ()

    def __init__(self, optimizer: Optimizer) -> None:
        if not isinstance(optimizer, Optimizer):
            msg = f"optimizer must be a portprop Optimizer, got {type(optimizer).__name__}"
            raise TypeError(msg)
        self.optimizer = optimizer
        self.base_lr = float(optimizer.lr)
        self.step_count = 0
        self._last_lr = self._set_lr(self._next_lr(0))

    def _configure(self, settings: Mapping[str, Any]) -> None:
        for name, value in self._validated(settings).items():
            setattr(self, name, value)

    def _validated(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        """The settings (every name of ``_SETTINGS``) checked and converted."""
        return {name: settings[name] for name in self._SETTINGS}

    def _lr_at(self, n: int) -> float:
        """The learning rate after ``n`` calls of :meth:`step`."""
        raise NotImplementedError

    def _set_lr(self, lr: float) -> float:
        self.optimizer.lr = lr
        return lr

    def step(self, metric: float | None = None) -> None:
        """Advance by one epoch (or batch) and set the optimizer's learning rate."""
        if metric is not None:
            msg = (
                f"{type(self).__name__}.step() takes no metric (got {metric!r}); "
                "only ReduceLROnPlateau monitors one"
            )
            raise TypeError(msg)
        lr = self._next_lr(self.step_count + 1)  # checked first: a bad rate changes nothing
        self.step_count += 1
        self._last_lr = self._set_lr(lr)

    def _next_lr(self, n: int) -> float:
        """The rate after ``n`` steps, checked as the optimizer's ``lr`` (a finite number
        ``>= 0`` that does not overflow the parameters' dtype)."""
        try:
            lr = self._lr_at(n)
        except OverflowError:  # gamma ** n beyond any float
            lr = math.inf
        try:
            return self.optimizer._checked_lr(lr)
        except ValueError as exc:
            msg = f"{type(self).__name__} cannot set the rate of step {n}: {exc}"
            raise ValueError(msg) from None

    def get_last_lr(self) -> float:
        """The learning rate this schedule set last."""
        return self._last_lr

    # ---- saving and resuming --------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The settings and counters, as plain Python values."""
        return {
            "type": type(self).__name__,
            "settings": {name: getattr(self, name) for name in self._SETTINGS},
            "base_lr": self.base_lr,
            "step_count": self.step_count,
            "last_lr": self._last_lr,
            **self._counters(),
        }

    def _counters(self) -> dict[str, Any]:
        """What a subclass tracks besides ``step_count``."""
        return {}

    def _checked_counters(self, state_dict: Mapping[str, Any]) -> dict[str, Any]:
        """:meth:`_counters` read back from ``state_dict`` and checked."""
        return {name: state_dict[name] for name in self._counters()}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Resume from :meth:`state_dict` of a schedule of the same type.

        Everything is checked first: on a mismatch a :class:`StateDictError` says what
        and nothing is changed.  The optimizer's ``lr`` is set to the saved last rate.
        """
        reason = self._layout_problem(state_dict)
        if reason:
            raise self._mismatch(reason)
        settings = state_dict["settings"]
        try:
            checked = self._validated(settings)
            base_lr = _hyper(state_dict["base_lr"], "base_lr")
            step_count = _integer(state_dict["step_count"], "step_count", 0)
            last_lr = _hyper(state_dict["last_lr"], "last_lr")
            self.optimizer._checked_lr(last_lr)  # it must fit the parameters' dtype too
            counters = self._checked_counters(state_dict)
        except (TypeError, ValueError) as exc:
            raise self._mismatch(str(exc)) from None
        for key, value in {**checked, **counters}.items():
            setattr(self, key, value)
        self.base_lr, self.step_count = base_lr, step_count
        self._last_lr = self._set_lr(last_lr)

    def _layout_problem(self, state_dict: Any) -> str:
        """Why ``state_dict`` does not have this schedule's keys and type ("" if it does)."""
        if not isinstance(state_dict, Mapping):
            return f"expected a mapping, got {type(state_dict).__name__}"
        expected = {"type", "settings", "base_lr", "step_count", "last_lr", *self._counters()}
        if set(state_dict) != expected:
            return f"expected the keys {sorted(expected)}, got {sorted(state_dict)}"
        name = type(self).__name__
        if state_dict["type"] != name:
            return f"it was saved by {state_dict['type']!r}, not {name!r}"
        settings = state_dict["settings"]
        if not isinstance(settings, Mapping) or set(settings) != set(self._SETTINGS):
            keys = sorted(settings) if isinstance(settings, Mapping) else settings
            return f"settings must have the keys {sorted(self._SETTINGS)}, got {keys!r}"
        return ""

    def _mismatch(self, reason: str) -> StateDictError:
        msg = f"state_dict does not match this {type(self).__name__} (nothing was loaded): {reason}"
        return StateDictError(msg)

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._SETTINGS)
        return f"{type(self).__name__}({inner})"


class StepLR(Schedule):
    r"""Multiply the learning rate by ``gamma`` every ``step_size`` epochs:
    :math:`\eta_n = \eta_0\, \gamma^{\lfloor n / \text{step\_size} \rfloor}` after ``n``
    epochs.  Call :meth:`step` after each epoch.

    Parameters
    ----------
    optimizer : Optimizer
    step_size : int
        The number of epochs between two decays, ``>= 1``.
    gamma : float, optional
        The factor, ``> 0``.
    """

    _SETTINGS = ("step_size", "gamma")
    step_size: int
    gamma: float

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1) -> None:
        self._configure({"step_size": step_size, "gamma": gamma})
        super().__init__(optimizer)

    def _validated(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "step_size": _integer(settings["step_size"], "step_size", 1),
            "gamma": _hyper(settings["gamma"], "gamma", strict=True),
        }

    def _lr_at(self, n: int) -> float:
        return self.base_lr * self.gamma ** (n // self.step_size)


class ExponentialLR(Schedule):
    r"""Multiply the learning rate by ``gamma`` every epoch: :math:`\eta_n = \eta_0\,
    \gamma^n` after ``n`` epochs.  Call :meth:`step` after each epoch.

    Parameters
    ----------
    optimizer : Optimizer
    gamma : float
        The factor, ``> 0``.
    """

    _SETTINGS = ("gamma",)
    gamma: float

    def __init__(self, optimizer: Optimizer, gamma: float) -> None:
        self._configure({"gamma": gamma})
        super().__init__(optimizer)

    def _validated(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        return {"gamma": _hyper(settings["gamma"], "gamma", strict=True)}

    def _lr_at(self, n: int) -> float:
        return self.base_lr * self.gamma**n


class CosineWithWarmup(Schedule):
    r"""Linear warmup from 0 to the base rate, then a cosine decay to ``min_lr``.

    After ``n`` calls of :meth:`step`, with :math:`w` = ``warmup_steps`` and
    :math:`T` = ``total_steps``:

    .. math::

        \eta_n = \begin{cases}
            \eta_0\, n / w & n < w \\
            \eta_{\min} + \tfrac12 (\eta_0 - \eta_{\min})
                \bigl(1 + \cos(\pi\, \min(1, \tfrac{n - w}{\max(1, T - w)}))\bigr) & n \ge w
        \end{cases}

    so the first step of a warmup uses a rate of 0, and the rate stays at ``min_lr``
    after ``total_steps``.  Call :meth:`step` after each batch (``interval == "batch"``).

    Parameters
    ----------
    optimizer : Optimizer
    total_steps : int
        The number of steps (batches) of the whole run, ``>= 1``.
    warmup_steps : int, optional
        The number of warmup steps, in ``[0, total_steps]``.
    min_lr : float, optional
        The final rate, ``>= 0``.
    """

    interval = "batch"
    _SETTINGS = ("total_steps", "warmup_steps", "min_lr")
    total_steps: int
    warmup_steps: int
    min_lr: float

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int,
        warmup_steps: int = 0,
        min_lr: float = 0.0,
    ) -> None:
        self._configure(
            {"total_steps": total_steps, "warmup_steps": warmup_steps, "min_lr": min_lr}
        )
        super().__init__(optimizer)

    def _validated(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        total = _integer(settings["total_steps"], "total_steps", 1)
        warmup = _integer(settings["warmup_steps"], "warmup_steps", 0)
        if warmup > total:
            msg = f"warmup_steps must be <= total_steps ({total}), got {warmup}"
            raise ValueError(msg)
        min_lr = _hyper(settings["min_lr"], "min_lr")
        return {"total_steps": total, "warmup_steps": warmup, "min_lr": min_lr}

    def _lr_at(self, n: int) -> float:
        warmup = self.warmup_steps
        if n < warmup:
            return self.base_lr * n / warmup
        progress = min(1.0, (n - warmup) / max(1, self.total_steps - warmup))
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.min_lr + (self.base_lr - self.min_lr) * cosine


class ReduceLROnPlateau(Schedule):
    r"""Multiply the learning rate by ``factor`` when a monitored value stops improving,
    with torch's definition (relative threshold).

    Call ``step(metric)`` after each epoch with the monitored value (the validation
    loss, say).  A value improves on the best so far when it is below
    ``best * (1 - threshold)`` (``mode="min"``) or above ``best * (1 + threshold)``
    (``mode="max"``).  After more than ``patience`` epochs in a row without improvement
    the rate becomes ``max(lr * factor, min_lr)`` (unchanged if that changes it by less
    than ``1e-8``), and the next ``cooldown`` epochs are not counted.

    Parameters
    ----------
    optimizer : Optimizer
    mode : {"min", "max"}, optional
        Whether the value should go down or up.
    factor : float, optional
        In ``(0, 1)``.
    patience : int, optional
        The number of epochs without improvement tolerated, ``>= 0``.
    threshold : float, optional
        The relative improvement that counts, ``>= 0``.
    cooldown : int, optional
        Epochs ignored after a reduction, ``>= 0``.
    min_lr : float, optional
        The rate never goes below it, ``>= 0``.
    monitor : str, optional
        The key of the epoch's logs that :func:`portprop.fit` steps this schedule with
        (``"val_loss"``, ``"loss"``, ``"val_accuracy"``, ... as Keras's ``monitor``; torch
        has no such parameter).  ``None`` (the default) means ``"val_loss"`` when ``fit``
        has validation data and ``"loss"`` otherwise.  ``fit`` refuses, before training,
        a key it does not log.  Set ``mode="max"`` for a value that should go up.
    """

    needs_metric = True
    _SETTINGS = ("mode", "factor", "patience", "threshold", "cooldown", "min_lr", "monitor")
    _EPS = 1e-8  # torch's default eps: smaller reductions are ignored
    mode: Literal["min", "max"]
    factor: float
    patience: int
    threshold: float
    cooldown: int
    min_lr: float
    monitor: str | None

    def __init__(
        self,
        optimizer: Optimizer,
        mode: Literal["min", "max"] = "min",
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        cooldown: int = 0,
        min_lr: float = 0.0,
        *,
        monitor: str | None = None,
    ) -> None:
        self._configure(
            {
                "mode": mode,
                "factor": factor,
                "patience": patience,
                "threshold": threshold,
                "cooldown": cooldown,
                "min_lr": min_lr,
                "monitor": monitor,
            }
        )
        self.best = math.inf if self.mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        super().__init__(optimizer)

    def _validated(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        mode = settings["mode"]
        if mode not in ("min", "max"):
            msg = f"mode must be 'min' or 'max', got {mode!r}"
            raise ValueError(msg)
        # A state dict saved before ``monitor`` existed lacks it: keep the current one.
        monitor = settings.get("monitor", getattr(self, "monitor", None))
        if monitor is not None and not isinstance(monitor, str):
            msg = f"monitor must be None or a log key such as 'val_loss', got {monitor!r}"
            raise TypeError(msg)
        if monitor is not None and not monitor.strip():
            msg = f"monitor must be a log key such as 'val_loss' (or None), got {monitor!r}"
            raise ValueError(msg)
        return {
            "mode": mode,
            "factor": _hyper(settings["factor"], "factor", strict=True, high=1.0),
            "patience": _integer(settings["patience"], "patience", 0),
            "threshold": _hyper(settings["threshold"], "threshold"),
            "cooldown": _integer(settings["cooldown"], "cooldown", 0),
            "min_lr": _hyper(settings["min_lr"], "min_lr"),
            "monitor": monitor,
        }

    def _layout_problem(self, state_dict: Any) -> str:
        settings = state_dict.get("settings") if isinstance(state_dict, Mapping) else None
        if isinstance(settings, Mapping) and "monitor" not in settings:
            # saved before ``monitor`` existed: check the layout with the current one
            state_dict = {**state_dict, "settings": {**settings, "monitor": self.monitor}}
        return super()._layout_problem(state_dict)

    def _lr_at(self, n: int) -> float:  # noqa: ARG002 - only step(metric) changes the rate
        return self.optimizer.lr

    def _counters(self) -> dict[str, Any]:
        return {
            "best": self.best,
            "num_bad_epochs": self.num_bad_epochs,
            "cooldown_counter": self.cooldown_counter,
        }

    def _checked_counters(self, state_dict: Mapping[str, Any]) -> dict[str, Any]:
        best = state_dict["best"]
        if isinstance(best, bool) or not isinstance(best, int | float) or math.isnan(best):
            msg = f"best must be a number (or ±inf), got {best!r}"
            raise ValueError(msg)
        return {
            "best": float(best),
            "num_bad_epochs": _integer(state_dict["num_bad_epochs"], "num_bad_epochs", 0),
            "cooldown_counter": _integer(state_dict["cooldown_counter"], "cooldown_counter", 0),
        }

    def _improves(self, value: float) -> bool:
        if self.mode == "min":
            return value < self.best * (1.0 - self.threshold)
        return value > self.best * (1.0 + self.threshold)

    def step(self, metric: float | None = None) -> None:
        """Count one epoch whose monitored value was ``metric``; reduce the rate after
        more than ``patience`` epochs without improvement."""
        if metric is None:
            msg = "ReduceLROnPlateau.step() needs the monitored value: step(val_loss)"
            raise TypeError(msg)
        try:
            value = float(metric)
        except (TypeError, ValueError):
            msg = f"metric must be a number, got {metric!r}"
            raise TypeError(msg) from None
        self.step_count += 1
        if self._improves(value):  # NaN never improves
            self.best = value
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0  # epochs in cooldown do not count
        if self.num_bad_epochs > self.patience:
            old = float(self.optimizer.lr)
            new = max(old * self.factor, self.min_lr)
            if old - new > self._EPS:
                self.optimizer.lr = new
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = self.optimizer.lr
