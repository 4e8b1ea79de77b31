"""Hand-written gradients against finite differences, with :func:`portprop.gradcheck`.

Every layer, every loss with both reductions, and whole networks are checked on every
backend, coordinate by coordinate (``mode="full"``) and along random directions
(``mode="random"``).  Deliberately wrong backward passes must fail the check, and the
model handed to ``gradcheck`` must come back untouched.

Batches and layers are small on purpose: JAX and array-api-strict are slow per
operation, and ``mode="full"`` perturbs every coordinate one at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from conftest import to_numpy

import portprop as pp

BATCH = 5
MODES = ("full", "random")
REDUCTIONS = ("mean", "sum")

# Factories of the activations under test: ``make(backend=..., dtype=...)``.
ACTIVATIONS: dict[str, Callable[..., pp.Module]] = {
    "tanh": pp.Tanh,
    "relu": pp.ReLU,
    "sigmoid": pp.Sigmoid,
    "leaky_relu": lambda **kw: pp.LeakyReLU(0.1, **kw),
    "identity": pp.Identity,
}


# ---- helpers ---------------------------------------------------------------------------


def _batch(
    backend: pp.Backend, in_features: int, loss: pp.Loss, out_features: int, seed: int
) -> tuple[Any, Any]:
    """A float32 input ``(BATCH, in_features)`` and a target that suits ``loss``.

    gradcheck makes its own float64 copies of both; the float32 data checks that it does.
    They are cast on the host, so that a device without float64 can take them.
    """
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((BATCH, in_features)).astype(np.float32)
    if isinstance(loss, pp.CrossEntropyLoss):
        target = rng.integers(0, out_features, size=BATCH)
    elif isinstance(loss, pp.BCEWithLogitsLoss):  # soft labels too
        target = rng.uniform(0.0, 1.0, size=(BATCH, out_features)).astype(np.float32)
    else:
        target = rng.standard_normal((BATCH, out_features)).astype(np.float32)
    return backend.asarray(X), backend.asarray(target)


def _check(
    model: pp.Module,
    loss: pp.Loss,
    X: Any,
    target: Any,
    mode: str,
    **kwargs: Any,
) -> pp.GradcheckResult:
    return pp.gradcheck(model, loss, X, target, mode=mode, directions=4, **kwargs)


def _report_line(report: str, name: str) -> str:
    """The line of a gradcheck report that belongs to tensor ``name``."""
    lines = [line for line in report.splitlines() if line.split(" ", 1)[0] == name]
    assert len(lines) == 1, f"no single line for {name!r} in:\n{report}"
    return lines[0]


def _mlp(backend: pp.Backend, dtype: str = "float32") -> pp.Sequential:
    """The 2-5-5-3 network with mixed activations."""
    kw: dict[str, Any] = {"backend": backend, "dtype": dtype}
    return pp.Sequential(
        pp.Linear(2, 5, seed=1, **kw),
        pp.Tanh(**kw),
        pp.Linear(5, 5, seed=2, **kw),
        pp.LeakyReLU(0.2, **kw),
        pp.Linear(5, 3, seed=3, **kw),
    )


class WrongTanh(pp.Tanh):
    """Forgets to square: :math:`1 - y` instead of :math:`1 - y^2`."""

    def _backward(self, dl_dy: Any, input_grad: bool) -> Any:
        return dl_dy * (1.0 - self._kept_for_backward())


class DoubledBiasLinear(pp.Linear):
    """Adds the bias gradient twice."""

    def _backward(self, dl_ds: Any, input_grad: bool) -> Any:
        grad = super()._backward(dl_ds, input_grad)
        assert self.bias is not None
        self.bias.accumulate(pp.functional.bias_gradient(self.backend.sum, dl_ds))
        return grad


# ---- every layer -----------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
def test_linear(backend64: pp.Backend, bias: bool, mode: str) -> None:
    model = pp.Linear(3, 2, bias=bias, seed=0, backend=backend64)
    loss = pp.MSELoss(reduction="sum")
    X, target = _batch(backend64, 3, loss, 2, seed=0)
    result = _check(model, loss, X, target, mode)
    assert result.passed
    expected = ["weight", "bias", "input"] if bias else ["weight", "input"]
    assert [row.name for row in result.rows] == expected


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_activation(backend64: pp.Backend, activation: str, mode: str) -> None:
    # Linear -> activation -> Linear: the inputs of the activation are continuous random
    # values, so ReLU's kink at 0 is met with probability 0.
    kw: dict[str, Any] = {"backend": backend64, "dtype": "float64"}
    model = pp.Sequential(
        pp.Linear(3, 4, seed=0, **kw), ACTIVATIONS[activation](**kw), pp.Linear(4, 2, seed=1, **kw)
    )
    loss = pp.MSELoss()
    X, target = _batch(backend64, 3, loss, 2, seed=1)
    assert _check(model, loss, X, target, mode).passed


# ---- every loss ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("loss_type", [pp.MSELoss, pp.CrossEntropyLoss, pp.BCEWithLogitsLoss])
def test_loss(backend64: pp.Backend, loss_type: type[pp.Loss], reduction: str, mode: str) -> None:
    model = pp.Linear(3, 4, seed=2, backend=backend64)
    loss = loss_type(reduction=reduction)
    X, target = _batch(backend64, 3, loss, 4, seed=2)
    assert _check(model, loss, X, target, mode).passed


# ---- whole networks --------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("loss_type", [pp.MSELoss, pp.CrossEntropyLoss, pp.BCEWithLogitsLoss])
def test_network(backend64: pp.Backend, loss_type: type[pp.Loss], mode: str) -> None:
    model = _mlp(backend64)
    loss = loss_type()
    X, target = _batch(backend64, 2, loss, 3, seed=3)
    assert _check(model, loss, X, target, mode).passed


def test_deep_network_every_activation(backend64: pp.Backend) -> None:
    kw: dict[str, Any] = {"backend": backend64, "dtype": "float64"}
    layers: list[pp.Module] = [pp.Linear(3, 4, seed=10, **kw)]
    for i, make in enumerate(ACTIVATIONS.values()):
        layers += [make(**kw), pp.Linear(4, 4, bias=i % 2 == 0, seed=11 + i, **kw)]
    model = pp.Sequential(*layers)
    loss = pp.CrossEntropyLoss(reduction="sum")
    X, target = _batch(backend64, 3, loss, 4, seed=4)
    assert _check(model, loss, X, target, "random").passed


# ---- the report ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_one_row_per_tensor(backend64: pp.Backend, mode: str) -> None:
    model = _mlp(backend64)
    loss = pp.MSELoss()
    X, target = _batch(backend64, 2, loss, 3, seed=5)
    result = _check(model, loss, X, target, mode)
    names = ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]
    assert [row.name for row in result.rows] == [*names, "input"]
    assert result.mode == mode
    assert all(row.passed for row in result.rows)
    if mode == "full":  # the worst element is named by its index in the tensor
        shapes = {name: p.shape for name, p in model.named_parameters()}
        shapes["input"] = tuple(X.shape)
        for row in result.rows:
            assert isinstance(row.index, tuple)
            assert all(0 <= i < n for i, n in zip(row.index, shapes[row.name], strict=True))
    else:
        assert all(str(row.index).startswith("direction ") for row in result.rows)
    report = str(result)
    for name in [*names, "input"]:
        assert _report_line(report, name).endswith("yes")

    without_input = _check(model, loss, X, target, mode, check_input=False)
    assert [row.name for row in without_input.rows] == names


@pytest.mark.parametrize(
    "loss_type",
    [
        pp.MSELoss,
        pp.CrossEntropyLoss,
        pp.BCEWithLogitsLoss,
    ],
)
def test_loss_used_before(backend64: pp.Backend, loss_type: type[pp.Loss]) -> None:
    # A loss that has already been through a training step, as in a real session.
    model = _mlp(backend64)
    loss = loss_type()
    X, target = _batch(backend64, 2, loss, 3, seed=11)
    loss.forward(model.forward(X), target)
    model.backward(loss.backward())
    assert _check(model, loss, X, target, "random").passed


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_model_unchanged(backend64: pp.Backend, dtype: str) -> None:
    model = _mlp(backend64, dtype)
    before = {name: np.array(to_numpy(p), copy=True) for name, p in model.state_dict().items()}
    dtypes = {name: p.dtype for name, p in model.state_dict().items()}
    loss = pp.BCEWithLogitsLoss()
    X, target = _batch(backend64, 2, loss, 3, seed=6)

    assert _check(model, loss, X, target, "full").passed

    after = model.state_dict()
    assert list(after) == list(before)
    for name, p in after.items():
        assert p.dtype == dtypes[name], name
        assert backend64.owns(p), name
        np.testing.assert_array_equal(to_numpy(p), before[name], err_msg=name)
    assert model.dtype == backend64.float_dtype(dtype)
    assert all(p.grad is None for p in model.parameters())
    assert all(m.training for m in model.modules())


# ---- wrong gradients fail --------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_wrong_activation_backward_fails(backend64: pp.Backend, mode: str) -> None:
    kw: dict[str, Any] = {"backend": backend64}
    model = pp.Sequential(
        pp.Linear(3, 4, seed=7, **kw), WrongTanh(**kw), pp.Linear(4, 2, seed=8, **kw)
    )
    loss = pp.MSELoss(reduction="sum")
    X, target = _batch(backend64, 3, loss, 2, seed=7)

    result = _check(model, loss, X, target, mode, raise_exception=False)
    assert not result.passed
    assert not result
    # The layer after the wrong one is unaffected; everything before it is wrong.
    failed = {row.name for row in result.rows if not row.passed}
    assert failed == {"0.weight", "0.bias", "input"}

    with pytest.raises(pp.GradcheckError, match=r"0\.weight") as info:
        _check(model, loss, X, target, mode)
    report = str(info.value)
    for name in ("0.weight", "0.bias", "input"):
        assert _report_line(report, name).endswith("NO")
    for name in ("2.weight", "2.bias"):
        assert _report_line(report, name).endswith("yes")


@pytest.mark.parametrize("mode", MODES)
def test_wrong_bias_gradient_fails(backend64: pp.Backend, mode: str) -> None:
    kw: dict[str, Any] = {"backend": backend64}
    model = pp.Sequential(
        pp.Linear(3, 4, seed=9, **kw), pp.Sigmoid(**kw), DoubledBiasLinear(4, 2, seed=10, **kw)
    )
    loss = pp.BCEWithLogitsLoss(reduction="sum")
    X, target = _batch(backend64, 3, loss, 2, seed=8)

    result = _check(model, loss, X, target, mode, raise_exception=False)
    assert not result.passed
    assert [row.name for row in result.rows if not row.passed] == ["2.bias"]
    row = next(row for row in result.rows if row.name == "2.bias")
    assert row.analytic == pytest.approx(2.0 * row.numeric, rel=1e-6)

    with pytest.raises(pp.GradcheckError, match=r"2\.bias") as info:
        _check(model, loss, X, target, mode)
    assert _report_line(str(info.value), "2.bias").endswith("NO")
    assert _report_line(str(info.value), "2.weight").endswith("yes")


# ---- float64 is required ---------------------------------------------------------------


@pytest.mark.parametrize("backend", ["array_api_strict:no_float64"], indirect=True)
def test_no_float64_device_raises(backend: pp.Backend) -> None:
    assert not backend.supports("float64")
    model = pp.Sequential(pp.Linear(3, 2, seed=0, backend=backend), pp.Tanh(backend=backend))
    loss = pp.MSELoss()
    X, target = _batch(backend, 3, loss, 2, seed=9)
    with pytest.raises(pp.DtypeUnsupportedError, match="float64"):
        pp.gradcheck(model, loss, X, target)


# ---- accumulation ----------------------------------------------------------------------


def test_gradients_accumulate_until_zero_grad(backend: pp.Backend) -> None:
    model = _mlp(backend)
    loss = pp.MSELoss()
    X, target = _batch(backend, 2, loss, 3, seed=10)

    def step() -> Any:
        loss.forward(model.forward(X), target)
        return model.backward(loss.backward())

    dX_once = np.array(to_numpy(step()), copy=True)
    once = {name: np.array(to_numpy(p.grad), copy=True) for name, p in model.named_parameters()}
    dX_twice = to_numpy(step())
    for name, p in model.named_parameters():
        # g + g == 2 g exactly in floating point.
        np.testing.assert_array_equal(to_numpy(p.grad), 2 * once[name], err_msg=name)
    np.testing.assert_array_equal(dX_twice, dX_once)  # the input gradient never accumulates

    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    step()
    for name, p in model.named_parameters():
        np.testing.assert_array_equal(to_numpy(p.grad), once[name], err_msg=name)
