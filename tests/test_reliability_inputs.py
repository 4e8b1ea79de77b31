"""Reliability of every data entry point: issue 4, "Inputs", cases 1 to 11.

One test (or a few) per case, named ``test_caseNN_...`` so that the documentation can
point each case at its test.  Each runs on every backend through the ``backend``
fixture of ``conftest.py`` (a backend that cannot run here is skipped with its reason),
over the entry points where the case applies:

- ``pp.fit`` (``X``/``y``, and ``validation_data``), ``pp.evaluate``, ``pp.predict``
  and ``Module.forward``;
- the scikit-learn estimators' ``fit``, ``partial_fit``, ``predict``,
  ``predict_proba`` and ``score``, given arrays of the backend (NumPy arrays go
  through scikit-learn's validation, the others are checked on their device);
- the data set readers of ``portprop.datasets`` and the ``portprop`` command, where
  the case applies to files.

Each failing call is checked for: the exception type; a message that names the
argument and holds both the value expected and the value found; and nothing changed:
the model's parameters, gradients and modes, the dropout generator's state and the
optimizer's ``state_dict`` are bit-identical afterwards (host copies compared), a
fitted estimator keeps its model and attributes, and the command's files keep their
bytes.
"""

from __future__ import annotations

import contextlib
import copy
import io
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import to_numpy

import portprop as pp
from portprop.cli import main as cli_main

N, F, K = 12, 3, 3  # samples, features, classes (outputs) of every model below
BAD_ROW, BAD_COLUMN = 4, 1  # where a bad value is put in X
BAD_LABEL = 7  # ... and in y


# --------------------------------------------------------------------------------------
# Data, a model that has trained one step, and snapshots of everything a call may change
# --------------------------------------------------------------------------------------


def _host_data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``X`` (float32), class labels and the matching one-hot targets (float32)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N, F)).astype("float32")
    labels = np.arange(N) % K
    return X, labels, np.eye(K, dtype="float32")[labels]


