"""portprop.sklearn: scikit-learn's estimator checks, agreement with scikit-learn's MLP,
and the estimators on every backend."""

from __future__ import annotations

import contextlib
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning, NotFittedError, SkipTestWarning
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier as SkMLPClassifier
from sklearn.neural_network import MLPRegressor as SkMLPRegressor
from sklearn.utils.estimator_checks import check_estimator, parametrize_with_checks

import portprop as pp
from portprop.sklearn import MLPClassifier, MLPRegressor

# --------------------------------------------------------------------------------------
# scikit-learn's estimator checks
# --------------------------------------------------------------------------------------

# The default dtype follows X (float64 for the checks' data, as in scikit-learn); float32
# is checked below, up to its rounding.  Each solver of scikit-learn's runs the checks.
CHECKED = [
    MLPClassifier(random_state=0),
    MLPRegressor(random_state=0),
    MLPClassifier(random_state=0, solver="lbfgs"),
    MLPRegressor(random_state=0, solver="lbfgs"),
    MLPClassifier(random_state=0, solver="sgd"),
    MLPRegressor(random_state=0, solver="sgd"),
]


def expected_failures(estimator):
    """Checks that scikit-learn's own MLP fails with the same parameters."""
    if isinstance(estimator, MLPClassifier) and estimator.solver == "lbfgs":
        return {
            "check_classifiers_multilabel_output_format_predict_proba": (
                "L-BFGS fits the small multilabel set so closely that some probabilities "
                "round to 1.0; sklearn.neural_network.MLPClassifier(solver='lbfgs') fails "
                "this check the same way"
            )
        }
    return {}


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@parametrize_with_checks(CHECKED, expected_failed_checks=expected_failures)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# Checks that compare the predictions for a subset (or a reordering) of the rows with
# those for all rows at rtol = atol = 1e-7: in float32 a one-row product goes through
# another BLAS kernel, whose rounding (~1e-7 relative) may or may not exceed that.
# check_sample_weight_equivalence_on_{dense,sparse}_data compare two fits at rtol 1e-7, and
# check_regressor_multioutput wants float64 predictions, where dtype="float32" gives
# float32 ones.
FLOAT32_ROUNDING = {
    "check_methods_subset_invariance",
    "check_methods_sample_order_invariance",
    "check_sample_weight_equivalence_on_dense_data",
    "check_sample_weight_equivalence_on_sparse_data",
    "check_regressor_multioutput",
}


@pytest.mark.parametrize("Estimator", [MLPClassifier, MLPRegressor])
def test_float32_passes_the_checks_up_to_rounding(Estimator):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", SkipTestWarning)  # pandas absent, array API off
        estimator = Estimator(random_state=0, max_iter=100, dtype="float32")
        results = check_estimator(estimator, on_fail=None)
    failed = {
        r["check_name"]: str(r["exception"])
        for r in results
        if r["status"] == "failed" and r["check_name"] not in FLOAT32_ROUNDING
    }
    assert not failed
    assert len(results) > 40


@pytest.mark.slow
@pytest.mark.parametrize("solver", ["adam", "lbfgs", "sgd"])
@pytest.mark.parametrize("Estimator", [MLPClassifier, MLPRegressor])
def test_checks_pass_on_every_backend(backend, Estimator, solver):
    """check_estimator with the model on each backend (NumPy runs the parametrized
    checks above), in float64 so that the checks' 1e-7 tolerances apply."""
    if backend.library == "numpy":
        pytest.skip("NumPy runs every check in test_sklearn_estimator_checks")
    estimator = Estimator(random_state=0, solver=solver, backend=backend.name, max_iter=50)
    expected = expected_failures(estimator)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", SkipTestWarning)
        results = check_estimator(estimator, on_fail=None)
    failed = {
        r["check_name"]: str(r["exception"])[:300]
        for r in results
        if r["status"] == "failed" and r["check_name"] not in expected
    }
    assert not failed
    assert len(results) > 40


# --------------------------------------------------------------------------------------
# Agreement with scikit-learn's MLP
# --------------------------------------------------------------------------------------


@contextlib.contextmanager
def one_thread():
    """One BLAS thread (NumPy, scikit-learn) and one torch thread: the products here are
    small (200 x 64 x 100), and on a busy machine extra threads cost many times the work
    in synchronization (a torch run took 72 s with 2 threads and 2 s with 1)."""
    threadpoolctl = pytest.importorskip("threadpoolctl")  # a scikit-learn dependency
    torch = sys.modules.get("torch")
    saved = torch.get_num_threads() if torch is not None else 0
    try:
        if torch is not None:
            torch.set_num_threads(1)
        with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
            yield
    finally:
        if torch is not None:
            torch.set_num_threads(saved)


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return train_test_split(X / 16.0, y, test_size=0.2, stratify=y, random_state=0)


