"""Reliability, "Backends and devices": cases 12 to 16 of the reliability checklist.

Each test is named after its case (``test_case12_...``) so that the documentation can
point each case at its test.  Every failing call is checked for the exception type, for
a message that names the argument and both the expected and the actual value (both
libraries, both devices, both dtypes), and for leaving the model's parameters and the
optimizer's state bit-identical (compared as host bytes).  Where the documented
behaviour is a conversion rather than an error (``fit``, ``evaluate``, ``predict``,
``gradcheck``, ``load_state_dict`` and ``asarray`` take arrays of any library and
device), the tests check that the result lives on the model's backend and equals the
result for data already there.

- 12: arrays of two libraries in one call;
- 13: arrays on two devices of one library (array-api-strict's test devices; torch
  CPU and CUDA where a GPU exists);
- 14: an unknown ``PORTPROP_BACKEND``, and a known backend that is not installed or has
  no such device;
- 15: ``PORTPROP_BACKEND`` disagreeing with the arrays passed: the documented precedence
  (``backend=`` > arrays > ``use_backend`` > ``PORTPROP_BACKEND`` > NumPy) holds;
- 16: a device without float64: a float64 request is refused clearly, and
  ``gradcheck`` explains itself.
"""

from __future__ import annotations

import copy
import importlib.util
import math
import re

import numpy as np
import pytest
from conftest import load_backend, to_numpy

import portprop as pp

HAS_SKLEARN = importlib.util.find_spec("sklearn") is not None
needs_sklearn = pytest.mark.skipif(not HAS_SKLEARN, reason="scikit-learn is not installed")
# the estimators below train for a few epochs only, on purpose
few_epochs = pytest.mark.filterwarnings("ignore:Stochastic Optimizer. Maximum iterations")

# ---- helpers ----------------------------------------------------------------------------


def _mlp(backend, dtype="float32"):
    """2-4-3, tanh, fixed weights: four parameters."""
    return pp.Sequential(
        pp.Linear(2, 4, seed=1, backend=backend, dtype=dtype),
        pp.Tanh(backend=backend, dtype=dtype),
        pp.Linear(4, 3, seed=2, backend=backend, dtype=dtype),
    )


def _data(n=12):
    rng = np.random.default_rng(12)
    X = rng.normal(size=(n, 2)).astype(np.float32)
    return X, (np.arange(n) % 3).astype(np.int64)


def _trained(backend, dtype="float32"):
    """A model and an SGD with momentum after one step, so that the optimizer has state."""
    model = _mlp(backend, dtype)
    opt = pp.SGD(model.parameters(), lr=0.1, momentum=0.9)
    X, y = _data()
    _step(model, opt, backend.asarray(X, dtype=model.dtype), backend.asarray(y))
    return model, opt


def _step(model, opt, X, y):
    loss = pp.CrossEntropyLoss()
    loss.forward(model.forward(X), y)
    model.zero_grad()
    model.backward(loss.backward())
    opt.step()


def _host_bytes(x):
    """What "bit-identical" compares: backend, dtype, shape and the bytes of a host copy."""
    if x is None:
        return None
    host = to_numpy(x)
    return (pp.backend_of(x).name, host.dtype.str, host.shape, host.tobytes())


def _snapshot(model, opt=None):
    params = {name: _host_bytes(p.data) for name, p in model.named_parameters()}
    grads = {name: _host_bytes(p.grad) for name, p in model.named_parameters()}
    if opt is None:
        return params, grads, None
    state = opt.state_dict()
    saved = [
        {k: v if k == "step" else _host_bytes(v) for k, v in s.items()} for s in state["state"]
    ]
    return params, grads, (state["type"], state["hyperparameters"], saved)


def _other_library(backend):
    """A backend of another library than ``backend``'s."""
    return load_backend("array_api_strict" if backend.library == "numpy" else "numpy")


def _message(info):
    return str(info.value)


# ---- 12. Arrays of two libraries in one call ---------------------------------------------