def _host(value: Any) -> Any:
    """``value`` with every array replaced by a NumPy copy (for comparisons)."""
    if isinstance(value, dict):
        return {k: _host(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_host(v) for v in value]
    if _is_array(value):
        return np.array(to_numpy(value), copy=True)
    return copy.deepcopy(value)


def _is_array(value: Any) -> bool:
    try:
        pp.backend_of(value)
    except (TypeError, pp.PortpropError):
        return False
    return True


def _assert_same(before: Any, after: Any, where: str = "") -> None:
    """Bit-identical: arrays equal in dtype, shape and every bit of every value."""
    if isinstance(before, dict):
        assert isinstance(after, dict), where
        assert before.keys() == after.keys(), where
        for k in before:
            _assert_same(before[k], after[k], f"{where}[{k!r}]")
    elif isinstance(before, list):
        assert isinstance(after, list), where
        assert len(before) == len(after), where
        for i, (a, b) in enumerate(zip(before, after, strict=True)):
            _assert_same(a, b, f"{where}[{i}]")
    elif isinstance(before, np.ndarray):
        assert isinstance(after, np.ndarray), where
        assert before.dtype == after.dtype, where
        assert before.shape == after.shape, where
        assert before.tobytes() == after.tobytes(), where
    else:
        assert before == after, where


_TRAINED: dict[tuple[str, str], tuple[Any, Any]] = {}


class Harness:
    """A model (Linear, Tanh, Dropout, Linear) on ``backend`` with an Adam optimizer that
    has taken one step (so that its state holds moment estimates), the data it
    trained on, and a snapshot of all that ``fit`` could change."""

    def __init__(self, backend: pp.Backend, loss: str = "cross_entropy") -> None:
        self.backend = backend
        pp.manual_seed(0)
        kw = {"backend": backend}
        self.dropout = pp.Dropout(0.25, seed=3, **kw)
        self.model = pp.Sequential(
            pp.Linear(F, 5, **kw), pp.Tanh(**kw), self.dropout, pp.Linear(5, K, **kw)
        )
        self.loss = {
            "cross_entropy": pp.CrossEntropyLoss(),
            "mse": pp.MSELoss(),
            "bce": pp.BCEWithLogitsLoss(),
        }[loss]
        self.optimizer = pp.Adam(self.model.parameters(), lr=0.01)
        X, labels, onehot = _host_data()
        self.X = backend.asarray(X)
        self.y = backend.asarray(labels if loss == "cross_entropy" else onehot)
        key = (backend.name, loss)
        if key not in _TRAINED:  # train once per backend and loss, then reload (faster)
            pp.fit(self.model, self.loss, self.optimizer, self.X, self.y, batch_size=N,
                   seed=0, verbose=0)  # fmt: skip
            _TRAINED[key] = (_host(self.model.state_dict()), _host(self.optimizer.state_dict()))
        self.model.load_state_dict(_TRAINED[key][0])
        self.optimizer.load_state_dict(_TRAINED[key][1])
        self.model.layers[0].weight.grad = backend.asarray(np.ones((5, F), dtype="float32"))
        self.model.layers[1].training = False  # a mode of each kind, both to be kept
        self.before = self.snapshot()

    def snapshot(self) -> dict[str, Any]:
        params = self.model.named_parameters()
        return {
            "parameters": {n: _host(p.data) for n, p in self.model.named_parameters()},
            "gradients": {n: None if p.grad is None else _host(p.grad) for n, p in params},
            "optimizer": _host(self.optimizer.state_dict()),
            "modes": [m.training for m in self.model.modules()],
            "dropout": copy.deepcopy(self.dropout.generator.get_state()),
        }

    def assert_unchanged(self) -> None:
        _assert_same(self.before, self.snapshot())

    def call(self, entry: str, X: Any, y: Any = None) -> Any:
        """Run ``entry`` with data ``(X, y)`` (valid data elsewhere)."""
        model, loss, opt = self.model, self.loss, self.optimizer
        kw = {"epochs": 1, "batch_size": 4, "seed": 0, "verbose": 0}
        if entry == "fit":
            return pp.fit(model, loss, opt, X, y, **kw)
        if entry == "fit(validation_data)":
            return pp.fit(model, loss, opt, self.X, self.y, validation_data=(X, y), **kw)
        if entry == "evaluate":
            return pp.evaluate(model, loss, X, y)
        if entry == "predict":
            return pp.predict(model, X)
        assert entry == "forward"
        return model.forward(X)


def _names(entry: str) -> tuple[str, str]:
    """The names the messages use for X and y at ``entry``."""
    if entry == "fit(validation_data)":
        return "validation_data[0]", "validation_data[1]"
    return "X", "y"


@contextlib.contextmanager
def _fails(error: type[BaseException], *fragments: str) -> Iterator[pytest.ExceptionInfo]:
    """``pytest.raises(error)``, and every fragment must be in the message."""
    with pytest.raises(error) as info:
        yield info
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


X_ENTRIES = ("fit", "fit(validation_data)", "evaluate", "predict")
Y_ENTRIES = ("fit", "fit(validation_data)", "evaluate")


# --------------------------------------------------------------------------------------
# The estimators
# --------------------------------------------------------------------------------------

ESTIMATOR_X_METHODS = ("fit", "partial_fit", "predict", "predict_proba", "score")


def _sklearn() -> Any:
    return pytest.importorskip("sklearn")


def _quiet() -> contextlib.AbstractContextManager[Any]:
    _sklearn()
    from sklearn.exceptions import ConvergenceWarning

    manager = warnings.catch_warnings()

    @contextlib.contextmanager
    def quiet() -> Iterator[None]:
        with manager:
            warnings.simplefilter("ignore", ConvergenceWarning)
            yield

    return quiet()


_FITTED: dict[tuple[str, str], Any] = {}


class FittedEstimator:
    """A classifier (or regressor) fitted on ``backend``'s arrays, and a snapshot."""

    def __init__(self, backend: pp.Backend, kind: str = "classifier") -> None:
        _sklearn()
        from portprop.sklearn import MLPClassifier, MLPRegressor

        X, labels, _ = _host_data()
        self.backend = backend
        self.X = backend.asarray(X)
        self.y = labels if kind == "classifier" else X[:, 0] - 2.0 * X[:, 1]
        key = (backend.name, kind)
        if key not in _FITTED:  # fit once per backend and kind, then copy (faster)
            cls = MLPClassifier if kind == "classifier" else MLPRegressor
            estimator = cls(hidden_layer_sizes=(4,), max_iter=2, random_state=0,
                            backend=backend.name)  # fmt: skip
            with _quiet():
                _FITTED[key] = estimator.fit(self.X, self.y)
        self.estimator = copy.deepcopy(_FITTED[key])  # through pickling: a new model
        self.before = self.snapshot()

    def snapshot(self) -> dict[str, Any]:
        est = self.estimator
        public = {k: v for k, v in vars(est).items() if k.endswith("_") and k != "model_"}
        return {
            "attributes": sorted(vars(est)),
            "model": id(est.model_),
            "parameters": {n: _host(p.data) for n, p in est.model_.named_parameters()},
            "optimizers": [_host(o.state_dict()) for o in est._optimizers],
            "public": _host(public),
        }

    def assert_unchanged(self) -> None:
        _assert_same(self.before, self.snapshot())

    def call(self, method: str, X: Any, y: Any = None) -> Any:
        est = self.estimator
        y = self.y if y is None else y
        with _quiet():
            if method == "fit":
                return est.fit(X, y)
            if method == "partial_fit":
                return est.partial_fit(X, y)
            if method == "score":
                return est.score(X, y)
            return getattr(est, method)(X)


# --------------------------------------------------------------------------------------
# Case 1: NaN in X, NaN in y
# --------------------------------------------------------------------------------------


def _with(a: np.ndarray, index: tuple[int, ...], value: float) -> np.ndarray:
    out = a.astype("float64" if a.dtype.kind in "iub" else a.dtype, copy=True)
    out[index] = value
    return out


@pytest.mark.parametrize("entry", X_ENTRIES)
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_case01_and_02_nan_or_inf_in_X(backend, entry, value):
    h = Harness(backend)
    X = backend.asarray(_with(to_numpy(h.X), (BAD_ROW, BAD_COLUMN), value))
    xname, _ = _names(entry)
    what = "NaN" if np.isnan(value) else "infinity"
    with _fails(
        ValueError,
        f"Input {xname} contains {what}",  # the argument, and what was found
        f"first at sample {BAD_ROW}, feature {BAD_COLUMN}",  # where
        f"{xname} must hold finite values",  # what was expected
    ):
        h.call(entry, X, h.y)
    h.assert_unchanged()


@pytest.mark.parametrize("entry", Y_ENTRIES)
@pytest.mark.parametrize(
    ("loss", "value"),
    [
        ("cross_entropy", np.nan),
        ("cross_entropy", np.inf),
        ("mse", np.nan),
        ("mse", -np.inf),
        ("bce", np.inf),
    ],
)
def test_case01_and_02_nan_or_inf_in_y(backend, entry, loss, value):
    h = Harness(backend, loss)
    host_y = to_numpy(h.y)
    if loss == "cross_entropy":  # float labels: NaN and infinity are not class labels
        y, where = _with(host_y, (BAD_LABEL,), value), f"first at sample {BAD_LABEL};"
    else:
        y, where = _with(host_y, (BAD_LABEL, 2), value), f"first at sample {BAD_LABEL}, output 2;"
    _, yname = _names(entry)
    what = "NaN" if np.isnan(value) else "infinity"
    with _fails(ValueError, f"Input {yname} contains {what}", where, f"{yname} must hold finite"):
        h.call(entry, h.X, backend.asarray(y))
    h.assert_unchanged()


# NumPy warns about the overflow of the cast before portprop refuses the infinity
@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_case02_float64_beyond_float32_range_is_infinity_after_the_cast(backend):
    h = Harness(backend)
    X = to_numpy(h.X).astype("float64")
    X[BAD_ROW, BAD_COLUMN] = 1e300  # finite in float64, infinite in the float32 model
    with _fails(
        ValueError,
        "Input X contains infinity (first at sample 4, feature 1",
        "cast from float64 to the model's float32",
    ):
        pp.fit(h.model, h.loss, h.optimizer, X, h.y, verbose=0)
    h.assert_unchanged()


def test_case01_the_value_checks_are_one_synchronization(backend, monkeypatch):
    """Every value check of a call is read back at once: one ``bool()`` of one 0-d
    array on the happy path, whatever the number of arrays (X, y and validation)."""
    from portprop.training import validation

    reads: list[int] = []
    original = validation.Checks.run

    def counting_run(self):
        reads.append(len(self.items))
        return original(self)

    monkeypatch.setattr(validation.Checks, "run", counting_run)
    h = Harness(backend)
    reads.clear()
    pp.fit(h.model, h.loss, h.optimizer, h.X, h.y, validation_data=(h.X, h.y), verbose=0)
    pp.evaluate(h.model, h.loss, h.X, h.y)
    pp.predict(h.model, h.X)
    # fit: X, y (label range), X_val, y_val in one run; evaluate: two; predict: one
    assert reads == [4, 2, 1]


@pytest.mark.parametrize("method", ESTIMATOR_X_METHODS)
@pytest.mark.parametrize("value", [np.nan, np.inf], ids=["nan", "inf"])
def test_case01_and_02_estimator_nan_or_inf_in_X(backend, method, value):
    fitted = FittedEstimator(backend)
    X = backend.asarray(_with(to_numpy(fitted.X), (BAD_ROW, BAD_COLUMN), value))
    # NumPy data gets scikit-learn's message, other backends portprop's: both begin so
    what = "NaN" if np.isnan(value) else "infinity"
    with _fails(ValueError, f"Input X contains {what}"):
        fitted.call(method, X)
    fitted.assert_unchanged()


@pytest.mark.parametrize("kind", ["classifier", "regressor"])
@pytest.mark.parametrize("method", ["fit", "partial_fit"])
@pytest.mark.parametrize("value", [np.nan, np.inf], ids=["nan", "inf"])
def test_case01_and_02_estimator_nan_or_inf_in_y(backend, kind, method, value):
    fitted = FittedEstimator(backend, kind)
    y = _with(np.asarray(fitted.y), (BAD_LABEL,), value)
    what = "NaN" if np.isnan(value) else "infinity"
    with _fails(ValueError, f"Input y contains {what}"):
        fitted.call(method, fitted.X, backend.asarray(y))
    fitted.assert_unchanged()


# --------------------------------------------------------------------------------------
# Case 3: X that is 0-D, 1-D or 3-D
# --------------------------------------------------------------------------------------

RANKS = {
    "0-D": (lambda X: X[0, 0], "()", ".reshape(1, 1)"),
    "1-D": (lambda X: X[:, 0], "(12,)", ".reshape(-1, 1)"),
    "3-D": (lambda X: X[:, :, None], "(12, 3, 1)", ".reshape({x}.shape[0], -1)"),
}


@pytest.mark.parametrize("entry", [*X_ENTRIES, "forward"])
@pytest.mark.parametrize("rank", list(RANKS))
def test_case03_X_must_be_2d_with_a_reshape_hint(backend, entry, rank):
    h = Harness(backend)
    make, shape, hint = RANKS[rank]
    xname, _ = _names(entry)
    expected = "(batch, 3)" if entry == "forward" else "(samples, features)"
    hint = f"{xname}{hint.format(x=xname)}"
    with _fails(ValueError, f"{xname} must be 2-D {expected}", f"shape {shape}", hint):
        h.call(entry, make(h.X), h.y)
    h.assert_unchanged()


def test_case03_lists_and_python_numbers_get_the_same_message(backend):
    h = Harness(backend)
    with _fails(ValueError, "X must be 2-D (samples, features), got shape (3,)", "reshape(1, -1)"):
        pp.predict(h.model, [0.5, 1.0, 2.0])
    with _fails(ValueError, "got shape () (a single value)", "X.reshape(1, 1)"):
        pp.predict(h.model, 0.5)
    with _fails(ValueError, "got shape (2, 3, 1)", "X.reshape(X.shape[0], -1)"):
        pp.fit(h.model, h.loss, h.optimizer, [[[1.0]] * 3] * 2, [0, 1], verbose=0)
    h.assert_unchanged()


@pytest.mark.parametrize("method", ESTIMATOR_X_METHODS)
@pytest.mark.parametrize("rank", list(RANKS))
def test_case03_estimator_X_must_be_2d_with_a_reshape_hint(backend, method, rank):
    fitted = FittedEstimator(backend)
    make, _, _ = RANKS[rank]
    got = {"0-D": "got scalar array", "1-D": "got 1D array", "3-D": "got 3D array"}[rank]
    with _fails(ValueError, "X", "Expected 2D array", got) as info:
        fitted.call(method, make(fitted.X))
    assert "reshape" in str(info.value).lower()
    fitted.assert_unchanged()


# --------------------------------------------------------------------------------------
# Case 4: zero samples or zero features
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("entry", ["fit", "fit(validation_data)", "evaluate"])
def test_case04_zero_samples(backend, entry):
    h = Harness(backend)
    xname, _ = _names(entry)
    caller = {"fit": "fit", "fit(validation_data)": "validation", "evaluate": "evaluate"}[entry]
    with _fails(ValueError, f"{xname} has 0 samples (shape (0, 3)); {caller} needs at least 1"):
        h.call(entry, h.X[:0, ...], h.y[:0])
    h.assert_unchanged()


def test_case04_predict_of_zero_samples_is_empty(backend):
    """The one exception, by decision: ``predict`` of no samples has no rows."""
    h = Harness(backend)
    out = pp.predict(h.model, h.X[:0, ...])
    assert tuple(out.shape) == (0, K)
    assert backend.owns(out)
    h.assert_unchanged()


@pytest.mark.parametrize("entry", [*X_ENTRIES, "forward"])
def test_case04_zero_features(backend, entry):
    h = Harness(backend)
    xname, _ = _names(entry)
    with _fails(ValueError, f"{xname} has 0 features, but the model expects 3"):
        h.call(entry, h.X[:, :0], h.y)
    h.assert_unchanged()


@pytest.mark.parametrize("method", ESTIMATOR_X_METHODS)
@pytest.mark.parametrize("empty", ["samples", "features"])
def test_case04_estimator_zero_samples_or_features(backend, method, empty):
    fitted = FittedEstimator(backend)
    if empty == "samples":
        X, y, shown = fitted.X[:0, ...], fitted.y[:0], "0 sample(s) (shape=(0, 3))"
    else:
        X, y, shown = fitted.X[:, :0], fitted.y, "0 feature(s) (shape=(12, 0))"
    if method == "predict" and empty == "features":
        shown = "0 feature(s) (shape=(12, 0))"
    with _fails(ValueError, "X", shown, "a minimum of 1 is required"):
        fitted.call(method, X, y)
    fitted.assert_unchanged()


# --------------------------------------------------------------------------------------
# Case 5: len(X) != len(y)
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("entry", Y_ENTRIES)
@pytest.mark.parametrize("source", ["backend", "list"])
def test_case05_lengths_differ(backend, entry, source):
    h = Harness(backend)
    X, y = h.X, h.y[:-1]
    if source == "list":
        X, y = to_numpy(X).tolist(), to_numpy(y).tolist()
    xname, yname = _names(entry)
    with _fails(ValueError, f"{xname} and {yname} must hold as many samples",
                f"{xname} has 12, {yname} has 11"):  # fmt: skip
        h.call(entry, X, y)
    h.assert_unchanged()


@pytest.mark.parametrize("kind", ["classifier", "regressor"])
@pytest.mark.parametrize("method", ["fit", "partial_fit"])
def test_case05_estimator_lengths_differ(backend, kind, method):
    fitted = FittedEstimator(backend, kind)
    with _fails(ValueError, "X and y must hold as many samples: X has 12, y has 11"):
        fitted.call(method, fitted.X, fitted.y[:-1])
    fitted.assert_unchanged()


# --------------------------------------------------------------------------------------
# Case 6: the wrong number of features
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("entry", [*X_ENTRIES, "forward"])
def test_case06_wrong_number_of_features(backend, entry):
    h = Harness(backend)
    X = backend.asarray(np.ones((N, 4), dtype="float32"))
    xname, _ = _names(entry)
    with _fails(ValueError, f"{xname} has 4 features, but the model expects 3"):
        h.call(entry, X, h.y)
    h.assert_unchanged()


def test_case06_the_backends_matmul_error_never_surfaces(backend):
    """Activations before the first Linear keep the shape: the Linear still checks; a
    gradient of the wrong width is named too; and layers that cannot chain are refused
    when the model is built."""
    kw = {"backend": backend}
    pp.manual_seed(0)
    model = pp.Sequential(
        pp.Tanh(**kw), pp.Dropout(0.5, **kw), pp.Linear(3, 2, **kw), pp.ReLU(**kw)
    )
    with _fails(ValueError, "X has 4 features, but the model expects 3 (shape (5, 4))"):
        model.forward(backend.asarray(np.ones((5, 4), dtype="float32")))
    model.forward(backend.asarray(np.ones((5, 3), dtype="float32")))
    with _fails(ValueError, "grad_output has 3 columns, but the model expects 2"):
        model.backward(backend.asarray(np.ones((5, 3), dtype="float32")))
    with _fails(ValueError, "layer 2 (Linear) expects 5 input features, but layer 0 (Linear) "
                "gives 4 outputs"):  # fmt: skip
        pp.Sequential(pp.Linear(3, 4, **kw), pp.ReLU(**kw), pp.Linear(5, 2, **kw))


@pytest.mark.parametrize("method", ["partial_fit", "predict", "predict_proba", "score"])
def test_case06_estimator_wrong_number_of_features(backend, method):
    fitted = FittedEstimator(backend)
    X = backend.asarray(np.ones((N, 4), dtype="float32"))
    with _fails(ValueError, "X has 4 features, but MLPClassifier is expecting 3 features"):
        fitted.call(method, X)
    fitted.assert_unchanged()


# --------------------------------------------------------------------------------------
# Case 7: targets that do not fit the outputs
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("entry", Y_ENTRIES)
@pytest.mark.parametrize("loss", ["mse", "bce"])
@pytest.mark.parametrize("width", [1, 2, 4])
def test_case07_target_width(backend, entry, loss, width):
    h = Harness(backend, loss)
    y = backend.asarray(np.zeros((N, width), dtype="float32"))
    _, yname = _names(entry)
    name = {"mse": "MSELoss", "bce": "BCEWithLogitsLoss"}[loss]
    columns = "1 column" if width == 1 else f"{width} columns"
    with _fails(ValueError, f"{yname} has {columns} (shape (12, {width})",
                f"the model has 3 outputs: {name} needs targets of shape (samples, 3)"):  # fmt: skip
        h.call(entry, h.X, y)
    h.assert_unchanged()


@pytest.mark.parametrize("entry", Y_ENTRIES)
@pytest.mark.parametrize("bad", [K, -1, K + 5])
@pytest.mark.parametrize("dtype", ["int64", "float64"])
def test_case07_labels_out_of_range(backend, entry, bad, dtype):
    h = Harness(backend)
    labels = (np.arange(N) % K).astype(dtype)
    labels[BAD_LABEL] = bad
    _, yname = _names(entry)
    low, high = min(0, bad), max(K - 1, bad)
    with _fails(ValueError, f"{yname} holds class labels from {low} to {high}",
                "the model has 3 outputs: CrossEntropyLoss needs labels in [0, 3)",
                f"first at sample {BAD_LABEL}: {bad}"):  # fmt: skip
        h.call(entry, h.X, backend.asarray(labels))
    h.assert_unchanged()


def test_case07_estimator_targets(backend):
    regressor = FittedEstimator(backend, "regressor")
    with _fails(ValueError, "y has 2 outputs, but the model has 1"):
        regressor.call("partial_fit", regressor.X, np.zeros((N, 2)))
    regressor.assert_unchanged()
    classifier = FittedEstimator(backend)
    with _fails(ValueError, "`y` has classes not in `self.classes_`", "'y' has [0 1 2 9]"):
        classifier.call("partial_fit", classifier.X, np.where(np.arange(N) == 3, 9, classifier.y))
    classifier.assert_unchanged()


# --------------------------------------------------------------------------------------
# Case 8: strings, objects, complex numbers, ragged lists; bool and integer X
# --------------------------------------------------------------------------------------


def _bad_kind(kind: str, backend: pp.Backend) -> tuple[Any, type[Exception], tuple[str, ...]]:
    """Features of ``kind`` and what ``fit`` must say about them."""
    X, _, _ = _host_data()
    if kind == "strings":
        return X.astype(str), TypeError, ("got strings (dtype str", "the first is '0.1")
    if kind == "objects":
        return X.astype(object), TypeError, ("got Python objects (dtype object)",)
    if kind == "complex":
        return (
            backend.asarray(X.astype("complex64")),
            TypeError,
            ("got complex values (dtype complex64)", "pass X.real"),
        )
    rows = X.tolist()
    rows[5] = rows[5][:2]
    return rows, ValueError, ("is ragged", "row 0 has 3 values and row 5 has 2 values")


KINDS = ("strings", "objects", "complex", "ragged")


@pytest.mark.parametrize("entry", ["fit", "evaluate", "predict"])
@pytest.mark.parametrize("kind", KINDS)
def test_case08_X_of_strings_objects_complex_or_ragged(backend, entry, kind):
    h = Harness(backend)
    X, error, fragments = _bad_kind(kind, backend)
    expected = () if kind == "ragged" else ("X must hold real numbers (bool, integer or floating)",)
    with _fails(error, "X", *expected, *fragments):
        h.call(entry, X, h.y)
    h.assert_unchanged()


@pytest.mark.parametrize("entry", Y_ENTRIES)
def test_case08_string_labels_say_how_to_encode_them(backend, entry):
    h = Harness(backend)
    labels = np.array(["cat", "dog", "emu"])[np.arange(N) % K]
    _, yname = _names(entry)
    with _fails(TypeError, f"{yname} holds strings (dtype str", "the first is 'cat'",
                "CrossEntropyLoss takes integer class labels 0 to n_classes - 1",
                "numpy.unique", "portprop.sklearn.MLPClassifier"):  # fmt: skip
        h.call(entry, h.X, labels)
    h.assert_unchanged()


@pytest.mark.parametrize("loss", ["mse", "bce"])
def test_case08_targets_of_strings(backend, loss):
    h = Harness(backend, loss)
    with _fails(TypeError, "y must hold real numbers", "as targets of", "got strings"):
        pp.fit(h.model, h.loss, h.optimizer, h.X, to_numpy(h.y).astype(str), verbose=0)
    h.assert_unchanged()


@pytest.mark.parametrize("dtype", ["bool", "int8", "int32", "int64", "uint8"])
def test_case08_bool_and_integer_X_are_converted_to_the_model_dtype(backend, dtype):
    """The rule: bool and integer features become the model's floating dtype (True is
    1.0), exactly as ``X.astype(model dtype)`` would, in every entry point."""
    X, labels, _ = _host_data()
    raw = (X > 0) if dtype == "bool" else np.round(4 * X).astype(dtype)
    as_float = raw.astype("float32")
    native = backend.asarray(raw)
    fitted, reference = Harness(backend), Harness(backend)
    out = pp.predict(fitted.model, native)
    assert out.dtype == backend.float_dtype("float32")
    np.testing.assert_array_equal(to_numpy(out), to_numpy(pp.predict(reference.model, as_float)))
    assert pp.evaluate(fitted.model, fitted.loss, native, labels) == pp.evaluate(
        reference.model, reference.loss, as_float, labels
    )
    kw = {"epochs": 2, "batch_size": 4, "seed": 1, "verbose": 0}
    pp.fit(fitted.model, fitted.loss, fitted.optimizer, native, labels, **kw)
    pp.fit(reference.model, reference.loss, reference.optimizer, as_float, labels, **kw)
    _assert_same(reference.snapshot()["parameters"], fitted.snapshot()["parameters"])


def test_case08_integers_beyond_2_to_the_24_are_rounded_in_float32(backend):
    h = Harness(backend)
    big = np.array([[2**24 + 1, 0, 0]], dtype="int64")  # not representable in float32
    rounded = np.array([[2**24, 0, 0]], dtype="float32")
    np.testing.assert_array_equal(to_numpy(pp.predict(h.model, backend.asarray(big))),
                                  to_numpy(pp.predict(h.model, rounded)))  # fmt: skip


@pytest.mark.parametrize("method", ["fit", "partial_fit", "predict", "predict_proba", "score"])
@pytest.mark.parametrize("kind", ["strings", "complex", "ragged"])
def test_case08_estimator_X_of_strings_complex_or_ragged(backend, method, kind):
    fitted = FittedEstimator(backend)
    X, _, _ = _bad_kind(kind, backend)
    fragments = {
        "strings": ("X must hold numbers, got strings", "could not convert string to float"),
        "complex": ("Complex data not supported: X has dtype complex64",),
        "ragged": ("X is ragged", "row 0 has 3 values and row 5 has 2 values"),
    }[kind]
    with _fails(ValueError, *fragments):
        fitted.call(method, X)
    fitted.assert_unchanged()


def test_case08_estimator_converts_bool_integer_and_object_X(backend):
    """scikit-learn's convention: object arrays of numbers are converted, like bool and
    integer arrays, to float64; the model is the same as for the float64 array."""
    X, labels, _ = _host_data()
    integers = np.round(4 * X).astype("int32")
    predictions = []
    for data in (integers.astype("float64"), integers, integers.astype(object)):
        fitted = FittedEstimator(backend)
        with _quiet():
            fitted.estimator.fit(data, labels)
        predictions.append(fitted.estimator.predict_proba(integers.astype("float32")))
    np.testing.assert_array_equal(predictions[1], predictions[0])
    np.testing.assert_array_equal(predictions[2], predictions[0])


def test_case08_regressor_targets_of_strings(backend):
    fitted = FittedEstimator(backend, "regressor")
    with _fails(ValueError, "y must hold numbers, got strings"):
        fitted.call("fit", fitted.X, np.asarray(fitted.y).astype(str))
    fitted.assert_unchanged()


# --------------------------------------------------------------------------------------
# Case 9: data of another floating dtype than the model's
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["numpy", "backend"])
def test_case09_float64_data_is_cast_to_a_float32_model(backend64, where):
    """The policy, the same on every backend: fit, evaluate and predict cast floating
    data to the model's dtype; Module.forward refuses it with a TypeError."""
    backend = backend64
    X, labels, _ = _host_data()
    X64 = X.astype("float64")
    data = X64 if where == "numpy" else backend.asarray(X64)
    cast, reference = Harness(backend), Harness(backend)
    out = pp.predict(cast.model, data)
    assert out.dtype == backend.float_dtype("float32")
    assert backend.owns(out)
    np.testing.assert_array_equal(to_numpy(out), to_numpy(pp.predict(reference.model, X)))
    kw = {"epochs": 2, "batch_size": 4, "seed": 1, "verbose": 0}
    pp.fit(cast.model, cast.loss, cast.optimizer, data, labels, validation_data=(data, labels),
           **kw)  # fmt: skip
    pp.fit(reference.model, reference.loss, reference.optimizer, X, labels,
           validation_data=(X, labels), **kw)  # fmt: skip
    _assert_same(reference.snapshot(), cast.snapshot())
    for p in cast.model.parameters():
        assert p.data.dtype == backend.float_dtype("float32")
    assert pp.evaluate(cast.model, cast.loss, data, labels) == pp.evaluate(
        reference.model, reference.loss, X, labels
    )
    # ... and the low-level forward refuses it
    cast.before = cast.snapshot()
    with _fails(TypeError, "X has dtype float64 but the model computes in float32",
                "portprop.asarray(X, dtype='float32'"):  # fmt: skip
        cast.model.forward(backend.asarray(X64))
    cast.assert_unchanged()