@pytest.fixture(scope="module")
def sklearn_digits_accuracy(digits):
    X_train, X_test, y_train, y_test = digits
    with one_thread(), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # 200 epochs do not converge
        reference = SkMLPClassifier(random_state=0).fit(X_train, y_train)
    return reference.score(X_test, y_test)


@pytest.mark.slow
def test_digits_accuracy_matches_sklearn(backend, digits, sklearn_digits_accuracy):
    X_train, X_test, y_train, y_test = digits
    clf = MLPClassifier(random_state=0, backend=backend)  # default hyperparameters
    # as scikit-learn's, the 200 epochs of max_iter do not meet tol
    with one_thread(), pytest.warns(ConvergenceWarning):
        clf.fit(X_train, y_train)
    accuracy = clf.score(X_test, y_test)
    print(f"digits: portprop on {backend.name} {accuracy:.4f}, sklearn {sklearn_digits_accuracy}")
    assert clf.model_.backend == backend
    assert accuracy >= 0.96
    assert accuracy >= sklearn_digits_accuracy


def _small_digits(n=400):
    X, y = load_digits(return_X_y=True)
    return X[:n] / 16.0, y[:n]


SAME_RUN = {
    "hidden_layer_sizes": (20,),
    "max_iter": 5,
    "shuffle": False,
    "random_state": 0,
    "alpha": 1e-2,
    "batch_size": 64,
}


def test_sgd_follows_sklearn_exactly():
    # Same initial weights (same random_state stream), same batches, the same penalty
    # alpha / (2 n) ||W||^2 per batch and Nesterov momentum: the same trajectory.
    X, y = _small_digits()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours = MLPClassifier(solver="sgd", dtype="float64", **SAME_RUN).fit(X, y)
        theirs = SkMLPClassifier(solver="sgd", **SAME_RUN).fit(X, y)
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-12)
    for a, b in zip(
        ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_, strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), atol=1e-10)


@pytest.mark.parametrize("outputs", [1, 3])
def test_adam_regression_follows_sklearn(outputs):
    # Adam differs only in where epsilon enters the denominator (torch's definition).
    X, _ = _small_digits()
    Y = X[:, [20, 30, 40]] @ np.array([[2.0, -1.0, 0.5], [1.0, 0.0, 1.0], [0.0, 3.0, -1.0]])
    y = Y[:, 0] if outputs == 1 else Y
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours = MLPRegressor(dtype="float64", **SAME_RUN).fit(X, y)
        theirs = SkMLPRegressor(**SAME_RUN).fit(X, y)
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-4)
    np.testing.assert_allclose(ours.predict(X), theirs.predict(X), atol=5e-3)
    assert ours.predict(X).shape == theirs.predict(X).shape == y.shape


def test_tol_stops_like_sklearn():
    X, y = _small_digits(200)
    kw = {"hidden_layer_sizes": (10,), "tol": 10.0, "n_iter_no_change": 3, "random_state": 0}
    ours = MLPClassifier(**kw).fit(X, y)
    theirs = SkMLPClassifier(**kw).fit(X, y)
    assert ours.n_iter_ == theirs.n_iter_ == 5  # 1 + n_iter_no_change + 1 epochs
    assert ours.best_loss_ == min(ours.loss_curve_)
    assert ours.validation_scores_ is None
    assert ours.best_validation_score_ is None


def test_convergence_warning_when_max_iter_is_reached():
    X, y = _small_digits(100)
    with pytest.warns(ConvergenceWarning, match=r"Maximum iterations \(3\) reached"):
        clf = MLPClassifier(max_iter=3, random_state=0).fit(X, y)
    assert clf.n_iter_ == 3
    assert len(clf.loss_curve_) == 3


def test_early_stopping_keeps_validation_scores_and_the_best_parameters():
    X, y = _small_digits(300)
    clf = MLPClassifier(
        hidden_layer_sizes=(16,),
        early_stopping=True,
        n_iter_no_change=2,
        learning_rate_init=0.01,
        random_state=0,
        max_iter=100,
    ).fit(X, y)
    assert clf.best_loss_ is None
    assert len(clf.validation_scores_) == clf.n_iter_ < 100
    assert clf.best_validation_score_ == max(clf.validation_scores_)
    # (the split and the restored parameters: test_sklearn_dropin, against scikit-learn)
    with pytest.raises(ValueError, match="partial_fit does not support early_stopping"):
        clf.partial_fit(X, y)


# --------------------------------------------------------------------------------------
# The estimator API
# --------------------------------------------------------------------------------------