def test_case12_two_libraries_in_one_call_model_forward_and_backward(backend):
    other = _other_library(backend)
    model, opt = _trained(backend)
    before = _snapshot(model, opt)
    kept = model[0]._X
    X, _ = _data()
    with pytest.raises(pp.MixedBackendError) as info:
        model.forward(other.asarray(X))
    text = _message(info)
    assert text.startswith("X is ")
    assert f"{other.library} array" in text
    assert f"the model lives on backend {backend.name!r}" in text
    assert f"portprop.asarray(X, backend={backend.name!r})" in text
    assert model[0]._X is kept  # the failed call kept nothing for a backward pass
    # backward with a gradient of the other library, after a valid forward
    out = model.forward(backend.asarray(X))
    with pytest.raises(pp.MixedBackendError) as info:
        model.backward(other.asarray(np.ones(tuple(out.shape), dtype=np.float32)))
    text = _message(info)
    assert text.startswith("grad_output is ")
    assert other.library in text
    assert backend.name in text
    assert _snapshot(model, opt) == before


@pytest.mark.parametrize("loss_name", ["MSELoss", "BCEWithLogitsLoss", "CrossEntropyLoss"])
def test_case12_two_libraries_in_one_call_loss_forward(backend, loss_name):
    other = _other_library(backend)
    loss = getattr(pp, loss_name)()
    pred = backend.asarray(np.zeros((4, 3), dtype=np.float32))
    if loss_name == "CrossEntropyLoss":
        target = other.asarray(np.array([0, 1, 2, 0]))
    else:
        target = other.asarray(np.zeros((4, 3), dtype=np.float32))
    with pytest.raises(pp.MixedBackendError) as info:
        loss.forward(pred, target)
    text = _message(info)
    # "pred is a torch array on device(type='cpu') but target is a numpy array on 'cpu'"
    assert re.match(
        rf"pred is an? {backend.library} array on .* but target is an? {other.library} array on ",
        text,
    ), text
    with pytest.raises(pp.MixedBackendError, match=rf"pred is an? {other.library} array"):
        loss.forward(other.asarray(np.zeros((4, 3), dtype=np.float32)), pred)
    with pytest.raises(RuntimeError, match="before forward"):
        loss.backward()  # the failed calls kept nothing


def test_case12_two_libraries_in_one_call_optimizer_step(backend):
    other = _other_library(backend)
    model, opt = _trained(backend)
    X, y = _data()
    loss = pp.CrossEntropyLoss()
    loss.forward(model.forward(backend.asarray(X)), backend.asarray(y))
    model.zero_grad()
    model.backward(loss.backward())
    last = model.parameters()[-1]
    last.grad = other.asarray(to_numpy(last.grad))  # only the last gradient is foreign
    before = _snapshot(model, opt)
    with pytest.raises(pp.MixedBackendError) as info:
        opt.step()
    text = _message(info)
    assert text.startswith(f"params[3].grad is {'an' if other.library[0] == 'a' else 'a'} ")
    assert other.library in text
    assert f"params[3] lives on backend {backend.name!r}" in text
    # checked before any update: the first three parameters did not move either
    assert _snapshot(model, opt) == before
    # and the same gradients on the right backend step normally
    last.grad = backend.asarray(to_numpy(last.grad))
    opt.step()
    assert _snapshot(model, opt)[0] != before[0]


def test_case12_two_libraries_in_one_call_clip_grad_norm(backend):
    other = _other_library(backend)
    model, opt = _trained(backend)
    for p in model.parameters():
        p.grad = backend.asarray(np.full(p.shape, 10.0, dtype=np.float32))
    model.parameters()[1].grad = other.asarray(np.full(model.parameters()[1].shape, 10.0))
    before = _snapshot(model, opt)
    with pytest.raises(pp.MixedBackendError) as info:
        pp.clip_grad_norm_(model.parameters(), 1.0)
    text = _message(info)
    assert text.startswith("params[1].grad is ")
    assert other.library in text
    assert backend.name in text
    assert _snapshot(model, opt) == before  # no gradient was scaled