def test_case09_float32_data_is_cast_to_a_float64_model(backend64):
    backend = backend64
    X, _, _ = _host_data()
    pp.manual_seed(0)
    model = pp.Sequential(pp.Linear(F, 4, backend=backend, dtype="float64"))
    out = pp.predict(model, backend.asarray(X))
    assert out.dtype == backend.float_dtype("float64")
    np.testing.assert_array_equal(to_numpy(out), to_numpy(pp.predict(model, X.astype("float64"))))
    with _fails(TypeError, "X has dtype float32 but the model computes in float64"):
        model.forward(backend.asarray(X))


def test_case09_estimator_casts_float64_data(backend64):
    """The parameters follow X's floating dtype, as in scikit-learn; dtype= overrides it,
    and then float64 data is cast to the model's float32 once, on the way in."""
    backend = backend64
    X, labels, _ = _host_data()
    on32, on64, cast = (FittedEstimator(backend) for _ in range(3))
    cast.estimator.set_params(dtype="float32")
    with _quiet():
        on32.estimator.fit(backend.asarray(X), labels)
        on64.estimator.fit(backend.asarray(X.astype("float64")), labels)
        cast.estimator.fit(backend.asarray(X.astype("float64")), labels)
    assert on32.estimator.model_.dtype == backend.float_dtype("float32")
    assert on64.estimator.model_.dtype == backend.float_dtype("float64")
    assert cast.estimator.model_.dtype == backend.float_dtype("float32")
    _assert_same(on32.snapshot()["parameters"], cast.snapshot()["parameters"])
    np.testing.assert_array_equal(cast.estimator.predict_proba(X.astype("float64")),
                                  on32.estimator.predict_proba(X))  # fmt: skip


