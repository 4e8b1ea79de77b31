"""BatchNorm1d and module buffers (issue 12): gradient checks in training and evaluation
mode on every backend, agreement with ``torch.nn.BatchNorm1d`` through
``torch.autograd`` to 1e-10 in float64 (outputs, gradients and running statistics), the
buffers in ``state_dict``, in torch and back, in checkpoints, and the refusals."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import to_numpy

import portprop as pp


def _model(backend: pp.Backend, **bn: Any) -> pp.Sequential:
    kw: dict[str, Any] = {"backend": backend, "dtype": "float64"}
    return pp.Sequential(
        pp.Linear(3, 4, seed=0, **kw),
        pp.BatchNorm1d(4, **bn, **kw),
        pp.Tanh(),
        pp.Linear(4, 2, seed=1, **kw),
    )


def _randomize_affine(model: pp.Sequential, backend: pp.Backend) -> None:
    """Weights and biases other than the initial ones and zeros."""
    norm = model[1]
    rng = np.random.default_rng(3)
    for p in (norm.weight, norm.bias):
        if p is not None:
            p.data = backend.asarray(rng.standard_normal(4), dtype="float64")


def _batch(backend: pp.Backend, seed: int, rows: int = 6) -> tuple[Any, Any]:
    rng = np.random.default_rng(seed)
    X = backend.asarray(rng.standard_normal((rows, 3)) * 2.0 + 1.0)
    return X, backend.asarray(rng.standard_normal((rows, 2)))


# ---- gradient checks --------------------------------------------------------------------


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("training", [True, False])
def test_gradcheck(backend64: pp.Backend, affine: bool, training: bool) -> None:
    model = _model(backend64, affine=affine)
    _randomize_affine(model, backend64)
    for seed in range(3):  # running statistics other than zeros and ones
        model.forward(_batch(backend64, seed)[0])
    model.train(training)
    X, target = _batch(backend64, 9)
    result = pp.gradcheck(model, pp.MSELoss(), X, target, mode="full")
    assert result.passed
    if affine:
        assert {"1.weight", "1.bias"} <= {row.name for row in result.rows}


def test_gradcheck_without_running_stats(backend64: pp.Backend) -> None:
    model = _model(backend64, track_running_stats=False).eval()  # batch statistics always
    X, target = _batch(backend64, 9)
    assert pp.gradcheck(model, pp.MSELoss(), X, target, mode="full").passed


def test_backward_formula_is_layer_norm_over_axis_0(backend64: pp.Backend) -> None:
    """The training pass of a feature over the batch is LayerNorm's of the transpose."""
    xp = backend64.xp
    X, _ = _batch(backend64, 1)
    G = _batch(backend64, 2)[0]
    Xhat0, r0 = pp.functional.layer_norm(xp, X, 1e-5, axis=0)
    Xhat1, r1 = pp.functional.layer_norm(xp, xp.permute_dims(X, (1, 0)), 1e-5)
    np.testing.assert_allclose(to_numpy(Xhat0), to_numpy(Xhat1).T, rtol=1e-13)
    np.testing.assert_allclose(to_numpy(r0), to_numpy(r1).T, rtol=1e-13)
    d0 = pp.functional.layer_norm_backward(xp, G, Xhat0, r0, axis=0)
    d1 = pp.functional.layer_norm_backward(xp, xp.permute_dims(G, (1, 0)), Xhat1, r1)
    np.testing.assert_allclose(to_numpy(d0), to_numpy(d1).T, rtol=1e-12, atol=1e-14)


# ---- against torch ------------------------------------------------------------------------


