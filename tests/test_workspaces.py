"""Workspaces (issue 13): a step of a batch shape seen before writes into the buffers of
that step, with the same bits as without them; the caller never receives a buffer that
a later step overwrites; at most two batch shapes are kept per module."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from conftest import to_numpy

import portprop as pp

# Batch shapes of a run: a repeated training batch, the last smaller batch, and a third
# shape that evicts one of the two kept (then the training batch again).
SHAPES = (8, 8, 3, 8, 3, 5, 8, 8)
N_IN, N_OUT = 5, 3


def _layers(backend: pp.Backend) -> dict[str, Callable[[], list[pp.Module]]]:
    """Every layer type, each between two Linear layers (one without a bias)."""

    def linear(n_in: int, n_out: int, *, bias: bool = True) -> pp.Linear:
        return pp.Linear(n_in, n_out, bias=bias, backend=backend)

    return {
        "relu": lambda: [pp.ReLU()],
        "leaky_relu": lambda: [pp.LeakyReLU(0.1)],
        "tanh": lambda: [pp.Tanh()],
        "sigmoid": lambda: [pp.Sigmoid()],
        "identity": lambda: [pp.Identity()],
        "dropout": lambda: [pp.Dropout(0.3, seed=4), pp.ReLU()],
        "gelu": lambda: [pp.GELU()],
        "gelu_tanh": lambda: [pp.GELU("tanh")],
        "silu": lambda: [pp.SiLU()],
        "elu": lambda: [pp.ELU(0.5)],
        "softplus": lambda: [pp.Softplus()],
        "layer_norm": lambda: [pp.LayerNorm(6, backend=backend), pp.ReLU()],
        "no_bias": lambda: [linear(6, 6, bias=False), pp.Tanh()],
    }


LAYER_NAMES = (
    "relu",
    "leaky_relu",
    "tanh",
    "sigmoid",
    "identity",
    "dropout",
    "gelu",
    "gelu_tanh",
    "silu",
    "elu",
    "softplus",
    "layer_norm",
    "no_bias",
)
LOSS_NAMES = ("mse", "l1", "huber", "smooth_l1", "cross_entropy", "bce", "nll")


def _model(backend: pp.Backend, middle: str, loss_name: str) -> pp.Sequential:
    pp.manual_seed(0)
    inner = _layers(backend)[middle]()
    tail: list[pp.Module] = [pp.LogSoftmax()] if loss_name == "nll" else []
    return pp.Sequential(
        pp.Linear(N_IN, 6, backend=backend),
        *inner,
        pp.Linear(6, 6, backend=backend),
        pp.ReLU(),
        pp.Linear(6, N_OUT, backend=backend),
        *tail,
    )


def _loss(name: str) -> Any:
    return {
        "mse": pp.MSELoss(),
        "l1": pp.L1Loss(),
        "huber": pp.HuberLoss(delta=0.5),
        "smooth_l1": pp.SmoothL1Loss(reduction="sum"),
        "cross_entropy": pp.CrossEntropyLoss(label_smoothing=0.1),
        "bce": pp.BCEWithLogitsLoss(),
        "nll": pp.NLLLoss(),
    }[name]


def _batches(backend: pp.Backend, loss_name: str) -> list[tuple[Any, Any]]:
    rng = np.random.default_rng(1)
    out = []
    for n in SHAPES:
        X = rng.standard_normal((n, N_IN)).astype(np.float32)
        if loss_name in ("cross_entropy", "nll"):
            y: Any = rng.integers(0, N_OUT, size=n)
        elif loss_name == "bce":
            y = (rng.random((n, N_OUT)) < 0.5).astype(np.float32)
        else:
            y = rng.standard_normal((n, N_OUT)).astype(np.float32)
        out.append((pp.asarray(X, backend=backend), pp.asarray(y, backend=backend)))
    return out


def _train(model: pp.Sequential, loss: Any, batches: list[tuple[Any, Any]]) -> list[Any]:
    """Steps as fit takes them (zero_grad after the forward pass), with momentum; returns
    the parameters, the outputs and the loss gradients on the host."""
    optimizer = pp.SGD(model.parameters(), lr=0.05, momentum=0.9)
    seen = []
    for X, y in batches:
        out = model.forward(X)
        seen.append(to_numpy(loss.forward(out, y)))
        model.zero_grad()
        model.backward(loss.backward(), input_grad=False)
        optimizer.step()
        seen.append(to_numpy(out))
    return seen + [to_numpy(p.data) for p in model.parameters()]


def _needs_workspaces(backend: pp.Backend) -> None:
    if not backend.has_workspaces:
        pytest.skip(f"{backend.name} has no workspaces (its arrays take no out=)")


@pytest.mark.parametrize("loss_name", LOSS_NAMES)
@pytest.mark.parametrize("middle", LAYER_NAMES)
def test_same_bits_with_and_without_workspaces(
    backend: pp.Backend, middle: str, loss_name: str
) -> None:
    runs = []
    for enabled in (True, False):
        model = _model(backend, middle, loss_name).use_workspaces(enabled)
        assert model.workspaces == (enabled and backend.has_workspaces)
        runs.append(_train(model, _loss(loss_name), _batches(backend, loss_name)))
    with_ws, without = runs
    assert len(with_ws) == len(without)
    for i, (a, b) in enumerate(zip(with_ws, without, strict=True)):
        assert a.dtype == b.dtype, i
        np.testing.assert_array_equal(a, b, err_msg=f"array {i} differs")


def test_buffers_are_reused_for_a_shape_seen_before(backend: pp.Backend) -> None:
    _needs_workspaces(backend)
    model = _model(backend, "relu", "mse")
    loss = pp.MSELoss()
    (X, y), _, (X3, y3) = _batches(backend, "mse")[:3]

    def step(X: Any, y: Any) -> tuple[Any, Any]:
        loss.forward(model.forward(X), y)
        model.zero_grad()
        model.backward(loss.backward(), input_grad=False)
        return model[2]._X, model[0].weight.grad  # the ReLU's output, kept by Linear 2

    kept, grad = step(X, y)
    kept_again, grad_again = step(X, y)
    assert kept_again is kept
    assert grad_again is grad
    kept_small, _ = step(X3, y3)  # a new shape has its own buffers
    assert kept_small is not kept
    assert tuple(kept_small.shape) == (3, 6)
    assert step(X, y)[0] is kept  # and the first shape's are still there


def test_without_workspaces_every_step_allocates(backend: pp.Backend) -> None:
    model = _model(backend, "relu", "mse").use_workspaces(False)
    X = _batches(backend, "mse")[0][0]
    model.forward(X)
    first = model[2]._X
    model.forward(X)
    assert model[2]._X is not first
    assert model[1]._ws is None
    assert model[1]._ws_cache is None


def test_jax_and_array_api_strict_have_no_workspaces() -> None:
    for name in ("jax", "array_api_strict"):
        try:
            backend = pp.get_backend(backend=name)
        except pp.BackendUnavailableError:
            continue
        assert not backend.has_workspaces, name
        model = _model(backend, "relu", "mse")
        assert not model.workspaces
        model.forward(_batches(backend, "mse")[0][0])
        assert all(m._ws is None and m._ws_cache is None for m in model.modules()), name


def test_at_most_two_shapes_are_kept(backend: pp.Backend) -> None:
    _needs_workspaces(backend)
    model = _model(backend, "tanh", "mse")
    rng = np.random.default_rng(2)
    for n in (8, 3, 5):
        model.forward(
            pp.asarray(rng.standard_normal((n, N_IN)).astype(np.float32), backend=backend)
        )
    for module in model.layers:
        cache = module._ws_cache
        assert cache is not None
        assert [key[0][0] for key in cache] == [3, 5]  # 8, the least recently used, left


def test_the_caller_never_receives_a_workspace(backend: pp.Backend) -> None:
    _needs_workspaces(backend)
    pp.manual_seed(0)
    model = pp.Sequential(
        pp.Identity(),
        pp.Linear(N_IN, 6, backend=backend),
        pp.ReLU(),
        pp.Linear(6, 6, backend=backend),
        pp.Tanh(),
        pp.Dropout(0.5, seed=1),
    ).eval()  # the Dropout is the identity: the Tanh's output is the model's
    batches = _batches(backend, "mse")
    X, X_next = batches[0][0], batches[1][0]
    out = model.forward(X)
    grad_out = pp.asarray(np.ones((8, 6), np.float32), backend=backend)
    grad_in = model.backward(grad_out)
    saved_out, saved_grad = to_numpy(out), to_numpy(grad_in)
    model.forward(X_next)
    model.backward(pp.asarray(np.full((8, 6), 2.0, np.float32), backend=backend))
    np.testing.assert_array_equal(to_numpy(out), saved_out)
    np.testing.assert_array_equal(to_numpy(grad_in), saved_grad)
    np.testing.assert_array_equal(to_numpy(grad_out), np.ones((8, 6), np.float32))


def test_gradients_add_across_backward_calls(backend: pp.Backend) -> None:
    grads = []
    for enabled in (True, False):
        model = _model(backend, "relu", "mse").use_workspaces(enabled)
        X = _batches(backend, "mse")[0][0]
        for scale in (1.0, 3.0):
            model.forward(X)
            g = pp.asarray(np.full((8, N_OUT), scale, np.float32), backend=backend)
            model.backward(g)
        grads.append([to_numpy(p.grad) for p in model.parameters()])
    for a, b in zip(*grads, strict=True):
        np.testing.assert_array_equal(a, b)


def test_fit_gives_the_same_bits(backend: pp.Backend) -> None:
    rng = np.random.default_rng(3)
    X = rng.standard_normal((45, N_IN)).astype(np.float32)  # batches of 16, 16 and 13
    y = rng.integers(0, N_OUT, size=45)
    params = []
    for enabled in (True, False):
        model = _model(backend, "leaky_relu", "cross_entropy").use_workspaces(enabled)
        optimizer = pp.Adam(model.parameters(), lr=0.01)
        pp.fit(
            model,
            pp.CrossEntropyLoss(),
            optimizer,
            X,
            y,
            epochs=3,
            batch_size=16,
            seed=0,
            verbose=0,
        )
        params.append([to_numpy(p.data) for p in model.parameters()])
    for a, b in zip(*params, strict=True):
        np.testing.assert_array_equal(a, b)


def test_use_workspaces_reaches_every_module_and_returns_it(backend: pp.Backend) -> None:
    model = _model(backend, "tanh", "mse")
    assert model.use_workspaces(False) is model
    assert not any(m._workspaces_wanted for m in model.modules())
    assert all(not m.workspaces for m in model.modules())
    model.use_workspaces()
    assert all(m.workspaces == backend.has_workspaces for m in model.modules())


def test_turning_workspaces_off_drops_the_buffers(backend: pp.Backend) -> None:
    _needs_workspaces(backend)
    model = _model(backend, "relu", "mse")
    model.forward(_batches(backend, "mse")[0][0])
    assert model[1]._ws_cache
    model.use_workspaces(False)
    assert all(m._ws_cache is None and m._ws is None for m in model.modules())


@pytest.mark.parametrize("bad", [1, None, "yes"])
def test_use_workspaces_refuses_a_non_bool(bad: Any) -> None:
    model = pp.Sequential(pp.Linear(2, 2))
    with pytest.raises(TypeError, match=r"enabled must be a bool, got .*"):
        model.use_workspaces(bad)
    assert model.workspaces  # unchanged