def test_case12_parameters_of_two_libraries_may_share_one_clip(backend):
    """Documented: clip_grad_norm_ combines partial norms on the host, so parameters of
    several libraries or devices may be clipped together (as torch's does across
    devices); the result equals that of one library."""
    other = _other_library(backend)
    host = [np.full((2, 3), 3.0, dtype=np.float32), np.full((4,), -4.0, dtype=np.float32)]
    mixed = [pp.Parameter(backend.asarray(host[0])), pp.Parameter(other.asarray(host[1]))]
    single = [pp.Parameter(backend.asarray(h)) for h in host]
    for p in [*mixed, *single]:
        p.grad = pp.get_backend(p.data).xp.asarray(p.data, copy=True)
    expected = math.sqrt(6 * 3.0**2 + 4 * 4.0**2)
    assert pp.clip_grad_norm_(mixed, 1.0) == pp.clip_grad_norm_(single, 1.0) == expected
    for a, b in zip(mixed, single, strict=True):
        assert pp.backend_of(a.grad) == pp.backend_of(a.data)
        np.testing.assert_array_equal(to_numpy(a.grad), to_numpy(b.grad))


def test_case12_fit_evaluate_predict_gradcheck_convert_other_libraries(backend):
    """Documented: these convert data of any library to the model's backend once."""
    other = _other_library(backend)
    X, y = _data()
    results = {}
    for name, source in (("own", backend), ("other", other)):
        model = _mlp(backend)
        opt = pp.SGD(model.parameters(), lr=0.1, momentum=0.9)
        Xs, ys = source.asarray(X), source.asarray(y)
        history = pp.fit(model, pp.CrossEntropyLoss(), opt, Xs, ys, epochs=2, batch_size=4,
                         shuffle=False, verbose=0)  # fmt: skip
        out = pp.predict(model, Xs)
        assert pp.backend_of(out) == backend
        scores = pp.evaluate(model, pp.CrossEntropyLoss(), Xs, ys)
        results[name] = (history.history["loss"], scores, _snapshot(model, opt), to_numpy(out))
    own, foreign = results["own"], results["other"]
    assert foreign[:3] == own[:3]
    np.testing.assert_array_equal(foreign[3], own[3])
    # gradcheck moves x and target of another library to the model's backend
    if backend.supports("float64"):
        model = _mlp(backend)
        before = _snapshot(model)
        assert pp.gradcheck(
            model, pp.CrossEntropyLoss(), other.asarray(X[:3]), other.asarray(y[:3])
        )
        assert _snapshot(model) == before


def test_case12_load_state_dict_and_asarray_convert_other_libraries(backend):
    other = _other_library(backend)
    model = _mlp(backend)
    donor = _mlp(other)
    for p in donor.parameters():
        p.data = p.data * 2.0
    model.load_state_dict(donor.state_dict())
    for (name, p), (_, q) in zip(model.named_parameters(), donor.named_parameters(), strict=True):
        assert pp.backend_of(p.data) == backend, name
        np.testing.assert_array_equal(to_numpy(p.data), to_numpy(q.data))
    x = other.asarray(np.arange(6, dtype=np.float32).reshape(2, 3))
    moved = pp.asarray(x, backend=backend)
    assert pp.backend_of(moved) == backend
    np.testing.assert_array_equal(to_numpy(moved), to_numpy(x))


@needs_sklearn
@few_epochs
def test_case12_estimator_with_backend_takes_data_of_another_library(backend):
    from portprop.sklearn import MLPClassifier

    other = _other_library(backend)
    X, y = _data(30)
    kw = {"hidden_layer_sizes": (4,), "max_iter": 3, "random_state": 0, "backend": backend}
    host = MLPClassifier(**kw).fit(X, y)
    foreign = MLPClassifier(**kw).fit(other.asarray(X), y)
    assert foreign.backend_ == host.backend_ == backend.name
    np.testing.assert_array_equal(foreign.predict_proba(other.asarray(X)), host.predict_proba(X))


