"""Hostile optimizer steps, learning rates and data: every step checks every gradient and
parameter before it changes anything; a learning rate that overflows the parameters' dtype
is refused; fit never leaves parameters that are not finite; torch's autograd never
reaches portprop's arrays; torch's unsigned labels; the torch:cuda message."""

from __future__ import annotations

import contextlib
import importlib
import io
import math

import numpy as np
import pytest
from conftest import to_numpy

import portprop as pp
from portprop.cli import main

OPTIMIZERS = {
    "SGD": lambda params: pp.SGD(params, lr=0.1, momentum=0.9, weight_decay=0.01),
    "Adam": lambda params: pp.Adam(params, lr=0.01, amsgrad=True),
    "AdamW": lambda params: pp.AdamW(params, lr=0.01),
    "RMSprop": lambda params: pp.RMSprop(params, lr=0.01, momentum=0.5, centered=True),
}


def _model(backend, dtype="float32"):
    return pp.Sequential(
        pp.Linear(2, 3, seed=1, backend=backend, dtype=dtype),
        pp.Tanh(backend=backend, dtype=dtype),
        pp.Linear(3, 2, seed=2, backend=backend, dtype=dtype),
    )


def _grads(model, value=0.5):
    for p in model.parameters():
        p.grad = model.backend.from_host(np.full(p.shape, value), model.dtype)


def _snapshot(model, opt):
    """The parameters' and the optimizer's state, on the host, as bytes."""
    params = [to_numpy(p.data).tobytes() for p in model.parameters()]
    state = [
        {k: v if k == "step" else to_numpy(v).tobytes() for k, v in s.items()}
        for s in opt.state_dict()["state"]
    ]
    return params, state, opt.lr


def _stepped(backend, name, steps=2, dtype="float32"):
    model = _model(backend, dtype)
    opt = OPTIMIZERS[name](model.parameters())
    for _ in range(steps):
        _grads(model)
        opt.step()
    _grads(model)
    return model, opt


# ---- 1. every step checks every gradient and parameter, before changing anything ---------


@pytest.mark.parametrize("name", OPTIMIZERS)
@pytest.mark.parametrize("size", [1, 5])
def test_a_gradient_of_the_wrong_shape_after_the_first_step_changes_nothing(backend, name, size):
    model, opt = _stepped(backend, name)
    bias = model.parameters()[3]  # shape (2,)
    bias.grad = backend.from_host(np.ones(size), "float32")
    before = _snapshot(model, opt)
    with pytest.raises(ValueError, match=r"params\[3\]\.grad has shape") as info:
        opt.step()
    assert f"({size},)" in str(info.value)
    assert "params[3] has shape (2,)" in str(info.value)
    assert _snapshot(model, opt) == before  # no parameter, step count or moment moved


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_a_gradient_of_another_dtype_after_the_first_step_changes_nothing(backend64, name):
    model, opt = _stepped(backend64, name)
    last = model.parameters()[3]
    last.grad = backend64.from_host(np.ones(2), "float64")
    before = _snapshot(model, opt)
    with pytest.raises(TypeError, match=r"params\[3\]\.grad has dtype float64 but params\[3\]"):
        opt.step()
    assert _snapshot(model, opt) == before


def _other_library(backend):
    return pp.get_backend(backend="array_api_strict" if backend.library == "numpy" else "numpy")


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_a_gradient_of_another_library_after_the_first_step_changes_nothing(backend, name):
    model, opt = _stepped(backend, name)
    model.parameters()[3].grad = _other_library(backend).asarray(np.ones(2, dtype=np.float32))
    before = _snapshot(model, opt)
    with pytest.raises(pp.MixedBackendError, match=r"params\[3\]\.grad is "):
        opt.step()
    assert _snapshot(model, opt) == before


def _read_only_numpy(x):
    x.flags.writeable = False
    return x


