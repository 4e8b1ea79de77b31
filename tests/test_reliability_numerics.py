"""Reliability, "Numerics": cases 17 to 20 of the reliability checklist.

Each test is named after its case (``test_case17_...``) so that the documentation can
point each case at its test, and runs on every backend, in float32 and float64.

- 17: a NaN or infinite loss mid-training: the error names the epoch and batch, and the
  parameters and the optimizer's state stay as they were before that batch's step;
- 18: logits of +-1e4 in cross-entropy and BCE: the loss and its gradient are finite and
  agree with exact references computed with Python floats;
- 19: probabilities of exactly 0 or 1 (targets, saturated sigmoids, softmax underflow,
  ``predict_proba``): no NaN anywhere, finite gradients;
- 20: exploding gradients with clipping on: the norm is computed without overflow (even
  float32 gradients of 1e30), and each step moves the parameters by at most
  ``lr * max_norm``.
"""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
from conftest import to_numpy

import portprop as pp
from portprop import functional as F

DTYPES = ("float32", "float64")
# Relative tolerances against the float64 references: a few units in the last place.
RTOL = {"float32": 2e-6, "float64": 1e-13}


@pytest.fixture(params=DTYPES)
def dtype(request, backend):
    """float32 and float64 on each backend (skipped where the device lacks float64)."""
    if not backend.supports(request.param):
        pytest.skip(f"{backend.name} has no {request.param} here")
    return request.param


def _host_bytes(x):
    host = to_numpy(x)
    return (pp.backend_of(x).name, host.dtype.str, host.shape, host.tobytes())


def _snapshot(model, opt):
    params = {name: _host_bytes(p.data) for name, p in model.named_parameters()}
    state = opt.state_dict()
    saved = [
        {k: v if k == "step" else _host_bytes(v) for k, v in s.items()} for s in state["state"]
    ]
    return params, saved


def _array(backend, values, dtype):
    return backend.asarray(np.asarray(values, dtype=dtype))


def _assert_finite(*arrays):
    for a in arrays:
        assert np.all(np.isfinite(to_numpy(a))), to_numpy(a)


# ---- 17. A NaN or infinite loss mid-training -----------------------------------------------


class _PoisonAt(pp.Callback):
    """After batch ``batch`` of epoch ``epoch`` (both from 0), write ``value`` into the
    first bias of the last layer, then snapshot the model and the optimizer: the next
    batch's loss (or that bias) is then not finite, and fit must stop before its step.
    ``previous`` keeps the parameters of the batch before."""

    def __init__(self, value, epoch=1, batch=1):
        self.value, self.at = value, (epoch, batch)
        self.epoch = -1
        self.steps = 0
        self.snapshot = None

    def on_epoch_begin(self, epoch, logs):
        self.epoch = epoch

    def on_batch_end(self, batch, logs):
        self.steps += 1
        model, opt = self.state.model, self.state.optimizer
        if (self.epoch, batch) != self.at:
            # the parameters this batch's step left: the last ones fit finds finite
            self.previous = {name: _host_bytes(p.data) for name, p in model.named_parameters()}
            return
        bias = model[-1].bias
        host = to_numpy(bias.data)
        host[0] = self.value
        bias.data = model.backend.from_host(host, model.dtype)
        self.snapshot = _snapshot(model, opt)


def _poison_value(kind, dtype):
    if kind == "nan":
        return math.nan
    if kind == "inf":
        return math.inf
    return 4.0 * math.sqrt(float(np.finfo(dtype).max))  # finite; its square overflows


