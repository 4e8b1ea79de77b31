"""Learning-rate schedules: torch's lr sequences, state dicts, and argument checks."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from conftest import to_numpy

import portprop as pp

BASE_LR = 0.1


def _optimizer(lr=BASE_LR):
    return pp.SGD([pp.Parameter(pp.asarray(np.zeros(2)))], lr=lr)


def _torch_optimizer(torch, lr=BASE_LR):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=lr)


def _warmup_cosine_factor(total, warmup, min_lr):
    """The usual linear-warmup-then-cosine factor (transformers'
    ``get_cosine_schedule_with_warmup``, with a floor), for torch's ``LambdaLR``."""

    def factor(n):
        if n < warmup:
            return n / warmup
        progress = min(1.0, (n - warmup) / max(1, total - warmup))
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return (min_lr + (BASE_LR - min_lr) * cosine) / BASE_LR

    return factor


# Each: portprop's schedule, and torch's equivalent, both from an optimizer.
EQUIVALENTS = {
    "StepLR": (
        lambda o: pp.StepLR(o, step_size=4, gamma=0.5),
        lambda t, o: t.optim.lr_scheduler.StepLR(o, step_size=4, gamma=0.5),
    ),
    "StepLR-default-gamma": (
        lambda o: pp.StepLR(o, step_size=7),
        lambda t, o: t.optim.lr_scheduler.StepLR(o, step_size=7),
    ),
    "ExponentialLR": (
        lambda o: pp.ExponentialLR(o, gamma=0.9),
        lambda t, o: t.optim.lr_scheduler.ExponentialLR(o, gamma=0.9),
    ),
    "CosineWithWarmup-no-warmup": (
        lambda o: pp.CosineWithWarmup(o, total_steps=30, min_lr=0.01),
        lambda t, o: t.optim.lr_scheduler.CosineAnnealingLR(o, T_max=30, eta_min=0.01),
    ),
    "CosineWithWarmup-no-warmup-short": (
        lambda o: pp.CosineWithWarmup(o, total_steps=7),
        lambda t, o: t.optim.lr_scheduler.CosineAnnealingLR(o, T_max=7),
    ),
    "CosineWithWarmup-warmup": (
        lambda o: pp.CosineWithWarmup(o, total_steps=25, warmup_steps=5, min_lr=1e-3),
        lambda t, o: t.optim.lr_scheduler.LambdaLR(o, _warmup_cosine_factor(25, 5, 1e-3)),
    ),
}


@pytest.mark.parametrize("name", list(EQUIVALENTS))
def test_matches_torch_lr_sequence(name):
    torch = pytest.importorskip("torch")
    make, make_torch = EQUIVALENTS[name]
    opt, topt = _optimizer(), _torch_optimizer(torch)
    schedule, tschedule = make(opt), make_torch(torch, topt)
    ours, theirs = [opt.lr], [topt.param_groups[0]["lr"]]
    assert schedule.get_last_lr() == opt.lr
    steps = 30 if "short" not in name else 7  # torch's cosine is periodic after T_max
    for _ in range(steps):
        topt.step()  # torch warns when its schedule steps before its optimizer
        schedule.step()
        tschedule.step()
        ours.append(opt.lr)
        theirs.append(topt.param_groups[0]["lr"])
        assert schedule.get_last_lr() == opt.lr
        assert type(opt.lr) is float
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-15)
    assert len(set(ours)) > 2  # the sequence did change


def test_cosine_with_warmup_shape():
    opt = _optimizer()
    schedule = pp.CosineWithWarmup(opt, total_steps=10, warmup_steps=4, min_lr=0.02)
    assert opt.lr == 0.0  # the warmup starts from 0
    lrs = []
    for _ in range(14):
        schedule.step()
        lrs.append(opt.lr)
    np.testing.assert_allclose(lrs[:4], [0.025, 0.05, 0.075, 0.1])
    assert all(a > b for a, b in itertools.pairwise(lrs[3:10]))  # decreasing
    assert lrs[9:] == [0.02] * 5  # stays at min_lr after total_steps