@pytest.mark.parametrize("name", OPTIMIZERS)
@pytest.mark.parametrize("when", ["first step", "later step"])
def test_a_read_only_numpy_parameter_changes_nothing(name, when):
    backend = pp.get_backend(backend="numpy")
    model, opt = _stepped(backend, name, steps=0 if when == "first step" else 2)
    _read_only_numpy(model.parameters()[2].data)  # the same array, made read-only
    before = _snapshot(model, opt)
    with pytest.raises(ValueError, match=r"params\[2\] cannot be updated in place") as info:
        opt.step()
    assert "expected a writable array, got a read-only NumPy array" in str(info.value)
    assert _snapshot(model, opt) == before  # layers 0 and 1 did not move either
    assert "portprop.asarray(params[2].data, backend='numpy', copy=True)" in str(info.value)
    weight = model.parameters()[2]
    weight.data = pp.asarray(weight.data, backend="numpy", copy=True)  # the fix it suggests
    opt.step()
    assert _snapshot(model, opt) != before


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_a_read_only_parameter_replaced_between_steps_changes_nothing(backend, name):
    model, opt = _stepped(backend, name)
    weight = model.parameters()[2]
    if backend.library == "numpy":
        weight.data = np.broadcast_to(to_numpy(weight.data), weight.shape)
    elif backend.library == "array_api_strict":
        weight.data = backend.xp.asarray(_read_only_numpy(to_numpy(weight.data)))
    elif backend.library == "torch":
        import torch

        with torch.inference_mode():
            weight.data = torch.ones(weight.shape, device=backend.device)
    else:
        pytest.skip(f"{backend.name}: arrays are never updated in place")
    before = _snapshot(model, opt)
    with pytest.raises(ValueError, match=r"params\[2\] cannot be updated in place"):
        opt.step()
    assert _snapshot(model, opt) == before


def test_an_expanded_torch_parameter_changes_nothing():
    torch = pytest.importorskip("torch")
    model, opt = _stepped("torch:cpu", "SGD")
    model.parameters()[3].data = torch.zeros(1).expand(2)
    before = _snapshot(model, opt)
    with pytest.raises(ValueError, match=r"params\[3\] cannot be updated in place.*expanded"):
        opt.step()
    assert _snapshot(model, opt) == before


def test_clip_grad_norm_checks_every_call_and_scales_read_only_gradients_into_copies():
    backend = pp.get_backend(backend="numpy")
    model = _model(backend)
    _grads(model, 10.0)
    pp.clip_grad_norm_(model.parameters(), 1.0)
    grads = [p.grad.copy() for p in model.parameters()]
    model.parameters()[1].grad = np.ones(7, dtype=np.float32)
    with pytest.raises(ValueError, match=r"params\[1\]\.grad has shape \(7,\)"):
        pp.clip_grad_norm_(model.parameters(), 0.1)
    for p, g in zip(model.parameters()[2:], grads[2:], strict=True):
        np.testing.assert_array_equal(p.grad, g)  # nothing was scaled
    frozen = _read_only_numpy(np.full((3,), 10.0, dtype=np.float32))
    model.parameters()[1].grad = frozen
    pp.clip_grad_norm_(model.parameters(), 0.1)
    np.testing.assert_array_equal(frozen, 10.0)  # left alone: the parameter got a copy
    assert model.parameters()[1].grad is not frozen
    norm = math.sqrt(sum(float(np.sum(p.grad * p.grad)) for p in model.parameters()))
    assert norm == pytest.approx(0.1, rel=1e-4)


# ---- 2. hyperparameters that overflow the parameters' dtype -------------------------------

OVERFLOWING = {
    "SGD lr": (lambda ps: pp.SGD(ps, lr=1e39), r"lr=1e\+39 overflows float32"),
    "Adam lr": (
        lambda ps: pp.Adam(ps, lr=1e38),
        r"lr=1e\+38 overflows float32.*Adam computes lr / \(1 - betas\[0\]\) = 1e\+39",
    ),
    "AdamW lr": (lambda ps: pp.AdamW(ps, lr=1e39), r"lr=1e\+39 overflows float32"),
    "RMSprop lr": (lambda ps: pp.RMSprop(ps, lr=1e39), r"lr=1e\+39 overflows float32"),
    "momentum": (lambda ps: pp.SGD(ps, lr=0.1, momentum=1e39), r"momentum=1e\+39 overflows"),
    "lr * wd": (
        lambda ps: pp.SGD(ps, lr=1e20, weight_decay=1e20),
        r"lr=1e\+20 overflows float32.*1 - lr \* weight_decay = -1e\+40",
    ),
    "nesterov": (
        lambda ps: pp.SGD(ps, lr=1e20, momentum=1e20, nesterov=True),
        r"lr \* momentum = 1e\+40",
    ),
    "eps": (lambda ps: pp.Adam(ps, eps=1e39), r"eps=1e\+39 overflows float32"),
    "AdamW wd": (lambda ps: pp.AdamW(ps, weight_decay=1e39), r"weight_decay=1e\+39 overflows"),
    "RMSprop wd": (lambda ps: pp.RMSprop(ps, weight_decay=1e39), r"weight_decay=1e\+39 overflows"),
}


