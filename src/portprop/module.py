"""Modules: parameters, the forward/backward protocol, and :class:`Sequential`.

A module's ``forward`` keeps what its ``backward`` needs; ``backward`` receives the
gradient of the loss with respect to the module's output, *adds* the gradients of its
parameters into their ``grad`` and returns the gradient with respect to its input.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

from portprop.backend import Backend, dtype_name, resolve
from portprop.errors import MixedBackendError, MixedDeviceError, StateDictError

__all__ = ["Module", "Parameter", "Sequential"]

Array = Any


def rank_hint(argname: str, ndim: int) -> str:
    """How to reshape an array of ``ndim`` dimensions into ``(samples, features)``, as a
    sentence to append to an error message (empty for a 2-D array)."""
    if ndim == 0:
        return f" Wrap a single value as one sample of one feature with {argname}.reshape(1, 1)."
    if ndim == 1:
        return (
            f" Reshape one feature per sample with {argname}.reshape(-1, 1), or a single "
            f"sample with {argname}.reshape(1, -1)."
        )
    if ndim > 2:
        return (
            f" Flatten each sample's trailing dimensions with "
            f"{argname}.reshape({argname}.shape[0], -1)."
        )
    return ""


class Parameter:
    """A trainable array and the gradient accumulated for it.

    Attributes
    ----------
    data : array
        The value.  Optimizers update it in place where the backend allows and
        rebind it where arrays are immutable (JAX): always read ``param.data`` afresh.
    grad : array or None
        The sum of the gradients of every ``backward`` since the last ``zero_grad``.
    """

    __slots__ = ("data", "grad")

    def __init__(self, data: Array) -> None:
        self.data = data
        self.grad: Array | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    def accumulate(self, gradient: Array) -> None:
        """Add ``gradient`` into :attr:`grad` (the first one after ``zero_grad`` is kept as is)."""
        if self.grad is None:
            self.grad = gradient
        else:
            self.grad += gradient

    def __repr__(self) -> str:
        return f"Parameter(shape={self.shape}, dtype={dtype_name(self.data.dtype)})"


class Module:
    """Base class: a differentiable map with an explicit backward pass.

    Subclasses implement ``_forward(X)`` and ``_backward(dl_dy, input_grad)``; the public
    :meth:`forward` and :meth:`backward` check their arguments first.

    A module whose output always has its input's shape (an activation) sets the class
    attribute ``_elementwise = True``; one that needs a fixed number of input features
    or gives a fixed number of outputs says so through ``_n_in()`` and ``_n_out()``
    (:class:`~portprop.Linear` does).  :class:`Sequential` uses them to check the
    number of features of its input, and :func:`portprop.fit` the width of the targets,
    before any computation.
    """

    backend: Backend
    dtype: Any
    training: bool
    _elementwise: ClassVar[bool] = False

    def __init__(
        self, *, backend: Backend | str | None = None, device: Any = None, dtype: Any = None
    ) -> None:
        self.backend, self.dtype = resolve(backend, device, dtype)
        self.training = True

    # ---- the protocol ---------------------------------------------------------------

    def forward(self, X: Array) -> Array:
        """Compute the output for a batch ``X`` and keep what :meth:`backward` needs."""
        self._check_input(X, "X")
        return self.backend.run(self._forward, X)

    def backward(self, grad_output: Array, *, input_grad: bool = True) -> Array | None:
        """Back-propagate ``grad_output`` (the gradient of the loss with respect to the
        output of the last :meth:`forward`).

        Parameter gradients are *added* to ``param.grad``; call :meth:`zero_grad`
        between steps.  Returns the gradient with respect to the input, or ``None`` when
        ``input_grad=False`` (which skips the input-gradient product of the first layer).
        """
        self._check_input(grad_output, "grad_output", grad=True)
        return self.backend.run(self._backward, grad_output, input_grad)

    def _forward(self, X: Array) -> Array:
        raise NotImplementedError

    def _backward(self, dl_dy: Array, input_grad: bool) -> Array | None:
        raise NotImplementedError

    def _check_input(self, X: Array, argname: str, *, grad: bool = False) -> None:  # noqa: ARG002
        """Raise unless ``X`` (an input, or with ``grad`` the gradient of an output) is an
        array of the model's backend, device and dtype; subclasses add shape checks."""
        self.backend.check(X, argname)
        if X.dtype != self.dtype:
            msg = (
                f"{argname} has dtype {dtype_name(X.dtype)} but the model computes in "
                f"{dtype_name(self.dtype)}; convert it with "
                f"portprop.asarray({argname}, dtype={dtype_name(self.dtype)!r}, "
                f"backend={self.backend.name!r})"
            )
            raise TypeError(msg)

    def _n_in(self) -> int | None:
        """The number of input features :meth:`forward` needs, or ``None`` if it takes any."""
        return None

    def _n_out(self) -> int | None:
        """The number of output columns :meth:`forward` gives, or ``None`` if unknown."""
        return None

    def _require_cache(self, cached: Any) -> None:
        if cached is None:
            msg = f"{type(self).__name__}.backward() was called before forward()"
            raise RuntimeError(msg)

    # ---- parameters -----------------------------------------------------------------

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """``(name, parameter)`` pairs with torch's names (``"0.weight"``)."""
        for name, value in vars(self).items():
            if isinstance(value, Parameter):
                yield prefix + name, value
        for name, child in self.named_children():
            yield from child.named_parameters(f"{prefix}{name}.")

    def named_children(self) -> Iterator[tuple[str, Module]]:
        return iter(())

    def parameters(self) -> list[Parameter]:
        """Every parameter, in the order of :meth:`named_parameters`."""
        return [p for _, p in self.named_parameters()]

    def zero_grad(self) -> None:
        """Forget accumulated gradients (``grad`` becomes ``None``, as in torch)."""
        for p in self.parameters():
            p.grad = None

    def train(self, mode: bool = True) -> Module:
        """Set training mode (and return self)."""
        self.training = mode
        for _, child in self.named_children():
            child.train(mode)
        return self

    def eval(self) -> Module:
        """Set evaluation mode (and return self)."""
        return self.train(False)

    def _clear_cache(self) -> None:
        """Drop what the last forward kept."""

    # ---- moving and saving ----------------------------------------------------------

    def to(
        self, backend: Backend | str | None = None, *, device: Any = None, dtype: Any = None
    ) -> Module:
        """Move every parameter to another backend, device or dtype, in place; returns self.

        Accumulated gradients and what the last forward kept are dropped.
        """
        if backend is None:  # a device alone stays within the model's library
            backend = self.backend
        target, target_dtype = resolve(backend, device, self.dtype if dtype is None else dtype)
        moved = {
            name: target.asarray(p.data, dtype=target_dtype, copy=True)
            for name, p in self.named_parameters()
        }
        for name, p in self.named_parameters():
            p.data = moved[name]
            p.grad = None
        for module in self.modules():
            module.backend, module.dtype = target, target_dtype
            module._clear_cache()
        return self

    def modules(self) -> Iterator[Module]:
        """This module and every module below it."""
        yield self
        for _, child in self.named_children():
            yield from child.modules()

    def state_dict(self) -> dict[str, Array]:
        """The parameters by torch name (``"0.weight"``, ``"0.bias"``, ...).

        The arrays are the parameters themselves, not copies (as in torch).
        """
        return {name: p.data for name, p in self.named_parameters()}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Copy arrays of any supported library (a torch ``nn.Sequential`` state dict
        included) into the parameters, converting them to this model's backend, device
        and dtype.

        Every key and shape is checked first: on any mismatch a :class:`StateDictError`
        lists all of them and nothing is changed.
        """
        own = dict(self.named_parameters())
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        wrong = [
            f"{k}: expected shape {own[k].shape}, got {tuple(state_dict[k].shape)}"
            for k in own
            if k in state_dict and tuple(getattr(state_dict[k], "shape", ())) != own[k].shape
        ]
        if missing or unexpected or wrong:
            parts = []
            if missing:
                parts.append(f"missing keys {missing}")
            if unexpected:
                parts.append(f"unexpected keys {unexpected}")
            if wrong:
                parts.append("wrong shapes: " + "; ".join(wrong))
            msg = "state_dict does not match the model (nothing was loaded): " + "; ".join(parts)
            raise StateDictError(msg)
        converted = {
            k: self.backend.asarray(state_dict[k], dtype=self.dtype, copy=True) for k in own
        }
        for k, p in own.items():
            p.data = converted[k]
            p.grad = None

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"


class Sequential(Module):
    """Modules applied in order; ``backward`` runs them in reverse.

    >>> import portprop as pp
    >>> net = pp.Sequential(pp.Linear(2, 3), pp.ReLU(), pp.Linear(3, 1))
    >>> [name for name, _ in net.named_parameters()]
    ['0.weight', '0.bias', '2.weight', '2.bias']
    """

    def __init__(self, *layers: Module) -> None:
        if not layers:
            msg = "Sequential needs at least one layer, got none"
            raise ValueError(msg)
        for i, layer in enumerate(layers):
            if not isinstance(layer, Module):
                msg = f"layer {i} must be a portprop Module, got {type(layer).__name__}"
                raise TypeError(msg)
        backend, dtype = layers[0].backend, layers[0].dtype
        for i, layer in enumerate(layers):
            if layer.backend == backend and layer.dtype == dtype:
                continue
            msg = (
                f"all layers must share one backend and dtype: layer 0 is "
                f"{backend.name}/{dtype_name(dtype)}, layer {i} is "
                f"{layer.backend.name}/{dtype_name(layer.dtype)}. Build every layer with the "
                f"same backend= and dtype=, or move one with layer.to(...)."
            )
            if layer.backend.library != backend.library:
                raise MixedBackendError(msg)
            if layer.backend != backend:
                raise MixedDeviceError(msg)
            raise TypeError(msg)
        self.layers = tuple(layers)
        self.backend, self.dtype, self.training = backend, dtype, True
        # The layers that fix the width: the first and the last that are not elementwise.
        # X is checked by the first (activations before it keep its shape), grad_output
        # by the last.
        shaped = [i for i, layer in enumerate(layers) if not layer._elementwise]
        self._entry = shaped[0] if shaped else 0
        self._exit = shaped[-1] if shaped else len(layers) - 1
        for i, j in itertools.pairwise(shaped):
            n_out, n_in = layers[i]._n_out(), layers[j]._n_in()
            if n_out is not None and n_in is not None and n_out != n_in:
                msg = (
                    f"layer {j} ({type(layers[j]).__name__}) expects {n_in} input features, "
                    f"but layer {i} ({type(layers[i]).__name__}) gives {n_out} outputs"
                )
                raise ValueError(msg)
        # The layers never change, so neither does the list of parameters.
        self._parameters = [p for _, p in super().named_parameters()]
        with_params = [i for i, layer in enumerate(layers) if layer.parameters()]
        # Layers before the first one with parameters need no backward pass unless the
        # caller wants the gradient with respect to the input.
        self._first_with_params = with_params[0] if with_params else len(layers)

    def named_children(self) -> Iterator[tuple[str, Module]]:
        return ((str(i), layer) for i, layer in enumerate(self.layers))

    def parameters(self) -> list[Parameter]:
        return list(self._parameters)

    def zero_grad(self) -> None:
        for p in self._parameters:
            p.grad = None

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, index: int) -> Module:
        return self.layers[index]

    def __iter__(self) -> Iterator[Module]:
        return iter(self.layers)

    @property
    def _elementwise(self) -> bool:  # type: ignore[override]
        return all(layer._elementwise for layer in self.layers)

    def _n_in(self) -> int | None:
        return self.layers[self._entry]._n_in()

    def _n_out(self) -> int | None:
        return self.layers[self._exit]._n_out()

    def _check_input(self, X: Array, argname: str, *, grad: bool = False) -> None:
        # The layer that fixes the width checks the backend, the dtype, the rank and
        # the number of columns, so that a backend's own matmul error never surfaces.
        self.layers[self._exit if grad else self._entry]._check_input(X, argname, grad=grad)

    def _forward(self, X: Array) -> Array:
        for layer in self.layers:
            X = layer._forward(X)
        return X

    def _backward(self, dl_dy: Array, input_grad: bool) -> Array | None:
        stop = 0 if input_grad else self._first_with_params
        grad: Array | None = dl_dy
        for i in range(len(self.layers) - 1, stop - 1, -1):
            grad = self.layers[i]._backward(grad, input_grad or i > stop)
        return grad if input_grad else None

    def extra_repr(self) -> str:
        inner = "".join(f"\n  ({i}): {layer!r}" for i, layer in enumerate(self.layers))
        return inner + "\n" if inner else ""
