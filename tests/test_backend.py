"""The backend registry: names, selection precedence, errors, reporting, extension."""

from __future__ import annotations

import importlib.util

import _wrapped
import numpy as np
import pytest
from conftest import to_numpy

import portprop as pp

HAS_TORCH = importlib.util.find_spec("torch") is not None
HAS_CUPY = importlib.util.find_spec("cupy") is not None


@pytest.fixture
def wrapped():
    """The tiny third-party namespace of ``_wrapped`` registered as backend ``wrapped``."""
    pp.register_backend("wrapped", lambda: _wrapped, install="pip install wrapped")
    yield pp.get_backend(backend="wrapped")
    pp.unregister_backend("wrapped")


# ---- names ------------------------------------------------------------------------------


def test_builtin_names_are_registered():
    assert pp.registered_backends()[:5] == ["numpy", "torch", "cupy", "jax", "array_api_strict"]


def test_numpy_is_the_default():
    b = pp.get_backend()
    assert b.name == "numpy"
    assert b.device == "cpu"
    assert b.writable


def test_backend_names_are_canonical(backend):
    again = pp.get_backend(backend=backend.name)
    assert again is backend or again == backend
    assert again.name == backend.name


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("torch", "torch:cpu"),
        ("torch:cpu", "torch:cpu"),
        ("array_api_strict", "array_api_strict"),
        ("array_api_strict:device1", "array_api_strict:device1"),
        ("array_api_strict:no_float64", "array_api_strict:no_float64"),
        ("numpy:cpu", "numpy"),
    ],
)
def test_name_forms(name, canonical):
    library = name.split(":")[0]
    if library == "torch" and not HAS_TORCH:
        pytest.skip("torch is not installed")
    assert pp.get_backend(backend=name).name == canonical


def test_unknown_name_lists_registered_names():
    with pytest.raises(pp.UnknownBackendError, match="tensorflow") as info:
        pp.get_backend(backend="tensorflow")
    assert isinstance(info.value, ValueError)
    for name in ("numpy", "torch", "cupy", "jax", "array_api_strict"):
        assert repr(name) in str(info.value)


def test_unknown_device_of_known_library():
    with pytest.raises(pp.UnknownBackendError, match="device9"):
        pp.get_backend(backend="array_api_strict:device9")
    with pytest.raises(pp.BackendUnavailableError, match="only the device 'cpu'"):
        pp.get_backend(backend="numpy:gpu")


@pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed")
def test_torch_cuda_without_gpu_gives_reason_and_install_command():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the error path needs a machine without it")
    with pytest.raises(pp.BackendUnavailableError, match="no CUDA device") as info:
        pp.get_backend(backend="torch:cuda")
    assert "pip install" in str(info.value)


@pytest.mark.skipif(HAS_CUPY, reason="cupy is installed; the error path needs it absent")
def test_cupy_not_installed_gives_install_command():
    with pytest.raises(pp.BackendUnavailableError, match=r"pip install 'portprop\[cupy\]'"):
        pp.get_backend(backend="cupy")


def test_missing_third_party_library_gives_install_command():
    def load():
        import not_a_real_array_library  # noqa: F401

    pp.register_backend("ghost", load, install="pip install ghost-arrays")
    try:
        with pytest.raises(pp.BackendUnavailableError, match="pip install ghost-arrays"):
            pp.get_backend(backend="ghost")
        status = {s.name: s for s in pp.backends()}["ghost"]
        assert not status.available
        assert "not_a_real_array_library" in status.reason
    finally:
        pp.unregister_backend("ghost")


# ---- selection precedence -----------------------------------------------------------------


def test_precedence_explicit_over_arrays_over_context_over_env(monkeypatch, wrapped):
    strict = pp.get_backend(backend="array_api_strict")
    x_numpy = np.zeros(3)
    monkeypatch.setenv(pp.ENV_VAR, "array_api_strict:device1")
    with pp.use_backend("wrapped"):
        # 1. explicit wins over everything
        assert pp.get_backend(x_numpy, backend=strict) == strict
        # 2. arrays win over the context and the environment
        assert pp.get_backend(x_numpy).name == "numpy"
        # 3. the context wins over the environment
        assert pp.get_backend() == wrapped
    # 4. the environment wins over the default
    assert pp.get_backend().name == "array_api_strict:device1"
    monkeypatch.delenv(pp.ENV_VAR)
    # 5. NumPy
    assert pp.get_backend().name == "numpy"


def test_environment_is_read_when_used_not_at_import(monkeypatch):
    assert pp.current_backend().name == "numpy"
    monkeypatch.setenv(pp.ENV_VAR, "array_api_strict")
    assert pp.current_backend().name == "array_api_strict"
    layer = pp.Linear(2, 3)
    assert layer.backend.name == "array_api_strict"