# ---- 13. Arrays on two devices of one library ----------------------------------------------

DEVICE_PAIRS = [
    ("array_api_strict:device1", "array_api_strict:device2"),
    ("torch:cpu", "torch:cuda"),
    ("cupy:0", "cupy:1"),
]


@pytest.fixture(params=DEVICE_PAIRS, ids="/".join)
def two_devices(request):
    """Two backends of one library on two devices, or a skip saying why not here."""
    first, second = request.param
    return load_backend(first), load_backend(second)


def test_case13_two_devices_in_one_call_model_forward_and_backward(two_devices):
    here, there = two_devices
    model, opt = _trained(here)
    before = _snapshot(model, opt)
    kept = model[0]._X
    X, _ = _data()
    with pytest.raises(pp.MixedDeviceError) as info:
        model.forward(there.asarray(X))
    text = _message(info)
    assert text.startswith(f"X is on device {there.device!r} but the model is on {here.name!r}")
    assert model[0]._X is kept
    out = model.forward(here.asarray(X))
    with pytest.raises(pp.MixedDeviceError) as info:
        model.backward(there.asarray(np.ones(tuple(out.shape), dtype=np.float32)))
    assert _message(info).startswith(f"grad_output is on device {there.device!r}")
    assert here.name in _message(info)
    assert _snapshot(model, opt) == before


@pytest.mark.parametrize("loss_name", ["MSELoss", "BCEWithLogitsLoss", "CrossEntropyLoss"])
def test_case13_two_devices_in_one_call_loss_forward(two_devices, loss_name):
    here, there = two_devices
    pred = here.asarray(np.zeros((4, 3), dtype=np.float32))
    if loss_name == "CrossEntropyLoss":
        target = there.asarray(np.array([0, 1, 2, 0]))
    else:
        target = there.asarray(np.zeros((4, 3), dtype=np.float32))
    with pytest.raises(pp.MixedDeviceError) as info:
        getattr(pp, loss_name)().forward(pred, target)
    assert _message(info).startswith(
        f"pred is on device {here.device!r} but target is on device {there.device!r} "
        f"(both {here.library})"
    )


def test_case13_two_devices_in_one_call_optimizer_step_and_clip(two_devices):
    here, there = two_devices
    model, opt = _trained(here)
    for p in model.parameters():
        p.grad = here.asarray(np.full(p.shape, 5.0, dtype=np.float32))
    model.parameters()[2].grad = there.asarray(np.full(model.parameters()[2].shape, 5.0))
    before = _snapshot(model, opt)
    for call in (opt.step, lambda: pp.clip_grad_norm_(model.parameters(), 1.0)):
        with pytest.raises(pp.MixedDeviceError) as info:
            call()
        assert _message(info).startswith(
            f"params[2].grad is on device {there.device!r} but params[2] is on {here.name!r}"
        )
        assert _snapshot(model, opt) == before


def test_case13_optimizer_follows_a_model_moved_to_another_device(two_devices):
    """Documented: an optimizer built on one device's parameters keeps working after
    model.to(another device), and moves its buffers; the trajectory is unchanged."""
    here, there = two_devices
    X, y = _data()
    moved, moved_opt = _trained(here)
    stay, stay_opt = _trained(here)
    moved.to(there)
    _step(moved, moved_opt, there.asarray(X), there.asarray(y))
    _step(stay, stay_opt, here.asarray(X), here.asarray(y))
    for s in moved_opt.state_dict()["state"]:
        assert pp.backend_of(s["momentum_buffer"]) == there
    for p, q in zip(moved.parameters(), stay.parameters(), strict=True):
        assert pp.backend_of(p.data) == there
        np.testing.assert_allclose(to_numpy(p.data), to_numpy(q.data), rtol=1e-6, atol=1e-7)