@pytest.mark.parametrize("momentum", [0.1, 0.37, None])
@pytest.mark.parametrize("affine", [True, False])
def test_matches_torch_batch_norm(
    backend64: pp.Backend, momentum: float | None, affine: bool
) -> None:
    torch = pytest.importorskip("torch")
    norm = pp.BatchNorm1d(4, 1e-3, momentum, affine, backend=backend64, dtype="float64")
    reference = torch.nn.BatchNorm1d(4, 1e-3, momentum, affine, dtype=torch.float64)
    if affine:
        with torch.no_grad():
            reference.weight.normal_(generator=torch.Generator().manual_seed(0))
            reference.bias.normal_(generator=torch.Generator().manual_seed(1))
        pp.io.from_torch_state_dict(norm, reference.state_dict())
    rng = np.random.default_rng(0)
    for step, training in enumerate([True, True, True, False, True, False]):
        norm.train(training)
        reference.train(training)
        X_host = rng.standard_normal((5, 4)) * (step + 1.0) + step
        G_host = rng.standard_normal((5, 4))
        norm.zero_grad()
        Y = norm.forward(backend64.asarray(X_host))
        dX = norm.backward(backend64.asarray(G_host))
        X_ref = torch.from_numpy(X_host).requires_grad_()
        reference.zero_grad()
        Y_ref = reference(X_ref)
        Y_ref.backward(torch.from_numpy(G_host))
        where = f"step {step} ({'training' if training else 'evaluation'})"
        np.testing.assert_allclose(to_numpy(Y), Y_ref.detach().numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(to_numpy(dX), X_ref.grad.numpy(), rtol=1e-10, atol=1e-12)
        if affine:
            for name, p in reference.named_parameters():
                got = to_numpy(dict(norm.named_parameters())[name].grad)
                np.testing.assert_allclose(
                    got, p.grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=name
                )
        for name, value in reference.named_buffers():
            got = to_numpy(dict(norm.named_buffers())[name])
            np.testing.assert_allclose(got, value.numpy(), rtol=1e-10, atol=1e-12, err_msg=where)
    assert int(to_numpy(norm.num_batches_tracked)) == 4


def test_torch_state_dict_round_trip() -> None:
    torch = pytest.importorskip("torch")
    backend = pp.get_backend(backend="numpy")
    model = _model(backend, momentum=0.2)
    _randomize_affine(model, backend)
    for seed in range(3):
        model.forward(_batch(backend, seed)[0])
    exported = pp.io.to_torch_state_dict(model)
    assert list(exported) == list(model.state_dict())
    assert exported["1.num_batches_tracked"].dtype == torch.int64
    nn = torch.nn
    twin = nn.Sequential(
        nn.Linear(3, 4), nn.BatchNorm1d(4, momentum=0.2), nn.Tanh(), nn.Linear(4, 2)
    )
    twin = twin.double()
    twin.load_state_dict(exported)  # strict: every key, buffers included
    twin.eval()
    model.eval()
    X, _ = _batch(backend, 7)
    with torch.no_grad():
        np.testing.assert_allclose(twin(torch.from_numpy(X)).numpy(), model.forward(X), rtol=1e-12)
    twin.train()
    twin(torch.from_numpy(X))  # one more step in torch, then back
    back = _model(backend, momentum=0.2)
    pp.io.from_torch_state_dict(back, twin.state_dict())
    assert int(back[1].num_batches_tracked) == 4
    assert back[1].num_batches_tracked.dtype == np.int64
    np.testing.assert_allclose(back[1].running_var, twin[1].running_var.numpy(), rtol=1e-14)


# ---- buffers --------------------------------------------------------------------------------


def test_buffers_are_state_not_parameters(backend: pp.Backend) -> None:
    model = pp.Sequential(pp.Linear(3, 4, backend=backend), pp.BatchNorm1d(4, backend=backend))
    assert [name for name, _ in model.named_parameters()] == [
        "0.weight",
        "0.bias",
        "1.weight",
        "1.bias",
    ]
    assert [name for name, _ in model.named_buffers()] == [
        "1.running_mean",
        "1.running_var",
        "1.num_batches_tracked",
    ]
    assert list(model.state_dict())[-3:] == [name for name, _ in model.named_buffers()]
    optimizer = pp.SGD(model.parameters(), lr=0.1)
    assert len(optimizer.params) == 4
    assert not pp.BatchNorm1d(4, track_running_stats=False).state_dict().keys() & {"running_mean"}


def test_load_state_dict_checks_buffers() -> None:
    model = pp.Sequential(pp.Linear(3, 4), pp.BatchNorm1d(4))
    state = {k: np.asarray(v) for k, v in model.state_dict().items()}
    before = to_numpy(model[1].running_mean).copy()
    bad = {**state, "1.running_var": np.ones(5, dtype=np.float32)}
    bad["1.running_mean"] = np.full(4, 3.0, dtype=np.float32)
    with pytest.raises(pp.StateDictError, match=r"1\.running_var: expected shape \(4,\)"):
        model.load_state_dict(bad)
    np.testing.assert_array_equal(to_numpy(model[1].running_mean), before)  # unchanged
    missing = {k: v for k, v in state.items() if k != "1.num_batches_tracked"}
    with pytest.raises(pp.StateDictError, match=r"missing keys.*num_batches_tracked"):
        model.load_state_dict(missing)
    model.load_state_dict({**state, "1.num_batches_tracked": np.asarray(7, dtype=np.int64)})
    assert int(to_numpy(model[1].num_batches_tracked)) == 7


def test_to_moves_buffers(backend: pp.Backend) -> None:
    norm = pp.BatchNorm1d(3, backend="numpy", dtype="float64")
    norm.forward(np.arange(6.0).reshape(2, 3))
    norm.to(backend, dtype="float32")
    assert backend.owns(norm.running_mean)
    assert pp.backend.dtype_name(norm.running_var.dtype) == "float32"
    assert pp.backend.dtype_name(norm.num_batches_tracked.dtype) == "int64"
    np.testing.assert_allclose(to_numpy(norm.running_mean), [0.15, 0.25, 0.35], rtol=1e-6)


# ---- checkpoints ----------------------------------------------------------------------------


def test_checkpoint_resumes_exactly(backend64: pp.Backend, tmp_path: Path) -> None:
    model = _model(backend64, momentum=None, eps=1e-4)
    optimizer = pp.Adam(model.parameters(), lr=0.01)
    loss = pp.MSELoss()

    def step(net: pp.Module, opt: Any, seed: int) -> Any:
        X, target = _batch(backend64, seed)
        net.zero_grad()
        value = loss.forward(net.forward(X), target)
        net.backward(loss.backward())
        opt.step()
        return value

    for seed in range(3):
        step(model, optimizer, seed)
    path = tmp_path / "bn.safetensors"
    pp.save(path, model, optimizer)
    checkpoint = pp.load(path, backend=backend64)
    resumed = checkpoint.model
    assert repr(resumed) == repr(model)
    optimizer2 = pp.Adam(resumed.parameters(), lr=0.01)
    optimizer2.load_state_dict(checkpoint.optimizer_state)
    for seed in range(3, 6):
        expected = step(model, optimizer, seed)
        got = step(resumed, optimizer2, seed)
        np.testing.assert_array_equal(to_numpy(got), to_numpy(expected))
    for (name, a), (_, b) in zip(model.named_buffers(), resumed.named_buffers(), strict=True):
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b), err_msg=name)
    model.eval()
    resumed.eval()
    X, _ = _batch(backend64, 10)
    np.testing.assert_array_equal(to_numpy(resumed.forward(X)), to_numpy(model.forward(X)))
    fresh = _model(backend64, momentum=None, eps=1e-4)
    pp.load_into(path, fresh)
    assert int(to_numpy(fresh[1].num_batches_tracked)) == 3