def test_get_params_set_params_and_clone():
    clf = MLPClassifier(hidden_layer_sizes=(7, 5), solver="sgd", backend="numpy")
    params = clf.get_params()
    assert params["hidden_layer_sizes"] == (7, 5)
    assert params["solver"] == "sgd"
    assert params["backend"] == "numpy"
    assert params["dtype"] is None
    assert clf.set_params(alpha=0.5, backend="torch:cpu") is clf
    assert clf.alpha == 0.5
    assert clf.backend == "torch:cpu"
    X, y = _small_digits(100)
    with pytest.warns(ConvergenceWarning):
        fitted = MLPClassifier(max_iter=2, random_state=0).fit(X, y)
    copy = clone(fitted)
    assert copy.get_params() == fitted.get_params()
    assert not hasattr(copy, "model_")


def test_not_fitted():
    clf = MLPClassifier()
    X, _ = _small_digits(10)
    for method in (clf.predict, clf.predict_proba, clf.predict_log_proba):
        with pytest.raises(NotFittedError):
            method(X)
    with pytest.raises(NotFittedError):
        _ = clf.coefs_
    with pytest.raises(NotFittedError):
        MLPRegressor().predict(X)


def test_partial_fit_continues_training():
    X, y = _small_digits(300)
    clf = MLPClassifier(hidden_layer_sizes=(16,), random_state=0)
    with pytest.raises(ValueError, match="classes must be passed"):
        clf.partial_fit(X, y)
    clf.partial_fit(X[:100], y[:100], classes=np.arange(10))
    model = clf.model_
    losses = []
    for _ in range(10):
        clf.partial_fit(X, y)
        losses.append(clf.loss_curve_[-1])
        assert clf.n_iter_ == 1
    assert clf.model_ is model
    assert len(clf.loss_curve_) == 11
    assert clf.t_ == 100 + 10 * 300
    assert losses[-1] < losses[0]
    assert list(clf.classes_) == list(range(10))
    with pytest.raises(ValueError, match="not the same as on last call"):
        clf.partial_fit(X, y, classes=np.arange(11))
    with pytest.raises(ValueError, match=r"'y' has \[ 1  2 12\]"):
        clf.partial_fit(X[:3], np.array([1, 2, 12]))
    # fit starts over
    clf.set_params(max_iter=3)
    with pytest.warns(ConvergenceWarning):
        clf.fit(X[:50], y[:50] % 2)
    assert clf.model_ is not model
    assert list(clf.classes_) == [0, 1]


def test_string_labels_and_binary_problems():
    X, y = _small_digits(200)
    labels = np.array(["even", "odd"])[y % 2]
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=30, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, labels)
    assert list(clf.classes_) == ["even", "odd"]
    assert clf.predict_proba(X).shape == (200, 2)
    assert set(clf.predict(X)) <= {"even", "odd"}
    assert clf.n_outputs_ == 1  # one logistic output, as in scikit-learn
    assert clf.out_activation_ == "logistic"


def test_predict_proba_on_every_backend(backend):
    X, y = _small_digits(120)
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=3, random_state=0, backend=backend)
    with pytest.warns(ConvergenceWarning):
        clf.fit(X, y)
    assert clf.backend_ == backend.name
    assert clf.model_.backend == backend
    probs = clf.predict_proba(X)
    assert isinstance(probs, np.ndarray)
    assert probs.dtype == np.float64
    assert probs.shape == (120, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(clf.predict_log_proba(X), np.log(probs))
    predicted = clf.predict(X)
    assert isinstance(predicted, np.ndarray)
    np.testing.assert_array_equal(predicted, clf.classes_[probs.argmax(axis=1)])


def test_predict_proba_is_exact_for_huge_logits(backend):
    """Logits 10000..10009 in float32: the probabilities are softmax(0..9), to float32
    rounding (a log-sum-exp of 10009.46 in float32 would be off by up to 5e-4)."""
    X, y = _small_digits(120)
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=3, random_state=0, backend=backend)
    with pytest.warns(ConvergenceWarning):
        clf.fit(X, y)
    last = clf.model_.layers[-1]
    state = clf.model_.state_dict()
    names = [
        name for name, p in clf.model_.named_parameters() if p is last.weight or p is last.bias
    ]
    shift = np.arange(10, dtype="float32")
    state[names[0]] = np.zeros(last.weight.shape, dtype="float32")
    state[names[1]] = 1e4 + shift
    clf.model_.load_state_dict(state)
    expected = np.exp(shift - shift.max()) / np.exp(shift - shift.max()).sum()
    probs = clf.predict_proba(X[:5])
    np.testing.assert_allclose(probs, np.broadcast_to(expected, (5, 10)), rtol=1e-6, atol=0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-12)