def test_case13_conversions_across_devices(two_devices):
    """load_state_dict, asarray, fit, predict and gradcheck move data of another
    device to the model's (documented), and the results stay there."""
    here, there = two_devices
    X, y = _data()
    model = _mlp(here)
    model.load_state_dict(_mlp(there).state_dict())
    assert all(pp.backend_of(p.data) == here for p in model.parameters())
    x = pp.asarray(there.asarray(X), backend=here.library, device=here.device)
    assert pp.backend_of(x) == here
    opt = pp.SGD(model.parameters(), lr=0.1)
    pp.fit(model, pp.CrossEntropyLoss(), opt, there.asarray(X), there.asarray(y), verbose=0)
    assert all(pp.backend_of(p.data) == here for p in model.parameters())
    assert pp.backend_of(pp.predict(model, there.asarray(X))) == here
    if here.supports("float64"):
        assert pp.gradcheck(_mlp(here), pp.CrossEntropyLoss(), there.asarray(X[:3]), y[:3])


@needs_sklearn
@few_epochs
def test_case13_estimator_with_backend_takes_data_of_another_device(two_devices):
    from portprop.sklearn import MLPClassifier

    here, there = two_devices
    X, y = _data(30)
    kw = {"hidden_layer_sizes": (4,), "max_iter": 3, "random_state": 0, "backend": here}
    clf = MLPClassifier(**kw).fit(there.asarray(X), y)
    assert clf.backend_ == here.name
    np.testing.assert_allclose(
        clf.predict_proba(there.asarray(X)), MLPClassifier(**kw).fit(X, y).predict_proba(X)
    )


# ---- 14. Unknown PORTPROP_BACKEND; a known backend that cannot run here --------------------


def _calls_that_read_the_environment():
    """Each public call that falls back to the current backend, by name."""
    X, y = _data()
    calls = {
        "Linear": lambda: pp.Linear(2, 3),
        "Tanh": pp.Tanh,
        "get_backend": pp.get_backend,
        "current_backend": pp.current_backend,
        "asarray": lambda: pp.asarray(X),
        "make_disk": lambda: pp.datasets.make_disk(8),
    }
    if HAS_SKLEARN:
        from portprop.sklearn import MLPClassifier

        clf = MLPClassifier(hidden_layer_sizes=(3,), max_iter=2)
        calls["MLPClassifier.fit"] = lambda: clf.fit(X, y)
    return calls


@pytest.mark.parametrize("call", list(_calls_that_read_the_environment()))
def test_case14_unknown_environment_value(monkeypatch, call):
    monkeypatch.setenv(pp.ENV_VAR, "tensorflow")
    calls = _calls_that_read_the_environment()
    with pytest.raises(pp.UnknownBackendError) as info:
        calls[call]()
    text = _message(info)
    assert isinstance(info.value, ValueError)
    assert text.startswith("environment variable PORTPROP_BACKEND='tensorflow': unknown backend")
    for name in pp.registered_backends():  # what was expected: every registered name
        assert repr(name) in text


def _unavailable_names():
    """Names of known backends that cannot run here, each with a phrase of its reason."""
    found = [("numpy:gpu", "has only the device 'cpu'")]
    if importlib.util.find_spec("jax") is not None:
        found.append(("jax:99", r"JAX sees \d+ device\(s\)"))
    if importlib.util.find_spec("cupy") is None:
        found.append(("cupy", r"No module named 'cupy'.*pip install 'portprop\[cupy\]'"))
    if importlib.util.find_spec("torch") is not None:
        import torch

        if not torch.cuda.is_available():
            found.append(("torch:cuda", "torch sees no CUDA device.*pip install torch"))
        else:
            found.append((f"torch:cuda:{torch.cuda.device_count()}", "CUDA device"))
        if not torch.backends.mps.is_available():
            found.append(("torch:mps", r"mps.is_available\(\) is False"))
    return found


