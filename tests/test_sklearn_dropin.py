"""portprop.sklearn as a drop-in for sklearn.neural_network: each parameter, attribute
and solver, side by side with scikit-learn's own estimators."""

from __future__ import annotations

import inspect
import re
import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")
scipy_sparse = pytest.importorskip("scipy.sparse")

import scipy.optimize
from sklearn.datasets import load_digits, make_regression
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier as SkMLPClassifier
from sklearn.neural_network import MLPRegressor as SkMLPRegressor
from sklearn.utils._param_validation import InvalidParameterError

from portprop.sklearn import MLPClassifier, MLPRegressor
from portprop.sklearn._lbfgs import _Flat, objective
from portprop.sklearn._stochastic import _Data

PAIRS = [(MLPClassifier, SkMLPClassifier), (MLPRegressor, SkMLPRegressor)]
SMALL = {"hidden_layer_sizes": (12,), "max_iter": 6, "random_state": 0, "batch_size": 50}


@pytest.fixture(scope="module")
def data():
    X, y = load_digits(return_X_y=True)
    X = X[:300] / 16.0
    y = y[:300]
    targets = {
        "multiclass": y,
        "binary": np.array(["even", "odd"])[y % 2],
        "multilabel": np.stack([y % 2, y % 3 == 0, y > 5], axis=1).astype(int),
        "regression": X[:, [20, 30]] @ np.array([[1.0, 2.0], [0.5, -1.0]]),
        "poisson": np.random.RandomState(0).poisson(np.exp(X[:, 20] + X[:, 30])),
    }
    return X, targets


def both(kind, **params):
    """portprop's and scikit-learn's estimator for ``kind``, with the same parameters."""
    if kind in ("multiclass", "binary", "multilabel"):
        return MLPClassifier(**params), SkMLPClassifier(**params)
    loss = "poisson" if kind == "poisson" else "squared_error"
    return MLPRegressor(loss=loss, **params), SkMLPRegressor(loss=loss, **params)


def quiet_fit(estimator, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return estimator.fit(*args, **kwargs)


def outputs(est, X):
    return est.predict_proba(X) if hasattr(est, "predict_proba") else est.predict(X)


def assert_same_model(ours, theirs, X, *, rtol=1e-9, atol=1e-12):
    for a, b in zip(
        ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_, strict=True
    ):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)
    np.testing.assert_allclose(outputs(ours, X), outputs(theirs, X), rtol=rtol, atol=atol)
    if hasattr(theirs, "classes_"):
        np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))


# --------------------------------------------------------------------------------------
# The public surface
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("Ours", "Theirs"), PAIRS)
def test_every_sklearn_parameter_with_its_default(Ours, Theirs):
    ours, theirs = Ours().get_params(), Theirs().get_params()
    assert set(theirs) <= set(ours)
    for name, default in theirs.items():
        assert ours[name] == default, name
    assert set(ours) - set(theirs) == {"backend", "device", "dtype", "comm"}
    # the same positional parameters, in the same order
    positional = [
        p.name
        for p in inspect.signature(Theirs).parameters.values()
        if p.kind is p.POSITIONAL_OR_KEYWORD
    ]
    assert [
        p.name
        for p in inspect.signature(Ours).parameters.values()
        if p.kind is p.POSITIONAL_OR_KEYWORD
    ] == positional


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("solver", "newton"),
        ("activation", "softplus"),
        ("learning_rate", "cosine"),
        ("alpha", -1.0),
        ("momentum", 1.5),
        ("beta_1", 1.0),
        ("epsilon", 0.0),
        ("n_iter_no_change", 0),
        ("max_fun", 0),
        ("batch_size", 0),
        ("validation_fraction", 1.0),
        ("warm_start", "yes"),
    ],
)
def test_invalid_parameters_raise_sklearns_error(data, name, value):
    X, targets = data
    ours, theirs = both("multiclass", **{name: value})
    with pytest.raises(InvalidParameterError) as expected:
        theirs.fit(X, targets["multiclass"])
    with pytest.raises(InvalidParameterError, match=f"'{name}' parameter") as got:
        ours.fit(X, targets["multiclass"])
    assert f"Got {value!r} instead" in str(got.value)
    if name not in ("solver", "activation"):  # portprop accepts a few more of these
        # the options are a set, printed in hash order: compare them as sets
        options = re.compile(r"\{.*?\}")
        assert options.sub("{}", str(got.value)) == options.sub("{}", str(expected.value))

        def choices(message):
            return [set(re.findall(r"'(\w+)'", m)) for m in options.findall(message)]

        assert choices(str(got.value)) == choices(str(expected.value))
    assert not hasattr(ours, "model_")