PLATEAU_OPTIONS = [
    {"patience": 2},
    {"patience": 1, "factor": 0.5, "cooldown": 2, "threshold": 0.05},
    {"patience": 0, "factor": 0.3, "min_lr": 0.004},
    {"mode": "max", "patience": 2, "factor": 0.5, "cooldown": 1},
]


def _metrics(mode):
    """30 values that improve, stall, improve a little (within the threshold), get worse."""
    values = [1.0, 0.8, 0.7, 0.7, 0.71, 0.69, 0.6999, 0.5, 0.5, 0.5]
    values += [0.49, 0.499, 0.6, 0.7, 0.4, 0.4, 0.39, float("nan"), 0.3, 0.3]
    values += [0.3, 0.31, 0.2, 0.2, 0.21, 0.22, 0.23, 0.1, 0.1, 0.1]
    return values if mode == "min" else [2.0 - v for v in values]


@pytest.mark.parametrize(
    "options", PLATEAU_OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items())
)
def test_reduce_lr_on_plateau_matches_torch(options):
    torch = pytest.importorskip("torch")
    opt, topt = _optimizer(), _torch_optimizer(torch)
    schedule = pp.ReduceLROnPlateau(opt, **options)
    tschedule = torch.optim.lr_scheduler.ReduceLROnPlateau(topt, **options)
    ours, theirs = [], []
    for value in _metrics(options.get("mode", "min")):
        topt.step()
        schedule.step(value)
        tschedule.step(value)
        ours.append(opt.lr)
        theirs.append(topt.param_groups[0]["lr"])
        assert schedule.get_last_lr() == opt.lr
        assert schedule.num_bad_epochs == tschedule.num_bad_epochs
        assert schedule.cooldown_counter == tschedule.cooldown_counter
        assert schedule.best == tschedule.best
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)
    assert len(set(ours)) >= 3  # it reduced at least twice


def test_reduce_lr_on_plateau_stops_at_min_lr():
    opt = _optimizer()
    schedule = pp.ReduceLROnPlateau(opt, patience=0, factor=0.5, min_lr=0.03)
    for _ in range(6):
        schedule.step(1.0)
    assert opt.lr == 0.03


def test_reduce_lr_on_plateau_ignores_reductions_below_1e_8():
    torch = pytest.importorskip("torch")
    opt, topt = _optimizer(lr=3e-8), _torch_optimizer(torch, lr=3e-8)
    schedule = pp.ReduceLROnPlateau(opt, patience=0, factor=0.5)
    tschedule = torch.optim.lr_scheduler.ReduceLROnPlateau(topt, patience=0, factor=0.5)
    for _ in range(4):
        topt.step()
        schedule.step(1.0)
        tschedule.step(1.0)
        assert opt.lr == topt.param_groups[0]["lr"]
    # 3e-8 -> 1.5e-8, then 1.5e-8 -> 0.75e-8 is a change of 7.5e-9 < 1e-8: ignored
    assert opt.lr == 1.5e-8


def _plateau_fit(backend, schedule_kw, **fit_kw):
    """A tiny classifier trained 3 epochs by fit with a ReduceLROnPlateau that records
    the values it is stepped with."""

    class Recording(pp.ReduceLROnPlateau):
        seen: list[float]

        def step(self, metric=None):
            self.seen = [*getattr(self, "seen", []), float(metric)]
            super().step(metric)

    rng = np.random.default_rng(3)
    X = rng.normal(size=(24, 2))
    y = (X[:, 0] > 0).astype(np.int64)
    pp.manual_seed(0)
    model = pp.Sequential(pp.Linear(2, 4, backend=backend), pp.Tanh(backend=backend),
                          pp.Linear(4, 2, backend=backend))  # fmt: skip
    opt = pp.SGD(model.parameters(), lr=0.1)
    schedule = Recording(opt, **schedule_kw)
    history = pp.fit(model, pp.CrossEntropyLoss(), opt, X, y, epochs=3, batch_size=8,
                     schedule=schedule, verbose=0, **fit_kw)  # fmt: skip
    return model, opt, schedule, history


