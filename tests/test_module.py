"""Modules: construction, parameters, state dicts, moving, dtypes and input checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import to_numpy

import portprop as pp
from portprop.backend import _registry


def _net(backend, dtype="float32", seed=0):
    kw = {"backend": backend, "dtype": dtype}
    pp.manual_seed(seed)
    return pp.Sequential(pp.Linear(3, 4, **kw), pp.ReLU(**kw), pp.Linear(4, 2, **kw))


def _snapshot(model):
    return {k: to_numpy(v).copy() for k, v in model.state_dict().items()}


def _assert_unchanged(model, before):
    after = _snapshot(model)
    assert after.keys() == before.keys()
    for k in before:
        np.testing.assert_array_equal(after[k], before[k])


# ---- construction ------------------------------------------------------------------------


def test_linear_shapes_dtype_and_device(backend):
    layer = pp.Linear(3, 5, backend=backend)
    assert layer.weight.shape == (5, 3)
    assert layer.bias is not None
    assert layer.bias.shape == (5,)
    assert layer.weight.data.dtype == backend.float_dtype("float32")
    assert backend.owns(layer.weight.data)
    assert pp.Linear(3, 5, bias=False, backend=backend).bias is None


def test_float64_on_request(backend64):
    layer = pp.Linear(3, 5, backend=backend64, dtype="float64")
    assert layer.weight.data.dtype == backend64.float_dtype("float64")
    X = pp.asarray(np.ones((2, 3)), backend=backend64, dtype="float64")
    assert layer.forward(X).dtype == layer.dtype


def test_device_keyword_combines_with_the_backend():
    layer = pp.Linear(2, 2, backend="array_api_strict", device="device1")
    assert layer.backend.name == "array_api_strict:device1"
    with pp.use_backend("array_api_strict"):
        assert pp.Linear(2, 2, device="device2").backend.name == "array_api_strict:device2"


def test_float64_on_a_device_without_it_is_refused():
    with pytest.raises(pp.DtypeUnsupportedError, match="no float64"):
        pp.Linear(2, 2, backend="array_api_strict:no_float64", dtype="float64")
    layer = pp.Linear(2, 2, backend="array_api_strict:no_float64")  # float32 is fine
    assert layer.dtype == layer.backend.float_dtype("float32")


def test_jax_without_x64_says_how_to_enable_it():
    jax = pytest.importorskip("jax")
    enabled = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", False)
    try:
        _registry._BACKEND_CACHE.clear()
        with pytest.raises(pp.DtypeUnsupportedError, match="JAX_ENABLE_X64"):
            pp.Linear(2, 2, backend="jax", dtype="float64")
    finally:
        jax.config.update("jax_enable_x64", enabled)
        _registry._BACKEND_CACHE.clear()


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "3"])
def test_bad_sizes_are_rejected(bad):
    with pytest.raises(ValueError, match="in_features must be a positive int"):
        pp.Linear(bad, 3)


def test_bad_dtype_is_rejected():
    with pytest.raises(TypeError, match="'float32' or 'float64'"):
        pp.Linear(2, 3, dtype="int32")


def test_sequential_rejects_mixed_layers():
    with pytest.raises(TypeError, match="share one backend and dtype") as info:
        pp.Sequential(pp.Linear(2, 3), pp.Linear(3, 1, dtype="float64"))
    assert "layer 0 (Linear) is float32, layer 1 (Linear) is float64" in str(info.value)
    assert not isinstance(info.value, pp.MixedBackendError | pp.MixedDeviceError)
    pytest.importorskip("array_api_strict")
    with pytest.raises(pp.MixedBackendError, match=r"layer 1 \(Linear\) is array_api_strict\."):
        pp.Sequential(pp.Linear(2, 3), pp.Linear(3, 1, backend="array_api_strict"))
    other_device = pp.Linear(3, 1, backend="array_api_strict:device1")
    with pytest.raises(
        pp.MixedDeviceError, match=r"layer 1 \(Linear\) is array_api_strict:device1"
    ):
        pp.Sequential(pp.Linear(2, 3, backend="array_api_strict"), other_device)
    with pytest.raises(TypeError, match="layer 1 must be a portprop Module"):
        pp.Sequential(pp.Linear(2, 3), "relu")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one layer"):
        pp.Sequential()


# ---- initialization ------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", pp.init.SCHEMES)
def test_init_schemes_have_their_scale(scheme):
    fan_in, fan_out = 400, 300
    layer = pp.Linear(fan_in, fan_out, init=scheme, seed=1, dtype="float64")
    w = to_numpy(layer.weight.data)
    b = to_numpy(layer.bias.data)
    expected_std = {
        "default": 1 / math.sqrt(3 * fan_in),
        "xavier_uniform": math.sqrt(2 / (fan_in + fan_out)),
        "xavier_normal": math.sqrt(2 / (fan_in + fan_out)),
        "he_uniform": math.sqrt(2 / fan_in),
        "he_normal": math.sqrt(2 / fan_in),
    }[scheme]
    assert abs(w.std() - expected_std) < 0.02 * expected_std
    assert abs(w.mean()) < 0.05 * expected_std
    if scheme.endswith("uniform") or scheme == "default":
        bound = expected_std * math.sqrt(3)
        assert np.abs(w).max() <= bound
        assert np.abs(w).max() > 0.99 * bound
    if scheme == "default":
        assert np.abs(b).max() <= 1 / math.sqrt(fan_in)
        assert b.std() > 0
    else:
        np.testing.assert_array_equal(b, 0.0)


def test_unknown_init_scheme():
    with pytest.raises(ValueError, match="init must be one of"):
        pp.Linear(2, 2, init="orthogonal")


def test_seeding_reproduces_weights():
    pp.manual_seed(5)
    a = pp.Linear(4, 4)
    pp.manual_seed(5)
    b = pp.Linear(4, 4)
    c = pp.Linear(4, 4)  # the global generator moved on
    np.testing.assert_array_equal(a.weight.data, b.weight.data)
    assert not np.array_equal(b.weight.data, c.weight.data)
    d = pp.Linear(4, 4, seed=9)
    e = pp.Linear(4, 4, rng=pp.host_generator(9))
    np.testing.assert_array_equal(d.weight.data, e.weight.data)
    with pytest.raises(TypeError, match="not both"):
        pp.Linear(4, 4, seed=1, rng=pp.host_generator(1))
    with pytest.raises(TypeError, match="seed must be an int"):
        pp.manual_seed("7")  # type: ignore[arg-type]


# ---- parameters and state dicts -----------------------------------------------------------


def test_state_dict_uses_torch_keys(backend):
    model = _net(backend)
    assert list(model.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert [n for n, _ in model.named_parameters()] == list(model.state_dict())
    assert len(model.parameters()) == 4


def test_load_state_dict_round_trips_across_backends(backend):
    source = _net("numpy", seed=1)
    target = _net(backend, seed=2)
    target.load_state_dict(source.state_dict())
    for k, v in target.state_dict().items():
        assert backend.owns(v)
        assert v.dtype == backend.float_dtype("float32")
        np.testing.assert_array_equal(to_numpy(v), source.state_dict()[k])
    # the loaded arrays are copies, not views of the source
    source.state_dict()["0.weight"][...] = 0.0
    assert np.any(to_numpy(target.state_dict()["0.weight"]) != 0.0)


def test_load_state_dict_converts_float16_host_arrays(backend):
    """float16 weights (saved by a half-precision model) load on every backend, even
    array-api-strict, which has no float16: they are cast on the host."""
    source = _net("numpy", seed=1)
    half = {k: v.astype("float16") for k, v in source.state_dict().items()}
    target = _net(backend, seed=2)
    target.load_state_dict(half)
    for k, v in target.state_dict().items():
        assert backend.owns(v)
        assert v.dtype == backend.float_dtype("float32")
        np.testing.assert_array_equal(to_numpy(v), half[k].astype("float32"))


def test_asarray_names_a_dtype_the_backend_lacks():
    strict = pp.get_backend(backend="array_api_strict")
    with pytest.raises(pp.DtypeUnsupportedError, match="x has dtype float16, which backend"):
        strict.asarray(np.ones(3, dtype="float16"))


def test_load_state_dict_reports_every_problem_and_loads_nothing(backend):
    model = _net(backend)
    before = _snapshot(model)
    bad = {k: np.asarray(v) for k, v in _snapshot(_net("numpy", seed=3)).items()}
    del bad["2.bias"]
    bad["0.weight"] = np.zeros((5, 3), dtype=np.float32)
    bad["9.weight"] = np.zeros((1,), dtype=np.float32)
    with pytest.raises(pp.StateDictError) as info:
        model.load_state_dict(bad)
    text = str(info.value)
    assert "missing keys ['2.bias']" in text
    assert "unexpected keys ['9.weight']" in text
    assert "0.weight: expected shape (4, 3), got (5, 3)" in text
    assert "nothing was loaded" in text
    assert isinstance(info.value, KeyError)
    _assert_unchanged(model, before)


def test_to_moves_every_parameter(backend64):
    model = _net("numpy")
    before = _snapshot(model)
    moved = model.to(backend64, dtype="float64")
    assert moved is model
    for module in model.modules():
        assert module.backend == backend64
    for k, v in model.state_dict().items():
        assert backend64.owns(v)
        assert v.dtype == backend64.float_dtype("float64")
        np.testing.assert_allclose(to_numpy(v), before[k], rtol=0, atol=0)
    X = pp.asarray(np.ones((2, 3)), backend=backend64, dtype="float64")
    assert model.forward(X).shape == (2, 2)


# ---- inputs: checks that fail before anything changes ---------------------------------------


def test_wrong_feature_count_is_named(backend):
    model = _net(backend)
    X = pp.asarray(np.ones((5, 4), dtype=np.float32), backend=backend)
    with pytest.raises(ValueError, match=r"X has 4 features, but the model expects 3"):
        model.forward(X)


def test_wrong_rank_suggests_a_reshape(backend):
    model = _net(backend)
    x = pp.asarray(np.ones(3, dtype=np.float32), backend=backend)
    with pytest.raises(ValueError, match=r"must be 2-D.*reshape\(1, -1\)"):
        model.forward(x)


def test_input_dtype_must_match_the_model(backend64):
    model = _net(backend64)  # float32
    before = _snapshot(model)
    X = pp.asarray(np.ones((2, 3)), backend=backend64, dtype="float64")
    with pytest.raises(TypeError, match=r"X has dtype float64 but the model computes in float32"):
        model.forward(X)
    _assert_unchanged(model, before)


def test_backward_before_forward_is_an_error(backend):
    model = _net(backend)
    G = pp.asarray(np.ones((2, 2), dtype=np.float32), backend=backend)
    with pytest.raises(RuntimeError, match=r"backward\(\) was called before forward\(\)"):
        model.backward(G)
    with pytest.raises(RuntimeError, match="before forward"):
        pp.MSELoss().backward()


def test_input_grad_false_skips_the_first_products(backend):
    model = _net(backend)
    X = pp.asarray(np.ones((2, 3), dtype=np.float32), backend=backend)
    out = model.forward(X)
    full = model.backward(out)
    assert full.shape == (2, 3)
    grads = {k: to_numpy(p.grad).copy() for k, p in model.named_parameters()}
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    model.forward(X)
    assert model.backward(out, input_grad=False) is None
    for k, p in model.named_parameters():
        np.testing.assert_array_equal(to_numpy(p.grad), grads[k])


def test_train_and_eval_modes():
    model = _net("numpy")
    assert model.training
    assert model.eval() is model
    assert not any(m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())


def test_repr_shows_the_layers():
    text = repr(_net("numpy"))
    assert "(0): Linear(3, 4" in text
    assert "(1): ReLU()" in text


def test_to_with_a_device_alone_keeps_the_library():
    model = _net("array_api_strict")
    model.to(device="device1")
    assert model.backend.name == "array_api_strict:device1"