def test_poisson_needs_nonnegative_targets(data):
    X, _ = data
    with pytest.raises(ValueError, match=r"y must be >= 0 for loss='poisson'"):
        MLPRegressor(loss="poisson").fit(X, -np.ones(len(X)))
    with pytest.raises(InvalidParameterError, match="'loss' parameter"):
        MLPRegressor(loss="huber").fit(X, np.ones(len(X)))


# --------------------------------------------------------------------------------------
# The solvers follow scikit-learn's trajectories
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("solver", ["sgd", "adam", "lbfgs"])
@pytest.mark.parametrize("kind", ["multiclass", "binary", "multilabel", "regression", "poisson"])
def test_each_solver_and_target_follows_sklearn(data, solver, kind):
    """Same initial weights, shuffles, losses and update rules: the same model."""
    X, targets = data
    y = targets[kind]
    ours, theirs = both(kind, solver=solver, alpha=1e-2, **SMALL)
    quiet_fit(ours, X, y)
    quiet_fit(theirs, X, y)
    assert ours.out_activation_ == theirs.out_activation_
    assert ours.n_outputs_ == theirs.n_outputs_
    assert ours.n_layers_ == theirs.n_layers_
    assert ours.n_iter_ == theirs.n_iter_
    assert ours.loss_ == pytest.approx(theirs.loss_, rel=1e-10)
    if solver == "lbfgs":
        assert not hasattr(ours, "loss_curve_")
        assert ours.t_ == theirs.t_ == 0
    else:
        np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-10)
        assert ours.t_ == theirs.t_
        assert ours.best_loss_ == pytest.approx(theirs.best_loss_, rel=1e-10)
    if kind != "regression" or solver != "lbfgs":  # see test_lbfgs_multioutput_regression
        assert_same_model(ours, theirs, X, rtol=1e-8, atol=1e-10)
    if hasattr(theirs, "classes_"):
        np.testing.assert_array_equal(ours.classes_, theirs.classes_)
        np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))


def test_lbfgs_multioutput_regression_minimizes_the_sum_over_outputs(data):
    """scikit-learn gives SciPy the loss averaged over the outputs with the gradient of
    their sum; portprop minimizes the sum (consistent with the gradient), so it reaches
    a loss at least as low, and scores as well."""
    X, targets = data
    y = targets["regression"]
    ours, theirs = both("regression", solver="lbfgs", **{**SMALL, "max_iter": 200})
    quiet_fit(ours, X, y)
    quiet_fit(theirs, X, y)
    assert ours.loss_ <= theirs.loss_ * 1.05
    assert ours.score(X, y) == pytest.approx(theirs.score(X, y), abs=0.01)


@pytest.mark.parametrize("solver", ["sgd", "adam", "lbfgs"])
def test_sample_weight_follows_sklearn(data, solver):
    X, targets = data
    weights = np.random.RandomState(1).uniform(0.0, 3.0, len(X))
    ours, theirs = both("multiclass", solver=solver, **SMALL)
    quiet_fit(ours, X, targets["multiclass"], sample_weight=weights)
    quiet_fit(theirs, X, targets["multiclass"], sample_weight=weights)
    assert_same_model(ours, theirs, X, rtol=1e-8, atol=1e-10)
    plain = quiet_fit(MLPClassifier(solver=solver, **SMALL), X, targets["multiclass"])
    assert not np.allclose(plain.coefs_[0], ours.coefs_[0])