@pytest.mark.parametrize(("name", "reason"), _unavailable_names(), ids=lambda v: str(v)[:12])
def test_case14_known_backend_that_cannot_run_here(monkeypatch, name, reason):
    # by name
    with pytest.raises(pp.BackendUnavailableError, match=reason) as info:
        pp.get_backend(backend=name)
    assert isinstance(info.value, RuntimeError)
    # through the environment: the message names the variable and its value first
    monkeypatch.setenv(pp.ENV_VAR, name)
    for call in (lambda: pp.Linear(2, 3), lambda: pp.asarray([1.0]), pp.current_backend):
        with pytest.raises(pp.BackendUnavailableError, match=reason) as info:
            call()
        assert _message(info).startswith(f"environment variable PORTPROP_BACKEND={name!r}: ")
    # and a model that exists elsewhere cannot be moved there: it stays as it was
    model = _mlp("numpy")
    before = _snapshot(model)
    with pytest.raises(pp.BackendUnavailableError, match=reason):
        model.to(name)
    assert _snapshot(model) == before
    assert model.backend.name == "numpy"


@needs_sklearn
@few_epochs
def test_case14_estimator_with_an_unavailable_backend_stays_unfitted():
    from portprop.sklearn import MLPClassifier

    X, y = _data()
    clf = MLPClassifier(hidden_layer_sizes=(3,), max_iter=2, backend="numpy:gpu")
    with pytest.raises(pp.BackendUnavailableError, match="backend 'numpy' has only the device"):
        clf.fit(X, y)
    assert not hasattr(clf, "model_")


def test_case14_malformed_device_names_are_unknown_not_unavailable():
    """A device spec that names no device of the library anywhere is an
    UnknownBackendError (a ValueError) listing the valid forms."""
    with pytest.raises(pp.UnknownBackendError) as info:
        pp.get_backend(backend="array_api_strict:device9")
    for device in ("'CPU_DEVICE'", "'device1'", "'device2'", "'no_float64'"):
        assert device in _message(info)
    if importlib.util.find_spec("jax") is not None:
        with pytest.raises(pp.UnknownBackendError, match=r"expected 'jax:<index>'"):
            pp.get_backend(backend="jax:gpu")


# ---- 15. PORTPROP_BACKEND disagreeing with the arrays passed ---------------------------------


def _run_everything(backend):
    """One pass over every entry point that takes arrays, on ``backend``'s arrays."""
    X, y = _data()
    Xb, yb = backend.asarray(X), backend.asarray(y)
    model = _mlp(backend)
    opt = pp.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss = pp.CrossEntropyLoss()
    value = loss.forward(model.forward(Xb), yb)
    model.zero_grad()
    model.backward(loss.backward())
    norm = pp.clip_grad_norm_(model.parameters(), 0.5)
    opt.step()
    history = pp.fit(model, loss, opt, Xb, yb, epochs=2, batch_size=4, seed=0, verbose=0)
    out = pp.predict(model, Xb)
    scores = pp.evaluate(model, loss, Xb, yb)
    model.load_state_dict(model.state_dict())
    arrays = [value, out, *(p.data for p in model.parameters())]
    return {
        "backends": sorted({pp.backend_of(a).name for a in arrays} | {model.backend.name}),
        "get_backend": pp.get_backend(Xb).name,
        "loss": float(value),
        "norm": norm,
        "history": history.history["loss"],
        "scores": scores,
        "state": _snapshot(model, opt),
        "out": to_numpy(out).tobytes(),
    }


@pytest.mark.parametrize("env", ["tensorflow", "array_api_strict:device2", "numpy:gpu"])
def test_case15_arrays_win_over_the_environment(backend, monkeypatch, env):
    """With PORTPROP_BACKEND naming another backend, or one that cannot load, every call
    that gets arrays computes on their backend, never reads the variable, and gives
    bit-identical results."""
    expected = _run_everything(backend)
    assert expected["backends"] == [backend.name]
    monkeypatch.setenv(pp.ENV_VAR, env)
    assert _run_everything(backend) == expected