def test_regressor_on_every_backend(backend):
    X, _ = _small_digits(120)
    y = X[:, [20, 30]].sum(axis=1)
    reg = MLPRegressor(hidden_layer_sizes=(8,), max_iter=3, random_state=0, backend=backend)
    with pytest.warns(ConvergenceWarning):
        reg.fit(X, y)
    predicted = reg.predict(X)
    assert isinstance(predicted, np.ndarray)
    assert predicted.dtype == np.float64
    assert predicted.shape == (120,)
    assert reg.out_activation_ == "identity"


def test_backend_switching_gives_the_same_model():
    # The same random_state gives the same initial weights and batches everywhere, so a
    # float64 model trains to the same parameters on NumPy and torch.
    torch = pytest.importorskip("torch")
    X, y = _small_digits(200)
    clf = MLPClassifier(hidden_layer_sizes=(16,), max_iter=5, random_state=0, dtype="float64")
    with pytest.warns(ConvergenceWarning):
        clf.fit(X, y)
    on_numpy = clf.predict_proba(X)
    assert clf.backend_ == "numpy"
    clf.set_params(backend="torch:cpu")
    with pytest.warns(ConvergenceWarning):
        clf.fit(X, y)
    assert clf.backend_ == "torch:cpu"
    assert isinstance(clf.model_[0].weight.data, torch.Tensor)
    np.testing.assert_allclose(clf.predict_proba(X), on_numpy, atol=1e-10)
    # inputs of another library: backend=None trains where X lives, predictions are NumPy
    X_torch, y_torch = torch.asarray(X), torch.asarray(y)
    clf = MLPClassifier(hidden_layer_sizes=(16,), max_iter=5, random_state=0, dtype="float64")
    with pytest.warns(ConvergenceWarning):
        clf.fit(X_torch, y_torch)
    assert clf.backend_ == "torch:cpu"
    np.testing.assert_allclose(clf.predict_proba(X_torch), on_numpy, atol=1e-10)
    np.testing.assert_allclose(clf.predict_proba(X), on_numpy, atol=1e-10)
    # arrays of another library are checked on their device, as sklearn checks NumPy
    bad = X_torch.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        clf.predict(bad)
    with pytest.raises(ValueError, match="expecting 64 features"):
        clf.predict(X_torch[:, :10])
    with pytest.raises(ValueError, match="2D"):
        clf.predict(X_torch[0])


def test_use_backend_picks_the_backend():
    pytest.importorskip("torch")
    X, y = _small_digits(60)
    with pp.use_backend("torch:cpu"), pytest.warns(ConvergenceWarning):
        clf = MLPClassifier(hidden_layer_sizes=(4,), max_iter=1).fit(X, y)
    assert clf.backend_ == "torch:cpu"


@pytest.mark.parametrize("solver", ["adam", "adamw", "sgd", "rmsprop"])
@pytest.mark.parametrize("activation", ["relu", "tanh", "logistic", "leaky_relu", "identity"])
def test_solvers_and_activations_learn(solver, activation):
    X, y = _small_digits(200)
    clf = MLPClassifier(
        hidden_layer_sizes=(16,),
        activation=activation,
        solver=solver,
        learning_rate_init=0.1 if solver == "sgd" else 0.01,
        batch_size=32,
        max_iter=20,
        random_state=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)
    assert clf.loss_curve_[-1] < 0.5 * clf.loss_curve_[0]
    assert clf.score(X, y) > 0.9


def test_pickle_round_trip(backend):
    X, y = _small_digits(100)
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=2, random_state=0, backend=backend)
    with pytest.warns(ConvergenceWarning):
        clf.fit(X, y)
    restored = pickle.loads(pickle.dumps(clf))
    assert restored.model_.backend == backend
    np.testing.assert_array_equal(restored.predict_proba(X), clf.predict_proba(X))
    # the optimizer's state travels too: one more epoch gives the same parameters
    clf.partial_fit(X, y)
    restored.partial_fit(X, y)
    np.testing.assert_allclose(restored.predict_proba(X), clf.predict_proba(X), atol=1e-6)


def test_invalid_parameters_are_refused_by_fit():
    X, y = _small_digits(20)
    with pytest.raises(ValueError, match="'activation' parameter of MLPClassifier"):
        MLPClassifier(activation="softplus").fit(X, y)
    with pytest.raises(ValueError, match="'solver' parameter of MLPClassifier"):
        MLPClassifier(solver="newton").fit(X, y)
    with pytest.raises(ValueError, match="hidden_layer_sizes"):
        MLPClassifier(hidden_layer_sizes=(3, 0)).fit(X, y)
    with pytest.raises(ValueError, match="dtype"):
        MLPRegressor(dtype="float16").fit(X, y)
    with pytest.warns(UserWarning, match="batch_size"):
        MLPClassifier(batch_size=50).partial_fit(X, y, classes=np.arange(10))


def test_import_portprop_does_not_import_sklearn():
    code = "import sys, portprop; assert 'sklearn' not in sys.modules, 'sklearn imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