# no RuntimeWarning from NumPy: the suite turns warnings into errors
@pytest.mark.parametrize(
    ("loss_name", "kind", "clip"),
    [
        ("MSELoss", "nan", None),
        ("MSELoss", "overflow", None),
        ("MSELoss", "overflow", 1.0),
        ("CrossEntropyLoss", "nan", None),
        ("BCEWithLogitsLoss", "inf", 1.0),
    ],
)
def test_case17_non_finite_loss_mid_training(backend, dtype, loss_name, kind, clip):
    rng = np.random.default_rng(17)
    X = rng.normal(size=(24, 2))
    labels = np.arange(24) % 3
    y = labels if loss_name == "CrossEntropyLoss" else np.eye(3)[labels]
    model = pp.Sequential(
        pp.Linear(2, 5, seed=1, backend=backend, dtype=dtype),
        pp.Tanh(backend=backend, dtype=dtype),
        pp.Linear(5, 3, seed=2, backend=backend, dtype=dtype),
    )
    opt = pp.SGD(model.parameters(), lr=0.05, momentum=0.9)
    poison = _PoisonAt(_poison_value(kind, dtype))
    with pytest.raises(pp.TrainingDivergedError) as info:
        pp.fit(model, getattr(pp, loss_name)(), opt, X, y, epochs=2, batch_size=4, shuffle=False,
               clip_grad_norm=clip, callbacks=[poison], verbose=0)  # fmt: skip
    err = info.value
    assert isinstance(err, FloatingPointError)
    text = str(err)
    assert poison.steps == 6 + 2  # epoch 1, then batches 1 and 2 of epoch 2
    if kind == "overflow":
        # a finite bias whose loss overflows: caught before the step of the next batch
        assert (err.epoch, err.batch, err.quantity) == (2, 3, "loss")
        assert text.startswith(
            "training diverged at epoch 2 of 2, batch 3 of 6 (both counted from 1)"
        )
        assert "the loss is inf" in text
        # the parameters and the optimizer are as they were before the step of that batch
        assert _snapshot(model, opt) == poison.snapshot
    else:
        # fit never leaves a parameter that is not finite: found by the next batch's
        # check (a step, or the callbacks after it, put it there), and put back to its
        # value from before the step of batch 2
        assert (err.epoch, err.batch, err.quantity) == (2, 2, "parameter '2.bias'")
        assert text.startswith(
            "training diverged at epoch 2 of 2, batch 2 of 6 (both counted from 1): "
            "parameter '2.bias' is not finite after the optimizer step of this batch. "
            "The parameters were put back to their values from before that step"
        )
        assert _snapshot(model, opt)[0] == poison.previous
    for p in model.parameters():
        _assert_finite(p.data)  # the last finite state


# ---- 18. Logits of +-1e4 in cross-entropy and BCE -------------------------------------------

CE_LOGITS = [
    [1e4, -1e4, 0.0],
    [-1e4, 1e4, 0.0],
    [1e4, 1e4, 1e4],
    [-1e4, -1e4, -1e4],
    [1e4, 1e4 - 1.0, -1e4],
    [0.0, -1e4, 1e4],
]
CE_LABELS = [1, 1, 2, 0, 1, 0]


def _ce_reference(logits, labels, scale):
    """Loss and gradient of softmax cross-entropy, in Python floats: per row,
    (m - z_y) + log sum exp(z - m), and scale * (softmax - onehot)."""
    loss, grad = [], []
    for z, label in zip(logits, labels, strict=True):
        m = max(z)
        total = math.fsum(math.exp(v - m) for v in z)
        loss.append((m - z[label]) + math.log(total))
        grad.append([scale * (math.exp(v - m) / total - (k == label)) for k, v in enumerate(z)])
    return scale * math.fsum(loss), np.array(grad)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_case18_cross_entropy_at_logits_of_1e4(backend, dtype, reduction):
    host = np.array(CE_LOGITS, dtype=dtype)
    logits = host.astype(float).tolist()  # the reference sees the values the model sees
    scale = 1.0 / len(logits) if reduction == "mean" else 1.0
    loss = pp.CrossEntropyLoss(reduction=reduction)
    value = loss.forward(backend.asarray(host), backend.asarray(np.array(CE_LABELS)))
    grad = loss.backward()
    _assert_finite(value, grad)
    expected_value, expected_grad = _ce_reference(logits, CE_LABELS, scale)
    assert float(value) == pytest.approx(expected_value, rel=RTOL[dtype])
    np.testing.assert_allclose(to_numpy(grad), expected_grad, rtol=10 * RTOL[dtype],
                               atol=scale * RTOL[dtype])  # fmt: skip
    # each row alone: a loss of log 3 beside logits of 1e4 keeps its digits
    for row, label in zip(logits, CE_LABELS, strict=True):
        one = pp.CrossEntropyLoss(reduction=reduction)
        value = one.forward(_array(backend, [row], dtype), backend.asarray(np.array([label])))
        expected_value, expected_grad = _ce_reference([row], [label], 1.0)
        assert float(value) == pytest.approx(expected_value, rel=RTOL[dtype]), row
        np.testing.assert_allclose(to_numpy(one.backward()), expected_grad,
                                   rtol=10 * RTOL[dtype], atol=RTOL[dtype])  # fmt: skip