def test_case15_explicit_backend_wins_over_arrays_and_environment(backend, monkeypatch):
    monkeypatch.setenv(pp.ENV_VAR, "tensorflow")
    x = backend.asarray(np.ones((2, 2), dtype=np.float32))
    target = "array_api_strict:device1"
    assert pp.get_backend(x, backend=target).name == target
    moved = pp.asarray(x, backend=target)
    assert pp.backend_of(moved).name == target
    assert pp.Linear(2, 3, backend=target).backend.name == target


def test_case15_use_backend_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv(pp.ENV_VAR, "tensorflow")
    with pp.use_backend("array_api_strict:device1") as chosen:
        assert pp.Linear(2, 3).backend == chosen
        assert pp.backend_of(pp.asarray([1.0])) == chosen
        # arrays still win over the block
        x = np.ones(2)
        assert pp.get_backend(x).name == "numpy"
    with pytest.raises(pp.UnknownBackendError, match="PORTPROP_BACKEND='tensorflow'"):
        pp.Linear(2, 3)  # outside the block, the (bad) variable applies again


def test_case15_asarray_without_backend_moves_to_the_current_backend(backend, monkeypatch):
    """Documented: asarray is a move; without backend= it moves to the current backend
    (the variable here), not to the backend the array lives on."""
    monkeypatch.setenv(pp.ENV_VAR, "array_api_strict:device2")
    x = backend.asarray(np.arange(3, dtype=np.float32))
    moved = pp.asarray(x)
    assert pp.backend_of(moved).name == "array_api_strict:device2"
    np.testing.assert_array_equal(to_numpy(moved), np.arange(3, dtype=np.float32))


@needs_sklearn
@few_epochs
def test_case15_estimator_follows_the_documented_precedence(backend, monkeypatch):
    """portprop.sklearn: backend= wins; else X of a non-NumPy backend decides; else
    (NumPy X, host data) the current backend, here the variable."""
    from portprop.sklearn import MLPClassifier

    monkeypatch.setenv(pp.ENV_VAR, "array_api_strict:device2")
    X, y = _data(30)
    kw = {"hidden_layer_sizes": (3,), "max_iter": 2, "random_state": 0}
    expected_from_X = "array_api_strict:device2" if backend.library == "numpy" else backend.name
    assert MLPClassifier(**kw).fit(backend.asarray(X), y).backend_ == expected_from_X
    assert MLPClassifier(**kw, backend="numpy").fit(backend.asarray(X), y).backend_ == "numpy"


# ---- 16. A device without float64 ---------------------------------------------------------

FLOAT32_ONLY = ["array_api_strict:no_float64", "array_api_strict:no_x64", "torch:mps", "jax"]


@pytest.fixture(params=FLOAT32_ONLY)
def float32_only(request):
    """A backend whose device has no float64, or a skip saying why not here."""
    backend = load_backend(request.param)
    if backend.supports("float64"):
        pytest.skip(f"{backend.name} has float64 here (JAX_ENABLE_X64 is set for the suite)")
    return backend


def _assert_float64_refused(info, backend):
    text = _message(info)
    assert isinstance(info.value, TypeError)
    assert f"backend {backend.name!r} has no float64 on device {backend.device!r}" in text
    assert "dtype must be 'float32' there, got 'float64'" in text


def test_case16_float64_requests_are_refused(float32_only):
    nf = float32_only
    with pytest.raises(pp.DtypeUnsupportedError) as info:
        pp.Linear(2, 3, backend=nf, dtype="float64")
    _assert_float64_refused(info, nf)
    with pytest.raises(pp.DtypeUnsupportedError) as info:
        pp.asarray(np.zeros(3), backend=nf, dtype="float64")
    _assert_float64_refused(info, nf)
    with pytest.raises(pp.DtypeUnsupportedError) as info:
        nf.generator(0).uniform((2,), "float64")
    _assert_float64_refused(info, nf)
    with pytest.raises(pp.DtypeUnsupportedError) as info:
        pp.datasets.make_disk(8, backend=nf, dtype="float64")
    _assert_float64_refused(info, nf)


