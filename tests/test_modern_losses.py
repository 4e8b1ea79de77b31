"""L1Loss, HuberLoss, SmoothL1Loss, NLLLoss, and CrossEntropyLoss with class weights,
label smoothing and ignore_index (issue 12): gradient checks on every backend, agreement
with ``torch.autograd`` to 1e-10 in float64 in both reductions, exact values at extreme
logits, and typed errors for bad arguments."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from conftest import to_numpy

import portprop as pp

REDUCTIONS = ("mean", "sum")
WEIGHT = [0.5, 2.0, 1.0, 3.0]

# name -> (portprop factory, torch factory, targets are class labels)
LOSSES: dict[str, tuple[Callable[..., pp.Loss], Callable[..., Any], bool]] = {
    "l1": (pp.L1Loss, lambda nn, r: nn.L1Loss(reduction=r), False),
    "huber": (
        lambda r: pp.HuberLoss(r, delta=0.7),
        lambda nn, r: nn.HuberLoss(reduction=r, delta=0.7),
        False,
    ),
    "smooth_l1": (
        lambda r: pp.SmoothL1Loss(r, beta=0.4),
        lambda nn, r: nn.SmoothL1Loss(reduction=r, beta=0.4),
        False,
    ),
    "smooth_l1_beta0": (
        lambda r: pp.SmoothL1Loss(r, beta=0.0),
        lambda nn, r: nn.SmoothL1Loss(reduction=r, beta=0.0),
        False,
    ),
    "cross_entropy_weight": (
        lambda r: pp.CrossEntropyLoss(r, weight=WEIGHT),
        lambda nn, r: nn.CrossEntropyLoss(weight=_t(WEIGHT), reduction=r),
        True,
    ),
    "cross_entropy_smoothing": (
        lambda r: pp.CrossEntropyLoss(r, label_smoothing=0.2),
        lambda nn, r: nn.CrossEntropyLoss(label_smoothing=0.2, reduction=r),
        True,
    ),
    "cross_entropy_all": (
        lambda r: pp.CrossEntropyLoss(r, weight=WEIGHT, label_smoothing=0.1, ignore_index=2),
        lambda nn, r: nn.CrossEntropyLoss(
            weight=_t(WEIGHT), label_smoothing=0.1, ignore_index=2, reduction=r
        ),
        True,
    ),
    "cross_entropy_ignore_default": (
        pp.CrossEntropyLoss,
        lambda nn, r: nn.CrossEntropyLoss(reduction=r),
        True,
    ),
    "nll": (pp.NLLLoss, lambda nn, r: nn.NLLLoss(reduction=r), True),
    "nll_weight_ignore": (
        lambda r: pp.NLLLoss(r, weight=WEIGHT, ignore_index=1),
        lambda nn, r: nn.NLLLoss(weight=_t(WEIGHT), ignore_index=1, reduction=r),
        True,
    ),
}


def _t(values: list[float]) -> Any:
    torch = pytest.importorskip("torch")
    return torch.tensor(values, dtype=torch.float64)


def _data(name: str, seed: int) -> tuple[Any, Any]:
    """Host float64 inputs ``(6, 4)`` and targets; class labels include -100 (ignored by
    default) for the cases that test ignore_index."""
    rng = np.random.default_rng(seed)
    pred = rng.standard_normal((6, 4)) * 2.0
    if not LOSSES[name][2]:
        return pred, rng.standard_normal((6, 4))
    labels = np.array([0, 1, 2, 3, 2, 1])
    if name == "cross_entropy_ignore_default":
        labels[4] = -100
    if name.startswith("nll"):
        pred = pred - np.log(np.exp(pred).sum(axis=1, keepdims=True))  # log-probabilities
    return pred, labels


# ---- gradient checks ----------------------------------------------------------------------


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", LOSSES)
def test_gradcheck(backend64: pp.Backend, name: str, reduction: str) -> None:
    model = pp.Linear(3, 4, seed=2, backend=backend64, dtype="float64")
    if name.startswith("nll"):
        kw: dict[str, Any] = {"backend": backend64, "dtype": "float64"}
        model = pp.Sequential(pp.Linear(3, 4, seed=2, **kw), pp.LogSoftmax(**kw))
    _, target = _data(name, 0)
    X = backend64.asarray(np.random.default_rng(1).standard_normal((6, 3)))
    loss = LOSSES[name][0](reduction)
    assert pp.gradcheck(model, loss, X, backend64.asarray(target), mode="full").passed


# ---- against torch.autograd ---------------------------------------------------------------


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", LOSSES)
def test_matches_torch_autograd(backend64: pp.Backend, name: str, reduction: str) -> None:
    torch = pytest.importorskip("torch")
    pred_host, target_host = _data(name, 3)
    make, make_torch, _ = LOSSES[name]
    loss = make(reduction)
    value = loss.forward(backend64.asarray(pred_host), backend64.asarray(target_host))
    grad = loss.backward()

    pred_ref = torch.from_numpy(pred_host).requires_grad_()
    value_ref = make_torch(torch.nn, reduction)(pred_ref, torch.from_numpy(target_host))
    value_ref.backward()
    np.testing.assert_allclose(to_numpy(value), value_ref.item(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(to_numpy(grad), pred_ref.grad.numpy(), rtol=1e-10, atol=1e-12)
    assert grad.dtype == backend64.float_dtype("float64")
    assert backend64.owns(grad)


def test_log_softmax_then_nll_is_cross_entropy(backend64: pp.Backend) -> None:
    kw: dict[str, Any] = {"backend": backend64, "dtype": "float64"}
    X = backend64.asarray(np.random.default_rng(5).standard_normal((6, 3)))
    y = backend64.asarray(np.array([0, 1, 2, 3, 3, 0]))
    two_steps = pp.Sequential(pp.Linear(3, 4, seed=1, **kw), pp.LogSoftmax(**kw))
    one_step = pp.Linear(3, 4, seed=1, **kw)
    nll, ce = pp.NLLLoss(weight=WEIGHT), pp.CrossEntropyLoss(weight=WEIGHT)
    a = nll.forward(two_steps.forward(X), y)
    b = ce.forward(one_step.forward(X), y)
    two_steps.backward(nll.backward())
    one_step.backward(ce.backward())
    np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=1e-13)
    np.testing.assert_allclose(
        to_numpy(two_steps[0].weight.grad), to_numpy(one_step.weight.grad), rtol=1e-12
    )


# ---- extreme values -------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_exact_at_extreme_logits(backend: pp.Backend, reduction: str) -> None:
    # float32 logits of +-1e4: every term is exact, as for the plain cross-entropy.
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 80.0]], dtype=np.float32)
    labels = np.array([1, 1])
    weight, eps = [1.0, 2.0, 0.5], 0.3
    loss = pp.CrossEntropyLoss(reduction, weight=weight, label_smoothing=eps)
    value = float(to_numpy(loss.forward(backend.asarray(logits), backend.asarray(labels))))
    grad = to_numpy(loss.backward())
    # Sample 0: -log p = (0, 2e4, 1e4); sample 1: (2e4, 0, 1e4 - 80).
    nll = np.array([[0.0, 2e4, 1e4], [2e4, 0.0, 1e4 - 80.0]])
    T = (1 - eps) * np.array([[0, 2.0, 0], [0, 2.0, 0]]) + eps / 3 * np.array([weight, weight])
    expected = (T * nll).sum() / (4.0 if reduction == "mean" else 1.0)
    assert math.isclose(value, expected, rel_tol=1e-6)
    assert np.isfinite(grad).all()


@pytest.mark.parametrize("name", ["l1", "huber", "smooth_l1"])
def test_regression_losses_finite_at_extremes(backend: pp.Backend, name: str) -> None:
    pred = np.array([[1e38, -1e38, 1e4, -80.0]], dtype=np.float32)
    target = np.zeros((1, 4), dtype=np.float32)
    loss = LOSSES[name][0]("sum")
    value = float(to_numpy(loss.forward(backend.asarray(pred), backend.asarray(target))))
    grad = to_numpy(loss.backward())
    assert math.isfinite(value)
    assert np.isfinite(grad).all()
    small = pp.HuberLoss("sum", delta=1.0)
    value = small.forward(
        backend.asarray(np.array([[1e4, -80.0]], dtype=np.float32)),
        backend.asarray(np.zeros((1, 2), dtype=np.float32)),
    )
    assert float(to_numpy(value)) == (1e4 - 0.5) + (80.0 - 0.5)


# ---- arguments ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "error", "words"),
    [
        (lambda: pp.HuberLoss(delta=0.0), ValueError, "delta"),
        (lambda: pp.HuberLoss(delta="1"), TypeError, "delta"),
        (lambda: pp.SmoothL1Loss(beta=-1.0), ValueError, "beta"),
        (lambda: pp.CrossEntropyLoss(label_smoothing=1.5), ValueError, "label_smoothing"),
        (lambda: pp.CrossEntropyLoss(weight=[1.0, -1.0]), ValueError, "entry of weight"),
        (lambda: pp.CrossEntropyLoss(weight="ab"), TypeError, "weight"),
        (lambda: pp.NLLLoss(ignore_index=1.0), TypeError, "ignore_index"),
        (lambda: pp.L1Loss("avg"), ValueError, "reduction"),
    ],
)
def test_bad_arguments(make: Callable[[], Any], error: type[Exception], words: str) -> None:
    with pytest.raises(error, match=words):
        make()


def test_weight_of_wrong_length_and_bad_labels() -> None:
    pred = np.zeros((2, 3))
    with pytest.raises(ValueError, match="weight has 4 entries, but pred has 3 classes"):
        pp.CrossEntropyLoss(weight=WEIGHT).forward(pred, np.array([0, 1]))
    with pytest.raises(ValueError, match="or equal ignore_index=-100"):
        pp.NLLLoss().forward(pred, np.array([0, -1]))
    weight = pp.asarray(np.array([1.0, 2.0, 3.0]))  # an array of any backend works too
    assert math.isfinite(float(pp.CrossEntropyLoss(weight=weight).forward(pred, np.array([0, 2]))))