BCE_LOGITS = [[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4 - 1.0], [1e4, -1e4, 100.0]]
BCE_TARGETS = [[1.0, 0.0, 0.5], [1.0, 0.9999, 0.0], [0.25, 0.75, 1.0]]


def _sigmoid(z):
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


def _bce_term(z, t):
    """max(z, 0) - z t + log(1 + exp(-|z|)), without cancellation, in Python floats."""
    return (z * (1.0 - t) if z > 0 else -z * t) + math.log1p(math.exp(-abs(z)))


def test_case18_bce_with_logits_at_logits_of_1e4(backend, dtype):
    z_host = np.array(BCE_LOGITS, dtype=dtype)
    t_host = np.array(BCE_TARGETS, dtype=dtype)
    for reduction in ("mean", "sum"):
        scale = 1.0 / z_host.size if reduction == "mean" else 1.0
        loss = pp.BCEWithLogitsLoss(reduction=reduction)
        value = loss.forward(backend.asarray(z_host), backend.asarray(t_host))
        grad = loss.backward()
        _assert_finite(value, grad)
        pairs = list(zip(z_host.astype(float).ravel(), t_host.astype(float).ravel(), strict=True))
        expected = scale * math.fsum(_bce_term(z, t) for z, t in pairs)
        assert float(value) == pytest.approx(expected, rel=RTOL[dtype])
        expected_grad = np.array([scale * (_sigmoid(z) - t) for z, t in pairs])
        np.testing.assert_allclose(to_numpy(grad).ravel(), expected_grad,
                                   rtol=10 * RTOL[dtype], atol=scale * RTOL[dtype])  # fmt: skip
    # element by element: 1e4 * (1 - 0.9999) keeps its digits beside logits of 1e4
    for z, t in zip(z_host.astype(float).ravel(), t_host.astype(float).ravel(), strict=True):
        one = pp.BCEWithLogitsLoss(reduction="sum")
        value = one.forward(_array(backend, [[z]], dtype), _array(backend, [[t]], dtype))
        assert float(value) == pytest.approx(_bce_term(z, t), rel=RTOL[dtype], abs=1e-30), (z, t)


# ---- 19. A probability of exactly 0 or 1 ----------------------------------------------------


def test_case19_bce_with_targets_of_exactly_zero_and_one(backend, dtype):
    z = [-1e4, -200.0, -100.0, -20.0, 0.0, 20.0, 100.0, 200.0, 1e4]
    logits = np.array([z, z], dtype=dtype)
    targets = np.array([[0.0] * len(z), [1.0] * len(z)], dtype=dtype)
    loss = pp.BCEWithLogitsLoss(reduction="sum")
    value = loss.forward(backend.asarray(logits), backend.asarray(targets))
    grad = loss.backward()
    _assert_finite(value, grad)
    pairs = [
        (a, t)
        for row, trow in zip(logits, targets, strict=True)
        for a, t in zip(row, trow, strict=True)
    ]
    expected = math.fsum(_bce_term(float(a), float(t)) for a, t in pairs)
    assert float(value) == pytest.approx(expected, rel=RTOL[dtype])
    np.testing.assert_allclose(
        to_numpy(grad).ravel(), [_sigmoid(float(a)) - float(t) for a, t in pairs],
        rtol=RTOL[dtype], atol=RTOL[dtype],
    )  # fmt: skip