def test_case16_moving_a_model_to_float64_there_changes_nothing(float32_only):
    nf = float32_only
    model, opt = _trained(nf)
    before = _snapshot(model, opt)
    with pytest.raises(pp.DtypeUnsupportedError) as info:
        model.to(dtype="float64")
    _assert_float64_refused(info, nf)
    assert _snapshot(model, opt) == before
    wide = _mlp("numpy", dtype="float64")
    wide_before = _snapshot(wide)
    with pytest.raises(pp.DtypeUnsupportedError) as info:
        wide.to(nf)
    _assert_float64_refused(info, nf)
    assert _snapshot(wide) == wide_before


def test_case16_gradcheck_explains_itself(float32_only):
    nf = float32_only
    model = _mlp(nf)
    before = _snapshot(model)
    X, y = _data()
    with pytest.raises(pp.DtypeUnsupportedError) as info:
        pp.gradcheck(model, pp.CrossEntropyLoss(), X[:3], y[:3])
    text = _message(info)
    assert text.startswith("gradcheck compares gradients in float64")
    assert "dtype must be 'float32' there, got 'float64'" in text
    assert "copy.deepcopy(model).to('numpy')" in text
    assert _snapshot(model) == before
    # the advice works
    assert pp.gradcheck(copy.deepcopy(model).to("numpy"), pp.CrossEntropyLoss(), X[:3], y[:3])
    assert _snapshot(model) == before


def test_case16_float64_data_trains_a_float32_model_there(float32_only):
    """Data in float64 (and int64 labels, on a device without 64-bit integers) is
    converted by fit, as documented; training matches the same run on the CPU."""
    nf = float32_only
    X, y = _data()
    X64 = X.astype(np.float64)
    runs = []
    for backend in (nf, load_backend("numpy")):
        model = _mlp(backend)
        opt = pp.Adam(model.parameters(), lr=0.01)
        history = pp.fit(model, pp.CrossEntropyLoss(), opt, X64, y, epochs=2, batch_size=4,
                         shuffle=False, verbose=0)  # fmt: skip
        assert all(p.data.dtype == backend.float_dtype("float32") for p in model.parameters())
        runs.append((history.history["loss"], [to_numpy(p.data) for p in model.parameters()]))
    np.testing.assert_allclose(runs[0][0], runs[1][0], rtol=1e-5)
    for a, b in zip(runs[0][1], runs[1][1], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_case16_integers_wider_than_the_device_are_narrowed_or_refused():
    nx = load_backend("array_api_strict:no_x64")
    labels = pp.asarray(np.array([0, 2, 1], dtype=np.int64), backend=nx)
    assert labels.dtype == nx.xp.int32
    np.testing.assert_array_equal(to_numpy(labels), [0, 2, 1])
    with pytest.raises(pp.DtypeUnsupportedError) as info:
        pp.asarray(np.array([0, 2**40], dtype=np.int64), backend=nx)
    assert _message(info) == (
        "x holds int64 values from 0 to 1099511627776, but backend "
        "'array_api_strict:no_x64' has no int64 on device array_api_strict.Device('no_x64'): "
        "values must fit int32, [-2147483648, 2147483647]"
    )
    with pytest.raises(pp.DtypeUnsupportedError, match="dtype must be a dtype of the device"):
        pp.asarray([1, 2], backend=nx, dtype="int64")


@needs_sklearn
@few_epochs
def test_case16_estimator_asking_for_float64_there_stays_unfitted(float32_only):
    from portprop.sklearn import MLPClassifier

    X, y = _data()
    clf = MLPClassifier(hidden_layer_sizes=(3,), max_iter=2, backend=float32_only, dtype="float64")
    with pytest.raises(pp.DtypeUnsupportedError) as info:
        clf.fit(X, y)
    _assert_float64_refused(info, float32_only)
    assert not hasattr(clf, "model_")
