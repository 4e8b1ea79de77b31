"""Layers: :class:`Linear` and the activations.

Each layer keeps, in its forward pass, only what its backward pass needs, and calls the
formulas of :mod:`portprop.functional`.  Shapes: ``(batch, features)``.
"""

from __future__ import annotations

from typing import Any

from portprop import functional as F
from portprop.backend import Backend, BackendGenerator
from portprop.init import draw_linear
from portprop.module import Module, Parameter, rank_hint

__all__ = ["Dropout", "Identity", "LeakyReLU", "Linear", "ReLU", "Sigmoid", "Tanh"]

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

    def _check_input(self, X: Array, argname: str, *, grad: bool = False) -> None:
        super()._check_input(X, argname, grad=grad)
        expected = self.out_features if grad else self.in_features
        if X.ndim != 2:
            hint = rank_hint(argname, X.ndim)
            msg = f"{argname} must be 2-D (batch, {expected}) but has shape {tuple(X.shape)}.{hint}"
            raise ValueError(msg)
        if X.shape[1] != expected:
            what = "columns" if grad else "features"
            msg = (
                f"{argname} has {X.shape[1]} {what}, but the model expects {expected} "
                f"(shape {tuple(X.shape)})"
            )
            raise ValueError(msg)

    def _n_in(self) -> int:
        return self.in_features

    def _n_out(self) -> int:
        return self.out_features

    def _forward(self, X: Array) -> Array:
        self._X = X
        if self.bias is None:
            return X @ self.weight.data.T
        return F.linear(X, self.weight.data, self.bias.data)

    def _backward(self, dl_ds: Array, input_grad: bool) -> Array | None:
        X = self._X
        if X is None:
            self._require_cache(X)
        weight, bias = self.weight, self.bias
        weight.accumulate(F.weight_gradient(dl_ds, X))
        if bias is not None:
            bias.accumulate(F.bias_gradient(self.backend.sum, dl_ds))
        return F.input_gradient(dl_ds, weight.data) if input_grad else None

    def _clear_cache(self) -> None:
        self._X = None

    def extra_repr(self) -> str:
        return (
            f"{self.in_features}, {self.out_features}, bias={self.bias is not None}, "
            f"backend={self.backend.name!r}"
        )


class _Activation(Module):
    """An elementwise :math:`\\sigma`: no parameters, any number of columns."""

    _elementwise = True

    def __init__(
        self, *, backend: Backend | str | None = None, device: Any = None, dtype: Any = None
    ) -> None:
        super().__init__(backend=backend, device=device, dtype=dtype)
        self._kept: Array | None = None

    def _clear_cache(self) -> None:
        self._kept = None

    def _kept_for_backward(self) -> Array:
        kept = self._kept
        if kept is None:
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
    r""":math:`\max(0, s)`; keeps :math:`\sigma'(s) = 1[s > 0]` as zeros and ones.

    Computed as a product with that 0/1 array (faster than a selection), so a NaN input
    stays NaN, as in torch, and so does an input of :math:`-\infty`.
    """

    def _forward(self, X: Array) -> Array:
        Y, self._kept = F.relu(self.backend.xp, X)
        return Y

    def _backward(self, dl_dy: Array, input_grad: bool) -> Array | None:  # noqa: ARG002
        return F.relu_backward(dl_dy, self._kept_for_backward())


class LeakyReLU(_Activation):
    r""":math:`s` for :math:`s > 0`, ``negative_slope * s`` otherwise; keeps
    :math:`\sigma'(s)`, which is 1 or ``negative_slope``."""

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
        return F.leaky_relu_backward(dl_dy, self._kept_for_backward())

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"


class Identity(_Activation):
    """:math:`\\sigma(s) = s`; keeps nothing."""

    def _forward(self, X: Array) -> Array:
        return X

    def _backward(self, dl_dy: Array, input_grad: bool) -> Array | None:  # noqa: ARG002
        return F.identity_backward(dl_dy)


class Dropout(_Activation):
    r"""Inverted dropout: in training mode each element is zeroed with probability ``p``
    and the others are scaled by :math:`1/(1-p)`; in evaluation mode, the identity.

    Each forward pass in training mode draws a fresh keep-mask with the backend's own
    generator (:meth:`portprop.Backend.generator`) and keeps it: the backward pass
    applies the same mask.  In evaluation mode, or with ``p = 0``, it keeps nothing.
    Shapes: ``(batch, features) -> (batch, features)``.

    Parameters
    ----------
    p : float, default 0.5
        Probability of zeroing an element, in ``[0, 1)``.
    seed : int, optional
        Seed of this layer's generator; by default one is drawn from the global host
        generator, so that :func:`portprop.manual_seed` makes the masks reproducible.
    backend, device, dtype
        Where the layer computes.

    Attributes
    ----------
    generator : BackendGenerator
        The layer's generator; checkpoints save ``generator.get_state()`` and restore
        it with ``generator.set_state(...)``, which reproduces the following masks.
    """

    def __init__(
        self,
        p: float = 0.5,
        *,
        seed: int | None = None,
        backend: Backend | str | None = None,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(backend=backend, device=device, dtype=dtype)
        if isinstance(p, bool) or not isinstance(p, int | float):
            msg = f"p must be a float in [0, 1), got {p!r}"
            raise TypeError(msg)
        if not 0.0 <= p < 1.0:
            msg = f"p must be in [0, 1) (the probability of zeroing an element), got p={p!r}"
            raise ValueError(msg)
        self.p = float(p)
        self.generator: BackendGenerator = self.backend.generator(seed)

    def _is_identity(self) -> bool:
        return not self.training or self.p == 0.0

    def _forward(self, X: Array) -> Array:
        if self._is_identity():
            self._kept = None
            return X
        keep = self.generator.bernoulli(tuple(X.shape), 1.0 - self.p, X.dtype)
        Y, self._kept = F.dropout(self.backend.xp, X, keep, self.p)
        return Y

    def _backward(self, dl_dy: Array, input_grad: bool) -> Array | None:  # noqa: ARG002
        if self._kept is None and self._is_identity():
            return F.identity_backward(dl_dy)
        return F.dropout_backward(dl_dy, self._kept_for_backward())

    def _clear_cache(self) -> None:
        super()._clear_cache()
        # Module.to() calls this once the layer has moved.  A generator draws on one
        # backend, so a layer on a new backend starts a new generator from the same seed.
        if self.generator.backend != self.backend:
            self.generator = self.backend.generator(self.generator.seed)

    def extra_repr(self) -> str:
        return f"p={self.p}"
