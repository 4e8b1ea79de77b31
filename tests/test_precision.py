"""Mixed precision (issue 12): low-precision working copy, float32 master weights, loss
scaling (:mod:`portprop.training.precision`)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import load_backend, to_numpy

import portprop as pp
from portprop.backend import dtype_name
from portprop.training.precision import for_fit

# The low-precision dtypes each library has (the list).
LOW = {
    "numpy": ("float16",),
    "torch": ("float16", "bfloat16"),
    "jax": ("float16", "bfloat16"),
    "cupy": ("float16",),
    "array_api_strict": (),
}
NAMES = {"fp16": "float16", "bf16": "bfloat16"}


def _precisions(backend: pp.Backend) -> list[str]:
    return [p for p, name in NAMES.items() if name in LOW[backend.library]]


def _model(backend: pp.Backend, d: int = 3, h: int = 8, k: int = 2) -> pp.Sequential:
    pp.manual_seed(0)
    return pp.Sequential(
        pp.Linear(d, h, backend=backend), pp.ReLU(), pp.Linear(h, k, backend=backend)
    )


def _batch(backend: pp.Backend, n: int = 16, d: int = 3, k: int = 2) -> tuple[object, object]:
    rng = np.random.default_rng(1)
    X = backend.asarray(rng.normal(size=(n, d)).astype("float32"))
    y = backend.asarray(rng.integers(0, k, size=n).astype("int64"))
    return X, y


def _step(mp: pp.MixedPrecision, loss: pp.CrossEntropyLoss, opt: pp.Optimizer, X, y) -> bool:
    out = mp.forward(X)
    loss.forward(out, y)
    mp.model.zero_grad()
    mp.backward(loss.backward())
    return mp.step(opt)


# ---- dtypes of the backends ------------------------------------------------------------


def test_float_dtype_has_the_low_precisions_of_each_library(backend):
    for name in ("float16", "bfloat16"):
        if name in LOW[backend.library]:
            assert dtype_name(backend.float_dtype(name)) == name
            x = backend.asarray([1.5, 2.0], dtype=name)
            assert dtype_name(x.dtype) == name
        else:
            have = " and ".join(map(repr, LOW[backend.library])) or "none"
            with pytest.raises(pp.DtypeUnsupportedError, match=rf"has no {name}: .*\({have}\)"):
                backend.float_dtype(name)


def test_mixed_precision_refused_where_the_dtype_is_absent(backend):
    model = _model(backend)
    for precision, name in NAMES.items():
        if name not in LOW[backend.library]:
            with pytest.raises(pp.DtypeUnsupportedError, match=f"has no {name}"):
                pp.MixedPrecision(model, precision)


# ---- the working copy and the masters --------------------------------------------------


def test_masters_stay_float32_and_working_copy_is_them_cast_down(backend):
    if not _precisions(backend):
        pytest.skip(f"{backend.name} has neither float16 nor bfloat16")
    X, y = _batch(backend)
    for precision in _precisions(backend):
        model = _model(backend)
        opt = pp.SGD(model.parameters(), lr=0.1)
        mp = pp.MixedPrecision(model, precision)
        before = [to_numpy(p.data) for p in model.parameters()]
        for _ in range(3):
            assert _step(mp, pp.CrossEntropyLoss(), opt, X, y)
        xp = backend.xp
        work = mp.working_copy
        assert work is not None
        for m, w, b in zip(model.parameters(), work.parameters(), before, strict=True):
            assert dtype_name(m.data.dtype) == "float32"
            assert dtype_name(m.grad.dtype) == "float32"
            assert dtype_name(w.data.dtype) == NAMES[precision]
            # NumPy has no bfloat16: compare on the host in float32
            f32 = m.data.dtype
            cast = to_numpy(xp.astype(xp.astype(m.data, w.data.dtype), f32))
            np.testing.assert_array_equal(to_numpy(xp.astype(w.data, f32)), cast)
            assert not np.array_equal(to_numpy(m.data), b)  # the masters did move


def test_gradients_are_unscaled_float32_close_to_float32_training(backend):
    if not _precisions(backend):
        pytest.skip(f"{backend.name} has neither float16 nor bfloat16")
    X, y = _batch(backend)
    loss = pp.CrossEntropyLoss()
    reference = _model(backend)
    loss.forward(reference.forward(X), y)
    reference.backward(loss.backward(), input_grad=False)
    for precision in _precisions(backend):
        model = _model(backend)
        mp = pp.MixedPrecision(model, precision, loss_scale=2.0**10)
        loss.forward(mp.forward(X), y)
        mp.backward(loss.backward())
        for p, q in zip(model.parameters(), reference.parameters(), strict=True):
            # bfloat16 keeps 8 significant bits, float16 11
            np.testing.assert_allclose(to_numpy(p.grad), to_numpy(q.grad), rtol=0.05, atol=2e-3)


def test_forward_returns_float32_and_follows_replaced_masters(backend):
    if not _precisions(backend):
        pytest.skip(f"{backend.name} has neither float16 nor bfloat16")
    X, _ = _batch(backend)
    model = _model(backend)
    mp = pp.MixedPrecision(model, _precisions(backend)[0])
    out = mp.forward(X)
    assert dtype_name(out.dtype) == "float32"
    zeros = {k: np.zeros(v.shape, "float32") for k, v in model.state_dict().items()}
    model.load_state_dict(zeros)  # new master arrays: the next forward casts again
    np.testing.assert_array_equal(to_numpy(mp.forward(X)), 0.0)


def test_fp32_is_the_plain_loop(backend):
    X, y = _batch(backend)
    plain, wrapped = _model(backend), _model(backend)
    opt_a, opt_b = pp.Adam(plain.parameters(), lr=0.01), pp.Adam(wrapped.parameters(), lr=0.01)
    loss = pp.CrossEntropyLoss()
    mp = pp.MixedPrecision(wrapped, "fp32")
    assert mp.working_copy is None
    for _ in range(2):
        loss.forward(plain.forward(X), y)
        plain.zero_grad()
        plain.backward(loss.backward(), input_grad=False)
        opt_a.step()
        assert _step(mp, loss, opt_b, X, y)
    for p, q in zip(plain.parameters(), wrapped.parameters(), strict=True):
        np.testing.assert_array_equal(to_numpy(p.data), to_numpy(q.data))


# ---- loss scaling ------------------------------------------------------------------------


def _fp16(backend: pp.Backend) -> None:
    if "float16" not in LOW[backend.library]:
        pytest.skip(f"{backend.name} has no float16")


def test_overflow_skips_the_step_and_backs_off(backend):
    _fp16(backend)
    X, y = _batch(backend)
    model = _model(backend)
    opt = pp.Adam(model.parameters(), lr=0.01)
    mp = pp.MixedPrecision(model, "fp16")
    assert mp.scale == 2.0**16
    assert mp.dynamic
    loss = pp.CrossEntropyLoss()
    before = [to_numpy(p.data) for p in model.parameters()]
    loss.forward(mp.forward(X), y)
    model.zero_grad()
    mp.backward(loss.backward() * 1e4)  # planted: times 2**16 is past float16's 65504
    assert mp.overflowed
    assert all(p.grad is None for p in model.parameters())
    assert mp.step(opt) is False
    assert mp.skipped_steps == 1
    assert mp.scale == 2.0**15
    assert not mp.overflowed
    assert opt.state_dict() == pp.Adam(_model(backend).parameters(), lr=0.01).state_dict()
    for p, b in zip(model.parameters(), before, strict=True):
        np.testing.assert_array_equal(to_numpy(p.data), b)
    assert _step(mp, loss, opt, X, y)  # the next, normal step is taken
    assert mp.logs() == {"loss_scale": 2.0**15, "skipped_steps": 1.0}


def test_scale_grows_after_growth_interval_good_steps(backend):
    _fp16(backend)
    X, y = _batch(backend)
    model = _model(backend)
    opt = pp.SGD(model.parameters(), lr=0.01)
    mp = pp.MixedPrecision(model, "fp16", init_scale=4.0, growth_interval=3)
    loss = pp.CrossEntropyLoss()
    scales = []
    for _ in range(7):
        assert _step(mp, loss, opt, X, y)
        scales.append(mp.scale)
    assert scales == [4.0, 4.0, 8.0, 8.0, 8.0, 16.0, 16.0]
    assert mp.state_dict()["_growth_tracker"] == 1


def test_non_finite_gradients_without_scaling_reach_the_masters(backend):
    """bf16 (no scaling): non-finite gradients are fit's divergence, not a skip."""
    if "bfloat16" not in LOW[backend.library]:
        pytest.skip(f"{backend.name} has no bfloat16")
    X, y = _batch(backend)
    model = _model(backend)
    mp = pp.MixedPrecision(model, "bf16")
    assert mp.scale == 1.0
    assert not mp.dynamic
    loss = pp.CrossEntropyLoss()
    loss.forward(mp.forward(X), y)
    mp.backward(loss.backward() * math.inf)
    assert not mp.overflowed
    assert not np.isfinite(to_numpy(model.parameters()[-1].grad)).all()