# --------------------------------------------------------------------------------------
# Case 10: predict or evaluate before fit
# --------------------------------------------------------------------------------------


BEFORE_FIT = [
    *(("classifier", m) for m in ("predict", "predict_proba", "predict_log_proba", "score")),
    *(("regressor", m) for m in ("predict", "score")),
    *((kind, m) for kind in ("classifier", "regressor") for m in ("coefs_", "intercepts_")),
]


@pytest.mark.parametrize(("kind", "method"), BEFORE_FIT)
def test_case10_estimator_before_fit(backend, kind, method):
    _sklearn()
    from sklearn.exceptions import NotFittedError

    from portprop.sklearn import MLPClassifier, MLPRegressor

    cls = MLPClassifier if kind == "classifier" else MLPRegressor
    estimator = cls(backend=backend.name)
    X, labels, _ = _host_data()
    attributes = dict(vars(estimator))
    with _fails(NotFittedError, f"This {cls.__name__} instance is not fitted yet",
                "Call 'fit'"):  # fmt: skip
        if method.endswith("_"):
            getattr(estimator, method)
        elif method == "score":
            estimator.score(backend.asarray(X), labels)
        else:
            getattr(estimator, method)(backend.asarray(X))
    assert vars(estimator) == attributes  # nothing was set