@pytest.mark.parametrize("case", OVERFLOWING)
def test_hyperparameters_that_overflow_float32_are_refused(backend, case):
    make, message = OVERFLOWING[case]
    model = _model(backend)
    with pytest.raises(ValueError, match=message) as info:
        make(model.parameters())
    assert "the dtype of params[0]" in str(info.value)
    assert "<= 3.4028234663852886e+38 (the largest float32)" in str(info.value)


def test_a_float64_model_takes_a_rate_float32_cannot_hold(backend64):
    model = _model(backend64, "float64")
    opt = pp.SGD(model.parameters(), lr=1e39)
    assert opt.lr == 1e39


def test_the_first_step_checks_a_model_whose_dtype_changed(backend64):
    model = _model(backend64, "float64")
    opt = pp.SGD(model.parameters(), lr=1e39, momentum=0.9)
    model.to(dtype="float32")
    _grads(model)
    before = _snapshot(model, opt)
    with pytest.raises(ValueError, match="lr=1e\\+39 overflows float32"):
        opt.step()
    assert _snapshot(model, opt) == before


def test_setting_lr_later_is_checked_and_leaves_it_unchanged(backend):
    model = _model(backend)
    opt = pp.Adam(model.parameters(), lr=0.01)
    for bad, message in [(1e38, "lr=1e\\+38 overflows float32"), (math.nan, "finite"),
                         (-1.0, ">= 0"), (math.inf, "finite")]:  # fmt: skip
        with pytest.raises(ValueError, match=message):
            opt.lr = bad
        assert opt.lr == 0.01
    opt.lr = 0.0  # a schedule warming up from 0
    assert opt.lr == 0.0


def test_a_schedule_that_overflows_the_rate_changes_nothing(backend):
    model = _model(backend)
    opt = pp.SGD(model.parameters(), lr=1.0)
    schedule = pp.schedules.ExponentialLR(opt, gamma=1e30)
    schedule.step()  # 1e30 fits float32
    with pytest.raises(
        ValueError, match=r"ExponentialLR cannot set the rate of step 2: lr=1\S*e\+60"
    ):
        schedule.step()
    assert (schedule.step_count, opt.lr, schedule.get_last_lr()) == (1, 1e30, 1e30)
    huge = pp.schedules.ExponentialLR(pp.SGD(model.parameters(), lr=1.0), gamma=1e300)
    huge.step_count = 5  # gamma ** 6 is beyond any float: OverflowError in Python
    with pytest.raises(ValueError, match="ExponentialLR cannot set the rate of step 6"):
        huge.step()
    assert huge.step_count == 5


def test_load_state_dict_refuses_a_rate_that_overflows_and_loads_nothing(backend):
    model = _model(backend)
    opt = pp.SGD(model.parameters(), lr=0.1, momentum=0.9)
    saved = opt.state_dict()
    saved["hyperparameters"] = {**saved["hyperparameters"], "lr": 1e39, "momentum": 0.5}
    with pytest.raises(pp.StateDictError, match="lr=1e\\+39 overflows float32"):
        opt.load_state_dict(saved)
    assert (opt.lr, opt.momentum) == (0.1, 0.9)
    schedule = pp.schedules.StepLR(opt, step_size=1)
    state = {**schedule.state_dict(), "last_lr": 1e39}
    with pytest.raises(pp.StateDictError, match="overflows float32"):
        schedule.load_state_dict(state)
    assert opt.lr == 0.1


def test_torch_fit_with_an_overflowing_rate_is_refused_before_anything_runs():
    pytest.importorskip("torch")
    model = _model("torch:cpu")
    before = [to_numpy(p.data) for p in model.parameters()]
    for make in (lambda ps: pp.SGD(ps, lr=1e39), lambda ps: pp.Adam(ps, lr=1e38)):
        with pytest.raises(ValueError, match="overflows float32"):
            make(model.parameters())
    for p, b in zip(model.parameters(), before, strict=True):
        np.testing.assert_array_equal(to_numpy(p.data), b)


# ---- 3. fit never leaves parameters that are not finite -----------------------------------


def _data(n=8):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(n, 2)) * 10.0
    return X, np.arange(n) % 2


