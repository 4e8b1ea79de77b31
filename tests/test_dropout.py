"""Dropout and the backends' random generators, on every backend.

The keep-mask comes from the backend's own generator (``Backend.generator``): the same
seed gives the same masks, each forward pass in training mode draws a new one, the
backward pass applies the mask of the forward pass, and ``get_state``/``set_state``
reproduce the following masks exactly.  Masks are read from the output: the inputs
here have no zeros, so an element of the output is zero exactly where it was dropped.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
from typing import Any

import _wrapped
import numpy as np
import pytest
from conftest import to_numpy

import portprop as pp

SHAPE = (4, 6)


# ---- helpers ---------------------------------------------------------------------------


def _normal(backend: pp.Backend, shape: tuple[int, ...], dtype: str = "float32", seed: int = 0):
    """Standard normal data of ``shape`` (no exact zeros), cast on the host."""
    return backend.from_host(np.random.default_rng(seed).standard_normal(shape), dtype)


def _ones(backend: pp.Backend, shape: tuple[int, ...], dtype: str = "float32"):
    return backend.from_host(np.ones(shape), dtype)


def _masks(layer: pp.Module, X: Any, n: int) -> list[np.ndarray]:
    """The keep-masks of ``n`` forward passes."""
    return [to_numpy(layer.forward(X)) != 0 for _ in range(n)]


@pytest.fixture
def _restore_global_rng():
    """Tests that call ``pp.manual_seed`` leave the global host generator as they found it."""
    saved = pp.host_generator().bit_generator.state
    yield
    pp.host_generator().bit_generator.state = saved


@pytest.fixture
def wrapped():
    """The tiny third-party namespace of ``_wrapped`` registered as backend ``wrapped``."""
    pp.register_backend("wrapped", lambda: _wrapped, install="pip install wrapped")
    yield pp.get_backend(backend="wrapped")
    pp.unregister_backend("wrapped")


# ---- the generators ----------------------------------------------------------------------


def test_generator_draws_uniform_numbers_on_the_backend(backend64):
    gen = backend64.generator(0)
    for dtype in ("float32", "float64"):
        u = gen.uniform((1000,), dtype)
        assert backend64.owns(u)
        assert u.dtype == backend64.float_dtype(dtype)
        host = to_numpy(u)
        assert host.shape == (1000,)
        assert host.min() >= 0.0
        assert host.max() < 1.0
        assert abs(host.mean() - 0.5) < 0.05
    mask = gen.bernoulli((3, 5), 0.5)
    assert backend64.owns(mask)
    assert backend64.xp.isdtype(mask.dtype, "bool")
    assert tuple(mask.shape) == (3, 5)


def test_generator_states_are_plain_data(backend):
    gen = backend.generator(11)
    state = gen.get_state()
    assert json.loads(json.dumps(state)) == state
    assert state["generator"] == gen.kind
    assert state["seed"] == 11


@pytest.mark.parametrize(
    ("seed", "error"),
    [(-1, ValueError), (2**63, ValueError), ("a", TypeError), (True, TypeError), (1.0, TypeError)],
)
def test_generator_seed_is_checked(backend, seed, error):
    with pytest.raises(error, match="seed"):
        backend.generator(seed)


def test_state_of_another_kind_is_refused(backend):
    gen = backend.generator(0)
    other = "jax" if gen.kind != "jax" else "numpy"
    with pytest.raises(ValueError, match=f"cannot load the state of a '{other}' generator"):
        gen.set_state({"generator": other, "seed": 0, "state": None})
    with pytest.raises(TypeError, match="get_state"):
        gen.set_state([1, 2, 3])  # type: ignore[arg-type]


def test_host_generator_backends_agree_with_numpy(wrapped):
    """array-api-strict and registered backends draw NumPy's numbers, then move them."""
    backends = [pp.get_backend(backend="numpy"), wrapped]
    with contextlib.suppress(pp.BackendUnavailableError):
        backends.append(pp.get_backend(backend="array_api_strict"))
    X = np.random.default_rng(0).standard_normal(SHAPE)
    masks = [
        _masks(pp.Dropout(0.5, seed=5, backend=b), b.from_host(X, "float32"), 3) for b in backends
    ]
    for other in masks[1:]:
        for a, b in zip(masks[0], other, strict=True):
            np.testing.assert_array_equal(a, b)