def test_checkpoint_refuses_bad_spec_and_counter(tmp_path: Path) -> None:
    from portprop.io.architecture import _spec_problem

    good = {
        "type": "BatchNorm1d",
        "num_features": 4,
        "eps": 1e-5,
        "momentum": None,
        "affine": True,
        "track_running_stats": True,
    }
    assert _spec_problem(good, "layer 0") is None
    assert _spec_problem({**good, "momentum": 2.0}, "layer 0")
    assert _spec_problem({**good, "num_features": 0}, "layer 0")
    assert _spec_problem({**good, "affine": 1}, "layer 0")
    assert _spec_problem({**good, "eps": 0}, "layer 0")
    # an integer tensor other than a 0-d num_batches_tracked is refused
    model = pp.Sequential(pp.Linear(2, 2), pp.BatchNorm1d(2))
    path = tmp_path / "bn.safetensors"
    pp.save(path, model)
    tensors, metadata = pp.io.safetensors.read_safetensors(path)
    tensors["model.1.running_mean"] = np.zeros(2, dtype=np.int64)
    pp.io.safetensors.write_safetensors(path, tensors, metadata)
    with pytest.raises(pp.CheckpointError, match=r"running_mean.*not a float"):
        pp.load(path)


# ---- refusals ---------------------------------------------------------------------------


def test_batch_of_one_in_training() -> None:
    norm = pp.BatchNorm1d(3)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        norm.forward(np.zeros((1, 3), dtype=np.float32))
    assert int(to_numpy(norm.num_batches_tracked)) == 0  # nothing changed
    norm.eval()
    assert norm.forward(np.ones((1, 3), dtype=np.float32)).shape == (1, 3)


@pytest.mark.parametrize(
    ("make", "error", "words"),
    [
        (lambda: pp.BatchNorm1d(0), ValueError, "num_features"),
        (lambda: pp.BatchNorm1d(3, eps=0.0), ValueError, "eps"),
        (lambda: pp.BatchNorm1d(3, momentum=1.5), ValueError, "momentum"),
        (lambda: pp.BatchNorm1d(3, momentum="0.1"), TypeError, "momentum"),
        (lambda: pp.BatchNorm1d(3, affine=1), TypeError, "affine"),
        (lambda: pp.BatchNorm1d(3, track_running_stats=None), TypeError, "track_running_stats"),
    ],
)
def test_bad_arguments(make: Callable[[], Any], error: type[Exception], words: str) -> None:
    with pytest.raises(error, match=words):
        make()


