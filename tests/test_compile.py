"""The compiled training step (:func:`portprop.compile_step`, issue 13).

A compiled step must equal the eager step (forward, loss, zero_grad, backward, the
optimizer's step) to float32 rounding, draw the same dropout masks, keep no update that
is not finite and report it as :func:`fit` does, trace again for a new batch shape, and
leave the model and the optimizer as they were when it cannot compile.  JAX compiles
with ``jax.jit``, torch with ``torch.compile``; NumPy and array-api-strict run the same
step eagerly (or refuse with ``fallback="raise"``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from conftest import load_backend, to_numpy

import portprop as pp

IN, HIDDEN, OUT, BATCH = 5, 12, 3, 16

# What the step's code cannot trace yet, by the change it waits for (a skip says which):
# functional.one_hot reads labels.device, which a JAX tracer lacks; Adam takes a host
# square root of its bias correction (math.sqrt) from the step count.
_WAITING = {
    "has no attribute device": "functional.one_hot reads labels.device (a JAX tracer has none)",
    "float` function": "Adam's math.sqrt(1 - beta2**t) needs the step count on the host",
}


def _model(backend: pp.Backend, kind: str, out: int = OUT) -> pp.Sequential:
    pp.manual_seed(7)
    if kind == "tanh":
        layers = [pp.Linear(IN, HIDDEN, backend=backend), pp.Tanh()]
    else:  # every kind of layer: relu, layer norm, GELU, dropout
        layers = [
            pp.Linear(IN, HIDDEN, backend=backend),
            pp.ReLU(),
            pp.LayerNorm(HIDDEN, backend=backend),
            pp.GELU(),
            pp.Dropout(0.25, seed=11),
        ]
    return pp.Sequential(*layers, pp.Linear(HIDDEN, out, backend=backend))


def _optimizer(name: str, model: pp.Module) -> pp.Optimizer:
    if name == "sgd":
        return pp.SGD(model.parameters(), lr=0.05, momentum=0.9)
    return pp.Adam(model.parameters(), lr=0.01)


def _loss(name: str) -> Any:
    return pp.CrossEntropyLoss() if name == "ce" else pp.MSELoss()


def _data(backend: pp.Backend, loss: str, n: int = BATCH, seed: int = 0) -> tuple[Any, Any]:
    rng = np.random.default_rng(seed)
    X = backend.from_host(rng.standard_normal((n, IN)), "float32")
    if loss == "ce":
        return X, backend.asarray(rng.integers(0, OUT, n))
    return X, backend.from_host(rng.standard_normal((n, OUT)), "float32")


def _eager_step(model: pp.Module, loss: Any, optimizer: pp.Optimizer, X: Any, y: Any) -> Any:
    out = model.forward(X)
    value = loss.forward(out, y)
    model.zero_grad()
    model.backward(loss.backward(), input_grad=False)
    optimizer.step()
    return value


def _params(model: pp.Module) -> list[np.ndarray]:
    return [to_numpy(p.data) for p in model.parameters()]


def _slow_compiler(backend: pp.Backend) -> bool:
    """torch.compile on a CPU: tens of seconds per model (all cases run on CUDA)."""
    return backend.library == "torch" and backend.device.type == "cpu"


def _pair(backend: pp.Backend, kind: str) -> tuple[Any, Any, Any, pp.CompiledStep]:
    """Two equal models: one with its eager optimizer, one with its compiled step."""
    eager, compiled = _model(backend, kind), _model(backend, kind)
    step = pp.compile_step(compiled, pp.MSELoss(), _optimizer("sgd", compiled), fallback="raise")
    return eager, _optimizer("sgd", eager), compiled, step


def _run_or_skip(step: pp.CompiledStep, X: Any, y: Any) -> Any:
    """``step(X, y)``; skip when the step waits for a change of the code it traces."""
    try:
        return step(X, y)
    except pp.CompileUnsupportedError as exc:
        for text, reason in _WAITING.items():
            if text in str(exc):
                pytest.skip(f"cannot trace yet: {reason}")
        raise


@pytest.fixture
def compiling(backend: pp.Backend, request: pytest.FixtureRequest) -> pp.Backend:
    """Each backend with a compiler (JAX, torch); torch's compiles take tens of seconds
    on a CPU."""
    if backend.library not in ("jax", "torch"):
        pytest.skip(f"{backend.library} has no compiler (its steps: test_*eager*)")
    if backend.library == "torch":
        request.applymarker(pytest.mark.slow)
    return backend


@pytest.fixture
def eager_only(backend: pp.Backend) -> pp.Backend:
    """Each backend without a compiler (NumPy, array-api-strict, CuPy)."""
    if backend.library in ("jax", "torch"):
        pytest.skip(f"{backend.library} compiles (its steps: the tests with compiling)")
    return backend


# ---- equal to the eager step -------------------------------------------------------------


@pytest.mark.parametrize(
    ("opt", "loss", "kind"),
    [
        ("sgd", "mse", "tanh"),
        ("sgd", "ce", "every"),
        ("adam", "mse", "every"),
        ("adam", "ce", "tanh"),
    ],
)
def test_compiled_step_equals_eager_step(
    compiling: pp.Backend, opt: str, loss: str, kind: str
) -> None:
    if _slow_compiler(compiling) and (opt, loss, kind) != ("sgd", "mse", "tanh"):
        pytest.skip("torch.compile takes about a minute per model on a CPU: one case there")
    eager, compiled = _model(compiling, kind), _model(compiling, kind)
    eager_opt, compiled_opt = _optimizer(opt, eager), _optimizer(opt, compiled)
    eager_loss, compiled_loss = _loss(loss), _loss(loss)
    step = pp.compile_step(compiled, compiled_loss, compiled_opt, fallback="raise")
    assert step.compiled, step.how
    for i in range(6):
        X, y = _data(compiling, loss, seed=i)
        if i == 4:  # a schedule changes the learning rate: no new trace needed
            eager_opt.lr = compiled_opt.lr = eager_opt.lr / 2
        expected = _eager_step(eager, eager_loss, eager_opt, X, y)
        value = _run_or_skip(step, X, y)
        assert pp.backend_of(value) == compiling
        assert value.dtype == compiled.dtype
        np.testing.assert_allclose(to_numpy(value), to_numpy(expected), rtol=2e-5, atol=1e-6)
    assert step.compiled, step.how
    for got, want in zip(_params(compiled), _params(eager), strict=True):
        assert got.dtype == want.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-5)
    for got, want in zip(compiled_opt.state, eager_opt.state, strict=True):
        assert got["step"] == want["step"] == 6
    assert all(p.grad is None for p in compiled.parameters())  # no gradient kept between steps


def test_dropout_draws_the_eager_masks(compiling: pp.Backend) -> None:
    """The generator's key goes through the program: the masks are the eager ones, and
    the generator is where the eager one is afterwards."""
    if _slow_compiler(compiling):
        pytest.skip("torch.compile takes about a minute per model on a CPU")
    eager, eager_opt, compiled, step = _pair(compiling, "every")
    for i in range(3):
        X, y = _data(compiling, "mse", seed=i)
        _eager_step(eager, pp.MSELoss(), eager_opt, X, y)
        step(X, y)
    masks = [m.generator.uniform((4, 4)) for m in (eager[4], compiled[4])]
    np.testing.assert_array_equal(to_numpy(masks[0]), to_numpy(masks[1]))


def test_a_new_batch_shape_traces_again(compiling: pp.Backend) -> None:
    if _slow_compiler(compiling):
        pytest.skip("torch.compile takes about a minute per model on a CPU")
    eager, eager_opt, compiled, step = _pair(compiling, "tanh")
    for i, n in enumerate([BATCH, BATCH, 7, BATCH, 7]):  # the last, smaller batch of epochs
        X, y = _data(compiling, "mse", n=n, seed=i)
        expected = _eager_step(eager, pp.MSELoss(), eager_opt, X, y)
        np.testing.assert_allclose(to_numpy(step(X, y)), to_numpy(expected), rtol=2e-5)
    for got, want in zip(_params(compiled), _params(eager), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_evaluation_mode_is_a_program_of_its_own(compiling: pp.Backend) -> None:
    """Dropout in evaluation mode is the identity: a step after ``eval()`` must not
    reuse the program traced in training mode."""
    if _slow_compiler(compiling):
        pytest.skip("torch.compile takes about a minute per model on a CPU")
    eager, eager_opt, compiled, step = _pair(compiling, "every")
    for i in range(4):
        if i == 2:
            eager.eval()
            compiled.eval()
        X, y = _data(compiling, "mse", seed=i)
        expected = _eager_step(eager, pp.MSELoss(), eager_opt, X, y)
        np.testing.assert_allclose(to_numpy(step(X, y)), to_numpy(expected), rtol=2e-5)


# ---- divergence ---------------------------------------------------------------------------


@pytest.mark.parametrize("check_every", [1, 3])
def test_a_step_that_is_not_finite_is_never_kept(compiling: pp.Backend, check_every: int) -> None:
    if _slow_compiler(compiling):
        pytest.skip("torch.compile takes about a minute per model on a CPU")
    model = _model(compiling, "tanh")
    optimizer = _optimizer("sgd", model)
    step = pp.compile_step(model, pp.MSELoss(), optimizer, check_every=check_every)
    X, y = _data(compiling, "mse")
    step(X, y)
    step(X, y)  # the first compiled step
    before = _params(model)
    momentum = [to_numpy(s["momentum_buffer"]) for s in optimizer.state]
    bad = compiling.from_host(np.full((BATCH, IN), np.inf), "float32")

    def three_steps() -> None:
        step(bad, y)  # batch 3
        step(X, y)  # applied only if the host has not looked yet: it must not be
        step(X, y)

    with pytest.raises(pp.TrainingDivergedError) as info:
        three_steps()
    assert info.value.batch == 3
    assert info.value.quantity == "loss"
    assert "batch 3" in str(info.value)
    for got, want in zip(_params(model), before, strict=True):
        np.testing.assert_array_equal(got, want)
    for state, want in zip(optimizer.state, momentum, strict=True):
        np.testing.assert_array_equal(to_numpy(state["momentum_buffer"]), want)
        assert state["step"] == 2
    step(X, y)  # training goes on after the error
    assert all(s["step"] == 3 for s in optimizer.state)
    assert any(not np.array_equal(a, b) for a, b in zip(_params(model), before, strict=True))


def test_the_eager_fallback_stops_before_a_step_that_is_not_finite(
    eager_only: pp.Backend,
) -> None:
    model = _model(eager_only, "tanh")
    optimizer = _optimizer("sgd", model)
    step = pp.compile_step(model, pp.MSELoss(), optimizer)
    X, y = _data(eager_only, "mse")
    step(X, y)
    before = _params(model)
    bad = eager_only.from_host(np.full((BATCH, IN), np.nan), "float32")
    with pytest.raises(pp.TrainingDivergedError, match="epoch 1, batch 2") as info:
        step(bad, y)
    assert info.value.quantity == "loss"
    for got, want in zip(_params(model), before, strict=True):
        np.testing.assert_array_equal(got, want)


# ---- where the library cannot compile -------------------------------------------------------


def test_libraries_without_a_compiler_run_the_same_step_eagerly(eager_only: pp.Backend) -> None:
    eager, compiled = _model(eager_only, "every"), _model(eager_only, "every")
    eager_opt, compiled_opt = _optimizer("adam", eager), _optimizer("adam", compiled)
    step = pp.compile_step(compiled, pp.CrossEntropyLoss(), compiled_opt)
    assert not step.compiled
    assert step.how.startswith("eager:")
    assert eager_only.library in step.how
    for i in range(3):
        X, y = _data(eager_only, "ce", seed=i)
        expected = _eager_step(eager, pp.CrossEntropyLoss(), eager_opt, X, y)
        np.testing.assert_array_equal(to_numpy(step(X, y)), to_numpy(expected))
    for got, want in zip(_params(compiled), _params(eager), strict=True):
        np.testing.assert_array_equal(got, want)


def test_fallback_raise_refuses_a_library_without_a_compiler(eager_only: pp.Backend) -> None:
    model = _model(eager_only, "tanh")
    with pytest.raises(pp.CompileUnsupportedError, match=eager_only.name):
        pp.compile_step(model, pp.MSELoss(), _optimizer("sgd", model), fallback="raise")


class _HostLoss(pp.MSELoss):
    """An MSE loss that reads its value on the host: it cannot be traced."""

    def _forward(self, xp: Any, pred: Any, target: Any) -> Any:
        value = super()._forward(xp, pred, target)
        if float(value) < 0.0:  # never true; the read is what matters
            return -value
        return value


def test_a_failed_compile_leaves_model_and_optimizer_unchanged() -> None:
    backend = load_backend("jax")
    model = _model(backend, "every")
    optimizer = _optimizer("sgd", model)
    step = pp.compile_step(model, _HostLoss(), optimizer, fallback="raise")
    X, y = _data(backend, "mse")
    step(X, y)  # the first step runs eagerly; the second traces
    before = _params(model)
    state = [(s["step"], to_numpy(s["momentum_buffer"])) for s in optimizer.state]
    key = model[4].generator.get_state()
    with pytest.raises(pp.CompileUnsupportedError, match="cannot compile"):
        step(X, y)
    for got, want in zip(_params(model), before, strict=True):
        np.testing.assert_array_equal(got, want)
    for s, (count, momentum) in zip(optimizer.state, state, strict=True):
        assert s["step"] == count
        np.testing.assert_array_equal(to_numpy(s["momentum_buffer"]), momentum)
    assert model[4].generator.get_state() == key
    # no traced value was left behind: the eager step still works on the same objects
    _eager_step(model, pp.MSELoss(), optimizer, X, y)


def test_a_failed_compile_falls_back_once_with_a_warning() -> None:
    backend = load_backend("jax")
    model = _model(backend, "tanh")
    step = pp.compile_step(model, _HostLoss(), _optimizer("sgd", model))
    X, y = _data(backend, "mse")
    step(X, y)
    with pytest.warns(RuntimeWarning, match="cannot be traced"):
        step(X, y)
    assert not step.compiled
    step(X, y)  # said once: no second warning (warnings are errors here)


# ---- arguments ---------------------------------------------------------------------------------


def test_arguments_are_checked(backend: pp.Backend) -> None:
    model = _model(backend, "tanh")
    optimizer = _optimizer("sgd", model)
    with pytest.raises(ValueError, match=r"fallback must be one of .*got 'never'"):
        pp.compile_step(model, pp.MSELoss(), optimizer, fallback="never")
    with pytest.raises(ValueError, match="check_every must be an int >= 1, got 0"):
        pp.compile_step(model, pp.MSELoss(), optimizer, check_every=0)
    with pytest.raises(TypeError, match="model must be a portprop Module, got list"):
        pp.compile_step([], pp.MSELoss(), optimizer)  # type: ignore[arg-type]
    other = _model(backend, "tanh")
    with pytest.raises(ValueError, match="optimizer must update the model's parameters"):
        pp.compile_step(model, pp.MSELoss(), _optimizer("sgd", other))


def test_bad_batches_are_refused_before_the_program(backend: pp.Backend) -> None:
    model = _model(backend, "tanh", out=OUT)
    optimizer = _optimizer("sgd", model)
    step = pp.compile_step(model, pp.CrossEntropyLoss(), optimizer)
    X, _ = _data(backend, "ce")
    before = _params(model)
    labels = backend.asarray(np.full(BATCH, OUT))  # one past the last class
    with pytest.raises(ValueError, match=r"target labels must lie in \[0, 3\)"):
        step(X, labels)
    with pytest.raises(ValueError, match="X has 6 features, but the model expects 5"):
        step(backend.from_host(np.zeros((BATCH, IN + 1)), "float32"), labels)
    for got, want in zip(_params(model), before, strict=True):
        np.testing.assert_array_equal(got, want)


def test_fit_compiles_only_when_asked(backend: pp.Backend) -> None:
    from portprop.training.compiled import step_for_fit

    model = _model(backend, "tanh")
    optimizer = _optimizer("sgd", model)
    assert step_for_fit(model, pp.MSELoss(), optimizer, compile=False, clip=None) is None
    assert step_for_fit(model, pp.MSELoss(), optimizer, compile=True, clip=1.0) is None
    forced = step_for_fit(model, pp.MSELoss(), optimizer, compile=True, clip=None)
    assert forced is not None
    assert forced.compiled == (backend.library in ("jax", "torch"))


def test_the_compiled_step_writes_no_formula() -> None:
    """Compiling runs the eager functions: the module computes nothing of its own but
    the selection of kept values (``where``), its flags and the arrays it passes in."""
    import ast
    import inspect

    from portprop.training import compiled

    tree = ast.parse(inspect.getsource(compiled))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "portprop.functional" not in imported
    used = {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "xp"
    }
    assert used <= {"where", "asarray", "isfinite", "bool"}, used