# ---- masks: seeds, draws, fraction, scaling --------------------------------------------


def test_same_seed_gives_the_same_masks(backend):
    X = _normal(backend, SHAPE)
    first = _masks(pp.Dropout(0.5, seed=7, backend=backend), X, 3)
    again = _masks(pp.Dropout(0.5, seed=7, backend=backend), X, 3)
    other = _masks(pp.Dropout(0.5, seed=8, backend=backend), X, 3)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert any((a != c).any() for a, c in zip(first, other, strict=True))


def test_each_forward_draws_a_new_mask(backend):
    layer = pp.Dropout(0.5, seed=0, backend=backend)
    masks = _masks(layer, _normal(backend, SHAPE), 3)
    assert (masks[0] != masks[1]).any()
    assert (masks[1] != masks[2]).any()


@pytest.mark.usefixtures("_restore_global_rng")
def test_manual_seed_controls_unseeded_layers(backend):
    X = _normal(backend, SHAPE)
    pp.manual_seed(3)
    first = _masks(pp.Dropout(backend=backend), X, 2)
    pp.manual_seed(3)
    again = _masks(pp.Dropout(backend=backend), X, 2)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_fraction_kept_and_scaling(backend, p):
    shape = (400, 250)  # 100_000 elements
    n = math.prod(shape)
    layer = pp.Dropout(p, seed=1, backend=backend)
    Y = to_numpy(layer.forward(_ones(backend, shape)))
    kept = Y != 0
    # the fraction kept is 1 - p, to five standard deviations
    assert abs(kept.mean() - (1 - p)) < 5 * math.sqrt(p * (1 - p) / n)
    # the survivors are scaled by 1 / (1 - p) ...
    np.testing.assert_allclose(Y[kept], np.float32(1.0) / np.float32(1.0 - p), rtol=1e-6)
    # ... so that the expected value of each element stays 1
    assert abs(Y.mean() - 1.0) < 5 * math.sqrt(p / (1 - p) / n)


def test_eval_mode_and_p_zero_are_the_identity(backend):
    X = _normal(backend, SHAPE)
    G = _normal(backend, SHAPE, seed=1)
    for layer in (
        pp.Dropout(0.5, seed=0, backend=backend).eval(),
        pp.Dropout(0.0, seed=0, backend=backend),
    ):
        state = layer.generator.get_state()
        Y = layer.forward(X)
        np.testing.assert_array_equal(to_numpy(Y), to_numpy(X))
        assert layer._kept is None  # keeps nothing
        np.testing.assert_array_equal(to_numpy(layer.backward(G)), to_numpy(G))
        assert layer.generator.get_state() == state  # and draws nothing


# ---- backward ----------------------------------------------------------------------------


def test_backward_uses_the_mask_of_the_forward_pass(backend):
    p = 0.3
    layer = pp.Dropout(p, seed=2, backend=backend)
    X = _normal(backend, SHAPE)
    G = _normal(backend, SHAPE, seed=1)
    for _ in range(2):  # the second forward's mask replaces the first
        kept = to_numpy(layer.forward(X)) != 0
        state = layer.generator.get_state()
        dX = layer.backward(G)
        assert backend.owns(dX)
        expected = np.where(kept, to_numpy(G) / np.float32(1 - p), 0)
        np.testing.assert_allclose(to_numpy(dX), expected, rtol=1e-6)
        assert layer.generator.get_state() == state  # backward draws nothing


def test_backward_before_forward_in_training_is_an_error(backend):
    layer = pp.Dropout(0.5, seed=0, backend=backend)
    with pytest.raises(RuntimeError, match=r"Dropout.backward\(\) was called before forward"):
        layer.backward(_normal(backend, SHAPE))


