"""Layers without parameters follow the arrays they are given, and backward checks the
shape of its gradient (issue 8).

An activation, :class:`~portprop.Dropout` or :class:`~portprop.Identity` built without
``backend=``/``dtype=`` computes where its input lives, as torch's ``nn.ReLU()`` does:
inside a :class:`~portprop.Sequential`, where the model's parameters live.  Built with
an explicit backend or dtype, it keeps refusing inputs of another.  ``backward`` takes
only a ``grad_output`` of the shape of the last forward's output.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from conftest import load_backend, to_numpy

import portprop as pp

# Each builds a layer without parameters, passing on the keywords it is given.
PARAMETER_FREE = [
    pytest.param(pp.ReLU, id="ReLU"),
    pytest.param(pp.Tanh, id="Tanh"),
    pytest.param(pp.Sigmoid, id="Sigmoid"),
    pytest.param(pp.Identity, id="Identity"),
    pytest.param(lambda **kw: pp.LeakyReLU(0.1, **kw), id="LeakyReLU"),
    pytest.param(lambda **kw: pp.Dropout(0.5, seed=3, **kw), id="Dropout"),
]


def _data(backend: pp.Backend, shape: tuple[int, ...], dtype: str = "float32", seed: int = 0):
    return backend.from_host(np.random.default_rng(seed).standard_normal(shape), dtype)


def _other(backend: pp.Backend) -> pp.Backend:
    """A backend of another library than ``backend``."""
    return load_backend("array_api_strict" if backend.library == "numpy" else "numpy")


@pytest.fixture
def _restore_global_rng():
    saved = pp.host_generator().bit_generator.state
    yield
    pp.host_generator().bit_generator.state = saved


def _mlp(backend: Any, *, plain: bool, dtype: str = "float32", dropout: bool = False):
    """2-4-3 with a Tanh (and a dropout); ``plain``: the layers without parameters get no
    backend= or dtype=."""
    kw: dict[str, Any] = {"backend": backend, "dtype": dtype}
    free: dict[str, Any] = {} if plain else kw
    pp.manual_seed(0)
    middle = [pp.Tanh(**free), *([pp.Dropout(0.5, **free)] if dropout else [])]
    return pp.Sequential(pp.Linear(2, 4, **kw), *middle, pp.Linear(4, 3, **kw))


# ---- the examples of the issue ------------------------------------------------------------


def test_plain_activations_between_torch_layers():
    torch = pytest.importorskip("torch")
    model = pp.Sequential(
        pp.Linear(3, 4, backend="torch"), pp.ReLU(), pp.Linear(4, 2, backend="torch")
    )
    assert model.backend == pp.get_backend(backend="torch")
    assert model[1].backend == model.backend
    out = model.forward(torch.ones(5, 3))
    assert isinstance(out, torch.Tensor)
    dX = model.backward(torch.ones(5, 2))
    assert isinstance(dX, torch.Tensor)
    assert all(isinstance(p.grad, torch.Tensor) for p in model.parameters())
    y = pp.ReLU().forward(torch.ones(3, 2))
    assert isinstance(y, torch.Tensor)


def test_plain_activations_in_a_float64_model(backend64):
    kw: dict[str, Any] = {"backend": backend64, "dtype": "float64"}
    model = pp.Sequential(pp.Linear(2, 4, **kw), pp.Tanh(), pp.Linear(4, 1, **kw))
    assert model.dtype == backend64.float_dtype("float64")
    out = model.forward(_data(backend64, (3, 2), "float64"))
    assert out.dtype == backend64.float_dtype("float64")
    assert backend64.owns(out)


@pytest.mark.parametrize("make", PARAMETER_FREE)
def test_every_parameter_free_layer_follows_its_model(backend, make):
    """The same model with plain layers and with layers given backend= computes the same
    values and gradients, on the model's backend."""
    rng = np.random.default_rng(1)
    X_host, G_host = rng.standard_normal((5, 2)), rng.standard_normal((5, 3))
    results = []
    for free in ({}, {"backend": backend}):
        pp.manual_seed(0)
        model = pp.Sequential(
            pp.Linear(2, 3, backend=backend), make(**free), pp.Linear(3, 3, backend=backend)
        )
        assert model[1].backend == backend
        out = model.forward(backend.from_host(X_host, "float32"))
        dX = model.backward(backend.from_host(G_host, "float32"))
        assert backend.owns(out)
        assert backend.owns(dX)
        results.append((to_numpy(out), to_numpy(dX)))
    for a, b in zip(*results, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("make", PARAMETER_FREE)
def test_a_lone_parameter_free_layer_follows_each_input(backend64, make):
    layer = make()
    other = _other(backend64)
    for where, dtype in ((backend64, "float64"), (other, "float32"), (backend64, "float32")):
        X = _data(where, (4, 3), dtype)
        Y = layer.forward(X)
        assert where.owns(Y)
        assert Y.dtype == where.float_dtype(dtype)
        assert layer.backend == where
        assert layer.dtype == where.float_dtype(dtype)
        dX = layer.backward(_data(where, (4, 3), dtype, seed=1))
        assert where.owns(dX)
        assert dX.dtype == where.float_dtype(dtype)


def test_a_lone_layer_refuses_integer_and_non_array_inputs(backend):
    X = backend.asarray(np.ones((2, 3), dtype=np.int32))
    with pytest.raises(
        TypeError, match=r"X has dtype int32, but ReLU computes in a floating dtype"
    ):
        pp.ReLU().forward(X)
    with pytest.raises(TypeError, match="X must be an array"):
        pp.Tanh().forward([[1.0, 2.0]])


def test_the_gradient_must_match_the_forward_input(backend):
    """backward never follows: grad_output must live where the forward's input did."""
    layer = pp.Tanh()
    layer.forward(_data(backend, (2, 3)))
    other = _other(backend)
    with pytest.raises(pp.MixedBackendError, match="grad_output"):
        layer.backward(_data(other, (2, 3)))


def test_a_model_of_parameter_free_layers_follows_its_input(backend64):
    model = pp.Sequential(pp.ReLU(), pp.Dropout(0.5, seed=0), pp.Tanh())
    for where, dtype in ((_other(backend64), "float32"), (backend64, "float64")):
        Y = model.forward(_data(where, (4, 3), dtype))
        assert where.owns(Y)
        assert all(layer.backend == where for layer in model)
        assert all(layer.dtype == where.float_dtype(dtype) for layer in model)
        assert model[1].generator.backend == where
        assert where.owns(model.backward(_data(where, (4, 3), dtype)))


# ---- explicit backend= and dtype= still fix them ---------------------------------------------


def test_an_explicit_backend_is_kept(backend):
    other = _other(backend)
    layer = pp.ReLU(backend=other)
    with pytest.raises(pp.MixedBackendError, match=rf"X is an? {backend.library} array"):
        layer.forward(_data(backend, (2, 3)))
    assert layer.backend == other
    dropout = pp.Dropout(0.5, seed=0, backend=other)
    with pytest.raises(pp.MixedBackendError):
        dropout.forward(_data(backend, (2, 3)))
    with pytest.raises(pp.MixedBackendError, match=r"layer 0 \(Linear\) is .*layer 1 \(ReLU\) is"):
        pp.Sequential(pp.Linear(2, 3, backend=backend), pp.ReLU(backend=other))


def test_an_explicit_dtype_is_kept(backend64):
    layer = pp.Tanh(dtype="float64")
    Y = layer.forward(_data(backend64, (2, 3), "float64"))  # the backend still follows
    assert backend64.owns(Y)
    with pytest.raises(TypeError, match="X has dtype float32 but the model computes in float64"):
        layer.forward(_data(backend64, (2, 3), "float32"))
    with pytest.raises(
        TypeError, match=r"layer 0 \(Linear\) is float32, layer 1 \(Tanh\) is float64"
    ):
        pp.Sequential(pp.Linear(2, 3, backend=backend64), pp.Tanh(dtype="float64"))


def test_the_check_of_parameters_names_the_layers_that_differ():
    pytest.importorskip("array_api_strict")
    layers = [pp.Linear(2, 2, backend="numpy") for _ in range(5)]
    layers += [pp.ReLU()] + [pp.Linear(2, 2, backend="array_api_strict") for _ in range(2)]
    with pytest.raises(pp.MixedBackendError) as info:
        pp.Sequential(*layers)
    text = str(info.value)
    assert "layers 0 (Linear), 1 (Linear), 2 (Linear) and 2 more are numpy" in text
    assert "layers 6 (Linear), 7 (Linear) are array_api_strict" in text
    assert "ReLU" not in text  # a layer without parameters follows: it never differs
    many = [pp.Linear(2, 2, dtype=d) for d in ("float32", "float64")]
    with pytest.raises(
        TypeError, match=r"layer 0 \(Linear\) is float32, layer 1 \(Linear\) is float64"
    ):
        pp.Sequential(*many)


# ---- moving, and checkpoints -----------------------------------------------------------------


def test_to_moves_a_model_with_plain_activations(backend64):
    model = _mlp("numpy", plain=True, dropout=True)
    model.to(backend64, dtype="float64")
    assert all(m.backend == backend64 for m in model.modules())
    assert model[2].generator.backend == backend64
    out = model.forward(_data(backend64, (4, 2), "float64"))
    assert backend64.owns(out)
    assert out.dtype == backend64.float_dtype("float64")


@pytest.mark.parametrize("saved_plain", [True, False])
@pytest.mark.parametrize("loaded_plain", [True, False])
def test_checkpoints_round_trip_either_way(backend, tmp_path, saved_plain, loaded_plain):
    path = tmp_path / "m.safetensors"
    model = _mlp(backend, plain=saved_plain, dropout=True).eval()
    X = _data(backend, (4, 2))
    expected = to_numpy(model.forward(X))
    pp.save(path, model)
    loaded = pp.load(path, backend=backend).model.eval()
    assert all(m.backend == backend for m in loaded.modules())
    np.testing.assert_array_equal(to_numpy(loaded.forward(X)), expected)
    into = _mlp(backend, plain=loaded_plain, dropout=True).eval()
    pp.load_into(path, into)
    np.testing.assert_array_equal(to_numpy(into.forward(X)), expected)


def test_a_loaded_model_without_parameters_still_follows(backend, tmp_path):
    path = tmp_path / "m.safetensors"
    pp.save(path, pp.Sequential(pp.ReLU(), pp.Tanh()))
    loaded = pp.load(path, backend="numpy").model
    assert backend.owns(loaded.forward(_data(backend, (2, 3))))


# ---- dropout: reproducible and checkpointable, wherever its backend comes from ---------------


def _masks(model: pp.Module, X: Any, n: int = 3) -> list[np.ndarray]:
    return [to_numpy(model.forward(X)) != 0 for _ in range(n)]


@pytest.mark.usefixtures("_restore_global_rng")
def test_manual_seed_makes_a_following_dropout_reproducible(backend):
    X = _data(backend, (6, 5))
    pp.manual_seed(11)
    follows = _masks(pp.Dropout(0.5), X)
    pp.manual_seed(11)
    again = _masks(pp.Dropout(0.5), X)
    pp.manual_seed(11)
    fixed = _masks(pp.Dropout(0.5, backend=backend), X)  # the same seed is drawn
    for a, b, c in zip(follows, again, fixed, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


@pytest.mark.usefixtures("_restore_global_rng")
def test_a_plain_dropout_in_a_model_matches_one_given_the_backend(backend):
    X = _data(backend, (6, 2))
    plain = _masks(_mlp(backend, plain=True, dropout=True), X)
    given = _masks(_mlp(backend, plain=False, dropout=True), X)
    for a, b in zip(plain, given, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.usefixtures("_restore_global_rng")
@pytest.mark.parametrize("calls_before_save", [0, 2])
def test_restore_rng_before_and_after_the_first_call(backend, tmp_path, calls_before_save):
    X = _data(backend, (6, 2))
    model = _mlp(backend, plain=True, dropout=True)
    for _ in range(calls_before_save):
        model.forward(X)
    path = tmp_path / "m.safetensors"
    pp.save(path, model)
    expected = _masks(model, X)
    for calls_before_restore in (0, 1):
        fresh = _mlp(backend, plain=True, dropout=True)
        for _ in range(calls_before_restore):
            fresh.forward(X)
        pp.restore_rng(pp.load_into(path, fresh))
        for a, b in zip(expected, _masks(fresh, X), strict=True):
            np.testing.assert_array_equal(a, b)
    resumed = pp.load(path, backend=backend)
    pp.restore_rng(resumed)
    for a, b in zip(expected, _masks(resumed.model, X), strict=True):
        np.testing.assert_array_equal(a, b)


# ---- backward checks the shape of grad_output ------------------------------------------------


def _forward_then_backward(module: pp.Module, X: Any, G: Any) -> None:
    module.forward(X)
    module.backward(G)


@pytest.mark.parametrize(
    "make", [*PARAMETER_FREE, pytest.param(lambda: pp.Linear(3, 3), id="Linear")]
)
@pytest.mark.parametrize("bad", [(1, 3), (8, 3), (4, 1)])
def test_backward_checks_the_gradient_shape_of_each_layer(backend, make, bad):
    layer = make()
    if layer.parameters():
        layer.to(backend)
    X = _data(backend, (4, 3))
    with pytest.raises(
        ValueError,
        match=rf"grad_output must have the shape .*\(4, 3\), got \({bad[0]}, {bad[1]}\)|grad_output has {bad[1]} columns",
    ):
        _forward_then_backward(layer, X, _data(backend, bad))
    before = [p.grad for p in layer.parameters()]
    assert all(g is None for g in before)  # nothing was accumulated


@pytest.mark.parametrize("bad", [(1, 3), (8, 3)])
def test_backward_checks_the_batch_of_a_model(backend, bad):
    model = _mlp(backend, plain=True)
    X = _data(backend, (4, 2))
    with pytest.raises(
        ValueError,
        match=rf"grad_output must have the shape of the output of the last forward, \(4, 3\), got \({bad[0]}, 3\)",
    ):
        _forward_then_backward(model, X, _data(backend, bad))
    assert all(p.grad is None for p in model.parameters())
    model.backward(_data(backend, (4, 3)))  # the right shape still works
    assert all(p.grad is not None for p in model.parameters())


def test_backward_after_to_still_says_forward_first(backend):
    model = _mlp("numpy", plain=True)
    model.forward(_data(pp.get_backend(backend="numpy"), (4, 2)))
    model.to(backend)
    with pytest.raises(RuntimeError, match=r"backward\(\) was called before forward\(\)"):
        model.backward(_data(backend, (1, 3)))