def test_sample_weight_of_two_equals_a_duplicated_row(data):
    X, targets = data
    y = targets["multiclass"]
    weights = np.ones(len(X))
    weights[:40] = 2.0
    X_dup, y_dup = np.concatenate([X, X[:40]]), np.concatenate([y, y[:40]])
    params = {"solver": "lbfgs", "hidden_layer_sizes": (10,), "max_iter": 30, "random_state": 0}
    weighted = quiet_fit(MLPClassifier(**params), X, y, sample_weight=weights)
    duplicated = quiet_fit(MLPClassifier(**params), X_dup, y_dup)
    assert weighted.loss_ == pytest.approx(duplicated.loss_, rel=1e-9)
    np.testing.assert_allclose(weighted.coefs_[0], duplicated.coefs_[0], atol=1e-8)


@pytest.mark.parametrize("bad", [np.ones(3), -np.ones(300), np.zeros(300)])
def test_bad_sample_weight_is_refused(data, bad):
    X, targets = data
    clf = MLPClassifier(max_iter=1)
    with pytest.raises(ValueError, match="sample_weight"):
        clf.fit(X, targets["multiclass"], sample_weight=bad)
    assert not hasattr(clf, "model_")


# --------------------------------------------------------------------------------------
# Learning-rate schedules, stopping, warm start
# --------------------------------------------------------------------------------------


def test_invscaling_gives_the_step_sizes_of_its_formula(data):
    X, targets = data
    params = {"solver": "sgd", "learning_rate": "invscaling", "power_t": 0.3, **SMALL}
    ours, theirs = both("multiclass", learning_rate_init=0.2, **params)
    quiet_fit(ours, X, targets["multiclass"])
    quiet_fit(theirs, X, targets["multiclass"])
    assert ours._optimizers[0].lr == pytest.approx(0.2 / (ours.t_ + 1) ** 0.3, rel=1e-12)
    assert ours._optimizers[0].lr == pytest.approx(theirs._optimizer.learning_rate, rel=1e-12)
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-10)
    constant = quiet_fit(
        MLPClassifier(solver="sgd", learning_rate_init=0.2, **SMALL), X, targets["multiclass"]
    )
    assert constant.loss_curve_[-1] != pytest.approx(ours.loss_curve_[-1], rel=1e-6)


def test_adaptive_divides_the_rate_by_five_and_stops_like_sklearn(data, capsys):
    X, targets = data
    params = {
        "solver": "sgd",
        "learning_rate": "adaptive",
        "tol": 0.5,
        "n_iter_no_change": 1,
        "learning_rate_init": 0.1,
        "verbose": True,
        **SMALL,
        "max_iter": 50,
    }
    ours, theirs = both("multiclass", **params)
    quiet_fit(theirs, X, targets["multiclass"])
    expected = capsys.readouterr().out
    quiet_fit(ours, X, targets["multiclass"])
    assert capsys.readouterr().out == expected
    assert "Setting learning rate to 0.020000" in expected
    assert "Learning rate too small. Stopping." in expected
    assert ours.n_iter_ == theirs.n_iter_ < 50
    assert ours._optimizers[0].lr == pytest.approx(theirs._optimizer.learning_rate)


def test_verbose_prints_sklearns_lines_on_stdout(data, capsys):
    X, targets = data
    ours, theirs = both("multiclass", verbose=True, early_stopping=True, **SMALL)
    quiet_fit(theirs, X, targets["multiclass"])
    expected = capsys.readouterr()
    quiet_fit(ours, X, targets["multiclass"])
    got = capsys.readouterr()
    assert got.out == expected.out
    assert got.out.startswith("Iteration 1, loss = ")
    assert "Validation score: " in got.out
    assert got.err == ""