def _torch_input_gradient(X: np.ndarray, mask: np.ndarray, G: np.ndarray, p: float):
    """``torch.autograd``'s gradient of ``sum(G * dropout(X))`` with ``mask`` held fixed,
    dropout written as torch writes it: ``X * mask * (1 / (1 - p))``."""
    torch = pytest.importorskip("torch")
    x = torch.tensor(X, dtype=torch.float64, device="cpu", requires_grad=True)
    m = torch.tensor(mask, dtype=torch.float64, device="cpu")
    y = x * m * (1.0 / (1.0 - p))
    (y * torch.tensor(G, dtype=torch.float64, device="cpu")).sum().backward()
    return y.detach().numpy(), x.grad.numpy()


def test_agrees_with_torch_autograd_for_the_same_mask(backend64):
    p = 0.4
    layer = pp.Dropout(p, seed=4, backend=backend64, dtype="float64")
    X = _normal(backend64, (8, 5), "float64")
    G = _normal(backend64, (8, 5), "float64", seed=1)
    Y = layer.forward(X)
    dX = layer.backward(G)
    mask = to_numpy(layer._kept) != 0
    assert mask.any()
    assert not mask.all()
    y_torch, dx_torch = _torch_input_gradient(to_numpy(X), mask, to_numpy(G), p)
    np.testing.assert_allclose(to_numpy(Y), y_torch, rtol=1e-12)
    np.testing.assert_allclose(to_numpy(dX), dx_torch, rtol=1e-12)


def test_train_mode_backward_matches_finite_differences(backend64):
    """In training mode, with the mask held fixed (the generator's state is restored
    before every forward pass), a network with dropout has the gradients of central
    finite differences, for the input and the first layer's weight."""
    kw: dict[str, Any] = {"backend": backend64, "dtype": "float64"}
    drop = pp.Dropout(0.4, seed=6, **kw)
    model = pp.Sequential(
        pp.Linear(3, 6, seed=0, **kw), pp.Tanh(**kw), drop, pp.Linear(6, 2, seed=1, **kw)
    )
    loss = pp.MSELoss()
    rng = np.random.default_rng(0)
    X_host = rng.standard_normal((4, 3))
    T = backend64.from_host(rng.standard_normal((4, 2)), "float64")
    state = drop.generator.get_state()
    weight = model[0].weight
    W_host = to_numpy(weight.data)

    def loss_at(X_host: np.ndarray, W_host: np.ndarray) -> float:
        weight.data = backend64.from_host(W_host, "float64")
        drop.generator.set_state(state)  # the same mask every time
        return float(loss.forward(model.forward(backend64.from_host(X_host, "float64")), T))

    def numeric(f: Any, at: np.ndarray, eps: float = 1e-6) -> np.ndarray:
        grad = np.zeros_like(at)
        for i in np.ndindex(at.shape):
            step = np.zeros_like(at)
            step[i] = eps
            grad[i] = (f(at + step) - f(at - step)) / (2 * eps)
        return grad

    loss_at(X_host, W_host)
    mask = to_numpy(drop._kept) != 0
    assert mask.any()
    assert not mask.all()
    model.zero_grad()
    dX = to_numpy(model.backward(loss.backward()))
    dW = to_numpy(weight.grad)
    np.testing.assert_allclose(dX, numeric(lambda x: loss_at(x, W_host), X_host), atol=1e-8)
    np.testing.assert_allclose(dW, numeric(lambda w: loss_at(X_host, w), W_host), atol=1e-8)


def test_gradcheck_of_a_model_with_dropout(backend64):
    """gradcheck checks a copy in evaluation mode, where dropout is the identity; the
    model comes back in training mode with its generator untouched."""
    kw: dict[str, Any] = {"backend": backend64}
    model = pp.Sequential(
        pp.Linear(3, 5, seed=0, **kw),
        pp.ReLU(**kw),
        pp.Dropout(0.5, seed=0, **kw),
        pp.Linear(5, 2, seed=1, **kw),
    )
    state = model[2].generator.get_state()
    rng = np.random.default_rng(0)
    X = backend64.from_host(rng.standard_normal((4, 3)), "float32")
    T = backend64.from_host(rng.standard_normal((4, 2)), "float32")
    assert pp.gradcheck(model, pp.MSELoss(), X, T).passed
    assert all(m.training for m in model.modules())
    assert model[2].generator.get_state() == state


# ---- checkpoints: state, copies, moves ---------------------------------------------------