def test_state_dict_round_trip_and_gradscaler_keys():
    model = _model(pp.get_backend(backend="numpy"))
    mp = pp.MixedPrecision(model, "fp16")
    state = mp.state_dict()
    assert state == {
        "scale": 65536.0,
        "growth_factor": 2.0,
        "backoff_factor": 0.5,
        "growth_interval": 2000,
        "_growth_tracker": 0,
        "skipped_steps": 0,
    }
    torch_like = {
        "scale": 128.0,
        "growth_factor": 4.0,
        "backoff_factor": 0.25,
        "growth_interval": 10,
        "_growth_tracker": 3,
    }
    mp.load_state_dict(torch_like)
    assert mp.scale == 128.0
    assert mp.state_dict() == {**torch_like, "skipped_steps": 0}
    with pytest.raises(ValueError, match=r"state_dict\['backoff_factor'\] must be in \(0, 1\)"):
        mp.load_state_dict({**torch_like, "scale": 1.0, "backoff_factor": 2.0})
    with pytest.raises(KeyError, match="missing"):
        mp.load_state_dict({"scale": 1.0})
    assert mp.scale == 128.0  # nothing changed


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"precision": "fp8"}, ValueError, r"precision must be one of \['bf16', 'fp16', 'fp32'\]"),
        (
            {"loss_scale": "static"},
            ValueError,
            "loss_scale must be 'dynamic', a number > 0 or None",
        ),
        ({"loss_scale": -1.0}, ValueError, "loss_scale must be a finite number > 0, got -1.0"),
        ({"loss_scale": True}, TypeError, "loss_scale must be a number, got True"),
        ({"growth_factor": 1.0}, ValueError, r"growth_factor'\] must be a finite number > 1"),
        ({"growth_interval": 0}, ValueError, r"growth_interval'\] must be an int >= 1, got 0"),
        ({"precision": "fp32", "loss_scale": "dynamic"}, ValueError, "loss_scale must be None"),
    ],
)
def test_bad_arguments_are_named(kwargs, error, match):
    model = _model(pp.get_backend(backend="numpy"))
    kwargs = {"precision": "fp16", **kwargs}
    with pytest.raises(error, match=match):
        pp.MixedPrecision(model, **kwargs)