def _finite(model):
    return all(np.all(np.isfinite(to_numpy(p.data))) for p in model.parameters())


FAR = np.full((8, 2), 100.0)  # MSE targets far from the outputs: gradients of about 100


@pytest.mark.parametrize("clip", [None, 1e30])
@pytest.mark.parametrize("batch_size", [8, 4])
def test_a_step_that_overflows_the_parameters_is_undone(backend, clip, batch_size):
    """lr=1e38 fits float32, but lr * gradient does not: the first step makes the
    parameters infinite.  With one batch only the check after the epoch's last step sees
    it; with two, the next batch's check."""
    model = _model(backend)
    before = [to_numpy(p.data) for p in model.parameters()]
    opt = pp.SGD(model.parameters(), lr=1e38)
    X, _ = _data()
    with pytest.raises(pp.TrainingDivergedError) as info:
        pp.fit(model, pp.MSELoss(), opt, X, FAR, epochs=3, batch_size=batch_size,
               shuffle=False, clip_grad_norm=clip, verbose=0)  # fmt: skip
    err = info.value
    assert (err.epoch, err.batch) == (1, 1)
    assert err.quantity.startswith("parameter")
    assert str(err).startswith("training diverged at epoch 1 of 3, batch 1 of ")
    assert "not finite after the optimizer step of this batch" in str(err)
    assert isinstance(err, FloatingPointError)
    for p, b in zip(model.parameters(), before, strict=True):  # as before the bad step
        np.testing.assert_array_equal(to_numpy(p.data), b)
        assert p.grad is None


class _RaiseRateAt(pp.Callback):
    """Set the optimizer's lr to ``lr`` after the step of batch ``batch`` of epoch
    ``epoch`` (from 0); ``kept`` holds the parameters after each step."""

    def __init__(self, lr, epoch, batch):
        self.lr, self.at, self.epoch, self.kept = lr, (epoch, batch), 0, {}

    def on_epoch_begin(self, epoch, logs):
        self.epoch = epoch

    def on_batch_end(self, batch, logs):
        model = self.state.model
        self.kept[self.epoch, batch] = [to_numpy(p.data) for p in model.parameters()]
        if (self.epoch, batch) == self.at:
            self.state.optimizer.lr = self.lr


@pytest.mark.parametrize(
    ("batch_size", "at", "caught"),
    [(4, (0, 0), (1, 2)), (4, (1, 0), (2, 2)), (8, (0, 0), (2, 1))],
    ids=["next batch", "next batch, epoch 2", "end of the next epoch"],
)
def test_a_later_step_is_undone_to_the_step_before(backend64, batch_size, at, caught):
    """float64 and lr=1e308 from a given step on: the parameters go back to those of the
    step before the bad one."""
    model = _model(backend64, "float64")
    opt = pp.SGD(model.parameters(), lr=0.01, momentum=0.9)
    raise_rate = _RaiseRateAt(1e308, *at)
    X, _ = _data()
    with pytest.raises(pp.TrainingDivergedError) as info:
        pp.fit(model, pp.MSELoss(), opt, X, FAR, epochs=3, batch_size=batch_size, shuffle=False,
               callbacks=[raise_rate], verbose=0)  # fmt: skip
    err = info.value
    assert (err.epoch, err.batch) == caught
    assert _finite(model)
    last_good = raise_rate.kept[at]  # after the step of the batch that raised the rate
    for p, b in zip(model.parameters(), last_good, strict=True):
        np.testing.assert_array_equal(to_numpy(p.data), b)


def test_adam_without_eps_on_a_zero_gradient_is_caught(backend):
    """0 / 0 = NaN: finite gradients, a NaN step."""
    model = _model(backend)
    model.parameters()[0].data = backend.from_host(np.zeros((3, 2)), "float32")
    opt = pp.Adam(model.parameters(), lr=0.1, eps=0.0)
    X, y = _data()
    X[:, 0] = 0.0  # the first column's weights get a zero gradient
    with pytest.raises(pp.TrainingDivergedError, match="not finite after the optimizer step"):
        pp.fit(model, pp.CrossEntropyLoss(), opt, X, y, epochs=1, batch_size=8, verbose=0)
    assert _finite(model)


