"""Layers: :class:`Linear` and the activations.

Each layer keeps, in its forward pass, only what its backward pass needs, and calls the
formulas of :mod:`portprop.functional`.  Shapes: ``(batch, features)``.
"""

from __future__ import annotations

import math
from typing import Any

from portprop import functional as F
from portprop.backend import Backend, BackendGenerator
from portprop.init import draw_linear
from portprop.module import Module, Parameter, counter_dtype, rank_hint

__all__ = [
    "ELU",
    "GELU",
    "BatchNorm1d",
    "Dropout",
    "Identity",
    "LayerNorm",
    "LeakyReLU",
    "Linear",
    "LogSoftmax",
    "ReLU",
    "SiLU",
    "Sigmoid",
    "Softplus",
    "Tanh",
]

Array = Any


def _check_size(value: Any, argname: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        msg = f"{argname} must be a positive int, got {value!r}"
        raise ValueError(msg)
    return int(value)


def _check_real(value: Any, argname: str, *, positive: bool = False) -> float:
    """``value`` as a float: a finite real number (and > 0 with ``positive``)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        msg = f"{argname} must be a real number, got {value!r} of type {type(value).__name__}"
        raise TypeError(msg)
    number = float(value)
    if not math.isfinite(number) or (positive and number <= 0.0):
        expected = "a finite number > 0" if positive else "a finite number"
        msg = f"{argname} must be {expected}, got {value!r}"
        raise ValueError(msg)
    return number


def _check_width(X: Array, argname: str, expected: int, *, grad: bool) -> None:
    """Raise unless ``X`` is 2-D with ``expected`` columns (features, or with ``grad`` the
    columns of an output gradient)."""
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

    _output_is_scratch = True  # keeps its input, not its output

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
        # With workspaces, the array the weight's gradient is written into after zero_grad.
        self._grad_buffer: Array | None = None

    def _check_input(self, X: Array, argname: str, *, grad: bool = False) -> None:
        super()._check_input(X, argname, grad=grad)
        _check_width(X, argname, self.out_features if grad else self.in_features, grad=grad)

    def _n_in(self) -> int:
        return self.in_features

    def _n_out(self) -> int:
        return self.out_features

    def _forward(self, X: Array) -> Array:
        self._X = X
        self._workspace(X)
        b = None if self.bias is None else self.bias.data
        S = F.linear(X, self.weight.data, b, out=self._buffer("S", self._ws_out), ops=self.backend)
        return self._remember("S", S, self._ws_out)

    def _backward(self, dl_ds: Array, input_grad: bool) -> Array | None:
        X = self._X
        if X is None:
            self._require_cache(X)
        weight, bias = self.weight, self.bias
        if weight.grad is None and self._ws is not None:  # the first since zero_grad
            grad = F.weight_gradient(dl_ds, X, out=self._grad_buffer, ops=self.backend)
            weight.accumulate(grad)
            self._grad_buffer = grad
        else:
            weight.accumulate(F.weight_gradient(dl_ds, X))
        if bias is not None:
            bias.accumulate(F.bias_gradient(self.backend.sum, dl_ds))
        if not input_grad:
            return None
        out = self._buffer("dX", self._ws_grad)
        return self._remember(
            "dX", F.input_gradient(dl_ds, weight.data, out=out, ops=self.backend), self._ws_grad
        )

    def _clear_cache(self) -> None:
        super()._clear_cache()
        self._X = self._grad_buffer = None

    def extra_repr(self) -> str:
        return (
            f"{self.in_features}, {self.out_features}, bias={self.bias is not None}, "
            f"backend={self.backend.name!r}"
        )


class _Activation(Module):
    """An elementwise :math:`\\sigma`: no parameters, any number of columns.

    It computes where its input lives (inside a :class:`~portprop.Sequential`, where the
    model's parameters live): ``backend=``, ``device=`` and ``dtype=`` are not needed,
    and given, they fix the backend or dtype, so that inputs of another are refused.
    """

    _elementwise = True

    def __init__(
        self, *, backend: Backend | str | None = None, device: Any = None, dtype: Any = None
    ) -> None:
        super().__init__(backend=backend, device=device, dtype=dtype)
        self._pins = (backend is not None or device is not None, dtype is not None)
        self._kept: Array | None = None

    def _clear_cache(self) -> None:
        super()._clear_cache()
        self._kept = None

    def _output_buffer(self, X: Array) -> Array | None:
        """With workspaces, the array to write the output of input ``X`` into: ``X``
        itself after a layer that keeps no reference to its output, the buffer of the
        last step of this shape, or ``None`` (the first step, or the output leaves the
        model)."""
        if self._workspace(X) is None:
            return None
        return X if self._ws_input else self._buffer("Y", self._ws_out)

    def _in_place(self, dl_dy: Array) -> Array | None:
        """With workspaces, ``dl_dy`` itself as the array to write the input gradient
        into, where it came from a later layer of the model (which holds it no more) and
        goes to an earlier one (so the caller never receives it); else ``None``."""
        if self._ws is not None and self._ws_out and self._ws_grad:
            return dl_dy
        return None

    def _kept_for_backward(self) -> Array:
        kept = self._kept
        if kept is None:
            self._require_cache(kept)
        return kept


class Tanh(_Activation):
    r""":math:`\tanh`; keeps its output, since :math:`\tanh' = 1 - \tanh^2`."""

    def _forward(self, X: Array) -> Array:
        self._kept = None  # the last step's values go before the new ones come
        self._workspace(X)
        self._kept = F.tanh(self.backend.xp, X)
        return self._kept

    def _backward(self, dl_dy: Array, input_grad: bool) -> Array | None:  # noqa: ARG002
        out = self._in_place(dl_dy)
        return F.tanh_backward(dl_dy, self._kept_for_backward(), out=out, ops=self.backend)


class Sigmoid(_Activation):
    r"""The logistic function, computed without overflow; keeps its output, since
    :math:`\sigma' = \sigma(1 - \sigma)`."""

    def _forward(self, X: Array) -> Array:
        self._kept = None  # the last step's values go before the new ones come
        self._workspace(X)
        self._kept = F.sigmoid(self.backend.xp, X)
        return self._kept

    def _backward(self, dl_dy: Array, input_grad: bool) -> Array | None:  # noqa: ARG002
        out = self._in_place(dl_dy)
        return F.sigmoid_backward(dl_dy, self._kept_for_backward(), out=out, ops=self.backend)


class ReLU(_Activation):
    r""":math:`\max(0, s)`; keeps :math:`\sigma'(s) = 1[s > 0]` as zeros and ones.

    Computed as a product with that 0/1 array (faster than a selection), so a NaN input
    stays NaN, as in torch, and so does an input of :math:`-\infty`.
    """

    def _forward(self, X: Array) -> Array:
        self._kept = None  # the last step's values go before the new ones come
        out = self._output_buffer(X)
        Y, self._kept = F.relu(self.backend.xp, X, out=out, ops=self.backend)
        return self._remember("Y", Y, self._ws_out)

    def _backward(self, dl_dy: Array, input_grad: bool) -> Array | None:  # noqa: ARG002
        out = self._in_place(dl_dy)
        return F.relu_backward(dl_dy, self._kept_for_backward(), out=out, ops=self.backend)


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
        self._kept = None  # the last step's values go before the new ones come
        out = self._output_buffer(X)
        Y, self._kept = F.leaky_relu(
            self.backend.xp, X, self.negative_slope, out=out, ops=self.backend
        )
        return self._remember("Y", Y, self._ws_out)

    def _backward(self, dl_dy: Array, input_grad: bool) -> Array | None:  # noqa: ARG002
        out = self._in_place(dl_dy)
        return F.leaky_relu_backward(dl_dy, self._kept_for_backward(), out=out, ops=self.backend)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"


class Identity(_Activation):
    """:math:`\\sigma(s) = s`; keeps nothing."""

    _passes_through = True

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

    Like the activations, it computes where its input (or its model) lives.  Its seed
    is fixed at construction; the generator draws on the layer's backend, and a layer
    that moves to another backend (its first input there, or ``to(...)``) starts a new
    generator there from the same seed.

    Parameters
    ----------
    p : float, default 0.5
        Probability of zeroing an element, in ``[0, 1)``.
    seed : int, optional
        Seed of this layer's generator; by default one is drawn from the global host
        generator, so that :func:`portprop.manual_seed` makes the masks reproducible.
    backend, device, dtype
        Where the layer computes, if it must not follow its input.

    Attributes
    ----------
    generator : BackendGenerator
        The layer's generator, on its current backend; checkpoints save
        ``generator.get_state()`` and restore it with ``generator.set_state(...)``,
        which reproduces the following masks.
    """

    _passes_through = True  # in evaluation mode (workspaces: see Module.use_workspaces)

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
        # Drawn now (the seed from the global host generator when seed is None), on the
        # backend known now; the generator property moves it along with the layer.
        self._generator: BackendGenerator = self.backend.generator(seed)

    @property
    def generator(self) -> BackendGenerator:
        generator = self._generator
        if generator.backend is not self.backend and generator.backend != self.backend:
            # A generator draws on one backend: a layer that moved (with its input, into
            # a model, or by to()) starts a new one there from the same seed.
            generator = self._generator = self.backend.generator(generator.seed)
        return generator

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

    def extra_repr(self) -> str:
        return f"p={self.p}"


class GELU(_Activation):
    r""":math:`s\,\Phi(s)`, with :math:`\Phi` the normal distribution function, exact
    (``approximate="none"``, through :func:`portprop.functional.erf_and_erfc`) or with
    torch's tanh approximation (``approximate="tanh"``); keeps :math:`s` and
    :math:`\Phi(s)` (or :math:`\tanh u`)."""

    def __init__(
        self,
        approximate: str = "none",
        *,
        backend: Backend | str | None = None,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(backend=backend, device=device, dtype=dtype)
        if approximate not in ("none", "tanh"):
            msg = f"approximate must be 'none' or 'tanh', got {approximate!r}"
            raise ValueError(msg)
        self.approximate = approximate

    def _forward(self, X: Array) -> Array:
        xp = self.backend.xp
        Y, kept = F.gelu_tanh(xp, X) if self.approximate == "tanh" else F.gelu(xp, X)
        self._kept = (X, kept)
        return Y

    def _backward(self, dl_dy: Array, input_grad: bool) -> Array | None:  # noqa: ARG002
        S, kept = self._kept_for_backward()
        if self.approximate == "tanh":
            return F.gelu_tanh_backward(self.backend.xp, dl_dy, S, kept)
        return F.gelu_backward(self.backend.xp, dl_dy, S, kept)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class SiLU(_Activation):
    r""":math:`s\,\mathrm{sigmoid}(s)` (the swish), computed without overflow; keeps
    :math:`s` and :math:`\mathrm{sigmoid}(s)`."""

    def _forward(self, X: Array) -> Array:
        Y, sig = F.silu(self.backend.xp, X)
        self._kept = (X, sig)
        return Y

    def _backward(self, dl_dy: Array, input_grad: bool) -> Array | None:  # noqa: ARG002
        S, sig = self._kept_for_backward()
        return F.silu_backward(dl_dy, S, sig)


class ELU(_Activation):
    r""":math:`s` for :math:`s > 0`, :math:`\alpha(e^s - 1)` otherwise; keeps
    :math:`\sigma'(s)`, which is 1 or :math:`\alpha e^s`."""

    def __init__(
        self,
        alpha: float = 1.0,
        *,
        backend: Backend | str | None = None,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(backend=backend, device=device, dtype=dtype)
        self.alpha = _check_real(alpha, "alpha")

    def _forward(self, X: Array) -> Array:
        Y, self._kept = F.elu(self.backend.xp, X, self.alpha)
        return Y

    def _backward(self, dl_dy: Array, input_grad: bool) -> Array | None:  # noqa: ARG002
        return F.elu_backward(dl_dy, self._kept_for_backward())

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


class Softplus(_Activation):
    r""":math:`\frac1\beta\log(1 + e^{\beta s})`, and :math:`s` where :math:`\beta s >`
    ``threshold`` (as torch's); computed without overflow; keeps :math:`\sigma'(s)`."""

    def __init__(
        self,
        beta: float = 1.0,
        threshold: float = 20.0,
        *,
        backend: Backend | str | None = None,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(backend=backend, device=device, dtype=dtype)
        self.beta = _check_real(beta, "beta", positive=True)
        self.threshold = _check_real(threshold, "threshold")

    def _forward(self, X: Array) -> Array:
        Y, self._kept = F.softplus(self.backend.xp, X, self.beta, self.threshold)
        return Y

    def _backward(self, dl_dy: Array, input_grad: bool) -> Array | None:  # noqa: ARG002
        return F.softplus_backward(dl_dy, self._kept_for_backward())

    def extra_repr(self) -> str:
        return f"beta={self.beta}, threshold={self.threshold}"


class LogSoftmax(_Activation):
    r"""The log-probabilities :math:`z - \operatorname{lse}(z)` of each row (torch's
    ``LogSoftmax(dim=1)``), the input of :class:`~portprop.NLLLoss`; keeps its output.
    ``(batch, classes) -> (batch, classes)``."""

    def _check_input(self, X: Array, argname: str, *, grad: bool = False) -> None:
        super()._check_input(X, argname, grad=grad)
        if X.ndim != 2:
            hint = rank_hint(argname, X.ndim)
            msg = f"{argname} must be 2-D (batch, classes) but has shape {tuple(X.shape)}.{hint}"
            raise ValueError(msg)

    def _forward(self, X: Array) -> Array:
        self._kept = F.log_softmax(self.backend.xp, X)
        return self._kept

    def _backward(self, dl_dy: Array, input_grad: bool) -> Array | None:  # noqa: ARG002
        return F.log_softmax_backward(self.backend.xp, dl_dy, self._kept_for_backward())


class LayerNorm(Module):
    r"""Normalizes each sample over its features, :math:`\hat x = (x - \mu)/\sqrt{v +
    \epsilon}` with the mean :math:`\mu` and biased variance :math:`v` of the row, then
    :math:`y = \hat x \odot \gamma + \beta` (torch's ``LayerNorm`` of a 2-D input).
    Keeps :math:`\hat x` and :math:`1/\sqrt{v+\epsilon}`.  Shapes: ``(batch, features)
    -> (batch, features)``.

    Parameters
    ----------
    normalized_shape : int or tuple of one int
        The number of features.
    eps : float, default 1e-5
        Added to the variance.
    elementwise_affine : bool, default True
        Whether to learn :math:`\gamma` (``weight``, ones at first) and :math:`\beta`
        (``bias``, zeros at first).
    bias : bool, default True
        Whether to learn :math:`\beta` (with ``elementwise_affine``).
    backend, device, dtype
        Where the parameters live (without them, the layer follows its input).
    """

    def __init__(
        self,
        normalized_shape: int | tuple[int],
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        *,
        bias: bool = True,
        backend: Backend | str | None = None,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(backend=backend, device=device, dtype=dtype)
        if isinstance(normalized_shape, tuple | list) and len(normalized_shape) == 1:
            normalized_shape = normalized_shape[0]
        self.normalized_shape = (_check_size(normalized_shape, "normalized_shape"),)
        self.eps = _check_real(eps, "eps", positive=True)
        for value, argname in ((elementwise_affine, "elementwise_affine"), (bias, "bias")):
            if not isinstance(value, bool):
                msg = f"{argname} must be a bool, got {value!r}"
                raise TypeError(msg)
        self.elementwise_affine = elementwise_affine
        self._pins = (backend is not None or device is not None, dtype is not None)
        self.weight: Parameter | None = None
        self.bias: Parameter | None = None
        if elementwise_affine:
            xp, n, where = self.backend.xp, self.normalized_shape, self.backend.device
            self.weight = Parameter(xp.ones(n, dtype=self.dtype, device=where))
            if bias:
                self.bias = Parameter(xp.zeros(n, dtype=self.dtype, device=where))
        self._kept: Any = None  # (x hat, r) of the last forward

    def _check_input(self, X: Array, argname: str, *, grad: bool = False) -> None:
        super()._check_input(X, argname, grad=grad)
        _check_width(X, argname, self.normalized_shape[0], grad=grad)

    def _n_in(self) -> int:
        return self.normalized_shape[0]

    def _n_out(self) -> int:
        return self.normalized_shape[0]

    def _forward(self, X: Array) -> Array:
        Xhat, r = F.layer_norm(self.backend.xp, X, self.eps)
        self._kept = (Xhat, r)
        if self.weight is None:
            return Xhat
        return F.affine(Xhat, self.weight.data, None if self.bias is None else self.bias.data)

    def _backward(self, dl_dy: Array, input_grad: bool) -> Array | None:
        kept = self._kept
        if kept is None:
            self._require_cache(kept)
        Xhat, r = kept
        dl_dxhat = dl_dy
        if self.weight is not None:
            self.weight.accumulate(F.affine_weight_gradient(self.backend.sum, dl_dy, Xhat))
            if self.bias is not None:
                self.bias.accumulate(F.bias_gradient(self.backend.sum, dl_dy))
            dl_dxhat = F.affine_input_gradient(dl_dy, self.weight.data)
        return F.layer_norm_backward(self.backend.xp, dl_dxhat, Xhat, r) if input_grad else None

    def _clear_cache(self) -> None:
        super()._clear_cache()
        self._kept = None

    def extra_repr(self) -> str:
        return (
            f"{self.normalized_shape}, eps={self.eps}, "
            f"elementwise_affine={self.elementwise_affine}, bias={self.bias is not None}"
        )


class BatchNorm1d(Module):
    r"""Normalizes each feature over the batch (torch's ``BatchNorm1d`` of a 2-D input).

    In training, :math:`\hat x = (x - \mu_B)/\sqrt{v_B + \epsilon}` with the mean and
    the biased variance of the batch (:func:`portprop.functional.layer_norm` over axis
    0), and the running statistics move towards the batch's, the variance's towards
    the *unbiased* batch variance, as torch's do.  In evaluation, :math:`\hat x = (x
    - \mu_{\text{run}})/\sqrt{v_{\text{run}} + \epsilon}`, an affine map.  Then
    :math:`y = \hat x \odot \gamma + \beta`.  Without ``track_running_stats`` the batch
    statistics are used in both modes.  Shapes: ``(batch, features) -> (batch,
    features)``.  In data-parallel training each rank normalizes with its own batch's
    statistics, as torch's ``BatchNorm1d`` does (not ``SyncBatchNorm``).

    Parameters
    ----------
    num_features : int
        The number of features.
    eps : float, default 1e-5
        Added to the variance.
    momentum : float or None, default 0.1
        The weight of the batch in the running statistics (torch's convention:
        ``running = (1 - momentum) * running + momentum * batch``); ``None`` for the
        cumulative average of every batch so far.
    affine : bool, default True
        Whether to learn :math:`\gamma` (``weight``, ones) and :math:`\beta` (``bias``,
        zeros).
    track_running_stats : bool, default True
        Whether to keep the buffers ``running_mean`` (zeros), ``running_var`` (ones) and
        ``num_batches_tracked`` (int64), saved in :meth:`state_dict` and checkpoints.
    backend, device, dtype
        Where the parameters and buffers live.

    Raises
    ------
    ValueError
        From :meth:`forward`, for a batch of one sample in training (its variance is
        undefined), as torch does.
    """

    _buffer_names = ("running_mean", "running_var", "num_batches_tracked")

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        *,
        backend: Backend | str | None = None,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(backend=backend, device=device, dtype=dtype)
        self.num_features = _check_size(num_features, "num_features")
        self.eps = _check_real(eps, "eps", positive=True)
        if momentum is not None:
            momentum = _check_real(momentum, "momentum")
            if not 0.0 <= momentum <= 1.0:
                msg = f"momentum must be in [0, 1] or None, got {momentum!r}"
                raise ValueError(msg)
        self.momentum = momentum
        for value, argname in ((affine, "affine"), (track_running_stats, "track_running_stats")):
            if not isinstance(value, bool):
                msg = f"{argname} must be a bool, got {value!r}"
                raise TypeError(msg)
        self.affine, self.track_running_stats = affine, track_running_stats
        xp, n, where = self.backend.xp, (self.num_features,), self.backend.device
        self.weight: Parameter | None = None
        self.bias: Parameter | None = None
        if affine:
            self.weight = Parameter(xp.ones(n, dtype=self.dtype, device=where))
            self.bias = Parameter(xp.zeros(n, dtype=self.dtype, device=where))
        # the buffers (None without track_running_stats)
        self.running_mean: Array = None
        self.running_var: Array = None
        self.num_batches_tracked: Array = None
        if track_running_stats:
            self.running_mean = xp.zeros(n, dtype=self.dtype, device=where)
            self.running_var = xp.ones(n, dtype=self.dtype, device=where)
            count = getattr(xp, counter_dtype(self.backend))
            self.num_batches_tracked = xp.zeros((), dtype=count, device=where)
        self._kept: Any = None  # (x hat, r, whether r is the batch's) of the last forward

    def _check_input(self, X: Array, argname: str, *, grad: bool = False) -> None:
        super()._check_input(X, argname, grad=grad)
        _check_width(X, argname, self.num_features, grad=grad)

    def _n_in(self) -> int:
        return self.num_features

    def _n_out(self) -> int:
        return self.num_features

    def _uses_batch_statistics(self) -> bool:
        return self.training or self.running_mean is None

    def _forward(self, X: Array) -> Array:
        xp = self.backend.xp
        if self._uses_batch_statistics():
            if X.shape[0] < 2:
                msg = (
                    f"Expected more than 1 value per channel when training, got X of shape "
                    f"{tuple(X.shape)}: a batch of one sample has no variance; use batches "
                    f"of 2 or more, or call eval() first"
                )
                raise ValueError(msg)
            Xhat, r = F.layer_norm(xp, X, self.eps, axis=0)
            if self.training and self.running_mean is not None:
                self._update_running_statistics(X, r)
            self._kept = (Xhat, r, True)
        else:
            Xhat, r = F.batch_norm_eval(xp, X, self.running_mean, self.running_var, self.eps)
            self._kept = (Xhat, r, False)
        if self.weight is None or self.bias is None:
            return Xhat
        return F.affine(Xhat, self.weight.data, self.bias.data)

    def _update_running_statistics(self, X: Array, r: Array) -> None:
        xp = self.backend.xp
        mean, var = F.batch_statistics(xp, X, r, self.eps)
        self.num_batches_tracked = self.num_batches_tracked + 1
        momentum = self.momentum
        if momentum is None:  # cumulative average: the t-th batch weighs 1/t
            momentum = 1.0 / float(self.num_batches_tracked)
        self.running_mean = F.running_average(self.running_mean, mean, momentum)
        self.running_var = F.running_average(self.running_var, var, momentum)

    def _backward(self, dl_dy: Array, input_grad: bool) -> Array | None:
        kept = self._kept
        if kept is None:
            self._require_cache(kept)
        Xhat, r, from_batch = kept
        dl_dxhat = dl_dy
        if self.weight is not None and self.bias is not None:
            self.weight.accumulate(F.affine_weight_gradient(self.backend.sum, dl_dy, Xhat))
            self.bias.accumulate(F.bias_gradient(self.backend.sum, dl_dy))
            dl_dxhat = F.affine_input_gradient(dl_dy, self.weight.data)
        if not input_grad:
            return None
        if from_batch:
            return F.layer_norm_backward(self.backend.xp, dl_dxhat, Xhat, r, axis=0)
        return F.batch_norm_eval_backward(dl_dxhat, r)

    def _clear_cache(self) -> None:
        super()._clear_cache()
        self._kept = None

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}, track_running_stats={self.track_running_stats}"
        )
