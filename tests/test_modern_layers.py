"""GELU, SiLU, ELU, Softplus, LogSoftmax and LayerNorm (issue 12): the error function
to float64 rounding, finite values at extreme inputs, gradient checks on every backend,
agreement with ``torch.autograd`` to 1e-10 in float64, torch's parameter names, and the
checkpoint round trip."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import to_numpy

import portprop as pp

# Factories of the layers under test, and of their torch twins: ``make(**kw)``.
ACTIVATIONS: dict[str, Callable[..., pp.Module]] = {
    "gelu": pp.GELU,
    "gelu_tanh": lambda **kw: pp.GELU("tanh", **kw),
    "silu": pp.SiLU,
    "elu": lambda **kw: pp.ELU(0.7, **kw),
    "softplus": pp.Softplus,
    "softplus_beta": lambda **kw: pp.Softplus(2.5, 3.0, **kw),
}


def _torch_activation(name: str) -> Any:
    nn = pytest.importorskip("torch").nn
    return {
        "gelu": nn.GELU,
        "gelu_tanh": lambda: nn.GELU("tanh"),
        "silu": nn.SiLU,
        "elu": lambda: nn.ELU(0.7),
        "softplus": nn.Softplus,
        "softplus_beta": lambda: nn.Softplus(2.5, 3.0),
    }[name]()


EXTREMES = [-1e4, -80.0, -30.0, -5.0, -1.0, -1e-8, 0.0, 1e-8, 1.0, 5.0, 30.0, 80.0, 1e4]


# ---- the error function -----------------------------------------------------------------


def test_erf_matches_math_to_float64_rounding(backend64: pp.Backend) -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate(
        [rng.uniform(-7.0, 7.0, 4000), np.logspace(-300, 1.4, 200), -np.logspace(-300, 1.4, 200)]
    )
    x = np.concatenate([x, [0.0, 0.84375, 1.25, 1 / 0.35, 6.0, 27.0, 28.0, 1e300, -1e300]])
    erf, erfc = pp.functional.erf_and_erfc(backend64.xp, backend64.asarray(x, dtype="float64"))
    expected_erf = np.array([math.erf(v) for v in x])
    expected_erfc = np.array([math.erfc(v) for v in x])
    np.testing.assert_allclose(to_numpy(erf), expected_erf, rtol=1e-15, atol=0)
    normal = expected_erfc > 1e-300  # below, erfc is subnormal: fewer digits
    np.testing.assert_allclose(to_numpy(erfc)[normal], expected_erfc[normal], rtol=2e-15, atol=0)


def test_erf_float32_saturates(backend: pp.Backend) -> None:
    x = backend.asarray(np.array([-3e38, -1e4, -80.0, 0.0, 80.0, 1e4, 3e38], dtype=np.float32))
    erf, erfc = pp.functional.erf_and_erfc(backend.xp, x)
    np.testing.assert_array_equal(to_numpy(erf), [-1, -1, -1, 0, 1, 1, 1])
    np.testing.assert_array_equal(to_numpy(erfc), [2, 2, 2, 1, 0, 0, 0])


# ---- extreme inputs ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_finite_at_extremes(backend: pp.Backend, name: str, dtype: str) -> None:
    if not backend.supports(dtype):
        pytest.skip(f"{backend.name} has no {dtype}")
    layer = ACTIVATIONS[name]()
    X = backend.asarray(np.array([EXTREMES], dtype=dtype))
    Y = layer.forward(X)
    grad = layer.backward(backend.asarray(np.ones((1, len(EXTREMES)), dtype=dtype)))
    assert np.isfinite(to_numpy(Y)).all(), to_numpy(Y)
    assert np.isfinite(to_numpy(grad)).all(), to_numpy(grad)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_matches_torch_at_extremes(name: str) -> None:
    torch = pytest.importorskip("torch")
    x = np.array(EXTREMES + list(np.linspace(-6, 6, 49)))
    layer = ACTIVATIONS[name](backend="numpy", dtype="float64")
    Y = layer.forward(x[None, :])
    grad = layer.backward(np.ones((1, x.size)))
    x_ref = torch.from_numpy(x).requires_grad_()
    y_ref = _torch_activation(name)(x_ref)
    y_ref.sum().backward()
    # torch's exact GELU is s (1 + erf(s/sqrt 2))/2, which cancels in the negative tail
    # (it gives 0 at s = -30, where test_gelu_tail_is_exact expects -1.5e-196): an
    # absolute tolerance of a few float64 roundings of 1 covers it.
    np.testing.assert_allclose(Y[0], y_ref.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(grad[0], x_ref.grad.numpy(), rtol=1e-12, atol=1e-14)


def test_gelu_tail_is_exact() -> None:
    # s Phi(s) for s = -30 is -30 * erfc(30/sqrt 2)/2 ~ -1.5e-196, not 0: no cancellation.
    Y = pp.GELU(backend="numpy", dtype="float64").forward(np.array([[-30.0, -10.0]]))
    expected = [-30 * math.erfc(30 / math.sqrt(2)) / 2, -10 * math.erfc(10 / math.sqrt(2)) / 2]
    np.testing.assert_allclose(Y[0], expected, rtol=1e-12)  # erfc amplifies s/sqrt 2 rounding


def test_log_softmax_extreme_logits(backend: pp.Backend) -> None:
    X = backend.asarray(np.array([[1e4, -1e4, 0.0], [80.0, 80.0, -80.0]], dtype=np.float32))
    layer = pp.LogSoftmax()
    Y = to_numpy(layer.forward(X))
    np.testing.assert_allclose(
        Y, [[0.0, -2e4, -1e4], [-math.log(2), -math.log(2), -160 - math.log(2)]], rtol=1e-6
    )
    grad = to_numpy(layer.backward(backend.asarray(np.ones((2, 3), dtype=np.float32))))
    assert np.isfinite(grad).all()


# ---- gradient checks --------------------------------------------------------------------


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_gradcheck(backend64: pp.Backend, name: str) -> None:
    kw: dict[str, Any] = {"backend": backend64, "dtype": "float64"}
    model = pp.Sequential(
        pp.Linear(3, 4, seed=0, **kw), ACTIVATIONS[name](**kw), pp.Linear(4, 2, seed=1, **kw)
    )
    X = backend64.asarray(np.random.default_rng(1).standard_normal((5, 3)) * 2.0)
    target = backend64.asarray(np.random.default_rng(2).standard_normal((5, 2)))
    assert pp.gradcheck(model, pp.MSELoss(), X, target, mode="full").passed


@pytest.mark.parametrize("affine", [(True, True), (True, False), (False, False)])
def test_layer_norm_gradcheck(backend64: pp.Backend, affine: tuple[bool, bool]) -> None:
    kw: dict[str, Any] = {"backend": backend64, "dtype": "float64"}
    norm = pp.LayerNorm(4, elementwise_affine=affine[0], bias=affine[1], **kw)
    if norm.weight is not None:  # not the initial ones and zeros
        rng = np.random.default_rng(3)
        norm.weight.data = backend64.asarray(rng.standard_normal(4), dtype="float64")
        if norm.bias is not None:
            norm.bias.data = backend64.asarray(rng.standard_normal(4), dtype="float64")
    model = pp.Sequential(pp.Linear(3, 4, seed=0, **kw), norm, pp.Linear(4, 2, seed=1, **kw))
    X = backend64.asarray(np.random.default_rng(1).standard_normal((5, 3)))
    target = backend64.asarray(np.random.default_rng(2).standard_normal((5, 2)))
    result = pp.gradcheck(model, pp.MSELoss(), X, target, mode="full")
    assert result.passed
    names = {"1.weight", "1.bias"} if affine[1] else {"1.weight"} if affine[0] else set()
    assert {row.name for row in result.rows} >= names


def test_log_softmax_gradcheck(backend64: pp.Backend) -> None:
    kw: dict[str, Any] = {"backend": backend64, "dtype": "float64"}
    model = pp.Sequential(pp.Linear(3, 4, seed=0, **kw), pp.LogSoftmax(**kw))
    X = backend64.asarray(np.random.default_rng(1).standard_normal((5, 3)))
    target = backend64.asarray(np.random.default_rng(2).standard_normal((5, 4)))
    assert pp.gradcheck(model, pp.MSELoss(), X, target, mode="full").passed


# ---- against torch.autograd ---------------------------------------------------------------


def _pair(backend: pp.Backend, name: str) -> tuple[pp.Sequential, Any]:
    """The same network in portprop (float64 on ``backend``) and in torch, with torch's
    weights copied into portprop through from_torch_state_dict."""
    torch = pytest.importorskip("torch")
    nn = torch.nn
    kw: dict[str, Any] = {"backend": backend, "dtype": "float64"}
    model = pp.Sequential(
        pp.Linear(3, 5, seed=0, **kw),
        pp.LayerNorm(5, eps=1e-3, **kw),
        ACTIVATIONS[name](**kw),
        pp.Linear(5, 4, seed=1, **kw),
        pp.LayerNorm((4,), elementwise_affine=False, **kw),
        pp.LogSoftmax(**kw),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        reference = nn.Sequential(
            nn.Linear(3, 5),
            nn.LayerNorm(5, eps=1e-3),
            _torch_activation(name),
            nn.Linear(5, 4),
            nn.LayerNorm(4, elementwise_affine=False),
            nn.LogSoftmax(dim=1),
        ).double()
        with torch.no_grad():  # not the initial ones and zeros
            reference[1].weight.normal_()
            reference[1].bias.normal_()
    pp.io.from_torch_state_dict(model, reference.state_dict())
    return model, reference


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_matches_torch_autograd(backend64: pp.Backend, name: str) -> None:
    torch = pytest.importorskip("torch")
    model, reference = _pair(backend64, name)
    assert list(model.state_dict()) == list(reference.state_dict())
    X_host = np.random.default_rng(4).standard_normal((6, 3)) * 3.0
    target = np.array([0, 1, 2, 3, 1, 0])
    loss = pp.NLLLoss()
    value = loss.forward(model.forward(backend64.asarray(X_host)), backend64.asarray(target))
    dX = model.backward(loss.backward())

    X_ref = torch.from_numpy(X_host).requires_grad_()
    value_ref = torch.nn.NLLLoss()(reference(X_ref), torch.from_numpy(target))
    value_ref.backward()
    np.testing.assert_allclose(to_numpy(value), value_ref.item(), rtol=1e-10)
    for param_name, p in reference.named_parameters():
        np.testing.assert_allclose(
            to_numpy(dict(model.named_parameters())[param_name].grad),
            p.grad.numpy(),
            rtol=1e-10,
            atol=1e-12,
            err_msg=param_name,
        )
    np.testing.assert_allclose(to_numpy(dX), X_ref.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_torch_state_dict_round_trip() -> None:
    torch = pytest.importorskip("torch")
    model, reference = _pair(pp.get_backend(backend="numpy"), "gelu")
    exported = pp.io.to_torch_state_dict(model)
    assert list(exported) == ["0.weight", "0.bias", "1.weight", "1.bias", "3.weight", "3.bias"]
    fresh = torch.nn.Sequential(*[type(m)(*_args(m)) for m in reference]).double()
    fresh.load_state_dict(exported)
    X = np.random.default_rng(5).standard_normal((4, 3))
    with torch.no_grad():
        np.testing.assert_allclose(fresh(torch.from_numpy(X)).numpy(), model.forward(X), rtol=1e-12)


def _args(module: Any) -> tuple[Any, ...]:
    """Constructor arguments that rebuild a torch module of ``_pair``."""
    nn = pytest.importorskip("torch").nn
    if isinstance(module, nn.Linear):
        return (module.in_features, module.out_features)
    if isinstance(module, nn.LayerNorm):
        return (module.normalized_shape, module.eps, module.elementwise_affine)
    if isinstance(module, nn.GELU):
        return (module.approximate,)
    if isinstance(module, nn.LogSoftmax):
        return (module.dim,)
    return ()


# ---- checkpoints ------------------------------------------------------------------------


def test_checkpoint_round_trip(backend64: pp.Backend, tmp_path: Path) -> None:
    kw: dict[str, Any] = {"backend": backend64, "dtype": "float64"}
    model = pp.Sequential(
        pp.Linear(3, 5, seed=0, **kw),
        pp.LayerNorm(5, eps=1e-4, **kw),
        pp.GELU("tanh"),
        pp.Linear(5, 5, seed=1, **kw),
        pp.LayerNorm(5, elementwise_affine=False),
        pp.SiLU(),
        pp.LayerNorm(5, bias=False, **kw),
        pp.ELU(0.3),
        pp.Softplus(2.0, 10.0),
        pp.GELU(),
        pp.Linear(5, 3, seed=2, **kw),
        pp.LogSoftmax(),
    )
    model[1].weight.data = backend64.asarray(np.arange(5.0) + 0.5, dtype="float64")
    path = tmp_path / "modern.safetensors"
    pp.save(path, model)
    loaded = pp.load(path, backend=backend64).model
    assert repr(loaded) == repr(model)
    X = backend64.asarray(np.random.default_rng(6).standard_normal((4, 3)))
    np.testing.assert_array_equal(to_numpy(loaded.forward(X)), to_numpy(model.forward(X)))
    pp.load_into(path, model)  # the same architecture fits


def test_checkpoint_refuses_bad_spec(tmp_path: Path) -> None:
    from portprop.io.architecture import _spec_problem

    assert _spec_problem({"type": "GELU", "approximate": "erf"}, "layer 0")
    assert _spec_problem({"type": "Softplus", "beta": 0, "threshold": 20}, "layer 0")
    assert _spec_problem({"type": "ELU", "alpha": "1"}, "layer 0")
    good = {
        "type": "LayerNorm",
        "normalized_shape": 4,
        "eps": 1e-5,
        "elementwise_affine": True,
        "bias": True,
    }
    assert _spec_problem(good, "layer 0") is None
    assert _spec_problem({**good, "normalized_shape": 0}, "layer 0")
    assert _spec_problem({**good, "bias": 1}, "layer 0")


# ---- constructor arguments and shapes ---------------------------------------------------


@pytest.mark.parametrize(
    ("make", "error", "words"),
    [
        (lambda: pp.GELU("erf"), ValueError, "approximate"),
        (lambda: pp.ELU("1"), TypeError, "alpha"),
        (lambda: pp.ELU(float("nan")), ValueError, "alpha"),
        (lambda: pp.Softplus(0.0), ValueError, "beta"),
        (lambda: pp.Softplus(1.0, None), TypeError, "threshold"),
        (lambda: pp.LayerNorm(0), ValueError, "normalized_shape"),
        (lambda: pp.LayerNorm((2, 3)), ValueError, "normalized_shape"),
        (lambda: pp.LayerNorm(3, eps=-1.0), ValueError, "eps"),
        (lambda: pp.LayerNorm(3, elementwise_affine=1), TypeError, "elementwise_affine"),
    ],
)
def test_bad_arguments(make: Callable[[], Any], error: type[Exception], words: str) -> None:
    with pytest.raises(error, match=words):
        make()


def test_layer_norm_checks_width() -> None:
    with pytest.raises(ValueError, match="expects 4 input features"):
        pp.Sequential(pp.Linear(2, 3), pp.LayerNorm(4))
    with pytest.raises(ValueError, match="has 3 features, but the model expects 4"):
        pp.LayerNorm(4).forward(np.zeros((2, 3), dtype=np.float32))
