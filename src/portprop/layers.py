"""Layers: :class:`Linear` and the activations.

Each layer keeps, in its forward pass, only what its backward pass needs, and calls the
formulas of :mod:`portprop.functional`.  Shapes: ``(batch, features)``.
"""

from __future__ import annotations

from typing import Any

from portprop import functional as F
from portprop._backend import Backend
from portprop.init import draw_linear
from portprop.module import Module, Parameter

__all__ = ["Identity", "LeakyReLU", "Linear", "ReLU", "Sigmoid", "Tanh"]

Array = Any


def _check_size(value: Any, argname: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        msg = f"{argname} must be a positive int, got {value!r}"
        raise ValueError(msg)
    return int(value)


class Linear(Module):
    r"""The affine map :math:`s = w x + b`, for a batch ``S = X @ W.T + b``.

    Parameters
    ----------
    in_features, out_features : int
        Sizes of the input and output.
    bias : bool, default True
        Whether to learn a bias.
    init : str, default "default"
        Initialization scheme (see :mod:`portprop.init`).
    seed : int, optional
        Seed of a generator used for this layer alone.
    rng : numpy.random.Generator, optional
        Generator to draw from (wins over the global one of :func:`portprop.manual_seed`).
    backend, device, dtype
        Where the parameters live and in which floating dtype (default ``float32``).

    Attributes
    ----------
    weight : Parameter
        Shape ``(out_features, in_features)``.
    bias : Parameter or None
        Shape ``(out_features,)``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        bias: bool = True,
        init: str = "default",
        seed: int | None = None,
        rng: Any = None,
        backend: Backend | str | None = None,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(backend=backend, device=device, dtype=dtype)
        self.in_features = _check_size(in_features, "in_features")
        self.out_features = _check_size(out_features, "out_features")
        weight, b = draw_linear(init, self.out_features, self.in_features, seed=seed, rng=rng)
        self.weight = Parameter(self.backend.from_host(weight, self.dtype))
        self.bias = Parameter(self.backend.from_host(b, self.dtype)) if bias else None
        self._X: Array | None = None

    def _check_input(self, X: Array, argname: str) -> None:
        super()._check_input(X, argname)
        expected = self.in_features if argname == "X" else self.out_features
        if X.ndim != 2:
            hint = (
                " Reshape a single sample with x.reshape(1, -1), or a single feature with"
                " x.reshape(-1, 1)."
                if X.ndim == 1
                else ""
            )
            msg = f"{argname} must be 2-D (batch, {expected}) but has shape {tuple(X.shape)}.{hint}"
            raise ValueError(msg)
        if X.shape[1] != expected:
            what = "features" if argname == "X" else "columns"
            msg = (
                f"{argname} has {X.shape[1]} {what}, but the layer expects {expected} "
                f"(shape {tuple(X.shape)})"
            )
            raise ValueError(msg)

    def _forward(self, X: Array) -> Array:
        self._X = X
        if self.bias is None:
            return X @ self.weight.data.T
        return F.linear(X, self.weight.data, self.bias.data)

    def _backward(self, dl_ds: Array, input_grad: bool) -> Array | None:
        X = self._X
        self._require_cache(X)
        self.weight.accumulate(F.weight_gradient(dl_ds, X))
        if self.bias is not None:
            self.bias.accumulate(F.bias_gradient(self.backend.xp, dl_ds))
        return F.input_gradient(dl_ds, self.weight.data) if input_grad else None

    def _clear_cache(self) -> None:
        self._X = None

    def extra_repr(self) -> str:
        return (
            f"{self.in_features}, {self.out_features}, bias={self.bias is not None}, "
            f"backend={self.backend.name!r}"
        )


class _Activation(Module):
    """An elementwise :math:`\\sigma`: no parameters, any number of columns."""

    def __init__(
        self, *, backend: Backend | str | None = None, device: Any = None, dtype: Any = None
    ) -> None:
        super().__init__(backend=backend, device=device, dtype=dtype)
        self._kept: Array | None = None

    def _clear_cache(self) -> None:
        self._kept = None

    def _kept_for_backward(self) -> Array:
        kept = self._kept
        self._require_cache(kept)
        return kept


class Tanh(_Activation):
    r""":math:`\tanh`; keeps its output, since :math:`\tanh' = 1 - \tanh^2`."""

    def _forward(self, X: Array) -> Array:
        self._kept = F.tanh(self.backend.xp, X)
        return self._kept

    def _backward(self, dl_dy: Array, input_grad: bool) -> Array | None:  # noqa: ARG002
        return F.tanh_backward(dl_dy, self._kept_for_backward())


class Sigmoid(_Activation):
    r"""The logistic function, computed without overflow; keeps its output, since
    :math:`\sigma' = \sigma(1 - \sigma)`."""

    def _forward(self, X: Array) -> Array:
        self._kept = F.sigmoid(self.backend.xp, X)
        return self._kept

    def _backward(self, dl_dy: Array, input_grad: bool) -> Array | None:  # noqa: ARG002
        return F.sigmoid_backward(dl_dy, self._kept_for_backward())


class ReLU(_Activation):
    r""":math:`\max(0, s)`; keeps the boolean mask :math:`s > 0`."""

    def _forward(self, X: Array) -> Array:
        Y, self._kept = F.relu(self.backend.xp, X)
        return Y

    def _backward(self, dl_dy: Array, input_grad: bool) -> Array | None:  # noqa: ARG002
        return F.relu_backward(self.backend.xp, dl_dy, self._kept_for_backward())


class LeakyReLU(_Activation):
    r""":math:`s` for :math:`s > 0`, ``negative_slope * s`` otherwise; keeps the mask."""

    def __init__(
        self,
        negative_slope: float = 0.01,
        *,
        backend: Backend | str | None = None,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(backend=backend, device=device, dtype=dtype)
        if isinstance(negative_slope, bool) or not isinstance(negative_slope, int | float):
            msg = f"negative_slope must be a float, got {negative_slope!r}"
            raise TypeError(msg)
        self.negative_slope = float(negative_slope)

    def _forward(self, X: Array) -> Array:
        Y, self._kept = F.leaky_relu(self.backend.xp, X, self.negative_slope)
        return Y

    def _backward(self, dl_dy: Array, input_grad: bool) -> Array | None:  # noqa: ARG002
        mask = self._kept_for_backward()
        return F.leaky_relu_backward(self.backend.xp, dl_dy, mask, self.negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"


class Identity(_Activation):
    """:math:`\\sigma(s) = s`; keeps nothing."""

    def _forward(self, X: Array) -> Array:
        return X

    def _backward(self, dl_dy: Array, input_grad: bool) -> Array | None:  # noqa: ARG002
        return F.identity_backward(dl_dy)
