"""SGD: torch's definition, in-place updates, immutable arrays, and dtypes that never drift."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import to_numpy

import portprop as pp

OPTIONS = [
    {},
    {"momentum": 0.9},
    {"momentum": 0.9, "nesterov": True},
    {"momentum": 0.8, "dampening": 0.3},
    {"weight_decay": 0.1},
    {"momentum": 0.9, "weight_decay": 0.05},
    {"momentum": 0.9, "nesterov": True, "weight_decay": 0.05},
]


def _param(backend, values, dtype="float64"):
    return pp.Parameter(backend.from_host(np.asarray(values, dtype=np.float64), dtype))


@pytest.mark.parametrize(
    "options", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "plain"
)
def test_sgd_matches_torch(backend64, options):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(3, 4))
    grads = [rng.normal(size=(3, 4)) for _ in range(5)]

    p = _param(backend64, w0)
    opt = pp.SGD([p], lr=0.1, **options)
    t = torch.nn.Parameter(torch.from_numpy(w0.copy()))
    topt = torch.optim.SGD([t], lr=0.1, **options)
    for g in grads:
        p.grad = backend64.from_host(g, "float64")
        opt.step()
        t.grad = torch.from_numpy(g.copy())
        topt.step()
        np.testing.assert_allclose(to_numpy(p.data), t.detach().numpy(), rtol=1e-13, atol=1e-15)


def test_updates_are_in_place_where_the_library_allows(backend):
    p = _param(backend, np.ones((2, 2)), "float32")
    opt = pp.SGD([p], lr=0.5, momentum=0.9)
    before = p.data
    for _ in range(3):
        p.grad = backend.from_host(np.ones((2, 2)), "float32")
        opt.step()
    if backend.writable:
        assert p.data is before  # the same buffer, updated in place
    else:  # JAX: a new array each step, and the old one is untouched
        assert p.data is not before
        np.testing.assert_array_equal(to_numpy(before), 1.0)
    # v1 = 1, v2 = 1.9, v3 = 2.71: w = 1 - 0.5 * 5.61
    np.testing.assert_allclose(to_numpy(p.data), 1 - 0.5 * (1 + 1.9 + 2.71), rtol=1e-6)


def test_float32_never_drifts_to_float64(backend):
    """NumPy 2 promotes float32 arrays combined with NumPy float64 scalars; portprop keeps
    every hyperparameter a Python float."""
    pp.manual_seed(0)
    model = pp.Sequential(
        pp.Linear(2, 4, backend=backend), pp.Tanh(backend=backend), pp.Linear(4, 2, backend=backend)
    )
    opt = pp.SGD(
        model.parameters(),
        lr=np.float64(0.1),
        momentum=np.float64(0.9),
        weight_decay=np.float64(1e-4),
    )
    X, y = pp.datasets.make_disk(8, seed=0, backend=backend)
    f32 = backend.float_dtype("float32")
    for loss in (pp.CrossEntropyLoss(), pp.MSELoss(), pp.BCEWithLogitsLoss()):
        target = (
            y
            if isinstance(loss, pp.CrossEntropyLoss)
            else pp.functional.one_hot(backend.xp, y, 2, f32)
        )
        for _ in range(3):
            value = loss.forward(model.forward(X), target)
            assert value.dtype == f32
            assert value.shape == ()
            model.zero_grad()
            grad = loss.backward()
            assert grad.dtype == f32
            assert model.backward(grad).dtype == f32
            opt.step()
    for p in model.parameters():
        assert p.data.dtype == f32
        assert p.grad.dtype == f32
    for state in opt.state:
        assert state["momentum_buffer"].dtype == f32


def test_parameters_without_gradient_are_skipped():
    a, b = _param(pp.get_backend(), [1.0]), _param(pp.get_backend(), [1.0])
    a.grad = pp.asarray(np.array([1.0]))
    pp.SGD([a, b], lr=0.5).step()
    assert float(a.data[0]) == 0.5
    assert float(b.data[0]) == 1.0


def test_optimizer_follows_a_model_that_moved(backend64):
    model = pp.Sequential(pp.Linear(2, 2, dtype="float64"))
    opt = pp.SGD(model.parameters(), lr=0.1, momentum=0.9)
    X = np.ones((3, 2))
    model.backward(model.forward(X))
    opt.step()
    model.to(backend64)
    Xb = pp.asarray(X, backend=backend64)
    model.backward(model.forward(Xb))
    opt.step()
    for p, state in zip(opt.params, opt.state, strict=True):
        assert backend64.owns(p.data)
        assert backend64.owns(state["momentum_buffer"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": 0.0}, "lr must be a finite number > 0"),
        ({"lr": -1.0}, "lr must be a finite number > 0"),
        ({"lr": float("nan")}, "lr must be a finite number"),
        ({"lr": "fast"}, "lr must be a number"),
        ({"lr": 0.1, "momentum": -0.5}, "momentum must be a finite number >= 0"),
        ({"lr": 0.1, "weight_decay": -1}, "weight_decay must be"),
        ({"lr": 0.1, "nesterov": True}, "nesterov=True needs momentum > 0"),
    ],
)
def test_bad_hyperparameters_are_rejected(kwargs, message):
    p = _param(pp.get_backend(), [1.0])
    with pytest.raises((ValueError, TypeError), match=message):
        pp.SGD([p], **kwargs)


def test_empty_or_foreign_params_are_rejected():
    with pytest.raises(ValueError, match="at least one Parameter"):
        pp.SGD([], lr=0.1)
    with pytest.raises(TypeError, match=r"params\[0\] must be a portprop Parameter"):
        pp.SGD([np.ones(2)], lr=0.1)  # type: ignore[list-item]
