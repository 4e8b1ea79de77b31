"""Adam, AdamW, RMSprop and clip_grad_norm_: torch's definitions on every backend, in-place
updates, dtypes that never drift, and state dicts that resume training exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import to_numpy

import portprop as pp

CASES = [
    ("Adam", {}),
    ("Adam", {"amsgrad": True}),
    ("Adam", {"weight_decay": 0.1}),
    ("Adam", {"amsgrad": True, "weight_decay": 0.1, "betas": (0.5, 0.8), "eps": 1e-3}),
    ("AdamW", {}),
    ("AdamW", {"weight_decay": 0.3}),
    ("AdamW", {"amsgrad": True, "weight_decay": 0.1}),
    ("RMSprop", {}),
    ("RMSprop", {"alpha": 0.5, "eps": 1e-3}),
    ("RMSprop", {"momentum": 0.9}),
    ("RMSprop", {"centered": True}),
    ("RMSprop", {"centered": True, "momentum": 0.8, "weight_decay": 0.1}),
]

BUFFERS = {
    "SGD": ["momentum_buffer"],
    "Adam": ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"],
    "AdamW": ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"],
    "RMSprop": ["square_avg", "grad_avg", "momentum_buffer"],
}


def _case_id(case):
    name, options = case
    return name + "".join(f",{k}={v}" for k, v in options.items())


def _param(backend, values, dtype="float64"):
    return pp.Parameter(backend.from_host(np.asarray(values, dtype=np.float64), dtype))


def _grads(steps, seed=0):
    """Gradients for a (3, 4) and a (4,) parameter; the second has none at step 3."""
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=(3, 4)), None if k == 3 else rng.normal(size=4)) for k in range(steps)]


def _set_grads(params, grads, backend, dtype="float64"):
    for p, g in zip(params, grads, strict=True):
        p.grad = None if g is None else backend.from_host(g, dtype)


def _snapshot(opt):
    """A host copy of everything an optimizer would change."""
    return (
        [to_numpy(p.data) for p in opt.params],
        [
            {k: (v if isinstance(v, int) else to_numpy(v)) for k, v in s.items()}
            for s in opt.state_dict()["state"]
        ],
        opt.hyperparameters(),
    )


def _assert_same_snapshot(a, b):
    for x, y in zip(a[0], b[0], strict=True):
        np.testing.assert_array_equal(x, y)
    assert len(a[1]) == len(b[1])
    for s, t in zip(a[1], b[1], strict=True):
        assert s.keys() == t.keys()
        for key in s:
            np.testing.assert_array_equal(s[key], t[key])
    assert a[2] == b[2]


# ---- agreement with torch ------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_matches_torch_step_by_step(backend64, case):
    torch = pytest.importorskip("torch")
    name, options = case
    rng = np.random.default_rng(1)
    w0, b0 = rng.normal(size=(3, 4)), rng.normal(size=4)
    params = [_param(backend64, w0), _param(backend64, b0)]
    opt = getattr(pp, name)(params, lr=0.05, **options)
    tparams = [torch.nn.Parameter(torch.from_numpy(x.copy())) for x in (w0, b0)]
    topt = getattr(torch.optim, name)(tparams, lr=0.05, **options)
    for grads in _grads(8):
        _set_grads(params, grads, backend64)
        opt.step()
        for t, g in zip(tparams, grads, strict=True):
            t.grad = None if g is None else torch.from_numpy(g.copy())
        topt.step()
        for p, t in zip(params, tparams, strict=True):
            assert backend64.owns(p.data)
            np.testing.assert_allclose(to_numpy(p.data), t.detach().numpy(), rtol=1e-12, atol=1e-14)
    # The state has torch's names and values, and a step count per parameter.
    for saved, t in zip(opt.state_dict()["state"], tparams, strict=True):
        expected = topt.state[t]
        assert saved["step"] == int(expected["step"])
        assert saved["step"] == (8 if t.ndim == 2 else 7)
        for key in BUFFERS[name]:
            if key in expected:
                np.testing.assert_allclose(
                    to_numpy(saved[key]), expected[key].numpy(), rtol=1e-12, atol=1e-14
                )


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_updates_are_in_place_where_the_library_allows(backend, case):
    name, options = case
    p = _param(backend, np.ones((2, 3)), "float32")
    opt = getattr(pp, name)([p], lr=0.01, **options)
    p.grad = backend.from_host(np.full((2, 3), 0.5), "float32")
    opt.step()
    before = p.data
    buffers = {k: v for k, v in opt.state[0].items() if k in BUFFERS[name]}
    buffers.pop("max_exp_avg_sq", None)  # rebound from a maximum at every step
    snapshot = to_numpy(before)
    for _ in range(3):
        p.grad = backend.from_host(np.full((2, 3), 0.5), "float32")
        opt.step()
    if backend.writable:
        assert p.data is before  # the same buffer, updated in place
        for key, value in buffers.items():
            assert opt.state[0][key] is value, key
    else:  # JAX: new arrays each step, and the old ones are untouched
        assert p.data is not before
        np.testing.assert_array_equal(to_numpy(before), snapshot)
    assert not np.array_equal(to_numpy(p.data), snapshot)  # it did move


def test_adam_first_step_is_lr_times_the_gradient_sign(backend):
    """With bias correction, Adam's first step is lr * g / (|g| + eps') on every element."""
    p = _param(backend, np.zeros(4), "float32")
    opt = pp.Adam([p], lr=0.1)
    p.grad = backend.from_host(np.array([3.0, -0.5, 1e-3, -20.0]), "float32")
    opt.step()
    np.testing.assert_allclose(to_numpy(p.data), [-0.1, 0.1, -0.1, 0.1], rtol=1e-4)


@pytest.mark.parametrize("name", ["Adam", "AdamW", "RMSprop"])
def test_float32_never_drifts_to_float64(backend, name):
    """NumPy 2 promotes float32 arrays combined with NumPy float64 scalars; portprop keeps
    every hyperparameter a Python float."""
    f64 = np.float64
    options = {
        "Adam": {"betas": (f64(0.9), f64(0.99)), "eps": f64(1e-7), "amsgrad": True},
        "AdamW": {"betas": (f64(0.8), f64(0.9)), "eps": f64(1e-7)},
        "RMSprop": {"alpha": f64(0.9), "momentum": f64(0.5), "centered": True},
    }[name]
    pp.manual_seed(0)
    model = pp.Sequential(
        pp.Linear(2, 4, backend=backend), pp.Tanh(backend=backend), pp.Linear(4, 2, backend=backend)
    )
    opt = getattr(pp, name)(model.parameters(), lr=f64(0.01), weight_decay=f64(1e-2), **options)
    for value in opt.hyperparameters().values():
        assert type(value) in (float, bool, tuple)
    X, y = pp.datasets.make_disk(8, seed=0, backend=backend)
    f32 = backend.float_dtype("float32")
    loss = pp.CrossEntropyLoss()
    for _ in range(3):
        loss.forward(model.forward(X), y)
        model.zero_grad()
        model.backward(loss.backward())
        pp.clip_grad_norm_(model.parameters(), max_norm=f64(0.1), norm_type=f64(2.0))
        opt.step()
    for p in model.parameters():
        assert p.data.dtype == f32
        assert p.grad.dtype == f32
    for state in opt.state_dict()["state"]:
        assert type(state["step"]) is int
        for key in BUFFERS[name]:
            if key in state:
                assert state[key].dtype == f32, key


def test_optimizer_follows_a_model_that_moved(backend64):
    model = pp.Sequential(pp.Linear(2, 2, dtype="float64"))
    opt = pp.Adam(model.parameters(), lr=0.1, amsgrad=True)
    X = np.ones((3, 2))
    model.backward(model.forward(X))
    opt.step()
    model.to(backend64)
    model.backward(model.forward(pp.asarray(X, backend=backend64)))
    opt.step()
    for p, state in zip(opt.params, opt.state, strict=True):
        assert backend64.owns(p.data)
        assert state["step"] == 2
        for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            assert backend64.owns(state[key]), key


# ---- state dicts ----------------------------------------------------------------------

ROUND_TRIP = [
    ("SGD", {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.01}),
    ("Adam", {"lr": 0.05, "amsgrad": True, "weight_decay": 0.1}),
    ("AdamW", {"lr": 0.05, "betas": (0.8, 0.9)}),
    ("RMSprop", {"lr": 0.05, "centered": True, "momentum": 0.5}),
]


@pytest.mark.parametrize("case", ROUND_TRIP, ids=lambda c: c[0])
def test_state_dict_round_trip_gives_identical_steps(backend64, case):
    name, options = case
    cls = getattr(pp, name)
    rng = np.random.default_rng(2)
    w0, b0 = rng.normal(size=(3, 4)), rng.normal(size=4)
    grads = _grads(8, seed=3)
    params = [_param(backend64, w0), _param(backend64, b0)]
    opt = cls(params, **options)
    for g in grads[:4]:
        _set_grads(params, g, backend64)
        opt.step()
    opt.lr = 0.02  # as a schedule would leave it
    saved = opt.state_dict()

    assert saved["type"] == name
    assert saved["hyperparameters"] == opt.hyperparameters()
    assert saved["hyperparameters"]["lr"] == 0.02
    assert len(saved["state"]) == 2
    for entry in saved["state"]:
        assert set(entry) <= {"step", *BUFFERS[name]}
        assert type(entry["step"]) is int

    # Resume on a fresh optimizer built with other hyperparameters, from the host copies
    # the checkpoint helper would write.
    copies = [_param(backend64, to_numpy(p.data)) for p in params]
    fresh = cls(copies, lr=0.5)
    host = {
        **saved,
        "state": [
            {k: (v if k == "step" else to_numpy(v)) for k, v in entry.items()}
            for entry in saved["state"]
        ],
    }
    fresh.load_state_dict(host)
    assert fresh.hyperparameters() == opt.hyperparameters()
    for g in grads[4:]:
        for ps in (params, copies):
            _set_grads(ps, g, backend64)
        opt.step()
        fresh.step()
        for p, q in zip(params, copies, strict=True):
            np.testing.assert_array_equal(to_numpy(q.data), to_numpy(p.data))


def test_state_dict_moves_to_the_parameters_backend_and_dtype(backend):
    """A state saved from float64 NumPy arrays loads into float32 parameters anywhere."""
    source = [_param(pp.get_backend(backend="numpy"), np.ones(3))]
    opt = pp.Adam(source, lr=0.1)
    source[0].grad = pp.asarray(np.ones(3), backend="numpy")
    opt.step()
    target = [_param(backend, np.ones(3), "float32")]
    loaded = pp.Adam(target)
    loaded.load_state_dict(opt.state_dict())
    f32 = backend.float_dtype("float32")
    for key in ("exp_avg", "exp_avg_sq"):
        value = loaded.state[0][key]
        assert backend.owns(value)
        assert value.dtype == f32
        assert value is not opt.state[0][key]


def test_a_learning_rate_of_zero_left_by_a_schedule_loads():
    p = _param(pp.get_backend(), [1.0])
    opt = pp.Adam([p], lr=0.1)
    opt.lr = 0.0
    fresh = pp.Adam([_param(pp.get_backend(), [1.0])], lr=0.1)
    fresh.load_state_dict(opt.state_dict())
    assert fresh.lr == 0.0


def _stepped_adam(backend, steps=2):
    params = [_param(backend, np.ones((2, 3))), _param(backend, np.ones(3))]
    opt = pp.Adam(params, lr=0.1, amsgrad=True)
    for _ in range(steps):
        _set_grads(params, [np.ones((2, 3)), np.ones(3)], backend)
        opt.step()
    return opt


def _wrong_shape(sd):
    sd["state"][1]["exp_avg"] = np.zeros(4)


def _wrong_count(sd):
    sd["state"].pop()


def _wrong_type(sd):
    sd["type"] = "RMSprop"


def _missing_buffer(sd):
    del sd["state"][0]["max_exp_avg_sq"]  # amsgrad needs it after a step


def _unknown_buffer(sd):
    sd["state"][0]["velocity"] = np.zeros((2, 3))


def _bad_step(sd):
    sd["state"][0]["step"] = -1


def _bad_hyperparameter(sd):
    sd["hyperparameters"]["betas"] = (0.9, 1.5)


def _missing_hyperparameter(sd):
    del sd["hyperparameters"]["eps"]


def _not_an_array(sd):
    sd["state"][0]["exp_avg"] = [[0.0] * 3] * 2


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (_wrong_shape, r"state\[1\]\['exp_avg'\]: expected shape \(3,\).*got \(4,\)"),
        (_wrong_count, r"one entry per parameter \(2\), got 1"),
        (_wrong_type, r"saved by 'RMSprop', not 'Adam'"),
        (_missing_buffer, r"state\[0\] lacks \['max_exp_avg_sq'\] after 3 steps"),
        (_unknown_buffer, r"state\[0\] has unexpected keys \['velocity'\]"),
        (_bad_step, r"state\[0\]\['step'\] must be an int >= 0, got -1"),
        (_bad_hyperparameter, r"betas\[1\] must be a finite number in \[0.0, 1.0\), got 1.5"),
        (_missing_hyperparameter, r"hyperparameters must have the keys"),
        (_not_an_array, r"state\[0\]\['exp_avg'\] must be an array, got list"),
    ],
    ids=lambda v: getattr(v, "__name__", "")[1:] or None,
)
def test_load_state_dict_checks_everything_first(backend64, corrupt, message):
    saved = _stepped_adam(pp.get_backend(backend="numpy"), steps=3).state_dict()
    saved = {
        **saved,
        "hyperparameters": dict(saved["hyperparameters"]),
        "state": [dict(s) for s in saved["state"]],
    }
    corrupt(saved)
    opt = _stepped_adam(backend64)
    before = _snapshot(opt)
    with pytest.raises(pp.StateDictError, match=message) as info:
        opt.load_state_dict(saved)
    assert "nothing was loaded" in str(info.value)
    _assert_same_snapshot(before, _snapshot(opt))
    # still usable: a step goes on from the state it had
    _set_grads(opt.params, [np.ones((2, 3)), np.ones(3)], backend64)
    opt.step()
    assert opt.state[0]["step"] == 3


def test_load_state_dict_lists_every_problem():
    saved = _stepped_adam(pp.get_backend()).state_dict()
    saved["state"] = [dict(s) for s in saved["state"]]
    saved["state"][0]["exp_avg"] = np.zeros((3, 2))
    saved["state"][1]["step"] = "many"
    with pytest.raises(pp.StateDictError) as info:
        _stepped_adam(pp.get_backend()).load_state_dict(saved)
    assert "state[0]['exp_avg']" in str(info.value)
    assert "state[1]['step']" in str(info.value)


def test_fresh_optimizer_state_dict_has_step_zero():
    opt = pp.RMSprop([_param(pp.get_backend(), [1.0, 2.0])])
    assert opt.state_dict() == {
        "type": "RMSprop",
        "hyperparameters": {
            "lr": 0.01,
            "alpha": 0.99,
            "eps": 1e-8,
            "weight_decay": 0.0,
            "momentum": 0.0,
            "centered": False,
        },
        "state": [{"step": 0}],
    }


# ---- gradient clipping ----------------------------------------------------------------


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf])
@pytest.mark.parametrize("max_norm", [0.5, 1e3])
def test_clip_grad_norm_matches_torch(backend64, norm_type, max_norm):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    grads = [rng.normal(size=(3, 4)), rng.normal(size=5), None]
    params = [_param(backend64, np.zeros(g.shape if g is not None else 2)) for g in grads]
    _set_grads(params, grads, backend64)
    before = [p.grad for p in params]
    tparams = [
        torch.nn.Parameter(torch.zeros(2 if g is None else g.shape, dtype=torch.float64))
        for g in grads
    ]
    for t, g in zip(tparams, grads, strict=True):
        t.grad = None if g is None else torch.from_numpy(g.copy())

    total = pp.clip_grad_norm_(params, max_norm, norm_type=norm_type)
    expected = torch.nn.utils.clip_grad_norm_(tparams, max_norm, norm_type=norm_type)

    assert type(total) is float
    assert total == pytest.approx(float(expected), rel=1e-12)
    assert params[2].grad is None
    for p, t, old in zip(params[:2], tparams[:2], before[:2], strict=True):
        np.testing.assert_allclose(to_numpy(p.grad), t.grad.numpy(), rtol=1e-12)
        if backend64.writable:
            assert p.grad is old  # scaled in place
    clipped = max_norm < total
    assert clipped == (max_norm == 0.5)


def test_clip_grad_norm_keeps_an_exploding_update_bounded(backend):
    rng = np.random.default_rng(5)
    p = _param(backend, np.zeros((4, 4)), "float32")
    opt = pp.SGD([p], lr=0.1)
    p.grad = backend.from_host(1e6 * rng.normal(size=(4, 4)), "float32")
    total = pp.clip_grad_norm_([p], max_norm=1.0)
    assert total > 1e6
    assert p.grad.dtype == backend.float_dtype("float32")
    opt.step()
    assert np.linalg.norm(to_numpy(p.data)) <= 0.1 * 1.0 * (1 + 1e-5)
    assert np.linalg.norm(to_numpy(p.data)) > 0.099


def test_clip_grad_norm_takes_one_parameter_and_no_gradients():
    p = _param(pp.get_backend(), [3.0, 4.0])
    assert pp.clip_grad_norm_(p, 1.0) == 0.0
    p.grad = pp.asarray(np.array([3.0, 4.0]))
    assert pp.clip_grad_norm_(p, 1.0) == pytest.approx(5.0)
    np.testing.assert_allclose(p.grad, [0.6, 0.8], rtol=1e-6)


# ---- bad arguments --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kwargs", "error", "message"),
    [
        ("Adam", {"lr": 0.0}, ValueError, r"lr must be a finite number > 0.0, got 0.0"),
        ("AdamW", {"lr": -1e-3}, ValueError, r"lr must be a finite number > 0.0, got -0.001"),
        ("RMSprop", {"lr": "fast"}, TypeError, r"lr must be a number, got 'fast'"),
        (
            "Adam",
            {"betas": (1.0, 0.999)},
            ValueError,
            r"betas\[0\] must be .* \[0.0, 1.0\), got 1.0",
        ),
        ("AdamW", {"betas": (0.9, -0.1)}, ValueError, r"betas\[1\] must be .*, got -0.1"),
        ("Adam", {"betas": 0.9}, TypeError, r"betas must be a pair of numbers .*, got 0.9"),
        ("Adam", {"betas": (0.9, 0.99, 0.5)}, TypeError, r"betas must be a pair"),
        ("Adam", {"eps": -1e-8}, ValueError, r"eps must be a finite number >= 0.0, got -1e-08"),
        ("AdamW", {"weight_decay": -0.1}, ValueError, r"weight_decay must be .* got -0.1"),
        ("RMSprop", {"alpha": 1.0}, ValueError, r"alpha must be .* \[0.0, 1.0\), got 1.0"),
        ("RMSprop", {"alpha": -0.5}, ValueError, r"alpha must be .*, got -0.5"),
        ("RMSprop", {"eps": float("nan")}, ValueError, r"eps must be a finite number"),
        ("RMSprop", {"momentum": -0.9}, ValueError, r"momentum must be .* >= 0.0, got -0.9"),
        ("RMSprop", {"weight_decay": math.inf}, ValueError, r"weight_decay must be .*, got inf"),
    ],
)
def test_bad_hyperparameters_are_rejected(name, kwargs, error, message):
    p = _param(pp.get_backend(), [1.0])
    with pytest.raises(error, match=message):
        getattr(pp, name)([p], **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"max_norm": 0.0}, ValueError, r"max_norm must be a finite number > 0.0, got 0.0"),
        ({"max_norm": -1.0}, ValueError, r"max_norm must be .*, got -1.0"),
        ({"max_norm": float("nan")}, ValueError, r"max_norm must be a finite number"),
        ({"max_norm": None}, TypeError, r"max_norm must be a number, got None"),
        ({"max_norm": 1.0, "norm_type": 0}, ValueError, r"norm_type must be a number > 0.*got 0"),
        ({"max_norm": 1.0, "norm_type": -2.0}, ValueError, r"norm_type .*got -2.0"),
        ({"max_norm": 1.0, "norm_type": "fro"}, TypeError, r"norm_type must be a number"),
    ],
)
def test_bad_clip_arguments_are_rejected_before_touching_gradients(kwargs, error, message):
    p = _param(pp.get_backend(), [30.0, 40.0])
    p.grad = pp.asarray(np.array([30.0, 40.0]))
    with pytest.raises(error, match=message):
        pp.clip_grad_norm_([p], **kwargs)
    np.testing.assert_array_equal(p.grad, [30.0, 40.0])


def test_foreign_params_are_rejected():
    with pytest.raises(ValueError, match="at least one Parameter"):
        pp.Adam([])
    with pytest.raises(TypeError, match=r"params\[1\] must be a portprop Parameter"):
        pp.RMSprop([_param(pp.get_backend(), [1.0]), np.ones(2)])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"params\[0\] must be a portprop Parameter"):
        pp.clip_grad_norm_([np.ones(2)], 1.0)  # type: ignore[list-item]