def test_reduce_lr_on_plateau_monitor_picks_what_fit_steps_it_with(backend):
    # the default: val_loss with validation data, else loss
    assert pp.ReduceLROnPlateau(_optimizer()).monitor is None
    _, _, schedule, history = _plateau_fit(backend, {}, validation_split=0.25)
    assert schedule.seen == history.history["val_loss"]
    # an explicit key wins, even with validation data
    _, _, schedule, history = _plateau_fit(backend, {"monitor": "loss"}, validation_split=0.25)
    assert schedule.seen == history.history["loss"]
    assert schedule.seen != history.history["val_loss"]
    _, _, schedule, history = _plateau_fit(
        backend, {"monitor": "val_accuracy", "mode": "max"},
        validation_split=0.25, metrics=["accuracy"],
    )  # fmt: skip
    assert schedule.seen == history.history["val_accuracy"]


def test_reduce_lr_on_plateau_monitor_that_fit_does_not_log_is_refused(backend):
    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(16, 2)), np.arange(16) % 2
    model = pp.Sequential(pp.Linear(2, 2, seed=0, backend=backend))
    opt = pp.SGD(model.parameters(), lr=0.1, momentum=0.9)
    schedule = pp.ReduceLROnPlateau(opt, monitor="val_loss")
    before = [to_numpy(p.data).copy() for p in model.parameters()]
    with pytest.raises(ValueError, match=r"monitors 'val_loss', but fit logs only 'loss'"):
        pp.fit(model, pp.CrossEntropyLoss(), opt, X, y, schedule=schedule, verbose=0)
    for p, b in zip(model.parameters(), before, strict=True):
        assert to_numpy(p.data).tobytes() == b.tobytes()
    assert opt.state_dict()["state"] == [{"step": 0}] * 2
    assert schedule.step_count == 0


def test_reduce_lr_on_plateau_monitor_is_saved_and_restored():
    schedule = pp.ReduceLROnPlateau(_optimizer(), monitor="val_accuracy", mode="max")
    saved = schedule.state_dict()
    assert saved["settings"]["monitor"] == "val_accuracy"
    fresh = pp.ReduceLROnPlateau(_optimizer())
    fresh.load_state_dict(json.loads(json.dumps(saved)))
    assert fresh.monitor == "val_accuracy"
    assert fresh.mode == "max"
    assert "monitor='val_accuracy'" in repr(fresh)
    # a state saved before monitor existed loads and keeps the current monitor
    old = json.loads(json.dumps(saved))
    del old["settings"]["monitor"]
    other = pp.ReduceLROnPlateau(_optimizer(), monitor="loss")
    other.load_state_dict(old)
    assert other.monitor == "loss"
    assert other.mode == "max"
    # a bad monitor in a state dict is refused, and nothing changes
    bad = json.loads(json.dumps(saved))
    bad["settings"]["monitor"] = 7
    with pytest.raises(pp.StateDictError, match=r"monitor must be None or a log key.*got 7"):
        other.load_state_dict(bad)
    assert other.monitor == "loss"


def test_reduce_lr_on_plateau_takes_a_zero_dimensional_array(backend):
    opt = _optimizer()
    schedule = pp.ReduceLROnPlateau(opt, patience=0)
    schedule.step(backend.from_host(np.array(1.0), "float32"))
    assert schedule.best == 1.0