def test_case10_a_module_has_no_unfitted_state(backend):
    """By decision, the low-level API has no "not fitted" error: a module is usable
    from its construction (its initial weights are drawn then)."""
    X, labels, _ = _host_data()
    pp.manual_seed(0)
    model = pp.Sequential(pp.Linear(F, K, backend=backend))
    assert tuple(pp.predict(model, X).shape) == (N, K)
    assert np.isfinite(pp.evaluate(model, pp.CrossEntropyLoss(), X, labels)["loss"])


# --------------------------------------------------------------------------------------
# Case 11: bad hyperparameters, refused before any computation
# --------------------------------------------------------------------------------------

FIT_HYPERPARAMETERS = [
    ({"batch_size": 0}, ValueError, "batch_size must be an int >= 1, got 0"),
    ({"batch_size": -3}, ValueError, "batch_size must be an int >= 1, got -3"),
    ({"epochs": -1}, ValueError, "epochs must be an int >= 0, got -1"),
    ({"validation_split": 1.0}, ValueError, "validation_split must lie in [0, 1), got 1.0"),
    ({"clip_grad_norm": 0.0}, ValueError, "clip_grad_norm must be a finite number > 0, got 0.0"),
    ({"metrics": ["f1"]}, ValueError, "unknown metric(s) ['f1']"),
]


