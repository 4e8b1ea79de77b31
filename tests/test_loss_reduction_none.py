"""``reduction="none"`` for every loss (issue 12): torch's shapes, agreement with torch
(values, and the gradient of ``sum(grad_output * losses)`` through ``torch.autograd``)
to 1e-10 in float64, finite differences on every backend, and the refusals."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from conftest import to_numpy
from test_modern_losses import LOSSES as MODERN
from test_modern_losses import _data as modern_data

import portprop as pp

# The losses of issue 12 (test_modern_losses' table and data) and the lecture's three.
LOSSES: dict[str, tuple[Callable[[str], pp.Loss], Callable[[Any, str], Any], bool]] = {
    "mse": (pp.MSELoss, lambda nn, r: nn.MSELoss(reduction=r), False),
    "bce_with_logits": (
        pp.BCEWithLogitsLoss,
        lambda nn, r: nn.BCEWithLogitsLoss(reduction=r),
        False,
    ),
    "cross_entropy": (pp.CrossEntropyLoss, lambda nn, r: nn.CrossEntropyLoss(reduction=r), True),
    **MODERN,
}


def _data(name: str, seed: int = 0) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    if name in MODERN:
        pred, target = modern_data(name, seed)
        return np.asarray(pred), np.asarray(target)
    rng = np.random.default_rng(seed)
    pred = rng.standard_normal((6, 4)) * 2.0
    if LOSSES[name][2]:
        return pred, np.array([0, 1, 2, 3, 2, 1])
    target = (
        rng.uniform(0.0, 1.0, (6, 4)) if name.startswith("bce") else rng.standard_normal((6, 4))
    )
    return pred, target


@pytest.mark.parametrize("name", LOSSES)
def test_matches_torch_reduction_none(backend64: pp.Backend, name: str) -> None:
    torch = pytest.importorskip("torch")
    make, make_torch, labels = LOSSES[name]
    pred_host, target_host = _data(name)
    loss = make("none")
    values = loss.forward(backend64.asarray(pred_host), backend64.asarray(target_host))
    pred_ref = torch.from_numpy(pred_host).requires_grad_()
    values_ref = make_torch(torch.nn, "none")(pred_ref, torch.from_numpy(target_host))
    assert tuple(values.shape) == tuple(values_ref.shape) == ((6,) if labels else (6, 4))
    np.testing.assert_allclose(
        to_numpy(values), values_ref.detach().numpy(), rtol=1e-10, atol=1e-13
    )
    G_host = np.random.default_rng(1).standard_normal(tuple(values_ref.shape))
    grad = loss.backward(backend64.asarray(G_host))
    values_ref.backward(torch.from_numpy(G_host))
    np.testing.assert_allclose(to_numpy(grad), pred_ref.grad.numpy(), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("name", LOSSES)
def test_default_grad_output_is_the_gradient_of_the_sum(backend64: pp.Backend, name: str) -> None:
    make = LOSSES[name][0]
    pred_host, target_host = _data(name, seed=2)
    pred, target = backend64.asarray(pred_host), backend64.asarray(target_host)
    unreduced, summed = make("none"), make("sum")
    total = summed.forward(pred, target)
    np.testing.assert_allclose(
        float(to_numpy(pp.backend_of(pred).xp.sum(unreduced.forward(pred, target)))),
        float(to_numpy(total)),
        rtol=1e-12,
    )
    np.testing.assert_allclose(
        to_numpy(unreduced.backward()), to_numpy(summed.backward()), rtol=1e-12, atol=1e-15
    )


@pytest.mark.parametrize("name", LOSSES)
def test_finite_differences(backend64: pp.Backend, name: str) -> None:
    """The gradient of ``sum(G * losses)`` against central differences, element by element."""
    make = LOSSES[name][0]
    pred_host, target_host = _data(name, seed=3)
    target = backend64.asarray(target_host)
    loss = make("none")
    xp = backend64.xp
    shape = tuple(loss.forward(backend64.asarray(pred_host), target).shape)
    G = backend64.asarray(np.random.default_rng(4).standard_normal(shape))
    analytic = to_numpy(loss.backward(G))

    def objective(p: np.ndarray[Any, Any]) -> float:
        return float(to_numpy(xp.sum(G * loss.forward(backend64.asarray(p), target))))

    eps = 1e-6
    numeric = np.zeros_like(pred_host)
    for index in np.ndindex(*pred_host.shape):
        up, down = pred_host.copy(), pred_host.copy()
        up[index] += eps
        down[index] -= eps
        numeric[index] = (objective(up) - objective(down)) / (2 * eps)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-7)


# ---- refusals ---------------------------------------------------------------------------


def test_grad_output_is_checked() -> None:
    loss = pp.MSELoss("none")
    pred = np.zeros((3, 2), dtype=np.float32)
    loss.forward(pred, np.ones((3, 2), dtype=np.float32))
    with pytest.raises(
        ValueError, match=r"grad_output must have the shape \(3, 2\).*got shape \(3,\)"
    ):
        loss.backward(np.ones(3, dtype=np.float32))
    with pytest.raises(ValueError, match=r"dtype float32.*got shape .* dtype float64"):
        loss.backward(np.ones((3, 2), dtype=np.float64))
    labels = pp.CrossEntropyLoss("none")
    labels.forward(np.zeros((3, 4), dtype=np.float32), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        labels.backward(np.ones((3, 4), dtype=np.float32))
    assert labels.backward(np.ones(3, dtype=np.float32)).shape == (3, 4)


def test_grad_output_only_with_none() -> None:
    loss = pp.L1Loss("mean")
    loss.forward(np.zeros((2, 2), dtype=np.float32), np.ones((2, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="grad_output is only taken with reduction='none'"):
        loss.backward(np.ones((), dtype=np.float32))
    assert loss.backward().shape == (2, 2)  # the scalar loss still works


def test_unknown_reduction() -> None:
    with pytest.raises(ValueError, match="'mean', 'sum' or 'none', got 'avg'"):
        pp.HuberLoss("avg")