def test_n_iter_no_change_inf_never_stops_early(data):
    X, targets = data
    params = {**SMALL, "tol": 100.0, "max_iter": 8}
    stops = quiet_fit(MLPClassifier(n_iter_no_change=2, **params), X, targets["multiclass"])
    assert stops.n_iter_ == 4  # 1 + n_iter_no_change + 1 epochs
    ours, theirs = both("multiclass", n_iter_no_change=np.inf, **params)
    with pytest.warns(ConvergenceWarning, match=r"Maximum iterations \(8\)"):
        ours.fit(X, targets["multiclass"])
    with pytest.warns(ConvergenceWarning):
        theirs.fit(X, targets["multiclass"])
    assert ours.n_iter_ == theirs.n_iter_ == 8


def test_early_stopping_matches_sklearn(data):
    X, targets = data
    for kind in ("multiclass", "binary", "regression"):
        ours, theirs = both(
            kind, early_stopping=True, n_iter_no_change=2, **{**SMALL, "max_iter": 30}
        )
        quiet_fit(ours, X, targets[kind])
        quiet_fit(theirs, X, targets[kind])
        np.testing.assert_allclose(ours.validation_scores_, theirs.validation_scores_, rtol=1e-10)
        assert ours.best_validation_score_ == pytest.approx(theirs.best_validation_score_)
        assert ours.best_loss_ is theirs.best_loss_ is None
        assert_same_model(ours, theirs, X, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("solver", ["sgd", "adam", "lbfgs"])
def test_warm_start_continues_like_sklearn(data, solver):
    X, targets = data
    y = targets["multiclass"]
    ours, theirs = both("multiclass", solver=solver, warm_start=True, **SMALL)
    for est in (ours, theirs):
        quiet_fit(est, X, y)
        est.set_params(max_iter=3)
        quiet_fit(est, X, y)
    assert_same_model(ours, theirs, X, rtol=1e-8, atol=1e-10)
    if solver != "lbfgs":
        assert len(ours.loss_curve_) == len(theirs.loss_curve_) == 9
        assert ours.t_ == theirs.t_ == 9 * len(X)
    cold = quiet_fit(MLPClassifier(solver=solver, **{**SMALL, "max_iter": 3}), X, y)
    assert not np.allclose(cold.coefs_[0], ours.coefs_[0])
    with pytest.raises(ValueError, match="warm_start can only be used"):
        ours.fit(X, y % 3)


def test_partial_fit_follows_sklearn_and_names_the_labels(data):
    X, targets = data
    y = np.array(["a", "b", "c"])[targets["multiclass"] % 3]
    ours, theirs = both("multiclass", **SMALL)
    for est in (ours, theirs):
        for _ in range(3):
            est.partial_fit(X, y, classes=["a", "b", "c"])
    assert_same_model(ours, theirs, X, rtol=1e-8, atol=1e-10)
    assert ours.n_iter_ == 1
    assert ours.t_ == 3 * len(X)
    before = ours.coefs_[0].copy()
    with pytest.raises(ValueError, match=r"'y' has \['a' 'zebra'\]"):
        ours.partial_fit(X[:2], np.array(["a", "zebra"]))
    np.testing.assert_array_equal(ours.coefs_[0], before)
    assert ours.t_ == 3 * len(X)
    # partial_fit exists only for the stochastic solvers (the classifier's rule)
    assert not hasattr(MLPClassifier(solver="lbfgs"), "partial_fit")
    assert not hasattr(SkMLPClassifier(solver="lbfgs"), "partial_fit")


# --------------------------------------------------------------------------------------
# Fitted attributes
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("Ours", "Theirs"), PAIRS)
def test_assigning_coefs_changes_predict_as_in_sklearn(data, Ours, Theirs):
    X, targets = data
    y = targets["multiclass"] if Ours is MLPClassifier else targets["regression"]
    ours = quiet_fit(Ours(**SMALL), X, y)
    theirs = quiet_fit(Theirs(**SMALL), X, y)
    rng = np.random.RandomState(0)
    new_coefs = [rng.normal(size=c.shape) for c in theirs.coefs_]
    new_intercepts = [rng.normal(size=b.shape) for b in theirs.intercepts_]
    before = ours.predict(X)
    ours.coefs_ = [c.copy() for c in new_coefs]
    ours.intercepts_ = [b.copy() for b in new_intercepts]
    theirs.coefs_, theirs.intercepts_ = new_coefs, new_intercepts
    assert_same_model(ours, theirs, X)
    assert not np.array_equal(ours.predict(X), before)
    # one item at a time, as scikit-learn's users do
    ours.coefs_[1] = np.zeros_like(new_coefs[1])
    theirs.coefs_[1] = np.zeros_like(new_coefs[1])
    np.testing.assert_array_equal(ours.coefs_[1], 0.0)
    assert_same_model(ours, theirs, X)
    with pytest.raises(ValueError, match=r"coefs_ must be a list of arrays of shapes"):
        ours.coefs_ = [np.zeros((3, 3))]
    np.testing.assert_array_equal(ours.coefs_[1], 0.0)