@pytest.mark.parametrize(("kw", "error", "message"), FIT_HYPERPARAMETERS)
def test_case11_fit_hyperparameters(backend, kw, error, message):
    h = Harness(backend)
    with _fails(error, message):
        pp.fit(h.model, h.loss, h.optimizer, h.X, h.y, verbose=0, **kw)
    h.assert_unchanged()


@pytest.mark.parametrize("entry", ["evaluate", "predict"])
def test_case11_evaluate_and_predict_batch_size(backend, entry):
    h = Harness(backend)
    with _fails(ValueError, "batch_size must be an int >= 1, got 0"):
        if entry == "evaluate":
            pp.evaluate(h.model, h.loss, h.X, h.y, batch_size=0)
        else:
            pp.predict(h.model, h.X, batch_size=0)
    h.assert_unchanged()


@pytest.mark.parametrize("lr", [0.0, -0.1, float("nan")])
@pytest.mark.parametrize("optimizer", ["SGD", "Adam", "AdamW", "RMSprop"])
def test_case11_learning_rate(backend, optimizer, lr):
    h = Harness(backend)
    with _fails(ValueError, "lr must be a finite number > 0", f"got {lr!r}"):
        getattr(pp, optimizer)(h.model.parameters(), lr=lr)
    h.assert_unchanged()


def test_case11_layer_sizes_and_dropout(backend):
    for size in (0, -2):
        with _fails(ValueError, f"in_features must be a positive int, got {size}"):
            pp.Linear(size, 3, backend=backend)
        with _fails(ValueError, f"out_features must be a positive int, got {size}"):
            pp.Linear(3, size, backend=backend)
    for p in (-0.1, 1.0, 1.5, float("nan")):
        with _fails(ValueError, "p must be in [0, 1)", f"got p={p!r}"):
            pp.Dropout(p, backend=backend)


def test_case11_unknown_loss_for_fit(backend):
    h = Harness(backend)
    with _fails(TypeError, "loss must be a portprop loss", "got str"):
        pp.fit(h.model, "cross_entropy", h.optimizer, h.X, h.y, verbose=0)
    h.assert_unchanged()