def test_model_must_be_float32():
    model = _model(pp.get_backend(backend="numpy")).to(dtype="float64")
    with pytest.raises(TypeError, match=r"model must be float32 .* got a float64 model"):
        pp.MixedPrecision(model, "fp16")
    with pytest.raises(TypeError, match="model must be a portprop Module, got int"):
        pp.MixedPrecision(3, "fp16")  # type: ignore[arg-type]


def test_for_fit():
    model = _model(pp.get_backend(backend="numpy"))
    assert for_fit(model, None) is None
    assert for_fit(model, "fp32") is None
    mp = for_fit(model, "fp16")
    assert mp is not None
    assert mp.dynamic
    with pytest.raises(ValueError, match="precision must be None or one of"):
        for_fit(model, "half")


def test_checkpoint_holds_float32_masters(backend, tmp_path):
    if not _precisions(backend):
        pytest.skip(f"{backend.name} has neither float16 nor bfloat16")
    X, y = _batch(backend)
    model = _model(backend)
    opt = pp.Adam(model.parameters(), lr=0.01)
    mp = pp.MixedPrecision(model, _precisions(backend)[0])
    _step(mp, pp.CrossEntropyLoss(), opt, X, y)
    pp.save(tmp_path / "m.pp", model, opt)
    loaded = pp.load(tmp_path / "m.pp", backend="numpy")
    for name, value in loaded.model.state_dict().items():
        assert dtype_name(value.dtype) == "float32", name
        np.testing.assert_array_equal(value, to_numpy(model.state_dict()[name]))


# ---- accuracy against float32 ------------------------------------------------------------


def _accuracy(backend: pp.Backend, precision: str, data: str) -> float:
    if data == "disk":
        X, y = pp.datasets.make_disk(1000, seed=1, backend="numpy")
        hidden, epochs, batch, lr = 25, 20, 50, 0.01
    else:
        pytest.importorskip("sklearn", reason="load_digits reads scikit-learn's bundled digits")
        X, y = pp.datasets.load_digits(backend="numpy")
        hidden, epochs, batch, lr = 32, 8, 64, 0.01
    Xtr, Xte, ytr, yte = pp.datasets.train_test_split(X, y, test_size=0.25, seed=2)
    Xtr, Xte, ytr = backend.asarray(Xtr), backend.asarray(Xte), backend.asarray(ytr)
    model = _model(backend, d=X.shape[1], h=hidden, k=int(y.max()) + 1)
    opt = pp.Adam(model.parameters(), lr=lr)
    mp = pp.MixedPrecision(model, precision)
    loss = pp.CrossEntropyLoss()
    for _ in range(epochs):
        for s in range(0, Xtr.shape[0], batch):
            _step(mp, loss, opt, Xtr[s : s + batch, ...], ytr[s : s + batch])
    pred = to_numpy(model.forward(Xte)).argmax(axis=1)  # the float32 masters predict
    return float((pred == yte).mean() * 100)