def test_unknown_environment_value_names_the_variable(monkeypatch):
    monkeypatch.setenv(pp.ENV_VAR, "tensorflow")
    with pytest.raises(pp.UnknownBackendError, match="PORTPROP_BACKEND='tensorflow'"):
        pp.Linear(2, 3)


def test_use_backend_nests_and_restores():
    with pp.use_backend("array_api_strict") as outer:
        assert pp.current_backend() == outer
        with pp.use_backend("array_api_strict:device2") as inner:
            assert pp.current_backend() == inner
        assert pp.current_backend() == outer
    assert pp.current_backend().name == "numpy"


def test_use_backend_rejects_non_names():
    with pytest.raises(TypeError, match="backend must be a name"), pp.use_backend(42):  # type: ignore[arg-type]
        pass


# ---- arrays of two libraries or devices -----------------------------------------------------


def test_two_libraries_in_one_call_name_both():
    import array_api_strict as xs

    a = np.zeros((2, 2), dtype=np.float32)
    b = xs.zeros((2, 2), dtype=xs.float32)
    with pytest.raises(
        pp.MixedBackendError,
        match="pred is a numpy array on 'cpu' but target is an array_api_strict array on",
    ):
        pp.MSELoss().forward(a, b)
    with pytest.raises(TypeError):  # MixedBackendError is a TypeError
        pp.backend_of(a, b)


def test_two_devices_in_one_call_name_both():
    import array_api_strict as xs

    a = xs.zeros((2, 2), dtype=xs.float32, device=xs.Device("device1"))
    b = xs.zeros((2, 2), dtype=xs.float32, device=xs.Device("device2"))
    with pytest.raises(pp.MixedDeviceError, match=r"device1.*device2"):
        pp.MSELoss().forward(a, b)


def test_model_and_input_on_two_devices_leaves_model_unchanged():
    import array_api_strict as xs

    model = pp.Sequential(pp.Linear(2, 3, backend="array_api_strict:device1"))
    before = {k: to_numpy(v).copy() for k, v in model.state_dict().items()}
    X = xs.ones((4, 2), dtype=xs.float32, device=xs.Device("device2"))
    with pytest.raises(pp.MixedDeviceError, match="device2"):
        model.forward(X)
    with pytest.raises(pp.MixedBackendError, match="numpy"):
        model.forward(np.ones((4, 2), dtype=np.float32))
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(to_numpy(v), before[k])
    assert model[0]._X is None  # nothing was kept for a backward pass


def test_torch_cpu_and_cuda_are_two_devices():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    a = torch.zeros(2, 2)
    b = torch.zeros(2, 2, device="cuda")
    with pytest.raises(pp.MixedDeviceError, match="cuda"):
        pp.backend_of(a, b, names=("a", "b"))


# ---- arrays tell their backend, and move between backends ---------------------------------


def test_arrays_tell_their_backend(backend):
    x = backend.asarray([1.0, 2.0], dtype="float32")
    assert pp.backend_of(x) == backend
    assert pp.get_backend(x) == backend


def test_asarray_moves_between_every_pair(backend):
    host = np.arange(6, dtype=np.float32).reshape(2, 3)
    x = pp.asarray(host, backend=backend)
    assert backend.owns(x)
    assert pp.backend_of(x) == backend
    np.testing.assert_array_equal(to_numpy(x), host)
    # and back, and through another backend
    np.testing.assert_array_equal(pp.asarray(x, backend="numpy"), host)
    y = pp.asarray(x, backend="array_api_strict:device1")
    np.testing.assert_array_equal(to_numpy(pp.asarray(y, backend=backend)), host)


def test_asarray_casts_on_request(backend):
    x = pp.asarray([1, 2, 3], backend=backend, dtype="float32")
    assert x.dtype == backend.float_dtype("float32")


def test_asarray_uses_the_current_backend():
    with pp.use_backend("array_api_strict:device1"):
        x = pp.asarray(np.ones(2))
    assert pp.backend_of(x).name == "array_api_strict:device1"


def test_asarray_takes_torch_tensors_that_require_grad():
    torch = pytest.importorskip("torch")
    t = torch.ones(3, requires_grad=True)
    np.testing.assert_array_equal(pp.asarray(t), np.ones(3, dtype=np.float32))


# ---- reporting --------------------------------------------------------------------------