def test_schedules_drive_the_optimizer_as_in_torch():
    """Adam + StepLR over 12 steps: the optimizer uses each rate the schedule sets."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(3, 2))
    p = pp.Parameter(pp.asarray(w0.copy()))
    opt = pp.Adam([p], lr=0.1)
    schedule = pp.StepLR(opt, step_size=3, gamma=0.2)
    t = torch.nn.Parameter(torch.from_numpy(w0.copy()))
    topt = torch.optim.Adam([t], lr=0.1)
    tschedule = torch.optim.lr_scheduler.StepLR(topt, step_size=3, gamma=0.2)
    for _ in range(12):
        g = rng.normal(size=(3, 2))
        p.grad = pp.asarray(g)
        opt.step()
        schedule.step()
        t.grad = torch.from_numpy(g.copy())
        topt.step()
        tschedule.step()
    np.testing.assert_allclose(to_numpy(p.data), t.detach().numpy(), rtol=1e-12)


def test_when_to_step():
    assert pp.StepLR.interval == "epoch"
    assert pp.ExponentialLR.interval == "epoch"
    assert pp.ReduceLROnPlateau.interval == "epoch"
    assert pp.CosineWithWarmup.interval == "batch"
    assert pp.ReduceLROnPlateau.needs_metric
    assert not pp.StepLR.needs_metric
    with pytest.raises(TypeError, match=r"StepLR.step\(\) takes no metric \(got 0.5\)"):
        pp.StepLR(_optimizer(), step_size=2).step(0.5)
    with pytest.raises(TypeError, match=r"needs the monitored value"):
        pp.ReduceLROnPlateau(_optimizer()).step()
    with pytest.raises(TypeError, match=r"metric must be a number, got 'low'"):
        pp.ReduceLROnPlateau(_optimizer()).step("low")  # type: ignore[arg-type]


# ---- state dicts ----------------------------------------------------------------------

# Each: the schedule that is saved, and one with other settings that loads its state.
ROUND_TRIP = {
    "StepLR": (
        lambda o: pp.StepLR(o, step_size=3, gamma=0.5),
        lambda o: pp.StepLR(o, step_size=10),
    ),
    "ExponentialLR": (
        lambda o: pp.ExponentialLR(o, gamma=0.8),
        lambda o: pp.ExponentialLR(o, gamma=0.99),
    ),
    "CosineWithWarmup": (
        lambda o: pp.CosineWithWarmup(o, 30, warmup_steps=6, min_lr=0.01),
        lambda o: pp.CosineWithWarmup(o, 100),
    ),
    "ReduceLROnPlateau": (
        lambda o: pp.ReduceLROnPlateau(o, patience=1, cooldown=2, factor=0.5),
        lambda o: pp.ReduceLROnPlateau(o, mode="max"),
    ),
}


def _advance(schedule, values):
    lrs = []
    for v in values:
        if schedule.needs_metric:
            schedule.step(v)
        else:
            schedule.step()
        lrs.append(schedule.optimizer.lr)
    return lrs


@pytest.mark.parametrize("name", list(ROUND_TRIP))
def test_state_dict_round_trip_continues_identically(name):
    metrics = _metrics("min")
    opt = _optimizer()
    make, make_other = ROUND_TRIP[name]
    schedule = make(opt)
    _advance(schedule, metrics[:11])
    saved = schedule.state_dict()
    plain = json.loads(json.dumps(saved))  # plain Python values only
    assert plain == saved

    fresh_opt = _optimizer(lr=0.7)
    fresh = make_other(fresh_opt)
    fresh.load_state_dict(plain)
    assert fresh.state_dict() == saved
    assert fresh_opt.lr == opt.lr  # the optimizer gets the saved rate back
    assert _advance(fresh, metrics[11:]) == _advance(schedule, metrics[11:])


def test_state_dict_holds_the_settings_and_counters():
    opt = _optimizer()
    schedule = pp.ReduceLROnPlateau(opt, mode="max", patience=3)
    schedule.step(1.0)
    assert schedule.state_dict() == {
        "type": "ReduceLROnPlateau",
        "settings": {
            "mode": "max",
            "factor": 0.1,
            "patience": 3,
            "threshold": 1e-4,
            "cooldown": 0,
            "min_lr": 0.0,
            "monitor": None,
        },
        "base_lr": 0.1,
        "step_count": 1,
        "last_lr": 0.1,
        "best": 1.0,
        "num_bad_epochs": 0,
        "cooldown_counter": 0,
    }


def _wrong_type(sd):
    sd["type"] = "ExponentialLR"


def _missing_key(sd):
    del sd["last_lr"]


def _bad_setting(sd):
    sd["settings"]["step_size"] = 0


def _unknown_setting(sd):
    sd["settings"]["warmup"] = 3


def _bad_count(sd):
    sd["step_count"] = -2


def _bad_lr(sd):
    sd["last_lr"] = "high"


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (_wrong_type, r"saved by 'ExponentialLR', not 'StepLR'"),
        (_missing_key, r"expected the keys \['base_lr', 'last_lr', .*got \['base_lr', 's"),
        (_bad_setting, r"step_size must be an int >= 1, got 0"),
        (_unknown_setting, r"settings must have the keys \['gamma', 'step_size'\]"),
        (_bad_count, r"step_count must be an int >= 0, got -2"),
        (_bad_lr, r"last_lr must be a number, got 'high'"),
    ],
    ids=lambda v: getattr(v, "__name__", "")[1:] or None,
)
def test_load_state_dict_rejects_a_mismatch_and_changes_nothing(corrupt, message):
    source = pp.StepLR(_optimizer(), step_size=2, gamma=0.5)
    _advance(source, range(5))
    saved = source.state_dict()
    saved["settings"] = dict(saved["settings"])
    corrupt(saved)
    opt = _optimizer(lr=0.3)
    schedule = pp.StepLR(opt, step_size=3)
    schedule.step()
    before = schedule.state_dict()
    with pytest.raises(pp.StateDictError, match=message) as info:
        schedule.load_state_dict(saved)
    assert "nothing was loaded" in str(info.value)
    assert schedule.state_dict() == before
    assert opt.lr == 0.3


# ---- bad arguments --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda o: pp.StepLR(o, step_size=0), ValueError, r"step_size must be an int >= 1, got 0"),
        (lambda o: pp.StepLR(o, step_size=2.5), TypeError, r"step_size must be an int, got 2.5"),
        (lambda o: pp.StepLR(o, step_size=True), TypeError, r"step_size must be an int"),
        (lambda o: pp.StepLR(o, 2, gamma=0), ValueError, r"gamma must be a finite number > 0"),
        (lambda o: pp.ExponentialLR(o, gamma=-0.5), ValueError, r"gamma must be .*, got -0.5"),
        (lambda o: pp.ExponentialLR(o, gamma=math.nan), ValueError, r"gamma must be a finite"),
        (lambda o: pp.CosineWithWarmup(o, 0), ValueError, r"total_steps must be an int >= 1"),
        (
            lambda o: pp.CosineWithWarmup(o, 10, warmup_steps=11),
            ValueError,
            r"warmup_steps must be <= total_steps \(10\), got 11",
        ),
        (lambda o: pp.CosineWithWarmup(o, 10, warmup_steps=-1), ValueError, r"warmup_steps"),
        (lambda o: pp.CosineWithWarmup(o, 10, min_lr=-1e-3), ValueError, r"min_lr must be"),
        (lambda o: pp.ReduceLROnPlateau(o, mode="lowest"), ValueError, r"mode must be 'min' or"),
        (
            lambda o: pp.ReduceLROnPlateau(o, factor=1.0),
            ValueError,
            r"factor must be .*\(0.0, 1.0\)",
        ),
        (lambda o: pp.ReduceLROnPlateau(o, factor=0.0), ValueError, r"factor must be .*got 0.0"),
        (
            lambda o: pp.ReduceLROnPlateau(o, patience=-1),
            ValueError,
            r"patience must be an int >= 0",
        ),
        (lambda o: pp.ReduceLROnPlateau(o, threshold=-0.1), ValueError, r"threshold must be"),
        (lambda o: pp.ReduceLROnPlateau(o, cooldown=1.5), TypeError, r"cooldown must be an int"),
        (lambda o: pp.ReduceLROnPlateau(o, min_lr=-1.0), ValueError, r"min_lr must be"),
        (
            lambda o: pp.ReduceLROnPlateau(o, monitor=3),
            TypeError,
            r"monitor must be None or a log key such as 'val_loss', got 3",
        ),
        (
            lambda o: pp.ReduceLROnPlateau(o, monitor=" "),
            ValueError,
            r"monitor must be a log key such as 'val_loss' \(or None\), got ' '",
        ),
        (lambda o: pp.StepLR(o.params, 2), TypeError, r"optimizer must be a portprop Optimizer"),
    ],
)
def test_bad_arguments_are_rejected_and_leave_the_optimizer_alone(make, error, message):
    opt = _optimizer()
    with pytest.raises(error, match=message):
        make(opt)
    assert opt.lr == BASE_LR