def test_fit_refuses_a_model_that_is_not_finite_before_training(backend):
    model = _model(backend)
    host = to_numpy(model.parameters()[1].data)
    host[0] = np.nan
    model.parameters()[1].data = backend.from_host(host, "float32")
    opt = pp.SGD(model.parameters(), lr=0.1, momentum=0.9)
    before = _snapshot(model, opt)
    X, y = _data()
    with pytest.raises(ValueError, match=r"model has parameters that are not finite.*'0\.bias'"):
        pp.fit(model, pp.CrossEntropyLoss(), opt, X, y, verbose=0)
    assert _snapshot(model, opt)[1:] == before[1:]
    np.testing.assert_array_equal(to_numpy(model.parameters()[0].data).tobytes(), before[0][0])


@pytest.mark.parametrize(
    ("dtype", "optimizer", "message"),
    [
        ("float32", "adam", "lr=1e+308 overflows float32"),
        ("float64", "adam", "Adam computes lr / (1 - betas[0]) = inf"),
        ("float64", "sgd", "training diverged at epoch 1 of 1, batch "),
    ],
)
def test_the_command_line_reports_a_diverged_run_instead_of_a_table_of_nan(
    dtype, optimizer, message
):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(["train", "--dataset", "disk", "--samples", "200", "--epochs", "1",
                       "--lr", "1e308", "--dtype", dtype, "--optimizer", optimizer,
                       "--backend", "numpy"])  # fmt: skip
    assert status != 0
    assert "nan" not in out.getvalue()
    assert message in err.getvalue()


# ---- 4. torch's autograd never reaches portprop's arrays ----------------------------------


def _no_history(*tensors):
    for t in tensors:
        assert t.grad_fn is None
        assert not t.requires_grad


def test_fit_predict_and_evaluate_with_data_that_require_grad_leave_no_history():
    torch = pytest.importorskip("torch")
    model = _model("torch:cpu")
    X, y = _data()
    Xt = torch.tensor(X, dtype=torch.float32, requires_grad=True)
    targets = torch.tensor(np.eye(2)[y], dtype=torch.float32, requires_grad=True)
    for opt in (pp.SGD(model.parameters(), lr=0.1, momentum=0.9), pp.Adam(model.parameters())):
        pp.fit(model, pp.MSELoss(), opt, Xt, targets, epochs=2, batch_size=4, verbose=0)
        _no_history(*(p.data for p in model.parameters()))
        _no_history(*(s[k] for s in opt.state for k in opt._BUFFERS if k in s))
    _no_history(pp.predict(model, Xt))
    pp.evaluate(model, pp.MSELoss(), Xt, targets)
    _no_history(model.forward(Xt))  # outside fit too
    loss = pp.MSELoss()
    _no_history(loss.forward(model.forward(Xt), targets), loss.backward())


def test_a_step_on_gradients_with_history_leaves_no_history():
    torch = pytest.importorskip("torch")
    model = _model("torch:cpu")
    opt = pp.SGD(model.parameters(), lr=0.1)
    source = torch.ones(1, requires_grad=True)
    for p in model.parameters():
        p.grad = torch.ones(p.shape) * source  # a gradient with autograd history
    opt.step()
    _no_history(*(p.data for p in model.parameters()))


