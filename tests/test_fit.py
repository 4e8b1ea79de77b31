"""fit, evaluate and predict: training loops on every backend, with data of any library."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from conftest import load_backend, to_numpy

import portprop as pp
from portprop.training import progress

SOURCES = ("numpy", "torch:cpu", "jax", "array_api_strict", "list")
# Most tests use N samples in batches of B (or 24, for a partial last batch), so that JAX
# compiles each operation for few shapes: its first call per shape costs ~0.1 s.
N, B = 64, 16


def _mlp(backend: pp.Backend, *, seed: int = 0, hidden: int = 8, outputs: int = 2) -> pp.Sequential:
    pp.manual_seed(seed)
    kw = {"backend": backend}
    return pp.Sequential(
        pp.Linear(2, hidden, **kw), pp.Tanh(**kw), pp.Linear(hidden, outputs, **kw)
    )  # fmt: skip


def _disk_network(backend: pp.Backend) -> pp.Sequential:
    kw = {"backend": backend}
    return pp.Sequential(
        pp.Linear(2, 25, **kw), pp.ReLU(**kw),
        pp.Linear(25, 25, **kw), pp.ReLU(**kw),
        pp.Linear(25, 25, **kw), pp.ReLU(**kw),
        pp.Linear(25, 2, **kw),
    )  # fmt: skip


def _host_disk(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    X, y = pp.datasets.make_disk(n, seed=seed, backend="numpy")
    return np.asarray(X), np.asarray(y)


def _params(model: pp.Module) -> dict[str, np.ndarray]:
    return {name: to_numpy(p.data) for name, p in model.named_parameters()}


def _assert_params_equal(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        np.testing.assert_array_equal(value, b[key], err_msg=key)


def _move(x: np.ndarray, source: str):
    """``x`` as an array of library ``source`` (or a nested list)."""
    if source == "list":
        return x.tolist()
    return load_backend(source).asarray(x)


class _Recorder(pp.Callback):
    """Keeps host copies of the parameters after every step and every epoch."""

    def __init__(self) -> None:
        self.after_batch: list[dict[str, np.ndarray]] = []
        self.after_epoch: list[dict[str, np.ndarray]] = []
        self.modes: list[bool] = []

    def on_batch_end(self, batch, logs):
        assert self.state is not None
        self.modes.append(self.state.model.training)
        self.after_batch.append(_params(self.state.model))

    def on_epoch_end(self, epoch, logs):
        assert self.state is not None
        self.after_epoch.append(_params(self.state.model))


# --------------------------------------------------------------------------------------
# Training works, on every backend, from data of any library
# --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_fit_disk_problem_reaches_under_5_percent_test_error(backend):
    X_train, y_train = _host_disk(1000, seed=1)  # NumPy data, moved once by fit
    X_test, y_test = _host_disk(1000, seed=101)
    pp.manual_seed(0)
    model = _disk_network(backend)
    lr = 0.1
    opt = pp.SGD(model.parameters(), lr=lr, momentum=0.9)

    class TenfoldDrop:  # a duck-typed schedule: the last 30% of epochs at lr / 10
        epoch = 0

        def step(self) -> None:
            self.epoch += 1
            if self.epoch == 14:
                opt.lr = lr / 10

    history = pp.fit(
        model, pp.CrossEntropyLoss(), opt, X_train, y_train,
        epochs=20, batch_size=50, seed=0, schedule=TenfoldDrop(),
        metrics=("loss", "accuracy"), verbose=0,
    )  # fmt: skip
    scores = pp.evaluate(model, pp.CrossEntropyLoss(), X_test, y_test, metrics=("accuracy",))
    print(f"{backend.name}: train loss {history.history['loss'][-1]:.3f}, test {scores}")
    assert 1.0 - scores["accuracy"] < 0.05
    assert history.history["lr"] == [0.1] * 14 + [pytest.approx(0.01)] * 6
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]
    for p in model.parameters():  # the model never left its backend nor float32
        assert backend.owns(p.data)
        assert p.data.dtype == backend.float_dtype("float32")


@pytest.mark.parametrize("compile", [False, True])
def test_fit_equals_the_manual_loop(backend, compile):
    """Without shuffling, fit is the loop forward, loss, zero_grad, backward, step: the
    same bits eagerly; with ``compile=True`` (a program on JAX and torch, whose compilers
    fuse the arithmetic; eager elsewhere) the same to float32 rounding."""
    X, y = pp.datasets.make_disk(N, seed=3, backend=backend)
    manual, fitted = _mlp(backend), _mlp(backend)
    loss = pp.CrossEntropyLoss()
    opt = pp.SGD(manual.parameters(), lr=0.5, momentum=0.9)
    total = 0.0
    for start in range(0, N, 24):
        stop = min(start + 24, N)  # the last batch holds 16 samples
        value = loss.forward(manual.forward(X[start:stop, ...]), y[start:stop])
        total += float(value) * (stop - start)
        manual.zero_grad()
        manual.backward(loss.backward(), input_grad=False)
        opt.step()
    opt2 = pp.SGD(fitted.parameters(), lr=0.5, momentum=0.9)
    history = pp.fit(
        fitted, loss, opt2, X, y, batch_size=24, shuffle=False, verbose=0, compile=compile
    )
    if not compile or backend.library not in ("jax", "torch"):  # eager: the same bits
        _assert_params_equal(_params(fitted), _params(manual))
    else:
        got, want = _params(fitted), _params(manual)
        assert got.keys() == want.keys()
        for key, value in got.items():
            np.testing.assert_allclose(value, want[key], rtol=1e-5, atol=1e-6, err_msg=key)
    assert history.history["loss"] == [pytest.approx(total / N, rel=1e-6)]


@pytest.mark.parametrize("source", SOURCES)
def test_data_from_any_library_trains_identically(backend, source):
    X, y = _host_disk(N, seed=4)
    reference = _mlp(backend)
    native_X, native_y = backend.asarray(X), backend.asarray(y)
    kw = {"epochs": 2, "batch_size": B, "seed": 5, "verbose": 0}
    pp.fit(
        reference,
        pp.CrossEntropyLoss(),
        pp.SGD(reference.parameters(), lr=0.3),
        native_X,
        native_y,
        **kw,
    )
    model = _mlp(backend)
    pp.fit(
        model,
        pp.CrossEntropyLoss(),
        pp.SGD(model.parameters(), lr=0.3),
        _move(X, source),
        _move(y, source),
        **kw,
    )
    _assert_params_equal(_params(model), _params(reference))
    out = pp.predict(model, _move(X, source))
    assert backend.owns(out)


def test_float64_data_is_cast_to_the_model_dtype(backend):
    X, y = _host_disk(N, seed=6)
    model32 = _mlp(backend)
    model64 = _mlp(backend)
    loss = pp.CrossEntropyLoss()
    kw = {"batch_size": B, "seed": 0, "verbose": 0}
    pp.fit(model32, loss, pp.SGD(model32.parameters(), lr=0.1), X.astype("float32"), y, **kw)
    pp.fit(model64, loss, pp.SGD(model64.parameters(), lr=0.1), X.astype("float64"), y, **kw)
    _assert_params_equal(_params(model64), _params(model32))
    assert pp.predict(model64, X.astype("float64")).dtype == backend.float_dtype("float32")
    with pytest.raises(TypeError, match="float64"):  # the low-level forward refuses it
        model64.forward(pp.asarray(X, dtype="float64", backend=backend))


def test_labels_and_targets_are_converted(backend):
    X, y = _host_disk(N, seed=7)
    model = _mlp(backend)
    ce = pp.CrossEntropyLoss()
    # whole-number float labels, and a column of labels, are accepted for cross-entropy
    for labels in (y.astype("float64"), y.reshape(-1, 1), y.astype(bool)):
        assert pp.evaluate(model, ce, X, labels) == pp.evaluate(model, ce, X, y)
    with pytest.raises(TypeError, match="integer class labels"):
        pp.evaluate(model, ce, X, y + 0.5)
    # BCE with one output: 1-D 0/1 targets become a column
    binary = _mlp(backend, outputs=1)
    bce = pp.BCEWithLogitsLoss()
    history = pp.fit(
        binary,
        bce,
        pp.SGD(binary.parameters(), lr=0.5),
        X,
        y,
        metrics=("loss", "accuracy"),
        epochs=2,
        batch_size=B,
        verbose=0,
    )
    logits = to_numpy(pp.predict(binary, X))[:, 0]
    expected = np.mean((logits > 0) == (y > 0.5))
    assert pp.evaluate(binary, bce, X, y, metrics="accuracy")["accuracy"] == pytest.approx(expected)
    assert len(history.history["accuracy"]) == 2


# --------------------------------------------------------------------------------------
# History, metrics, validation
# --------------------------------------------------------------------------------------


def test_history_contents(backend):
    X, y = _host_disk(N, seed=8)
    model = _mlp(backend)
    history = pp.fit(
        model,
        pp.CrossEntropyLoss(),
        pp.SGD(model.parameters(), lr=0.2),
        X,
        y,
        epochs=3,
        batch_size=B,
        validation_split=0.25,
        metrics=["loss", "accuracy"],
        verbose=0,
    )
    assert list(history.history) == ["loss", "accuracy", "val_loss", "val_accuracy"]
    assert history.epoch == [0, 1, 2]
    assert history.params == {"epochs": 3, "batch_size": 16, "steps": 3}  # 48 training samples
    assert len(history.time_per_epoch) == 3
    assert all(isinstance(t, float) and t > 0 for t in history.time_per_epoch)
    for values in history.history.values():
        assert len(values) == 3
        assert all(type(v) is float and np.isfinite(v) for v in values)
    assert all(0.0 <= a <= 1.0 for a in history.history["accuracy"])
    assert "epochs=3" in repr(history)
    # epochs=0 trains nothing and returns an empty history
    before = _params(model)
    empty = pp.fit(model, pp.CrossEntropyLoss(), pp.SGD(model.parameters(), lr=0.2), X, y,
                   epochs=0, verbose=0)  # fmt: skip
    assert (empty.epoch, empty.history) == ([], {"loss": []})
    _assert_params_equal(_params(model), before)


def test_validation_split_takes_the_last_fraction_before_shuffling(backend):
    X, y = _host_disk(N, seed=9)
    loss = pp.CrossEntropyLoss()
    kw = {"epochs": 2, "batch_size": B, "seed": 3, "verbose": 0}
    split = _mlp(backend)
    history = pp.fit(split, loss, pp.SGD(split.parameters(), lr=0.3), X, y,
                     validation_split=0.25, **kw)  # fmt: skip
    # the same as training on the first 48 samples and validating on the last 16
    explicit = _mlp(backend)
    history2 = pp.fit(explicit, loss, pp.SGD(explicit.parameters(), lr=0.3), X[:48], y[:48],
                      validation_data=(X[48:], y[48:]), **kw)  # fmt: skip
    _assert_params_equal(_params(split), _params(explicit))
    assert history.history == history2.history
    # the last val_loss is the loss of the final model on the validation samples
    final = pp.evaluate(split, loss, X[48:], y[48:])
    assert history.history["val_loss"][-1] == pytest.approx(final["loss"], rel=1e-6)


def test_evaluate_and_predict_batched_equal_unbatched(backend):
    X, y = pp.datasets.make_disk(N, seed=10, backend=backend)
    model = _mlp(backend)
    loss = pp.CrossEntropyLoss()
    whole = to_numpy(model.forward(X))
    for batch_size in (7, B, 256):
        np.testing.assert_allclose(
            to_numpy(pp.predict(model, X, batch_size=batch_size)), whole, rtol=1e-6, atol=1e-6
        )
        scores = pp.evaluate(model, loss, X, y, batch_size=batch_size, metrics=("accuracy",))
        assert scores["loss"] == pytest.approx(float(loss.forward(model.forward(X), y)), rel=1e-5)
        assert scores["accuracy"] == np.mean(whole.argmax(axis=1) == to_numpy(y))
    # reduction="sum": the batched sum is the sum
    total = pp.CrossEntropyLoss(reduction="sum")
    assert pp.evaluate(model, total, X, y, batch_size=7)["loss"] == pytest.approx(
        float(total.forward(model.forward(X), y)), rel=1e-5
    )
    # MSE on one-hot targets: accuracy compares the argmax of both
    onehot = np.eye(2, dtype="float32")[to_numpy(y)]
    scores = pp.evaluate(model, pp.MSELoss(), X, onehot, batch_size=7, metrics="accuracy")
    assert scores["accuracy"] == np.mean(whole.argmax(axis=1) == to_numpy(y))
    assert scores["loss"] == pytest.approx(float(np.mean((whole - onehot) ** 2)), rel=1e-5)
    # nothing is kept for a backward pass
    with pytest.raises(RuntimeError, match="before forward"):
        model.backward(backend.asarray(whole))


def test_predict_of_no_samples_has_the_output_shape(backend):
    model = _mlp(backend)
    out = pp.predict(model, np.zeros((0, 2), dtype="float32"))
    assert tuple(out.shape) == (0, 2)


def test_modes_train_during_epochs_and_eval_during_validation(backend):
    seen: list[bool] = []

    class Probe(pp.Identity):
        def _forward(self, X):
            seen.append(self.training)
            return X

    pp.manual_seed(0)
    model = pp.Sequential(pp.Linear(2, 2, backend=backend), Probe(backend=backend))
    model.eval()
    X, y = _host_disk(2 * B, seed=11)
    pp.fit(model, pp.CrossEntropyLoss(), pp.SGD(model.parameters(), lr=0.1), X, y,
           batch_size=B, validation_data=(X, y), verbose=0)  # fmt: skip
    assert seen == [True, True, False]  # two training batches, one validation batch
    assert model.training is False  # restored
    model.train()
    pp.predict(model, X)
    pp.evaluate(model, pp.CrossEntropyLoss(), X, y)
    assert seen[3:] == [False, False]
    assert model.training is True


# --------------------------------------------------------------------------------------
# Shuffling
# --------------------------------------------------------------------------------------


def _fit_once(backend: pp.Backend, *, seed: int | None, shuffle: bool = True):
    X, y = _host_disk(N, seed=12)
    model = _mlp(backend)
    pp.fit(model, pp.CrossEntropyLoss(), pp.SGD(model.parameters(), lr=0.5), X, y,
           epochs=2, batch_size=B, seed=seed, shuffle=shuffle, verbose=0)  # fmt: skip
    return _params(model)


def test_shuffle_is_reproducible_with_a_seed(backend):
    first = _fit_once(backend, seed=7)
    _assert_params_equal(_fit_once(backend, seed=7), first)
    other = _fit_once(backend, seed=8)
    assert not np.array_equal(other["0.weight"], first["0.weight"])
    unshuffled = _fit_once(backend, seed=7, shuffle=False)
    assert not np.array_equal(unshuffled["0.weight"], first["0.weight"])
    # seed=None draws from the global generator, which _mlp seeds with pp.manual_seed
    a = _fit_once(backend, seed=None)
    b = _fit_once(backend, seed=None)
    _assert_params_equal(a, b)


def test_shuffle_order_is_the_same_on_every_backend(backend):
    here = _fit_once(backend, seed=7)
    on_numpy = _fit_once(pp.get_backend(backend="numpy"), seed=7)
    for key, value in on_numpy.items():
        np.testing.assert_allclose(here[key], value, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------------------
# Callbacks and schedules
# --------------------------------------------------------------------------------------


def _diverging_validation(n: int = N):
    """Training data, and validation data with every label flipped: as the model
    learns, the validation loss rises."""
    X, y = _host_disk(n, seed=13)
    return X, y, (X, 1 - y)


@pytest.mark.parametrize("restore", [True, False])
def test_early_stopping_stops_and_restores_the_best_weights(backend, restore):
    X, y, validation = _diverging_validation()
    model = _mlp(backend)
    recorder = _Recorder()
    stopper = pp.EarlyStopping(patience=2, restore_best_weights=restore)
    history = pp.fit(
        model, pp.CrossEntropyLoss(), pp.SGD(model.parameters(), lr=0.5, momentum=0.9),
        X, y, epochs=30, batch_size=B, seed=0, validation_data=validation,
        callbacks=[recorder, stopper], verbose=0,
    )  # fmt: skip
    val = history.history["val_loss"]
    assert len(val) < 30  # it stopped early...
    best = int(np.argmin(val))
    assert stopper.best_epoch == best
    assert stopper.best == val[best]
    assert stopper.stopped_epoch == len(val) - 1 == best + 2  # ...after `patience` epochs
    expected = recorder.after_epoch[best] if restore else recorder.after_epoch[-1]
    _assert_params_equal(_params(model), expected)
    if restore:
        assert not np.array_equal(model[0].weight.data, recorder.after_epoch[-1]["0.weight"])
        for p in model.parameters():
            assert backend.owns(p.data)


def test_early_stopping_checks_its_monitor_before_training(backend):
    X, y = _host_disk(N, seed=14)
    model = _mlp(backend)
    before = _params(model)
    with pytest.raises(ValueError, match=r"'val_loss'.*logs only 'loss'"):
        pp.fit(model, pp.CrossEntropyLoss(), pp.SGD(model.parameters(), lr=0.1), X, y,
               callbacks=[pp.EarlyStopping()], verbose=0)  # fmt: skip
    _assert_params_equal(_params(model), before)
    stopper = pp.EarlyStopping(monitor="accuracy", patience=0)
    assert stopper.mode == "max"
    history = pp.fit(model, pp.CrossEntropyLoss(), pp.SGD(model.parameters(), lr=0.1), X, y,
                     metrics=["accuracy"], epochs=50, batch_size=B, callbacks=[stopper], verbose=0)  # fmt: skip
    assert len(history.epoch) < 50


def test_callback_hooks_and_stop_from_a_batch(backend):
    calls: list[tuple] = []

    class Spy(pp.Callback):
        def on_train_begin(self, logs):
            calls.append(("train_begin",))

        def on_epoch_begin(self, epoch, logs):
            calls.append(("epoch_begin", epoch))

        def on_batch_end(self, batch, logs):
            calls.append(("batch_end", batch, logs["size"]))
            assert np.isfinite(logs["loss"])
            if self.state.epoch == 1 and batch == 0:
                self.state.stop_training = True

        def on_epoch_end(self, epoch, logs):
            calls.append(("epoch_end", epoch, sorted(logs)))

        def on_train_end(self, logs):
            calls.append(("train_end", sorted(logs)))

    X, y = _host_disk(N, seed=15)
    model = _mlp(backend)
    history = pp.fit(model, pp.CrossEntropyLoss(), pp.SGD(model.parameters(), lr=0.1), X, y,
                     epochs=5, batch_size=24, callbacks=[Spy()], verbose=0)  # fmt: skip
    assert calls == [
        ("train_begin",),
        ("epoch_begin", 0),
        ("batch_end", 0, 24.0),
        ("batch_end", 1, 24.0),
        ("batch_end", 2, 16.0),
        ("epoch_end", 0, ["loss"]),
        ("epoch_begin", 1),
        ("batch_end", 0, 24.0),
        ("epoch_end", 1, ["loss"]),
        ("train_end", ["loss"]),
    ]
    assert history.epoch == [0, 1]


def test_schedules_are_stepped_by_their_interval(backend):
    X, y = _host_disk(N, seed=16)
    steps = -(-N // B)

    def run(make_schedule, **kw):
        model = _mlp(backend)
        opt = pp.SGD(model.parameters(), lr=0.1)
        schedule = make_schedule(opt)
        history = pp.fit(model, pp.CrossEntropyLoss(), opt, X, y, epochs=3, batch_size=B,
                         schedule=schedule, verbose=0, **kw)  # fmt: skip
        return schedule, history

    # once per epoch; the history records the lr each epoch trained with
    _, history = run(lambda opt: pp.StepLR(opt, step_size=1, gamma=0.5))
    assert history.history["lr"] == [0.1, 0.05, 0.025]
    # once per batch
    schedule, _ = run(lambda opt: pp.CosineWithWarmup(opt, total_steps=3 * steps))
    assert schedule.step_count == 3 * steps

    # with the monitored value: val_loss when there is validation data
    class Recording(pp.ReduceLROnPlateau):
        seen: list[float]

        def step(self, metric=None):
            self.seen = [*getattr(self, "seen", []), metric]
            super().step(metric)

    schedule, history = run(Recording, validation_data=(X, y))
    assert schedule.seen == history.history["val_loss"]
    schedule, history = run(Recording)
    assert schedule.seen == history.history["loss"]


def test_clip_grad_norm_runs_between_backward_and_step(backend, monkeypatch):
    seen: list[tuple[int, float]] = []

    def clip(params, max_norm):
        assert all(p.grad is not None for p in params)
        seen.append((len(params), max_norm))
        return 0.5

    monkeypatch.setattr(pp.optim, "clip_grad_norm_", clip, raising=False)
    X, y = _host_disk(2 * B, seed=17)
    model = _mlp(backend)
    pp.fit(model, pp.CrossEntropyLoss(), pp.SGD(model.parameters(), lr=0.1), X, y,
           batch_size=B, clip_grad_norm=1.0, verbose=0)  # fmt: skip
    assert seen == [(4, 1.0), (4, 1.0)]


def test_a_non_finite_gradient_norm_from_clipping_raises(backend, monkeypatch):
    monkeypatch.setattr(pp.optim, "clip_grad_norm_", lambda params, max_norm: np.inf, raising=False)
    X, y = _host_disk(2 * B, seed=17)
    model = _mlp(backend)
    before = _params(model)
    with pytest.raises(
        pp.TrainingDivergedError, match="total norm of the gradients is inf"
    ) as info:
        pp.fit(model, pp.CrossEntropyLoss(), pp.SGD(model.parameters(), lr=0.1), X, y,
               batch_size=B, clip_grad_norm=1.0, verbose=0)  # fmt: skip
    assert (info.value.epoch, info.value.batch, info.value.quantity) == (1, 1, "gradients")
    _assert_params_equal(_params(model), before)


def test_clip_grad_norm_with_the_real_clipping(backend):
    clip = getattr(pp.optim, "clip_grad_norm_", None)
    if clip is None:
        pytest.skip("portprop.optim.clip_grad_norm_ is not there yet")
    X, y = _host_disk(N, seed=24)
    clipped, free = _mlp(backend), _mlp(backend)
    kw = {"epochs": 2, "batch_size": B, "seed": 0, "verbose": 0}
    pp.fit(clipped, pp.CrossEntropyLoss(), pp.SGD(clipped.parameters(), lr=0.5), X, y,
           clip_grad_norm=1e-3, **kw)  # fmt: skip
    pp.fit(free, pp.CrossEntropyLoss(), pp.SGD(free.parameters(), lr=0.5), X, y, **kw)
    initial = _params(_mlp(backend))
    moved = np.abs(_params(clipped)["0.weight"] - initial["0.weight"]).max()
    steps = 2 * (N // B)
    assert 0 < moved <= steps * 0.5 * 1e-3 * 1.001  # each step moves at most lr * max_norm
    assert moved < np.abs(_params(free)["0.weight"] - initial["0.weight"]).max()
    # (NaN in the data is refused before training: a layer makes the loss NaN instead)
    poisoned = pp.Sequential(*clipped.layers, _NaNFromCall(1, backend=backend))
    with pytest.raises(pp.TrainingDivergedError, match="loss is nan"):
        pp.fit(poisoned, pp.CrossEntropyLoss(), pp.SGD(poisoned.parameters(), lr=0.5), X, y,
               clip_grad_norm=1.0, batch_size=B, shuffle=False, verbose=0)  # fmt: skip


# --------------------------------------------------------------------------------------
# Divergence
# --------------------------------------------------------------------------------------


class _NaNFromCall(pp.Identity):
    """The identity until its ``call``-th forward pass (counted from 1), NaN from then on:
    a loss that turns NaN in the middle of training (NaN in the data is refused before
    training starts, see tests/test_reliability_inputs.py)."""

    def __init__(self, call: int, **kw) -> None:
        super().__init__(**kw)
        self.call, self.calls = call, 0

    def _forward(self, X):
        self.calls += 1
        return X * float("nan") if self.calls >= self.call else X


def test_a_nan_loss_raises_before_the_step(backend):
    X, y = _host_disk(N, seed=18)
    model = _mlp(backend)
    model = pp.Sequential(*model.layers, _NaNFromCall(3, backend=backend))  # the third batch
    recorder = _Recorder()
    with pytest.raises(pp.TrainingDivergedError) as info:
        pp.fit(model, pp.CrossEntropyLoss(), pp.SGD(model.parameters(), lr=0.1), X, y,
               batch_size=B, shuffle=False, callbacks=[recorder], verbose=0)  # fmt: skip
    err = info.value
    assert (err.epoch, err.batch, err.quantity) == (1, 3, "loss")
    message = str(err)
    assert "epoch 1 of 1, batch 3 of 4 (both counted from 1)" in message
    assert "Lower the learning rate" in message
    assert len(recorder.after_batch) == 2
    _assert_params_equal(_params(model), recorder.after_batch[-1])
    assert isinstance(err, FloatingPointError)
    assert isinstance(err, pp.PortpropError)


# fit silences NumPy's overflow warnings (the suite turns warnings into errors)
def test_a_huge_learning_rate_raises_with_the_last_finite_parameters(backend):
    X, y = _host_disk(N, seed=19)
    model = _mlp(backend)
    initial = _params(model)
    targets = (np.eye(2, dtype="float32")[y] * 1e3).astype("float32")
    recorder = _Recorder()
    with pytest.raises(pp.TrainingDivergedError, match="Lower the learning rate") as info:
        pp.fit(model, pp.MSELoss(), pp.SGD(model.parameters(), lr=1e4), X, targets,
               epochs=20, batch_size=B, callbacks=[recorder], verbose=0)  # fmt: skip
    err = info.value
    steps_before = (err.epoch - 1) * (N // B) + err.batch - 1
    assert len(recorder.after_batch) == steps_before
    last = recorder.after_batch[-1] if recorder.after_batch else initial
    _assert_params_equal(_params(model), last)
    for value in last.values():
        assert np.all(np.isfinite(value))


def test_a_non_finite_gradient_with_a_finite_loss_raises(backend):
    class NaNBackward(pp.Identity):  # a finite forward, a NaN backward
        def _backward(self, dl_dy, input_grad):
            return dl_dy * float("nan")

    pp.manual_seed(0)
    kw = {"backend": backend}
    model = pp.Sequential(pp.Linear(2, 8, **kw), NaNBackward(**kw), pp.Linear(8, 2, **kw))
    before = _params(model)
    X, y = _host_disk(N, seed=25)
    with pytest.raises(
        pp.TrainingDivergedError, match=r"gradient of parameter '0\.weight'"
    ) as info:
        pp.fit(model, pp.CrossEntropyLoss(), pp.SGD(model.parameters(), lr=0.1), X, y,
               batch_size=B, verbose=0)  # fmt: skip
    assert (info.value.epoch, info.value.batch) == (1, 1)
    assert info.value.quantity == "gradient of '0.weight'"
    _assert_params_equal(_params(model), before)


def test_training_diverged_error_pickles():
    err = pp.TrainingDivergedError("boom", epoch=2, batch=5, quantity="loss")
    back = pickle.loads(pickle.dumps(err))
    assert (str(back), back.epoch, back.batch, back.quantity) == ("boom", 2, 5, "loss")


# --------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------


def _tiny_fit(backend: pp.Backend, **kw):
    X, y = _host_disk(N, seed=20)
    model = _mlp(backend)
    return pp.fit(model, pp.CrossEntropyLoss(), pp.SGD(model.parameters(), lr=0.1), X, y,
                  epochs=2, batch_size=B, validation_split=0.25, **kw)  # fmt: skip


def test_verbose_0_prints_nothing(backend, capsys, monkeypatch):
    monkeypatch.setattr(progress, "_stderr_is_terminal", lambda: True)
    _tiny_fit(backend, verbose=0)
    assert capsys.readouterr() == ("", "")


def test_verbose_lines_without_a_terminal(backend, capsys):
    _tiny_fit(backend, verbose=1)  # pytest's stderr is not a terminal
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("Epoch 1/2 - ")
    assert "loss: " in lines[1]
    assert "val_loss: " in lines[1]


def test_verbose_bar_on_a_terminal(backend, capsys, monkeypatch):
    pytest.importorskip("tqdm")
    monkeypatch.setattr(progress, "_stderr_is_terminal", lambda: True)
    _tiny_fit(backend, verbose=1)
    out, err = capsys.readouterr()
    assert out == ""
    assert "Epoch 1/2" in err
    assert "Epoch 2/2" in err
    assert "val_loss" in err  # the postfix


# --------------------------------------------------------------------------------------
# Bad arguments: a clear error, and nothing changed
# --------------------------------------------------------------------------------------

_BAD = [
    ({"y_len": 63}, ValueError, "X has 64, y has 63"),
    ({"batch_size": 0}, ValueError, "batch_size must be an int >= 1, got 0"),
    ({"batch_size": 2.5}, TypeError, "batch_size must be an int"),
    ({"epochs": -1}, ValueError, "epochs must be an int >= 0, got -1"),
    ({"validation_split": 1.0}, ValueError, r"validation_split must lie in \[0, 1\), got 1.0"),
    ({"validation_split": 0.99}, ValueError, "leaves 0 for training and 64 for validation"),
    ({"x_1d": True}, ValueError, r"X must be 2-D .* got shape \(128,\).*reshape"),
    ({"metrics": ("loss", "f1")}, ValueError, r"unknown metric\(s\) \['f1'\].*\('loss', 'accuracy'\)"),
    ({"x_features": 3}, ValueError, "X has 3 features, but the model expects 2"),
    ({"mse_accuracy": True}, ValueError, "metric 'accuracy' needs class labels"),
    ({"verbose": 3}, ValueError, "verbose must be 0, 1 or 2"),
    ({"callbacks": [object()]}, TypeError, r"callbacks\[0\] must be a portprop Callback"),
    ({"validation_data": ([[0.0, 0.0]], [0, 1])}, ValueError, r"validation_data\[0\] has 1"),
    ({"clip_grad_norm": -1.0}, ValueError, "clip_grad_norm must be a finite number > 0"),
    ({"other_optimizer": True}, ValueError, "optimizer holds none of the model's parameters"),
]  # fmt: skip


@pytest.mark.parametrize(("change", "error", "match"), _BAD)
def test_bad_arguments_leave_model_and_optimizer_unchanged(backend, change, error, match):
    X, y = _host_disk(N, seed=22)
    model = _mlp(backend, outputs=1 if "mse_accuracy" in change else 2)
    model.eval()
    opt = pp.SGD(model.parameters(), lr=0.1, momentum=0.9)
    before = _params(model)
    kw = {k: v for k, v in change.items() if k in {"batch_size", "epochs", "validation_split",
                                                   "metrics", "verbose", "callbacks",
                                                   "validation_data", "clip_grad_norm"}}  # fmt: skip
    loss: pp.Loss = pp.CrossEntropyLoss()
    if "y_len" in change:
        y = y[: change["y_len"]]
    if "x_1d" in change:
        X = X.reshape(-1)
    if "x_features" in change:
        X = np.zeros((N, 3), dtype="float32")
    if "mse_accuracy" in change:
        loss, y = pp.MSELoss(), y.astype("float32")
        kw["metrics"] = ("accuracy",)
    if "other_optimizer" in change:
        opt = pp.SGD(_mlp(backend).parameters(), lr=0.1)
    with pytest.raises(error, match=match):
        pp.fit(model, loss, opt, X, y, **{"verbose": 0, **kw})
    _assert_params_equal(_params(model), before)
    assert all(p.grad is None for p in model.parameters())
    assert opt.state == [{} for _ in opt.params]
    assert model.training is False


def test_evaluate_and_predict_check_their_arguments(backend):
    X, y = _host_disk(8, seed=23)
    model = _mlp(backend)
    loss = pp.CrossEntropyLoss()
    with pytest.raises(ValueError, match="X has 8, y has 7"):
        pp.evaluate(model, loss, X, y[:7])
    with pytest.raises(ValueError, match="batch_size must be an int >= 1, got 0"):
        pp.predict(model, X, batch_size=0)
    with pytest.raises(ValueError, match="unknown metric"):
        pp.evaluate(model, loss, X, y, metrics=["precision"])
    with pytest.raises(ValueError, match="reshape"):
        pp.predict(model, X[:, 0])
    with pytest.raises(TypeError, match="model must be a portprop Module"):
        pp.predict("model", X)
