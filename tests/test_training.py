"""Training end to end: the lecture's disk problem, and agreement across backends."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import to_numpy

import portprop as pp


def _disk_network(activation: type[pp.Module], backend: pp.Backend, dtype: str) -> pp.Sequential:
    """2 inputs, three hidden layers of 25 units, 2 outputs."""
    kw = {"backend": backend, "dtype": dtype}
    return pp.Sequential(
        pp.Linear(2, 25, **kw), activation(**kw),
        pp.Linear(25, 25, **kw), activation(**kw),
        pp.Linear(25, 25, **kw), activation(**kw),
        pp.Linear(25, 2, **kw),
    )  # fmt: skip


def _train(model, loss, X, T, *, lr, epochs, batch=50):
    """Momentum SGD over shuffled-once mini-batches; the learning rate drops tenfold for
    the last 30% of the epochs."""
    opt = pp.SGD(model.parameters(), lr=lr, momentum=0.9)
    n = X.shape[0]
    for epoch in range(epochs):
        if epoch == int(0.7 * epochs):
            opt.lr = lr / 10
        for i in range(0, n, batch):
            loss.forward(model.forward(X[i : i + batch, ...]), T[i : i + batch, ...])
            model.zero_grad()
            model.backward(loss.backward(), input_grad=False)
            opt.step()
    return opt


def _error_rate(model, X, y) -> float:
    xp = model.backend.xp
    predicted = xp.argmax(model.forward(X), axis=1)
    return float(xp.mean(xp.astype(predicted != y, model.dtype)))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("loss_name", "activation", "lr", "epochs"),
    [("cross_entropy", pp.ReLU, 0.1, 50), ("mse", pp.Tanh, 0.2, 60)],
)
def test_disk_problem_reaches_under_5_percent_test_error(
    backend, loss_name, activation, lr, epochs
):
    pp.manual_seed(0)
    X_train, y_train = pp.datasets.make_disk(1000, backend=backend)
    X_test, y_test = pp.datasets.make_disk(1000, backend=backend)
    model = _disk_network(activation, backend, "float32")
    xp = backend.xp
    if loss_name == "mse":
        loss: pp.Loss = pp.MSELoss()
        T = pp.functional.one_hot(xp, y_train, 2, model.dtype)
    else:
        loss = pp.CrossEntropyLoss()
        T = y_train
    _train(model, loss, X_train, T, lr=lr, epochs=epochs)
    train_error = _error_rate(model, X_train, y_train)
    test_error = _error_rate(model, X_test, y_test)
    print(f"{backend.name} {loss_name}: train error {train_error:.3f}, test error {test_error:.3f}")
    assert test_error < 0.05
    # the model never left float32 nor its backend
    for p in model.parameters():
        assert p.data.dtype == backend.float_dtype("float32")
        assert backend.owns(p.data)


def _fifty_float64_steps(backend: pp.Backend) -> list[float]:
    pp.manual_seed(3)
    X, y = pp.datasets.make_disk(64, backend=backend, dtype="float64")
    model = _disk_network(pp.Tanh, backend, "float64")
    loss = pp.CrossEntropyLoss()
    opt = pp.SGD(model.parameters(), lr=0.5, momentum=0.9, nesterov=True, weight_decay=1e-3)
    losses = []
    for _ in range(50):
        losses.append(float(loss.forward(model.forward(X), y)))
        model.zero_grad()
        model.backward(loss.backward())
        opt.step()
    return losses


def test_backends_agree_after_fifty_float64_steps(backend64):
    reference = _fifty_float64_steps(pp.get_backend(backend="numpy"))
    losses = _fifty_float64_steps(backend64)
    assert reference[-1] < 0.95 * reference[0]  # it trained
    np.testing.assert_allclose(losses, reference, rtol=1e-9, atol=0)


def test_same_seed_gives_bit_identical_initial_weights(backend):
    pp.manual_seed(11)
    here = _disk_network(pp.ReLU, backend, "float32").state_dict()
    pp.manual_seed(11)
    on_numpy = _disk_network(pp.ReLU, pp.get_backend(backend="numpy"), "float32").state_dict()
    for key, value in here.items():
        np.testing.assert_array_equal(to_numpy(value), on_numpy[key])