def test_set_state_reproduces_the_next_masks(backend):
    X = _normal(backend, SHAPE)
    layer = pp.Dropout(0.5, seed=9, backend=backend)
    layer.forward(X)  # the state is not the initial one
    saved = json.loads(json.dumps(layer.generator.get_state()))  # as a checkpoint stores it
    expected = _masks(layer, X, 3)
    layer.generator.set_state(saved)
    for a, b in zip(expected, _masks(layer, X, 3), strict=True):
        np.testing.assert_array_equal(a, b)
    other = pp.Dropout(0.5, seed=1234, backend=backend)  # another layer takes it over
    other.generator.set_state(saved)
    assert other.generator.seed == 9
    for a, b in zip(expected, _masks(other, X, 3), strict=True):
        np.testing.assert_array_equal(a, b)


def test_deepcopy_copies_the_generator_state(backend):
    X = _normal(backend, SHAPE)
    layer = pp.Dropout(0.5, seed=3, backend=backend)
    layer.forward(X)
    twin = copy.deepcopy(layer)
    assert twin.generator is not layer.generator
    for a, b in zip(_masks(layer, X, 2), _masks(twin, X, 2), strict=True):
        np.testing.assert_array_equal(a, b)


def test_to_another_backend_restarts_the_generator_there():
    pytest.importorskip("array_api_strict")
    strict = pp.get_backend(backend="array_api_strict")
    layer = pp.Dropout(0.5, seed=5, backend="numpy")
    layer.forward(_normal(pp.get_backend(backend="numpy"), SHAPE))
    layer.to(strict)
    assert layer.generator.backend == strict
    X = _normal(strict, SHAPE)
    fresh = pp.Dropout(0.5, seed=5, backend=strict)
    for a, b in zip(_masks(layer, X, 2), _masks(fresh, X, 2), strict=True):
        np.testing.assert_array_equal(a, b)


def test_to_another_dtype_keeps_the_generator(backend64):
    layer = pp.Dropout(0.5, seed=5, backend=backend64)
    gen = layer.generator
    layer.to(dtype="float64")
    assert layer.generator is gen


# ---- arguments, dtypes, modes -------------------------------------------------------------


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5, float("nan")])
def test_p_outside_zero_one_is_refused(p):
    with pytest.raises(ValueError, match=rf"p must be in \[0, 1\).*got p={p!r}"):
        pp.Dropout(p)


@pytest.mark.parametrize("p", ["a", None, True, [0.5]])
def test_p_must_be_a_number(p):
    with pytest.raises(TypeError, match="p must be a float"):
        pp.Dropout(p)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtype_never_drifts(backend64, dtype):
    layer = pp.Dropout(0.5, seed=0, backend=backend64, dtype=dtype)
    X = _normal(backend64, SHAPE, dtype)
    G = _normal(backend64, SHAPE, dtype, seed=1)
    target = backend64.float_dtype(dtype)
    for mode in (True, False):
        layer.train(mode)
        Y = layer.forward(X)
        dX = layer.backward(G)
        assert Y.dtype == target
        assert dX.dtype == target
        assert backend64.owns(Y)
        assert backend64.owns(dX)


def test_eval_and_train_switch_dropout_inside_sequential(backend):
    kw: dict[str, Any] = {"backend": backend}
    model = pp.Sequential(
        pp.Linear(3, 8, seed=0, **kw), pp.Dropout(0.5, seed=0, **kw), pp.Linear(8, 2, seed=1, **kw)
    )
    plain = pp.Sequential(pp.Linear(3, 8, seed=0, **kw), pp.Linear(8, 2, seed=1, **kw))
    X = _normal(backend, (5, 3))
    model.eval()
    assert not model[1].training
    np.testing.assert_allclose(to_numpy(model.forward(X)), to_numpy(plain.forward(X)), rtol=1e-6)
    model.train()
    assert model[1].training
    first, second = to_numpy(model.forward(X)), to_numpy(model.forward(X))
    assert (first != second).any()


def test_repr_shows_p():
    assert repr(pp.Dropout(0.25, seed=0)) == "Dropout(p=0.25)"
    assert "Dropout(p=0.25)" in repr(pp.Sequential(pp.Linear(2, 2), pp.Dropout(0.25, seed=0)))