def test_checks_width() -> None:
    with pytest.raises(ValueError, match="expects 4 input features"):
        pp.Sequential(pp.Linear(2, 3), pp.BatchNorm1d(4))
    with pytest.raises(ValueError, match="has 3 features, but the model expects 4"):
        pp.BatchNorm1d(4).forward(np.zeros((2, 3), dtype=np.float32))


# ---- with fit's other paths: mixed precision, the compiled step, reduction="none" ---------


def _bn_model(backend: pp.Backend) -> pp.Sequential:
    pp.manual_seed(0)
    kw = {"backend": backend}
    return pp.Sequential(
        pp.Linear(3, 6, **kw), pp.BatchNorm1d(6, **kw), pp.ReLU(), pp.Linear(6, 2, **kw)
    )


def _bn_data(backend: pp.Backend) -> tuple[Any, Any]:
    rng = np.random.default_rng(5)
    X = backend.asarray(rng.normal(size=(40, 3)).astype("float32"))
    y = backend.asarray(rng.integers(0, 2, size=40).astype("int64"))
    return X, y


def test_mixed_precision_keeps_the_running_statistics_of_the_model(backend: pp.Backend) -> None:
    low = [p for p, name in (("bf16", "bfloat16"), ("fp16", "float16")) if _has(backend, name)]
    if not low:
        pytest.skip(f"{backend.name} has neither float16 nor bfloat16")
    X, y = _bn_data(backend)
    model = _bn_model(backend)
    pp.fit(model, pp.CrossEntropyLoss(), pp.SGD(model.parameters(), lr=0.1), X, y,
           epochs=2, batch_size=10, verbose=0, precision=low[0])  # fmt: skip
    buffers = dict(model.named_buffers())
    assert int(to_numpy(buffers["1.num_batches_tracked"])) == 8
    assert to_numpy(buffers["1.running_mean"]).dtype == np.float32
    assert np.any(to_numpy(buffers["1.running_mean"]) != 0.0)


def _has(backend: pp.Backend, name: str) -> bool:
    try:
        backend.float_dtype(name)
    except pp.DtypeUnsupportedError:
        return False
    return True


def test_compiled_step_of_a_model_with_buffers_runs_eagerly_on_jax(backend: pp.Backend) -> None:
    X, y = _bn_data(backend)
    model = _bn_model(backend)
    optimizer = pp.SGD(model.parameters(), lr=0.1)
    step = pp.compile_step(model, pp.CrossEntropyLoss(), optimizer)
    if backend.library == "jax":
        assert not step.compiled
        assert "buffers" in step.how
        with pytest.raises(pp.CompileUnsupportedError, match="buffers"):
            pp.compile_step(model, pp.CrossEntropyLoss(), optimizer, fallback="raise")
    for start in range(0, 40, 10):
        step(X[start : start + 10, ...], y[start : start + 10])
    tracked = dict(model.named_buffers())["1.num_batches_tracked"]
    assert int(to_numpy(tracked)) == 4


def test_fit_refuses_a_loss_without_reduction() -> None:
    backend = pp.get_backend(backend="numpy")
    X, y = _bn_data(backend)
    model = _bn_model(backend)
    before = {k: to_numpy(v).copy() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="reduction='none'"):
        pp.fit(model, pp.CrossEntropyLoss("none"), pp.SGD(model.parameters(), lr=0.1), X, y,
               verbose=0)  # fmt: skip
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(to_numpy(v), before[k])


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        (
            "model.1.num_batches_tracked",
            np.array(-3, dtype=np.int64),
            "holds -3; expected a count >= 0",
        ),
        ("model.1.running_var", np.array([1.0, -0.5], dtype=np.float32), "negative variance"),
    ],
)
def test_checkpoint_refuses_impossible_running_statistics(
    tmp_path: Path, key: str, value: Any, words: str
) -> None:
    model = pp.Sequential(pp.Linear(2, 2), pp.BatchNorm1d(2))
    path = tmp_path / "bn.safetensors"
    pp.save(path, model)
    tensors, metadata = pp.io.safetensors.read_safetensors(path)
    tensors[key] = value
    pp.io.safetensors.write_safetensors(path, tensors, metadata)
    with pytest.raises(pp.CheckpointError, match=words):
        pp.load(path)
    target = pp.Sequential(pp.Linear(2, 2), pp.BatchNorm1d(2))
    before = {k: to_numpy(v).copy() for k, v in target.state_dict().items()}
    with pytest.raises(pp.CheckpointError, match=words):
        pp.load_into(path, target)
    for k, v in target.state_dict().items():
        np.testing.assert_array_equal(to_numpy(v), before[k])