ESTIMATOR_HYPERPARAMETERS = [  # scikit-learn's own messages (InvalidParameterError)
    (
        {"learning_rate_init": 0.0},
        "'learning_rate_init' parameter of MLPClassifier must be a float in the range (0.0, inf). Got 0.0",
    ),
    ({"learning_rate_init": -1.0}, "must be a float in the range (0.0, inf). Got -1.0"),
    (
        {"batch_size": 0},
        "'batch_size' parameter of MLPClassifier must be a str among {'auto'} or an int in the range [1, inf). Got 0",
    ),
    ({"hidden_layer_sizes": (4, 0)}, "hidden_layer_sizes must be > 0, got [4, 0]."),
    ({"activation": "softplus"}, "'activation' parameter of MLPClassifier must be a str among"),
    ({"activation": "softplus"}, "Got 'softplus' instead"),
    ({"solver": "newton"}, "'solver' parameter of MLPClassifier must be a str among"),
    (
        {"max_iter": 0},
        "'max_iter' parameter of MLPClassifier must be an int in the range [1, inf). Got 0",
    ),
    ({"dtype": "float16"}, "dtype must be None, 'float32' or 'float64', got 'float16'"),
]


@pytest.mark.parametrize("method", ["fit", "partial_fit"])
@pytest.mark.parametrize(("params", "message"), ESTIMATOR_HYPERPARAMETERS)
def test_case11_estimator_hyperparameters(backend, method, params, message):
    fitted = FittedEstimator(backend)
    fitted.estimator.set_params(**params)  # parameters, not fitted attributes: no snapshot
    if method == "partial_fit" and "solver" in params:
        # as scikit-learn's: partial_fit exists only for the stochastic solvers
        error, message = AttributeError, "has no attribute 'partial_fit'"
    else:
        error = ValueError
    with _fails(error, message):
        fitted.call(method, fitted.X)
    fitted.assert_unchanged()


# --------------------------------------------------------------------------------------
# A failed fit keeps the previous fitted estimator (decision for cases 1 to 11)
# --------------------------------------------------------------------------------------


def test_a_failed_fit_keeps_the_previous_model(backend):
    """``fit`` builds a new model only after every check passed, and restores the
    estimator's attributes if anything raises later (here: training diverges)."""
    fitted = FittedEstimator(backend, "regressor")
    fitted.estimator.set_params(learning_rate_init=1e6)
    # features of 1e36 with this rate overflow float32 in the first epochs; scikit-learn's
    # own MLPRegressor raises the same error for them (its float64 targets keep other
    # overflows finite, which portprop's float32 model, computing in float32, does not)
    X, _, _ = _host_data()
    huge = backend.asarray(X * np.float32(1e36))
    with _fails(ValueError, "Solver produced non-finite parameter weights"):
        fitted.call("fit", huge)  # and no RuntimeWarning: fit silences NumPy's
    fitted.assert_unchanged()
    unfitted = type(fitted.estimator)(**fitted.estimator.get_params())
    with _fails(ValueError, "Input X contains NaN"):
        unfitted.fit(backend.asarray(np.full((N, F), np.nan, dtype="float32")), fitted.y)
    assert not hasattr(unfitted, "model_")
    assert not hasattr(unfitted, "n_features_in_")


# --------------------------------------------------------------------------------------
# The data set readers
# --------------------------------------------------------------------------------------


def _npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def test_case01_standardizer_refuses_nan(backend):
    X, _, _ = _host_data()
    X64 = X.astype("float64")
    X64[BAD_ROW, BAD_COLUMN] = np.nan
    scaler = pp.datasets.Standardizer()
    with _fails(ValueError, "Input X contains NaN (first at sample 4, feature 1",
                "the Standardizer needs finite values"):  # fmt: skip
        scaler.fit(backend.asarray(X64))
    assert scaler.mean_ is None


def test_case03_readers_refuse_other_ranks(tmp_path):
    X, labels, _ = _host_data()
    path = _npz(tmp_path / "cube.npz", X=X[:, :, None], y=labels)
    with _fails(ValueError, "array 'X' must be a 2-D numeric array (samples, features)",
                "got shape (12, 3, 1)"):  # fmt: skip
        pp.datasets.load_npz(path)
    with _fails(ValueError, "X must be a non-empty 2-D numeric array", "got shape (12,)",
                "X.reshape(-1, 1)"):  # fmt: skip
        pp.datasets.Standardizer().fit(X[:, 0])


def test_case04_readers_refuse_empty_data(tmp_path):
    header_only = tmp_path / "header.csv"
    header_only.write_text("a,b,label\n")
    with _fails(ValueError, "header.csv: the file has a header but no data rows"):
        pp.datasets.load_csv(header_only)
    one_column = tmp_path / "one.csv"
    one_column.write_text("1\n2\n")
    with _fails(ValueError, "one.csv: needs at least one feature column and a label column, "
                "found 1"):  # fmt: skip
        pp.datasets.load_csv(one_column)
    with _fails(ValueError, "n_samples must be a positive int, got 0"):
        pp.datasets.make_disk(0)


def test_case05_and_08_readers_refuse_mismatched_or_non_numeric_files(tmp_path):
    X, labels, _ = _host_data()
    with _fails(
        ValueError, "array 'y' must be 1-D with one label per sample (12), got shape (11,)"
    ):
        pp.datasets.load_npz(_npz(tmp_path / "short.npz", X=X, y=labels[:-1]))
    with _fails(ValueError, "got shape (12, 3) and dtype complex64"):
        pp.datasets.load_npz(_npz(tmp_path / "complex.npz", X=X.astype("complex64"), y=labels))
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("a,b,label\n1,2,0\n3,1\n")
    with _fails(ValueError, "ragged.csv: line 3 has 2 fields but the header has 3"):
        pp.datasets.load_csv(ragged)
    words = tmp_path / "words.csv"
    words.write_text("a,b,label\n1,2,0\n3,four,1\n")
    with _fails(ValueError, "words.csv: line 3, column 1 ('b'): expected a number, found 'four'"):
        pp.datasets.load_csv(words)


# --------------------------------------------------------------------------------------
# The command line: one line on standard error, status 2, files unchanged
# --------------------------------------------------------------------------------------


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli_main(list(argv))
    return status, out.getvalue(), err.getvalue()


