"""portprop.sklearn under scikit-learn's array API dispatch: inputs of any backend are
fitted and predicted where they live, and outputs and fitted attributes come back in
their library and on their device; without dispatch, outputs stay NumPy.

The ``backend`` fixture runs each test on every backend (CUDA and CuPy are skipped,
with their reason, where there is no GPU).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._array_api import yield_mixed_namespace_input_permutations
from sklearn.utils.estimator_checks import (
    check_array_api_input,
    check_array_api_mixed_inputs,
    check_array_api_same_namespace,
)

import portprop as pp
import portprop.backend._base as backend_base
from portprop.backend import backend_of
from portprop.sklearn import MLPClassifier, MLPRegressor

SMALL = {"hidden_layer_sizes": (16,), "max_iter": 8, "random_state": 0, "batch_size": 64}


@pytest.fixture
def dispatch(monkeypatch: pytest.MonkeyPatch):
    """``array_api_dispatch=True`` for the test (scikit-learn wants SciPy's flag set),
    and array-api-strict's flags restored afterwards (scikit-learn changes them)."""
    monkeypatch.setenv("SCIPY_ARRAY_API", "1")
    strict = None
    try:
        import array_api_strict as strict

        flags = strict.get_array_api_strict_flags()
    except ImportError:
        flags = None
    with sklearn.config_context(array_api_dispatch=True):
        yield
    if strict is not None and flags is not None:
        strict.set_array_api_strict_flags(**flags)


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X[:240] / 16.0, y[:240]


def on(backend: pp.Backend, host, dtype=None):
    """A host array as an array of ``backend``."""
    return backend.asarray(np.asarray(host), dtype=dtype)


def float_name(backend: pp.Backend) -> str:
    return "float64" if backend.supports("float64") else "float32"


def assert_lives_on(backend: pp.Backend, *arrays) -> None:
    """Each array is of ``backend``'s library and on its device (NumPy for NumPy)."""
    for a in arrays:
        assert backend_of(a).name == backend.name, (type(a), backend.name)


def fit_quietly(estimator, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return estimator.fit(*args, **kwargs)


def host(a):
    return backend_of(a).to_host(a)


# --------------------------------------------------------------------------------------
# Outputs and fitted attributes live where the inputs live
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("solver", ["adam", "lbfgs"])
def test_classifier_outputs_and_attributes_on_the_input_backend(backend, dispatch, digits, solver):
    X, y = digits
    dtype = float_name(backend)
    Xd, yd = on(backend, X, dtype), on(backend, y)
    ours = fit_quietly(MLPClassifier(solver=solver, **SMALL), Xd, yd)
    labels = ours.predict(Xd)
    proba = ours.predict_proba(Xd)
    log_proba = ours.predict_log_proba(Xd)
    assert_lives_on(backend, labels, proba, log_proba, ours.classes_)
    assert_lives_on(backend, *ours.coefs_, *ours.intercepts_)
    assert tuple(labels.shape) == (240,)
    assert tuple(proba.shape) == (240, 10)
    assert backend.name == ours.model_.backend.name
    # the NumPy path, with the same data and seeds: same labels, same probabilities
    reference = fit_quietly(MLPClassifier(solver=solver, **SMALL), X.astype(dtype), y)
    np.testing.assert_array_equal(host(labels), reference.predict(X.astype(dtype)))
    tol = 1e-9 if dtype == "float64" else 1e-4
    np.testing.assert_allclose(
        host(proba), reference.predict_proba(X.astype(dtype)), rtol=tol, atol=tol
    )
    np.testing.assert_array_equal(host(ours.classes_), reference.classes_)
    for a, b in zip(ours.coefs_, reference.coefs_, strict=True):
        np.testing.assert_allclose(host(a), b, rtol=tol, atol=tol)
    assert ours.score(Xd, yd) == pytest.approx(reference.score(X.astype(dtype), y))


def test_binary_labels_are_taken_from_classes_on_the_device(backend, dispatch, digits):
    X, y = digits
    dtype = float_name(backend)
    labels = np.where(y % 2 == 0, 3, 7)
    Xd, yd = on(backend, X, dtype), on(backend, labels)
    ours = fit_quietly(MLPClassifier(**SMALL), Xd, yd)
    reference = fit_quietly(MLPClassifier(**SMALL), X.astype(dtype), labels)
    predicted = ours.predict(Xd)
    proba = ours.predict_proba(Xd)
    assert_lives_on(backend, predicted, proba, ours.classes_)
    assert tuple(proba.shape) == (240, 2)
    np.testing.assert_array_equal(host(ours.classes_), [3, 7])
    np.testing.assert_array_equal(host(predicted), reference.predict(X.astype(dtype)))


def test_boolean_labels(backend, dispatch, digits):
    X, y = digits
    Xd, yd = on(backend, X, float_name(backend)), on(backend, y > 4)
    ours = fit_quietly(MLPClassifier(**SMALL), Xd, yd)
    np.testing.assert_array_equal(host(ours.classes_), [False, True])
    assert host(ours.predict(Xd)).dtype == np.bool_


def test_regressor_outputs_on_the_input_backend(backend, dispatch, digits):
    X, y = digits
    dtype = float_name(backend)
    targets = np.stack([X[:, 20] + y / 10.0, X[:, 30]], axis=1).astype(dtype)
    Xd = on(backend, X, dtype)
    for yh in (targets[:, 0], targets):
        yd = on(backend, yh)
        ours = fit_quietly(MLPRegressor(**SMALL), Xd, yd)
        reference = fit_quietly(MLPRegressor(**SMALL), X.astype(dtype), yh)
        predicted = ours.predict(Xd)
        assert_lives_on(backend, predicted, *ours.coefs_, *ours.intercepts_)
        assert tuple(predicted.shape) == yh.shape
        tol = 1e-9 if dtype == "float64" else 1e-4
        np.testing.assert_allclose(
            host(predicted), reference.predict(X.astype(dtype)), rtol=tol, atol=tol
        )
        assert ours.score(Xd, yd) == pytest.approx(reference.score(X.astype(dtype), yh))


def test_integer_regression_targets_become_floating(backend, dispatch, digits):
    X, y = digits
    ours = fit_quietly(MLPRegressor(**SMALL), on(backend, X, float_name(backend)), on(backend, y))
    assert ours.n_outputs_ == 1


def test_partial_fit_keeps_classes_on_the_device(backend, dispatch, digits):
    X, y = digits
    Xd, yd = on(backend, X, float_name(backend)), on(backend, y)
    ours = MLPClassifier(**SMALL)
    ours.partial_fit(Xd[:120, ...], yd[:120], classes=list(range(10)))
    ours.partial_fit(Xd[120:, ...], yd[120:])
    assert_lives_on(backend, ours.classes_, ours.predict(Xd))
    np.testing.assert_array_equal(host(ours.classes_), np.arange(10))
    before = [host(c) for c in ours.coefs_]
    with pytest.raises(ValueError, match=r"`y` has classes not in `self.classes_`"):
        ours.partial_fit(Xd[:3, ...], on(backend, [1, 2, 11]))
    for a, b in zip(before, ours.coefs_, strict=True):  # a failed call changes nothing
        np.testing.assert_array_equal(a, host(b))


def test_warm_start_with_other_classes_is_refused(backend, dispatch, digits):
    X, y = digits
    Xd = on(backend, X, float_name(backend))
    ours = fit_quietly(MLPClassifier(warm_start=True, **SMALL), Xd, on(backend, y))
    with pytest.raises(ValueError, match="warm_start can only be used"):
        fit_quietly(ours, Xd, on(backend, y % 3))


def test_column_targets_warn_as_in_scikit_learn(backend, dispatch, digits):
    X, y = digits
    column = on(backend, y.reshape(-1, 1))
    with pytest.warns(sklearn.exceptions.DataConversionWarning, match="column-vector y"):
        fit_quietly(MLPClassifier(**SMALL), on(backend, X, float_name(backend)), column)


def test_strings_and_indicator_matrices_still_go_through_scikit_learn(dispatch, digits):
    X, y = digits
    names = np.array(["even", "odd"])[y % 2]
    ours = fit_quietly(MLPClassifier(**SMALL), X, names)
    assert set(ours.predict(X)) <= {"even", "odd"}
    indicator = np.stack([y % 2, y > 5], axis=1)
    multilabel = fit_quietly(MLPClassifier(**SMALL), X, indicator)
    assert multilabel.predict(X).shape == (240, 2)


# --------------------------------------------------------------------------------------
# Nothing goes through the host in fit and predict
# --------------------------------------------------------------------------------------


def test_fit_and_predict_never_read_the_data_back(backend, dispatch, digits, monkeypatch):
    if backend.library == "numpy":
        pytest.skip("NumPy arrays are the host's: nothing to read back")
    X, y = digits
    Xd, yd = on(backend, X, float_name(backend)), on(backend, y)
    values = on(backend, np.ascontiguousarray(X[:, 3]))

    def refuse(*args, **kwargs):
        msg = "an array was read back to the host"
        raise AssertionError(msg)

    monkeypatch.setattr(backend_base.Backend, "to_host", refuse)
    monkeypatch.setattr(backend_base, "array_to_host", refuse)
    classifier = fit_quietly(MLPClassifier(**SMALL), Xd, yd)
    assert_lives_on(backend, classifier.predict(Xd), classifier.predict_proba(Xd))
    assert_lives_on(backend, classifier.predict_log_proba(Xd), *classifier.coefs_)
    regressor = fit_quietly(MLPRegressor(**SMALL), Xd, values)
    assert_lives_on(backend, regressor.predict(Xd))


# --------------------------------------------------------------------------------------
# Mixed inputs, and no dispatch
# --------------------------------------------------------------------------------------


def test_y_follows_X_as_in_scikit_learn(backend, dispatch, digits):
    """scikit-learn 1.9's rule for mixed inputs (``check_array_api_mixed_inputs``):
    ``y`` moves to ``X``'s library and device."""
    X, y = digits
    Xd = on(backend, X, float_name(backend))
    on_device = fit_quietly(MLPClassifier(**SMALL), Xd, y)
    assert_lives_on(backend, on_device.classes_, on_device.predict(Xd), *on_device.coefs_)
    on_host = fit_quietly(MLPClassifier(**SMALL), X, on(backend, y))
    assert isinstance(on_host.classes_, np.ndarray)
    assert isinstance(on_host.predict(X), np.ndarray)
    regressor = fit_quietly(MLPRegressor(**SMALL), Xd, X[:, 3].copy())
    assert_lives_on(backend, regressor.predict(Xd))


def test_predict_needs_the_namespace_of_fit(backend, dispatch, digits):
    """scikit-learn's ``check_same_namespace``: under dispatch, ``predict`` refuses
    arrays of another library than ``fit`` got, naming the method and both libraries."""
    if backend.library == "numpy":
        pytest.skip("needs a second library besides NumPy")
    X, y = digits
    Xd = on(backend, X, float_name(backend))
    numpy_fitted = fit_quietly(MLPClassifier(**SMALL), X, y)
    device_fitted = fit_quietly(MLPRegressor(**SMALL), Xd, on(backend, X[:, 3].copy()))
    for estimator, data, method, libraries in (
        (numpy_fitted, Xd, "predict_proba", rf"\(numpy\) and predict_proba \({backend.library}"),
        (numpy_fitted, Xd, "predict", rf"\(numpy\) and predict \({backend.library}"),
        (device_fitted, X, "predict", rf"\({backend.library}\) and predict \(numpy\)"),
    ):
        name = type(estimator).__name__
        with pytest.raises(ValueError, match=rf"{name}\.{method}\(\) must use the same namespace"):
            getattr(estimator, method)(data)
        with pytest.raises(ValueError, match=libraries):
            getattr(estimator, method)(data)
    # without dispatch, anything goes (and comes back as NumPy)
    with sklearn.config_context(array_api_dispatch=False):
        assert isinstance(numpy_fitted.predict(Xd), np.ndarray)


def test_without_dispatch_outputs_are_numpy(backend, digits):
    X, y = digits
    Xd, yd = on(backend, X, float_name(backend)), on(backend, y)
    ours = fit_quietly(MLPClassifier(**SMALL), Xd, yd)
    assert ours.model_.backend.name == backend.name  # computed where X lives
    for out in (ours.predict(Xd), ours.predict_proba(Xd), ours.classes_, *ours.coefs_):
        assert isinstance(out, np.ndarray)
    fit_quietly(ours, Xd, y)  # mixed inputs are moved to the host, as before
    assert isinstance(ours.predict(Xd), np.ndarray)


# --------------------------------------------------------------------------------------
# scikit-learn's own array API checks
# --------------------------------------------------------------------------------------


NAMESPACES = [("torch", "cpu"), ("torch", "cuda"), ("cupy", None), ("array_api_strict", None)]


@pytest.mark.parametrize(("namespace", "device"), NAMESPACES, ids=str)
@pytest.mark.parametrize("Estimator", [MLPClassifier, MLPRegressor])
def test_scikit_learns_array_api_checks(dispatch, namespace, device, Estimator):
    """``check_array_api_input`` (outputs' namespace, device, shape and dtype, against
    the NumPy fit) and ``check_array_api_same_namespace`` (predict refuses another
    namespace), as scikit-learn runs them on its array-API estimators; scikit-learn
    skips a namespace or device that is not here (CUDA and CuPy without a GPU)."""
    estimator = Estimator(max_iter=20, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check_array_api_input(Estimator.__name__, estimator, namespace, device, "float64")
        check_array_api_same_namespace(Estimator.__name__, estimator, namespace, device)


@pytest.mark.parametrize(
    "pair", list(yield_mixed_namespace_input_permutations()), ids=lambda p: p[2]
)
@pytest.mark.parametrize("Estimator", [MLPClassifier, MLPRegressor])
def test_scikit_learns_mixed_input_check(dispatch, pair, Estimator):
    """``check_array_api_mixed_inputs``: ``y`` and ``sample_weight`` of another library
    or device than ``X`` follow ``X`` (the pairs that need a GPU or MPS are skipped by
    scikit-learn where there is none)."""
    X_side, other_side, _ = pair
    estimator = Estimator(max_iter=20, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check_array_api_mixed_inputs(
            Estimator.__name__, estimator, X_side, other_side, check_values=True
        )