def test_load_state_dict_and_asarray_detach_tensors_that_require_grad():
    torch = pytest.importorskip("torch")
    model = _model("torch:cpu")
    state = {k: v.clone().requires_grad_() for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    _no_history(*(p.data for p in model.parameters()))
    opt = pp.SGD(model.parameters(), lr=0.1, momentum=0.9)
    _grads(model)
    opt.step()
    saved = opt.state_dict()
    for s in saved["state"]:
        s["momentum_buffer"] = s["momentum_buffer"].clone().requires_grad_()
    opt.load_state_dict(saved)
    _no_history(*(s["momentum_buffer"] for s in opt.state))
    backend = pp.get_backend(backend="torch:cpu")
    t = torch.ones(3, requires_grad=True)
    for copy in (None, True):
        _no_history(backend.asarray(t, copy=copy), backend.asarray(t, dtype="float64", copy=copy))


# ---- 5. torch's unsigned labels, and the argument named in asarray's errors ---------------


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32", "uint64"])
def test_unsigned_labels_train_on_every_backend(backend, dtype):
    model = _model(backend)
    X, y = _data()
    opt = pp.SGD(model.parameters(), lr=0.1)
    history = pp.fit(model, pp.CrossEntropyLoss(), opt, X, y.astype(dtype), verbose=0,
                     validation_data=(X, y.astype(dtype)), metrics=["accuracy"])  # fmt: skip
    assert math.isfinite(history.history["val_loss"][-1])
    assert 0.0 <= history.history["val_accuracy"][-1] <= 1.0
    assert pp.evaluate(model, pp.CrossEntropyLoss(), X, y.astype(dtype))["loss"] == pytest.approx(
        history.history["val_loss"][-1], rel=1e-5
    )


@pytest.mark.parametrize("dtype", ["uint16", "uint32", "uint64"])
def test_torch_unsigned_label_tensors_become_int64(dtype):
    torch = pytest.importorskip("torch")
    model = _model("torch:cpu")
    X, y = _data()
    labels = torch.tensor(y.astype(np.int64)).to(getattr(torch, dtype))
    pp.fit(model, pp.CrossEntropyLoss(), pp.SGD(model.parameters(), lr=0.1), X, labels, verbose=0)
    with pytest.raises(ValueError, match=r"y holds class labels from 0 to 7.*2 outputs"):
        pp.fit(model, pp.CrossEntropyLoss(), pp.SGD(model.parameters(), lr=0.1), X,
               torch.arange(8).to(getattr(torch, dtype)), verbose=0)  # fmt: skip
    backend = pp.get_backend(backend="torch:cpu")
    converted = backend.asarray(labels)
    assert converted.dtype == torch.int64
    huge = torch.tensor(np.array([1, 2**63], dtype=np.uint64))
    with pytest.raises(
        pp.DtypeUnsupportedError, match=r"^labels holds uint64 values up to 9223372036854775808"
    ):
        backend.asarray(huge, argname="labels")


def test_label_errors_name_y_and_validation_data():
    pytest.importorskip("array_api_strict")
    model = _model("array_api_strict")
    X, y = _data()
    opt = pp.SGD(model.parameters(), lr=0.1)
    with pytest.raises(pp.DtypeUnsupportedError, match=r"^y has dtype float16"):
        pp.fit(model, pp.CrossEntropyLoss(), opt, X, y.astype(np.float16), verbose=0)
    with pytest.raises(pp.DtypeUnsupportedError, match=r"^validation_data\[1\] has dtype float16"):
        pp.fit(model, pp.CrossEntropyLoss(), opt, X, y, verbose=0,
               validation_data=(X, y.astype(np.float16)))  # fmt: skip
    backend = pp.get_backend(backend="array_api_strict")
    with pytest.raises(pp.DtypeUnsupportedError, match=r"^target has dtype float16"):
        backend.asarray(np.ones(2, dtype=np.float16), argname="target")
    with pytest.raises(pp.DtypeUnsupportedError, match=r"^x has dtype float16"):
        backend.asarray(np.ones(2, dtype=np.float16))


# ---- 6. why torch:cuda is not usable ------------------------------------------------------


CPU_ONLY = (
    r"torch sees no CUDA device; torch \S+ is a CPU-only build\. Install a CUDA build of torch "
    r".*pip install torch --index-url https://download\.pytorch\.org/whl/"
)
HIDDEN = (
    r"torch sees no CUDA device; torch \S+ is a CUDA 12\.4 build, but no CUDA device is "
    r"visible: check .*driver.*nvidia-smi.*CUDA_VISIBLE_DEVICES \(set to ''\)"
)


@pytest.mark.parametrize(
    ("cuda", "hip", "visible", "expected"),
    [
        (None, None, None, CPU_ONLY),
        ("12.4", None, "", HIDDEN),
        ("12.4", None, None, r"CUDA_VISIBLE_DEVICES \(unset\)$"),
        (None, "6.2", None, r"is a ROCm build \(HIP 6\.2\) but sees no AMD GPU"),
    ],
    ids=["cpu-only build", "cuda build, hidden", "cuda build, no gpu", "rocm build"],
)
def test_the_torch_cuda_message_says_which_install_it_is(monkeypatch, cuda, hip, visible, expected):
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", cuda)
    monkeypatch.setattr(torch.version, "hip", hip, raising=False)
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    library = importlib.import_module("portprop.backend.torch")
    with pytest.raises(pp.BackendUnavailableError, match=expected) as info:
        library.from_device("cuda")
    text = str(info.value)
    assert text.startswith("backend 'torch:cuda' is not usable: torch sees no CUDA device; ")
    assert ("CPU-only" in text) == (cuda is None and hip is None)