@pytest.mark.parametrize(
    ("given", "dtype", "expected"),
    [
        ("float32", None, "float32"),
        ("float64", None, "float64"),
        ("int64", None, "float64"),
        ("float64", "float32", "float32"),
        ("float32", "float64", "float64"),
    ],
)
def test_parameters_follow_the_dtype_of_X(data, given, dtype, expected):
    X, targets = data
    X = (X * 16).astype(given)
    ours = quiet_fit(MLPClassifier(dtype=dtype, **SMALL), X, targets["multiclass"])
    assert {c.dtype for c in ours.coefs_ + ours.intercepts_} == {np.dtype(expected)}
    assert ours.predict_proba(X).dtype == np.dtype(expected)
    if dtype is None:
        theirs = quiet_fit(SkMLPClassifier(**SMALL), X, targets["multiclass"])
        assert ours.coefs_[0].dtype == theirs.coefs_[0].dtype
        assert ours.predict_proba(X).dtype == theirs.predict_proba(X).dtype


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # scikit-learn's overflows
def test_non_finite_parameters_raise_sklearns_error_and_keep_the_model(data):
    X, targets = data
    y = targets["regression"][:, 0]
    params = {"solver": "sgd", "learning_rate_init": 1.0, "max_iter": 5, "random_state": 0}
    huge = X * 1e200
    with pytest.raises(ValueError, match="Solver produced non-finite parameter weights") as exp:
        SkMLPRegressor(**params).fit(huge, y)
    with pytest.raises(ValueError, match="Solver produced non-finite parameter weights") as got:
        MLPRegressor(**params).fit(huge, y)
    assert str(got.value) == str(exp.value)
    reg = quiet_fit(MLPRegressor(warm_start=True, **params | {"learning_rate_init": 1e-3}), X, y)
    before = [c.copy() for c in reg.coefs_]
    reg.set_params(learning_rate_init=1.0)
    with pytest.raises(ValueError, match="non-finite"):
        reg.fit(huge, y)
    for a, b in zip(reg.coefs_, before, strict=True):
        np.testing.assert_array_equal(a, b)
    assert reg.n_iter_ == 5


def test_multilabel_targets_give_logistic_outputs(data):
    X, targets = data
    Y = targets["multilabel"]
    ours, theirs = both("multilabel", **SMALL)
    quiet_fit(ours, X, Y)
    quiet_fit(theirs, X, Y)
    assert ours.out_activation_ == "logistic"
    np.testing.assert_array_equal(ours.classes_, [0, 1, 2])
    assert ours.predict(X).shape == Y.shape
    np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))
    assert ours.predict_proba(X).shape == Y.shape