def test_case19_sigmoid_saturating_to_exactly_zero_and_one(backend, dtype):
    big = {"float32": 200.0, "float64": 800.0}[dtype]  # exp(-big) underflows to 0
    layer = pp.Sigmoid(backend=backend, dtype=dtype)
    x = _array(backend, [[-big, -100.0, 0.0, 100.0, big]], dtype)
    y = layer.forward(x)
    host = to_numpy(y)
    assert host[0, 0] == 0.0
    assert host[0, -1] == 1.0
    np.testing.assert_allclose(host[0], [_sigmoid(v) for v in (-big, -100.0, 0.0, 100.0, big)],
                               rtol=RTOL[dtype], atol=np.finfo(dtype).tiny)  # fmt: skip
    dx = layer.backward(_array(backend, [[1.0] * 5], dtype))
    _assert_finite(dx)
    assert to_numpy(dx)[0, 0] == 0.0
    assert to_numpy(dx)[0, -1] == 0.0
    assert to_numpy(dx)[0, 2] == 0.25

    # MSE on sigmoid outputs of exactly 0 and 1, some right and some wrong: finite
    # loss, finite gradients, a finite step
    model = pp.Sequential(pp.Linear(1, 4, seed=0, backend=backend, dtype=dtype),
                          pp.Sigmoid(backend=backend, dtype=dtype))  # fmt: skip
    model.load_state_dict({"0.weight": np.array([[big], [-big], [big], [-big]]),
                           "0.bias": np.zeros(4)})  # fmt: skip
    X = _array(backend, [[1.0], [-1.0]], dtype)
    out = model.forward(X)
    assert set(np.unique(to_numpy(out))) == {0.0, 1.0}
    target = _array(backend, [[1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 0.0, 1.0]], dtype)
    loss = pp.MSELoss()
    value = loss.forward(out, target)
    assert float(value) == 2.0 / 8.0  # two of the eight outputs are wrong, by exactly 1
    model.zero_grad()
    _assert_finite(model.backward(loss.backward()))
    opt = pp.SGD(model.parameters(), lr=0.1)
    opt.step()
    for p in model.parameters():
        _assert_finite(p.grad, p.data)


def test_case19_softmax_probabilities_of_exactly_zero(backend, dtype):
    logits = _array(backend, [[0.0, -1e4], [1e4, 0.0], [-1e4, 1e4]], dtype)
    probs = to_numpy(F.softmax(backend.xp, logits))
    np.testing.assert_array_equal(probs, [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    loss = pp.CrossEntropyLoss(reduction="sum")
    value = loss.forward(logits, backend.asarray(np.array([1, 1, 0])))  # the 0-probability class
    assert float(value) == 4e4  # 1e4 + 1e4 + 2e4
    np.testing.assert_array_equal(
        to_numpy(loss.backward()), [[1.0, -1.0], [1.0, -1.0], [-1.0, 1.0]]
    )


@pytest.mark.skipif(importlib.util.find_spec("sklearn") is None, reason="needs scikit-learn")
@pytest.mark.filterwarnings("ignore:Stochastic Optimizer. Maximum iterations")
def test_case19_predict_proba_with_saturated_outputs(backend):
    from portprop.sklearn import MLPClassifier

    rng = np.random.default_rng(19)
    X = rng.normal(size=(16, 2))
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0).astype(int)
    clf = MLPClassifier(hidden_layer_sizes=(8,), activation="relu", max_iter=2, batch_size=16,
                        random_state=0, backend=backend)  # fmt: skip
    clf.fit(X, y)
    proba = clf.predict_proba(X * 1e6)  # logits of ~1e6 apart: probabilities of 0 and 1
    assert not np.any(np.isnan(proba))
    assert np.any(proba == 0.0)
    assert np.any(proba == 1.0)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    log_proba = clf.predict_log_proba(X * 1e6)
    assert not np.any(np.isnan(log_proba))
    np.testing.assert_array_equal(clf.predict(X * 1e6), clf.classes_[np.argmax(proba, axis=1)])


# ---- 20. Exploding gradients with clipping on -----------------------------------------------

# Inputs of this scale give gradients of about its square: 1e30 in float32 (whose squares
# overflow float32) and 1e280 in float64 (whose squares overflow float64).
SCALE = {"float32": 1e15, "float64": 1e140}


def _norm(arrays, order):
    """The norm of host arrays taken together, in float64, without overflow."""
    flat = np.concatenate([np.abs(np.asarray(a, dtype=np.float64)).ravel() for a in arrays])
    top = flat.max()
    if order == math.inf or top == 0.0:
        return float(top)
    return float(top * np.sum((flat / top) ** order) ** (1.0 / order))


def _exploding(backend, dtype):
    """A linear model, MSE, and inputs scaled so that the gradients are huge but finite."""
    rng = np.random.default_rng(20)
    model = pp.Sequential(pp.Linear(3, 2, seed=3, backend=backend, dtype=dtype))
    X = rng.normal(size=(4, 3)) * SCALE[dtype]
    return model, backend.asarray(X.astype(dtype)), backend.asarray(np.zeros((4, 2), dtype=dtype))


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf])
def test_case20_clipping_bounds_each_step_of_exploding_gradients(backend, dtype, norm_type):
    model, X, target = _exploding(backend, dtype)
    loss = pp.MSELoss()
    _assert_finite(loss.forward(model.forward(X), target))
    model.backward(loss.backward())
    grads = [to_numpy(p.grad) for p in model.parameters()]
    _assert_finite(*grads)
    expected = _norm(grads, norm_type)
    assert expected > SCALE[dtype] ** 2 / 100  # the gradients do explode
    total = pp.clip_grad_norm_(model.parameters(), 1.0, norm_type=norm_type)
    assert total == pytest.approx(expected, rel=10 * RTOL[dtype])
    clipped = [to_numpy(p.grad) for p in model.parameters()]
    assert _norm(clipped, norm_type) == pytest.approx(1.0, rel=1e-5)
    before = [to_numpy(p.data).astype(np.float64) for p in model.parameters()]
    pp.SGD(model.parameters(), lr=0.1).step()
    moved = [to_numpy(p.data) - b for p, b in zip(model.parameters(), before, strict=True)]
    assert _norm(moved, norm_type) <= 0.1 * 1.0 * (1 + 1e-4)