def test_backends_reports_every_registered_backend():
    report = pp.backends()
    assert [s.name for s in report] == pp.registered_backends()
    for status in report:
        if status.available:
            assert status.reason == "available"
            assert status.devices
        else:
            assert status.reason
            assert status.install.startswith("pip install")
    numpy_status = report[0]
    assert numpy_status.available
    assert numpy_status.devices == ("cpu",)


def test_describe_backends_is_a_table():
    text = pp.describe_backends()
    lines = text.splitlines()
    assert lines[0].split() == ["backend", "status"]
    assert any(line.startswith("numpy") and "available" in line for line in lines)
    assert len(lines) == 1 + len(pp.registered_backends())


def test_cli_reports_backends(capsys):
    from portprop.__main__ import main

    assert main(["backends"]) == 0
    assert "numpy" in capsys.readouterr().out
    assert main(["nonsense"]) == 2


# ---- a third-party backend, registered without editing portprop -----------------------------


def test_register_rejects_builtin_and_bad_names():
    with pytest.raises(ValueError, match="already registered"):
        pp.register_backend("numpy", lambda: np)
    with pytest.raises(ValueError, match="without ':'"):
        pp.register_backend("a:b", lambda: np)
    with pytest.raises(ValueError, match="cannot be unregistered"):
        pp.unregister_backend("numpy")


def test_registered_backend_trains_and_reports(wrapped):
    assert wrapped.name == "wrapped"
    assert wrapped.writable
    assert "wrapped" in [s.name for s in pp.backends() if s.available]
    pp.manual_seed(0)
    model = pp.Sequential(
        pp.Linear(2, 8, backend="wrapped"),
        pp.Tanh(backend="wrapped"),
        pp.Linear(8, 2, backend="wrapped"),
    )
    X, y = pp.datasets.make_disk(64, seed=1, backend="wrapped")
    assert isinstance(X, _wrapped.WArray)
    loss = pp.CrossEntropyLoss()
    opt = pp.SGD(model.parameters(), lr=0.5, momentum=0.9)
    first = None
    for _ in range(30):
        value = float(loss.forward(model.forward(X), y))
        first = value if first is None else first
        model.zero_grad()
        model.backward(loss.backward())
        opt.step()
    assert value < first
    for p in model.parameters():
        assert isinstance(p.data, _wrapped.WArray)
        assert p.data.dtype == np.float32
    # arrays of the registered library tell their backend
    assert pp.backend_of(X) == wrapped
    # and the gradients are right
    pp.gradcheck(model, pp.CrossEntropyLoss(), X[:5, ...], y[:5, ...])


def test_a_library_module_registers_as_the_builtin_ones_do():
    # docs/backends.md, "Adding a library": one module with a LIBRARY entry, one call.
    import _toy_library

    from portprop.backend import register_library

    register_library(_toy_library.LIBRARY)
    try:
        assert "toy" in pp.registered_backends()
        toy = pp.get_backend(backend="toy")
        assert (toy.name, toy.library, toy.xp) == ("toy", "toy", _wrapped)
        assert {s.name: s.available for s in pp.backends()}["toy"]
        model = pp.Sequential(pp.Linear(2, 4, backend="toy"), pp.Tanh(backend="toy"))
        X, _ = pp.datasets.make_disk(8, seed=0, backend="toy")
        out = model.forward(X)
        assert isinstance(out, _wrapped.WArray)
        assert pp.backend_of(out) == toy
        with pytest.raises(ValueError, match="already registered"):
            register_library(_toy_library.LIBRARY)
    finally:
        pp.unregister_backend("toy")
    assert "toy" not in pp.registered_backends()
    with pytest.raises(pp.UnknownBackendError, match="unknown backend 'toy'"):
        pp.get_backend(backend="toy")


def test_get_backend_takes_names_by_keyword_only():
    with pytest.raises(TypeError, match="backend='array_api_strict'"):
        pp.get_backend("array_api_strict")


def test_registered_backend_devices_are_selected_by_label(wrapped):
    assert pp.get_backend(backend="wrapped:wrapped_cpu") == wrapped
    with pytest.raises(pp.UnknownBackendError, match="gpu7"):
        pp.get_backend(backend="wrapped:gpu7")


def test_asarray_casts_on_the_host_for_a_device_without_float64():
    x = pp.asarray(np.zeros((2, 3)), dtype="float32", backend="array_api_strict:no_float64")
    assert x.dtype == pp.get_backend(backend="array_api_strict:no_float64").float_dtype("float32")


def test_to_host_never_shares_memory(backend):
    layer = pp.Linear(2, 2, seed=0, backend=backend)
    host = backend.to_host(layer.weight.data)
    host[...] = 0
    assert np.any(backend.to_host(layer.weight.data) != 0)