# --------------------------------------------------------------------------------------
# L-BFGS
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["multiclass", "binary", "regression", "poisson"])
@pytest.mark.parametrize("sparse", [False, True])
def test_lbfgs_gradient_passes_check_grad(data, kind, sparse):
    X, targets = data
    X, y = X[:60], targets[kind][:60]
    est = quiet_fit(
        both(
            kind,
            solver="lbfgs",
            max_iter=2,
            alpha=0.1,
            hidden_layer_sizes=(5, 4),
            random_state=0,
            activation="tanh",
        )[0],
        X,
        y,
    )
    net = est._net
    Y = est._encode_targets(y, first=False, incremental=False)
    w = np.random.RandomState(0).uniform(0.5, 2.0, len(X))
    Xd = scipy_sparse.csr_matrix(X) if sparse else net.backend.asarray(X, dtype=est.model_.dtype)
    train = _Data(
        Xd, net.backend.asarray(np.asarray(Y, dtype="float64")), net.backend.asarray(w), w
    )
    flat = _Flat(net)
    fun, _ = objective(net, flat, train)
    theta = flat.get()
    error = scipy.optimize.check_grad(lambda t: fun(t)[0], lambda t: fun(t)[1], theta, epsilon=1e-7)
    assert error < 1e-5 * max(1.0, np.linalg.norm(fun(theta)[1]))


def test_lbfgs_max_fun_and_max_iter_warn_like_sklearn(data):
    X, targets = data
    for limits in ({"max_fun": 5}, {"max_iter": 3}):
        ours, theirs = both("multiclass", solver="lbfgs", **{**SMALL, "max_iter": 200, **limits})
        with pytest.warns(ConvergenceWarning) as expected:
            theirs.fit(X, targets["multiclass"])
        with pytest.warns(ConvergenceWarning) as got:
            ours.fit(X, targets["multiclass"])
        assert [str(w.message) for w in got] == [str(w.message) for w in expected]
        assert ours.n_iter_ == theirs.n_iter_


@pytest.mark.slow
@pytest.mark.parametrize("solver", ["lbfgs", "sgd", "adam"])
def test_quality_within_001_of_sklearn_on_every_backend(backend, solver):
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.25, stratify=y, random_state=0
    )
    scaler = StandardScaler().fit(X_train)
    X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)
    params = {"solver": solver, "hidden_layer_sizes": (64,), "max_iter": 60, "random_state": 0}
    if solver == "sgd":
        params["learning_rate_init"] = 0.05
    ours = quiet_fit(MLPClassifier(backend=backend, **params), X_train, y_train)
    theirs = quiet_fit(SkMLPClassifier(**params), X_train, y_train)
    assert ours.backend_ == backend.name
    assert ours.score(X_test, y_test) == pytest.approx(theirs.score(X_test, y_test), abs=0.01)
    Xr, yr = make_regression(n_samples=300, n_features=10, noise=5.0, random_state=0)
    yr = yr / yr.std()
    ours = quiet_fit(MLPRegressor(backend=backend, **params), Xr[:200], yr[:200])
    theirs = quiet_fit(SkMLPRegressor(**params), Xr[:200], yr[:200])
    assert ours.score(Xr[200:], yr[200:]) == pytest.approx(
        theirs.score(Xr[200:], yr[200:]), abs=0.01
    )


# --------------------------------------------------------------------------------------
# Sparse input
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("solver", ["adam", "lbfgs"])
@pytest.mark.parametrize("fmt", ["csr_matrix", "csc_matrix", "csr_array"])
def test_sparse_input_gives_the_predictions_of_its_dense_form(backend, data, solver, fmt):
    X, targets = data
    X = np.where(X > 0.5, X, 0.0)  # mostly zeros
    sparse = getattr(scipy_sparse, fmt)(X)
    params = {"solver": solver, **SMALL}
    dense = quiet_fit(MLPClassifier(backend=backend, **params), X, targets["multiclass"])
    from_sparse = quiet_fit(MLPClassifier(backend=backend, **params), sparse, targets["multiclass"])
    np.testing.assert_allclose(
        from_sparse.predict_proba(sparse), dense.predict_proba(X), atol=1e-10
    )
    np.testing.assert_allclose(from_sparse.predict_proba(X), dense.predict_proba(X), atol=1e-10)
    if backend.library == "numpy":
        theirs = quiet_fit(SkMLPClassifier(**params), sparse, targets["multiclass"])
        np.testing.assert_allclose(
            from_sparse.predict_proba(sparse), theirs.predict_proba(sparse), atol=1e-10
        )