def test_case20_fit_with_clipping_keeps_every_step_bounded(backend, dtype):
    class Steps(pp.Callback):
        def on_train_begin(self, logs):
            self.seen = [[to_numpy(p.data) for p in self.state.model.parameters()]]

        def on_batch_end(self, batch, logs):
            self.seen.append([to_numpy(p.data) for p in self.state.model.parameters()])

    rng = np.random.default_rng(21)
    X = rng.normal(size=(16, 3)) * SCALE[dtype]
    model = pp.Sequential(pp.Linear(3, 2, seed=3, backend=backend, dtype=dtype))
    steps = Steps()
    history = pp.fit(model, pp.MSELoss(), pp.SGD(model.parameters(), lr=0.1), X, np.zeros((16, 2)),
                     epochs=2, batch_size=4, shuffle=False, clip_grad_norm=1.0,
                     callbacks=[steps], verbose=0)  # fmt: skip
    assert all(math.isfinite(v) for v in history.history["loss"])
    assert len(steps.seen) == 1 + 8
    for a, b in zip(steps.seen, steps.seen[1:], strict=False):
        delta = [y.astype(np.float64) - x for x, y in zip(a, b, strict=True)]
        assert 0.0 < _norm(delta, 2.0) <= 0.1 * (1 + 1e-4)


def test_case20_tiny_gradients_keep_an_accurate_norm(backend, dtype):
    """The squares of float32 gradients of 1e-30 underflow; the norm does not."""
    tiny = {"float32": 1e-30, "float64": 1e-300}[dtype]
    host = np.array([[3.0, -4.0], [12.0, 0.0]], dtype=dtype) * np.asarray(tiny, dtype=dtype)
    p = pp.Parameter(backend.asarray(host))
    p.grad = backend.asarray(host)
    assert pp.clip_grad_norm_([p], 1.0) == pytest.approx(13.0 * tiny, rel=10 * RTOL[dtype])
    np.testing.assert_array_equal(to_numpy(p.grad), host)  # far below max_norm: unchanged


def test_case20_non_finite_gradients_still_report_a_non_finite_norm(backend, dtype):
    """As documented (and as in torch): an infinite or NaN gradient gives an infinite or
    NaN total, which fit turns into a TrainingDivergedError."""
    for bad, check in ((math.inf, math.isinf), (math.nan, math.isnan)):
        params = [pp.Parameter(_array(backend, [1.0, 2.0], dtype)) for _ in range(2)]
        params[0].grad = _array(backend, [1e3, 1.0], dtype)
        params[1].grad = _array(backend, [bad, 1.0], dtype)
        assert check(pp.clip_grad_norm_(params, 1.0))