def _cli_data(tmp_path: Path, case: str) -> tuple[Path, str]:
    """A data file for ``case`` and a fragment of the error it must cause."""
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(40, 3)), np.arange(40) % 2
    if case == "nan in X":
        X[5, 2] = np.nan
        return _npz(
            tmp_path / "d.npz", X=X, y=y
        ), "contains NaN (first at sample 5, feature 2; 1 NaN or infinite value in all)"
    if case == "inf in y":
        return _npz(tmp_path / "d.npz", X=X, y=np.where(np.arange(40) == 6, np.inf, y)), (
            "(labels) contains infinity (first at sample 6; 1 NaN or infinite value in all)"
        )
    if case == "3-D X":
        return _npz(tmp_path / "d.npz", X=X[:, :, None], y=y), "got shape (40, 3, 1)"
    if case == "no samples":
        return _npz(
            tmp_path / "d.npz", X=X[:0], y=y[:0]
        ), "has 0 samples (shape (0, 3)); a model needs at least 1"
    if case == "no features":
        return _npz(
            tmp_path / "d.npz", X=X[:, :0], y=y
        ), "has 0 features (shape (40, 0)); a model needs at least 1"
    if case == "lengths differ":
        return _npz(tmp_path / "d.npz", X=X, y=y[:-1]), "one label per sample (40), got shape (39,)"
    if case == "complex X":
        return _npz(tmp_path / "d.npz", X=X.astype(complex), y=y), "dtype complex128"
    if case == "complex labels":
        return _npz(tmp_path / "d.npz", X=X, y=y.astype(complex)), "got dtype complex128"
    path = tmp_path / "d.csv"
    path.write_text("a,b,c,label\n1,2,3,0\n1,x,3,1\n")
    return path, "line 3, column 1 ('b'): expected a number, found 'x'"


CLI_CASES = ("nan in X", "inf in y", "3-D X", "no samples", "no features", "lengths differ",
             "complex X", "complex labels", "strings in X")  # fmt: skip


@pytest.mark.parametrize("case", CLI_CASES)
def test_cases_01_to_08_command_line_data(backend, tmp_path, case):
    path, fragment = _cli_data(tmp_path, case)
    saved = tmp_path / "model.safetensors"
    saved.write_bytes(b"an earlier model")
    status, out, err = _cli("train", "--dataset", str(path), "--backend", backend.name,
                            "--epochs", "1", "--save", str(saved), "-q")  # fmt: skip
    assert (status, out) == (2, "")
    assert err.startswith("portprop: error: ")
    assert err.count("\n") == 1
    assert path.name in err
    assert fragment in err
    assert saved.read_bytes() == b"an earlier model"


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--lr", "0", "argument --lr: expected a number in (0, inf), got 0"),
        ("--lr", "-1", "argument --lr: expected a number in (0, inf), got -1"),
        ("--batch-size", "0", "argument --batch-size: expected an integer >= 1, got 0"),
        ("--hidden", "8,0", "argument --hidden: expected comma-separated layer widths >= 1"),
        ("--activation", "swish", "argument --activation: invalid choice: 'swish'"),
        ("--loss", "hinge", "argument --loss: invalid choice: 'hinge'"),
        ("--dropout", "1", "argument --dropout: expected a number in [0, 1), got 1"),
        ("--dtype", "float16", "argument --dtype: invalid choice: 'float16'"),
    ],
)
def test_case11_command_line_hyperparameters(backend, tmp_path, flag, value, message):
    saved = tmp_path / "model.safetensors"
    saved.write_bytes(b"an earlier model")
    status, out, err = _cli("train", "--dataset", "disk", "--backend", backend.name,
                            "--save", str(saved), flag, value)  # fmt: skip
    assert (status, out) == (2, "")
    assert err.startswith("portprop: error: ")
    assert err.count("\n") == 1
    assert message in err
    assert saved.read_bytes() == b"an earlier model"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "disk.safetensors"
    status, _, err = _cli("train", "--dataset", "disk", "--samples", "60", "--epochs", "1",
                          "--hidden", "4", "--backend", "numpy", "--save", str(path), "-q")  # fmt: skip
    assert status == 0, err
    return path


@pytest.mark.parametrize("case", ["nan in X", "wrong features"])
def test_cases_01_and_06_command_line_predict(checkpoint, backend, tmp_path, case):
    X = np.random.default_rng(2).normal(size=(5, 2))
    if case == "nan in X":
        X[3, 1] = np.nan
        fragment = "contains NaN (first at sample 3, feature 1; 1 NaN or infinite value in all)"
    else:
        X = np.concatenate([X, X], axis=1)
        fragment = "expected numeric features of shape (samples, 2), got shape (5, 4)"
    path = _npz(tmp_path / "new.npz", X=X)
    output = tmp_path / "predictions.csv"
    output.write_text("earlier predictions\n")
    status, out, err = _cli("predict", str(checkpoint), str(path), "--backend", backend.name,
                            "--output", str(output))  # fmt: skip
    assert (status, out) == (2, "")
    assert err.count("\n") == 1
    assert fragment in err
    assert output.read_text() == "earlier predictions\n"


# --------------------------------------------------------------------------------------
# History: the learning rate recorded for a schedule stepped per batch
# --------------------------------------------------------------------------------------


def test_history_lr_is_the_lr_of_the_epochs_last_step(backend):
    """By decision, ``history["lr"]`` holds the lr of each epoch's last optimizer step;
    a per-batch schedule has already moved ``optimizer.lr`` on by the epoch's end."""

    class Recording(pp.SGD):
        used: list[float]

        def step(self) -> None:
            self.used = [*getattr(self, "used", []), self.lr]
            super().step()

    class Halving:  # a duck-typed schedule, stepped after every batch
        interval = "batch"

        def __init__(self, optimizer: pp.Optimizer) -> None:
            self.optimizer = optimizer

        def step(self) -> None:
            self.optimizer.lr *= 0.5

    h = Harness(backend)
    optimizer = Recording(h.model.parameters(), lr=0.8)
    history = pp.fit(h.model, h.loss, optimizer, h.X, h.y, epochs=3, batch_size=4,
                     schedule=Halving(optimizer), verbose=0)  # fmt: skip
    steps = N // 4
    assert optimizer.used == [0.8 * 0.5**i for i in range(3 * steps)]
    assert history.history["lr"] == [optimizer.used[(e + 1) * steps - 1] for e in range(3)]
    assert history.history["lr"][-1] == 2 * optimizer.lr  # not the lr after the epoch