_SLOW = pytest.mark.slow  # torch and JAX: 20 s to 50 s each on a shared 2-core CPU


@pytest.mark.parametrize("data", ["disk", "digits"])
@pytest.mark.parametrize(
    ("backend", "precision"),
    [
        ("numpy", "fp16"),
        pytest.param("torch:cpu", "bf16", marks=_SLOW),
        pytest.param("torch:cpu", "fp16", marks=_SLOW),
        ("torch:cuda", "bf16"),
        ("torch:cuda", "fp16"),
        ("cupy", "fp16"),
        pytest.param("jax", "bf16", marks=_SLOW),
    ],
)
def test_reaches_float32_accuracy(backend, precision, data):
    """Not worse than float32 by more than 0.5 points (same data, seed and steps)."""
    target = load_backend(backend)
    reference = _accuracy(target, "fp32", data)
    assert _accuracy(target, precision, data) >= reference - 0.5


# ---- fit(..., precision=...) ---------------------------------------------------------------


def test_fit_with_precision_trains_the_float32_masters_and_logs_the_scaler(backend):
    precisions = _precisions(backend)
    if not precisions:
        pytest.skip(f"{backend.name} has neither float16 nor bfloat16")
    precision = precisions[-1]
    X, y = _batch(backend, n=64)
    model = _model(backend)
    before = {k: to_numpy(v).copy() for k, v in model.state_dict().items()}
    opt = pp.Adam(model.parameters(), lr=0.01)
    history = pp.fit(
        model, pp.CrossEntropyLoss(), opt, X, y, epochs=3, batch_size=16, verbose=0,
        precision=precision,
    )  # fmt: skip
    for name, value in model.state_dict().items():
        assert dtype_name(value.dtype) == "float32", name
        assert not np.array_equal(to_numpy(value), before[name]), name  # the masters moved
    assert len(history.history["loss_scale"]) == 3
    expected_scale = 2.0**16 if precision == "fp16" else 1.0
    assert history.history["loss_scale"][0] == expected_scale
    assert history.history["skipped_steps"] == [0.0, 0.0, 0.0]
    assert all(math.isfinite(v) for v in history.history["loss"])


def test_fit_with_fp32_precision_is_plain_fit(backend):
    X, y = _batch(backend, n=48)
    plain, same = _model(backend), _model(backend)
    kw = {"epochs": 2, "batch_size": 16, "verbose": 0, "shuffle": False}
    h1 = pp.fit(plain, pp.CrossEntropyLoss(), pp.SGD(plain.parameters(), lr=0.1), X, y, **kw)
    h2 = pp.fit(
        same, pp.CrossEntropyLoss(), pp.SGD(same.parameters(), lr=0.1), X, y, precision="fp32",
        **kw,
    )  # fmt: skip
    assert h1.history == h2.history
    for name, value in plain.state_dict().items():
        np.testing.assert_array_equal(to_numpy(value), to_numpy(same.state_dict()[name]))


@pytest.mark.parametrize("precision", ["fp8", "bfloat16", 16])
def test_fit_refuses_an_unknown_precision_and_leaves_the_model(precision):
    backend = load_backend("numpy")
    X, y = _batch(backend)
    model = _model(backend)
    before = {k: to_numpy(v).copy() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="precision must be None or one of"):
        pp.fit(
            model, pp.CrossEntropyLoss(), pp.SGD(model.parameters(), lr=0.1), X, y, verbose=0,
            precision=precision,
        )  # fmt: skip
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(to_numpy(value), before[name])


def test_fit_refuses_precision_on_a_backend_without_the_dtype():
    backend = load_backend("array_api_strict")
    X, y = _batch(backend)
    model = _model(backend)
    with pytest.raises(pp.DtypeUnsupportedError, match="bfloat16"):
        pp.fit(
            model, pp.CrossEntropyLoss(), pp.SGD(model.parameters(), lr=0.1), X, y, verbose=0,
            precision="bf16",
        )  # fmt: skip


def test_fit_refuses_precision_with_a_communicator():
    backend = load_backend("torch:cpu")
    X, y = _batch(backend)
    model = _model(backend)
    with pp.distributed.init(engine="local") as comm, pytest.raises(ValueError, match="comm="):
        pp.fit(
            model, pp.CrossEntropyLoss(), pp.SGD(model.parameters(), lr=0.1), X, y, verbose=0,
            precision="bf16", comm=comm,
        )  # fmt: skip
