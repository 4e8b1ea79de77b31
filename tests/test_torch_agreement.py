"""portprop's hand-written back-propagation against ``torch.autograd``.

Random architectures (1 to 4 linear layers of widths 1 to 6, every activation, every
loss, both reductions) are built twice: as a portprop :class:`~portprop.Sequential` in
float64 on each backend and as the equivalent ``torch.nn.Sequential``.  Weights travel
by state dict, in both directions, so the two models also agree on parameter names.
Loss values, every parameter gradient and the input gradient must agree to 1e-10
relative.

The architectures come from a seeded :class:`random.Random`, so the suite is the same
on every run; ``test_cases_cover_everything`` checks that they cover what they should.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from conftest import to_numpy

import portprop as pp

torch = pytest.importorskip("torch")
nn = torch.nn

RTOL = 1e-10
ATOL = 1e-12
N_CASES = 20
ACTIVATIONS = ("tanh", "relu", "sigmoid", "leaky_relu", "identity")
LOSSES = ("mse", "cross_entropy", "bce_with_logits")
REDUCTIONS = ("mean", "sum")
# Few batch sizes: JAX compiles every operation anew for every new shape.
BATCHES = (4, 4, 4, 4, 4, 4, 1)


@dataclass(frozen=True)
class Arch:
    """One architecture: ``len(widths) - 1`` linear layers with an activation between
    each two, and the loss it is trained with."""

    widths: tuple[int, ...]
    activations: tuple[str, ...]
    slopes: tuple[float, ...]
    bias: tuple[bool, ...]
    loss: str
    reduction: str
    batch: int
    seed: int

    @property
    def id(self) -> str:
        layers = "-".join(map(str, self.widths))
        acts = "+".join(self.activations) or "none"
        return f"{layers}_{acts}_{self.loss}-{self.reduction}"


def _draw_arch(case: int) -> Arch:
    """Case ``case`` of the suite.  The loss, the reduction and the first activation
    cycle through every choice (the first cases are deep enough to have one), so that a
    few cases already cover them all; the rest is random."""
    rng = random.Random(1000 + case)
    depth = rng.randint(1, 4)
    if case < len(ACTIVATIONS):  # every activation, in a network deep enough to hold one
        depth = max(depth, 2)
    widths = tuple(rng.randint(1, 6) for _ in range(depth + 1))
    activations = [rng.choice(ACTIVATIONS) for _ in range(depth - 1)]
    if activations:
        activations[0] = ACTIVATIONS[case % len(ACTIVATIONS)]
    return Arch(
        widths=widths,
        activations=tuple(activations),
        slopes=tuple(rng.choice([0.01, 0.1, 0.3]) for _ in activations),
        bias=tuple(rng.random() < 0.8 for _ in range(depth)),
        loss=LOSSES[case % len(LOSSES)],
        reduction=REDUCTIONS[(case // len(LOSSES)) % len(REDUCTIONS)],
        batch=BATCHES[case % len(BATCHES)],
        seed=case,
    )


CASES = [_draw_arch(case) for case in range(N_CASES)]


# ---- building the two models -----------------------------------------------------------


def _pp_activation(name: str, slope: float, backend: pp.Backend) -> pp.Module:
    kw: dict[str, Any] = {"backend": backend, "dtype": "float64"}
    if name == "leaky_relu":
        return pp.LeakyReLU(slope, **kw)
    types = {"tanh": pp.Tanh, "relu": pp.ReLU, "sigmoid": pp.Sigmoid, "identity": pp.Identity}
    return types[name](**kw)


def _torch_activation(name: str, slope: float) -> Any:
    if name == "leaky_relu":
        return nn.LeakyReLU(slope)
    types = {"tanh": nn.Tanh, "relu": nn.ReLU, "sigmoid": nn.Sigmoid, "identity": nn.Identity}
    return types[name]()


def _pp_model(arch: Arch, backend: pp.Backend) -> pp.Sequential:
    layers: list[pp.Module] = []
    for i, (n_in, n_out) in enumerate(zip(arch.widths, arch.widths[1:], strict=False)):
        if i:
            layers.append(_pp_activation(arch.activations[i - 1], arch.slopes[i - 1], backend))
        layers.append(
            pp.Linear(
                n_in,
                n_out,
                bias=arch.bias[i],
                seed=100 * arch.seed + i,
                backend=backend,
                dtype="float64",
            )
        )
    return pp.Sequential(*layers)


def _torch_model(arch: Arch) -> Any:
    layers: list[Any] = []
    with torch.random.fork_rng(devices=[]):  # leave torch's global generator alone
        torch.manual_seed(arch.seed)
        for i, (n_in, n_out) in enumerate(zip(arch.widths, arch.widths[1:], strict=False)):
            if i:
                layers.append(_torch_activation(arch.activations[i - 1], arch.slopes[i - 1]))
            layers.append(nn.Linear(n_in, n_out, bias=arch.bias[i], dtype=torch.float64))
    return nn.Sequential(*layers)


def _data(arch: Arch) -> tuple[Any, Any]:
    """Host float64 inputs and the targets of ``arch.loss``."""
    rng = np.random.default_rng(arch.seed)
    n_out = arch.widths[-1]
    X = rng.standard_normal((arch.batch, arch.widths[0])) * 2.0
    if arch.loss == "cross_entropy":
        target = rng.integers(0, n_out, size=arch.batch)
    elif arch.loss == "bce_with_logits":
        target = rng.uniform(0.0, 1.0, size=(arch.batch, n_out))
    else:
        target = rng.standard_normal((arch.batch, n_out))
    return X, target


def _losses(arch: Arch) -> tuple[pp.Loss, Any]:
    pp_type, torch_type = {
        "mse": (pp.MSELoss, nn.MSELoss),
        "cross_entropy": (pp.CrossEntropyLoss, nn.CrossEntropyLoss),
        "bce_with_logits": (pp.BCEWithLogitsLoss, nn.BCEWithLogitsLoss),
    }[arch.loss]
    return pp_type(reduction=arch.reduction), torch_type(reduction=arch.reduction)


def _assert_close(actual: Any, expected: Any, what: str) -> None:
    np.testing.assert_allclose(
        to_numpy(actual), expected.detach().numpy(), rtol=RTOL, atol=ATOL, err_msg=what
    )


# ---- the tests -------------------------------------------------------------------------


def test_cases_cover_everything() -> None:
    assert len({arch.id for arch in CASES}) == N_CASES
    assert {a for arch in CASES for a in arch.activations} == set(ACTIVATIONS)
    assert {(arch.loss, arch.reduction) for arch in CASES} == {
        (loss, reduction) for loss in LOSSES for reduction in REDUCTIONS
    }
    assert {len(arch.widths) - 1 for arch in CASES} == {1, 2, 3, 4}
    assert {False, True} <= {b for arch in CASES for b in arch.bias}
    assert {1, 6} <= {w for arch in CASES for w in arch.widths}


@pytest.mark.parametrize("arch", CASES, ids=[arch.id for arch in CASES])
def test_gradients_match_autograd(backend64: pp.Backend, arch: Arch) -> None:
    model = _pp_model(arch, backend64)
    reference = _torch_model(arch)
    exported = {
        name: torch.from_numpy(np.array(to_numpy(p), copy=True))
        for name, p in model.state_dict().items()
    }
    assert list(exported) == list(reference.state_dict())  # same names, same order
    reference.load_state_dict(exported)
    pp_loss, torch_loss = _losses(arch)
    X_host, target_host = _data(arch)

    X = backend64.asarray(X_host, dtype="float64")
    target = backend64.asarray(target_host)
    value = pp_loss.forward(model.forward(X), target)
    dX = model.backward(pp_loss.backward())

    X_ref = torch.from_numpy(X_host).requires_grad_()
    value_ref = torch_loss(reference(X_ref), torch.from_numpy(target_host))
    value_ref.backward()

    _assert_close(value, value_ref, "loss")
    grads_ref = dict(reference.named_parameters())
    for name, p in model.named_parameters():
        _assert_close(p.grad, grads_ref[name].grad, name)
    _assert_close(dX, X_ref.grad, "input")


@pytest.mark.parametrize("arch", CASES[::3], ids=[arch.id for arch in CASES[::3]])
def test_load_torch_state_dict(backend64: pp.Backend, arch: Arch) -> None:
    reference = _torch_model(arch)
    model = _pp_model(arch, backend64)
    state = reference.state_dict()
    model.load_state_dict(state)
    for name, p in model.named_parameters():
        assert backend64.owns(p.data), name
        assert p.data.dtype == backend64.float_dtype("float64"), name
        np.testing.assert_array_equal(to_numpy(p.data), state[name].numpy(), err_msg=name)
    pp_loss, torch_loss = _losses(arch)
    X_host, target_host = _data(arch)

    out = model.forward(backend64.asarray(X_host, dtype="float64"))
    value = pp_loss.forward(out, backend64.asarray(target_host))
    with torch.no_grad():
        out_ref = reference(torch.from_numpy(X_host))
        value_ref = torch_loss(out_ref, torch.from_numpy(target_host))
    _assert_close(out, out_ref, "output")
    _assert_close(value, value_ref, "loss")

    # load_state_dict copies: changing the torch model afterwards changes nothing.
    before = np.array(to_numpy(model[0].weight.data), copy=True)
    with torch.no_grad():
        reference[0].weight.add_(1.0)
    np.testing.assert_array_equal(to_numpy(model[0].weight.data), before)
