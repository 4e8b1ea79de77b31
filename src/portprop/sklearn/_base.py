"""The machinery :class:`MLPClassifier` and :class:`MLPRegressor` share (:class:`_BaseMLP`):
checks of the parameters and of ``X`` and ``y``, building the network and its solver,
``fit`` and ``partial_fit`` through :func:`portprop.fit`, prediction, the fitted
attributes laid out as in scikit-learn, and pickling.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import operator
import re
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from portprop.backend import Backend, backend_of, dtype_name, get_backend, is_array, resolve
from portprop.errors import BackendUnavailableError, TrainingDivergedError, UnknownBackendError
from portprop.layers import Identity, LeakyReLU, Linear, ReLU, Sigmoid, Tanh
from portprop.module import Module, Sequential, rank_hint
from portprop.optim import SGD, Adam, AdamW, Optimizer, RMSprop
from portprop.sklearn._solvers import (
    _SOLVERS,
    _CrossEntropy,
    _HalfSquaredError,
    _host_state,
    _Solver,
    _Stopping,
)
from portprop.training import fit, predict
from portprop.training.validation import (
    as_array,
    check_lengths,
    first_value,
    kind_of,
    require_numbers,
)

Array = Any

_ACTIVATIONS: dict[str, type[Module]] = {
    "identity": Identity,
    "leaky_relu": LeakyReLU,
    "logistic": Sigmoid,
    "relu": ReLU,
    "sigmoid": Sigmoid,
    "tanh": Tanh,
}
_PREDICT_BATCH = 4096


# --------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------


def _positive_int(value: Any, name: str) -> int:
    """``value`` (an int of any kind, NumPy's included) as an int ``>= 1``."""
    try:
        number = -1 if isinstance(value, bool) else operator.index(value)
    except TypeError:
        number = -1
    if number < 1:
        msg = f"{name} must be an int >= 1, got {value!r}"
        raise ValueError(msg)
    return number


def _number(value: Any, name: str, *, low: float = 0.0, strict: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        msg = f"{name} must be a number, got {value!r}"
        raise TypeError(msg)
    number = float(value)
    if math.isnan(number) or math.isinf(number) or number < low or (strict and number == low):
        bound = f"> {low}" if strict else f">= {low}"
        msg = f"{name} must be a finite number {bound}, got {value!r}"
        raise ValueError(msg)
    return number


def _hidden_sizes(value: Any) -> list[int]:
    sizes = [value] if not isinstance(value, Iterable) else list(value)
    return [_positive_int(size, f"each of hidden_layer_sizes={value!r}") for size in sizes]


def _device_backend(X: Any) -> Backend | None:
    """The backend of ``X`` when it is an array of a portprop backend other than NumPy
    (checked on its device), else ``None`` (validated by scikit-learn on the host)."""
    try:
        backend = backend_of(X)
    except (TypeError, UnknownBackendError):
        return None
    return None if backend.library == "numpy" else backend


def _to_host(y: Any) -> Any:
    """``y`` as a host (NumPy) array when it is an array of another backend."""
    backend = _device_backend(y)
    return y if backend is None else backend.to_host(y)


def _require_2d_like_sklearn(X: Array) -> None:
    """scikit-learn's "Expected 2D array" error, with a reshape hint for every rank."""
    if X.ndim != 2:
        got = "scalar array" if X.ndim == 0 else f"{X.ndim}D array"
        msg = (
            f"Expected 2D array, got {got} instead (X of shape {tuple(X.shape)})."
            f"{rank_hint('X', X.ndim)}"
        )
        raise ValueError(msg)


def _host_input(x: Any, argname: str, *, numeric: bool) -> Any:
    """Lists and tuples as NumPy arrays (ragged ones refused with a message that names
    ``argname``); with ``numeric``, arrays of strings or complex numbers refused.

    Object arrays and pandas objects are left to scikit-learn, which converts object
    arrays of numbers and keeps the column names of data frames.
    """
    if isinstance(x, list | tuple):
        x = as_array(x, argname)
    if numeric and is_array(x):
        kind = kind_of(x)
        if kind == "complex":
            msg = (
                f"Complex data not supported: {argname} has dtype {dtype_name(x.dtype)}; "
                f"pass {argname}.real if the imaginary parts are meaningless"
            )
            raise ValueError(msg)
        if kind == "strings":
            msg = (
                f"{argname} must hold numbers, got strings (dtype {dtype_name(x.dtype)}, the "
                f"first is {first_value(x)}): could not convert string to float"
            )
            raise ValueError(msg)
    return x


@contextlib.contextmanager
def _named(argname: str) -> Iterator[None]:
    """Put ``argname`` in front of the messages of scikit-learn's checks that do not
    name it ("Expected 2D array, ...", "Found array with 0 sample(s) ..."), so that every
    message says which argument is wrong; the exception itself is unchanged."""
    try:
        yield
    except (ValueError, TypeError) as exc:
        first = exc.args[0] if exc.args else None
        if isinstance(first, str) and not re.search(rf"\b{re.escape(argname)}\b", first):
            exc.args = (f"{argname}: {first}", *exc.args[1:])
        raise


# --------------------------------------------------------------------------------------
# The estimators
# --------------------------------------------------------------------------------------


class _BaseMLP(BaseEstimator):  # type: ignore[misc]
    """What :class:`MLPClassifier` and :class:`MLPRegressor` share."""

    # set by fit; declared for the type checker
    model_: Sequential
    n_iter_: int
    t_: int
    loss_curve_: list[float]
    validation_scores_: list[float] | None
    best_validation_score_: float | None
    best_loss_: float | None
    n_outputs_: int
    _no_improvement_count: int
    _best_score: float
    _best_loss: float
    _best_parameters: list[Array] | None

    def __init__(
        self,
        hidden_layer_sizes: Any = (100,),
        activation: str = "relu",
        *,
        solver: str = "adam",
        alpha: float = 1e-4,
        batch_size: int | str = "auto",
        learning_rate_init: float = 1e-3,
        max_iter: int = 200,
        shuffle: bool = True,
        random_state: Any = None,
        tol: float = 1e-4,
        verbose: bool = False,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 10,
        momentum: float = 0.9,
        backend: Backend | str | None = None,
        device: Any = None,
        dtype: str = "float32",
    ) -> None:
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.momentum = momentum
        self.backend = backend
        self.device = device
        self.dtype = dtype

    # ---- hooks of the two estimators ---------------------------------------------------

    def _validate_targets(self, y: Any, *, first: bool, classes: Any) -> Any:
        """Host targets for :func:`portprop.fit`; sets the target-related attributes."""
        raise NotImplementedError

    def _n_outputs(self, y: Any) -> int:
        raise NotImplementedError

    def _new_loss(self) -> _CrossEntropy | _HalfSquaredError:
        raise NotImplementedError

    def _validation_score(self, X_val: Array, y_val: Any) -> float:
        raise NotImplementedError

    def _check_y_host(self, y: Any) -> Any:
        """Validate host targets (scikit-learn's checks of ``y``)."""
        raise NotImplementedError

    def _reported_loss_scale(self) -> float:
        """What the mean data loss is multiplied by in ``loss_curve_``."""
        return 1.0

    # ---- checks ----------------------------------------------------------------------

    def _check_params(self) -> dict[str, Any]:
        if self.activation not in _ACTIVATIONS:
            names = ", ".join(repr(k) for k in _ACTIVATIONS)
            msg = f"activation must be one of {names}, got {self.activation!r}"
            raise ValueError(msg)
        if self.solver not in _SOLVERS:
            msg = f"solver must be one of {', '.join(map(repr, _SOLVERS))}, got {self.solver!r}"
            raise ValueError(msg)
        if self.batch_size != "auto":
            _positive_int(self.batch_size, "batch_size ('auto' or an int)")
        fraction = _number(self.validation_fraction, "validation_fraction")
        if self.early_stopping and not 0.0 < fraction < 1.0:
            msg = f"validation_fraction must lie in (0, 1), got {self.validation_fraction!r}"
            raise ValueError(msg)
        momentum = _number(self.momentum, "momentum")
        if momentum > 1.0:
            msg = f"momentum must lie in [0, 1], got {self.momentum!r}"
            raise ValueError(msg)
        if dtype_name(self.dtype) not in ("float32", "float64"):
            msg = f"dtype must be 'float32' or 'float64', got {self.dtype!r}"
            raise ValueError(msg)
        return {
            "hidden": _hidden_sizes(self.hidden_layer_sizes),
            "alpha": _number(self.alpha, "alpha"),
            "lr": _number(self.learning_rate_init, "learning_rate_init", strict=True),
            "max_iter": _positive_int(self.max_iter, "max_iter"),
            "tol": _number(self.tol, "tol"),
            "n_iter_no_change": _positive_int(self.n_iter_no_change, "n_iter_no_change"),
            "momentum": momentum,
        }

    def _check_X(self, X: Any, *, reset: bool) -> Any:
        """``X`` for a model: a host array validated by scikit-learn, or an array of
        another backend checked on its device (its values are checked for NaN and
        infinity by :func:`portprop.fit` and :func:`portprop.predict`, in one reduction)."""
        X = _host_input(X, "X", numeric=True)
        if len(getattr(X, "shape", ())) > 2:  # scikit-learn's message has no reshape hint
            _require_2d_like_sklearn(X)
        with _named("X"):
            device_backend = _device_backend(X)
            if device_backend is None:
                return validate_data(self, X, reset=reset, dtype=("float64", "float32"))
            self._check_device_X(X, reset=reset)
            return X

    def _check_X_y(self, X: Any, y: Any, *, reset: bool) -> tuple[Any, Any]:
        if y is None:
            msg = f"{type(self).__name__} requires y to be passed, but the target y is None"
            raise ValueError(msg)
        y = _host_input(y, "y", numeric=isinstance(self, RegressorMixin))
        X = _host_input(X, "X", numeric=True)
        check_lengths(X, y, "X", "y")
        X = self._check_X(X, reset=reset)
        with _named("y"):
            y = self._check_y_host(_to_host(y))
        return X, y

    def _check_device_X(self, X: Array, *, reset: bool) -> None:
        """What scikit-learn checks of a host ``X``, but free: nothing is read back."""
        _require_2d_like_sklearn(X)
        require_numbers(X, "X", "features")
        n_samples, n_features = X.shape
        for count, what in ((n_samples, "sample"), (n_features, "feature")):
            if count < 1:
                msg = (
                    f"Found array with {count} {what}(s) (shape={tuple(X.shape)}) while a "
                    f"minimum of 1 is required by {type(self).__name__}."
                )
                raise ValueError(msg)
        if reset:
            self.n_features_in_ = n_features
            if hasattr(self, "feature_names_in_"):
                del self.feature_names_in_
        elif n_features != self.n_features_in_:
            msg = (
                f"X has {n_features} features, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features as input."
            )
            raise ValueError(msg)

    # ---- building ----------------------------------------------------------------------

    def _resolve_backend(self, X: Any) -> tuple[Backend, Any]:
        backend = self.backend
        if backend is None:
            found = _device_backend(X)
            backend = found if found is not None else get_backend()
        return resolve(backend, self.device, self.dtype)

    def _build_model(self, units: list[int], activation: str, backend: Backend, dtype: Any) -> None:
        layers: list[Module] = []
        for i in range(len(units) - 1):
            # seed=0: the constructor's draw is overwritten below and must not advance the
            # global generator of portprop.manual_seed
            layers.append(Linear(units[i], units[i + 1], seed=0, backend=backend, dtype=dtype))
            if i < len(units) - 2:
                layers.append(_ACTIVATIONS[activation](backend=backend, dtype=dtype))
        self.model_ = Sequential(*layers)
        self._units = units
        self._activation = activation

    def _initial_weights(self, random_state: Any) -> None:
        """scikit-learn's Glorot-uniform draws, from the same stream, in the same order."""
        factor = 2.0 if self._activation in ("logistic", "sigmoid") else 6.0
        state = {}
        linears = [(i, m) for i, m in enumerate(self.model_) if isinstance(m, Linear)]
        for i, layer in linears:
            bound = math.sqrt(factor / (layer.in_features + layer.out_features))
            weight = random_state.uniform(-bound, bound, (layer.in_features, layer.out_features))
            bias = random_state.uniform(-bound, bound, layer.out_features)
            state[f"{i}.weight"] = weight.T.copy()
            state[f"{i}.bias"] = bias
        self.model_.load_state_dict(state)

    def _build_solver(self, spec: dict[str, Any]) -> None:
        self._solver_spec = spec
        model = self.model_
        weights = [m.weight for m in model if isinstance(m, Linear)]
        biases = [m.bias for m in model if isinstance(m, Linear) and m.bias is not None]
        lr, alpha, name = spec["lr"], spec["alpha"], spec["solver"]
        optimizers: list[Optimizer]
        if name == "adamw":
            optimizers = [
                AdamW(weights, lr=lr, weight_decay=alpha),
                AdamW(biases, lr=lr, weight_decay=0.0),
            ]
            alpha = 0.0  # decoupled: nothing is added to the gradients
        elif name == "adam":
            optimizers = [Adam(model.parameters(), lr=lr)]
        elif name == "rmsprop":
            optimizers = [RMSprop(model.parameters(), lr=lr)]
        else:
            mu = spec["momentum"]
            optimizers = [SGD(model.parameters(), lr=lr, momentum=mu, nesterov=mu > 0.0)]
        self._loss = self._new_loss()
        self._solver = _Solver(optimizers, weights, alpha, self._loss, model.backend)

    # ---- training --------------------------------------------------------------------

    def _fit(self, X: Any, y: Any, *, incremental: bool, classes: Any = None) -> _BaseMLP:
        """Train; a call that raises leaves the estimator as it was before it.

        The fitted attributes are restored from a shallow copy of ``__dict__``: a failed
        ``fit`` keeps the previous model (a new one is built only after every check
        passed), and a failed ``partial_fit`` keeps the bookkeeping (``n_iter_``,
        ``t_``, ``loss_curve_``).  The one thing not undone is the parameters of a
        ``partial_fit`` that diverged during its epoch: they keep the last finite values,
        as :func:`portprop.fit` leaves them (restoring them would cost a copy of every
        parameter at every call).  An interrupt (``KeyboardInterrupt``) restores nothing.
        """
        saved = dict(self.__dict__)
        try:
            return self._fit_unguarded(X, y, incremental=incremental, classes=classes)
        except Exception:
            self.__dict__.clear()
            self.__dict__.update(saved)
            raise

    def _fit_unguarded(self, X: Any, y: Any, *, incremental: bool, classes: Any = None) -> _BaseMLP:
        params = self._check_params()
        first = not incremental or not hasattr(self, "model_")
        if incremental and self.early_stopping:
            msg = "partial_fit does not support early_stopping=True"
            raise ValueError(msg)
        X, y = self._check_X_y(X, y, reset=first)
        y = self._validate_targets(y, first=first, classes=classes)
        random_state = check_random_state(self.random_state)
        if first:
            backend, dtype = self._resolve_backend(X)
            units = [X.shape[1], *params["hidden"], self._n_outputs(y)]
            self._build_model(units, self.activation, backend, dtype)
            self._initial_weights(random_state)
            spec = {
                "solver": self.solver,
                "lr": params["lr"],
                "alpha": params["alpha"],
                "momentum": params["momentum"],
            }
            self._build_solver(spec)
            self.n_outputs_ = units[-1]
            self.n_layers_ = len(units)
            self.backend_ = backend.name
            self.t_ = 0
            self.loss_curve_ = []
            self._no_improvement_count = 0
            self._best_parameters = None
            self._best_score, self._best_loss = -math.inf, math.inf
            if self.early_stopping:
                self.validation_scores_ = []
                self.best_validation_score_ = -math.inf
                self.best_loss_ = None
            else:
                self.validation_scores_ = None
                self.best_validation_score_ = None
                self.best_loss_ = math.inf
        model = self.model_
        X = model.backend.asarray(X, dtype=model.dtype)
        validation = None
        if self.early_stopping:
            X, y, validation = self._split(X, y, random_state)
        n_train = X.shape[0]
        batch_size = self._batch_size(n_train)
        seed = int(random_state.randint(2**31 - 1))
        stopping = _Stopping(
            self,
            self._solver,
            n_train,
            validation,
            self.validation_scores_ if self.validation_scores_ is not None else [],
            incremental,
            self._reported_loss_scale(),
        )
        self.n_iter_ = 0
        try:
            fit(
                model,
                self._loss,
                self._solver,
                X,
                y,
                epochs=1 if incremental else params["max_iter"],
                batch_size=batch_size,
                shuffle=bool(self.shuffle),
                seed=seed,
                callbacks=[stopping],
                verbose=0,
            )
        except TrainingDivergedError as exc:
            msg = (
                "Solver produced non-finite parameter weights. The input data may contain "
                f"large values and need to be preprocessed. ({exc})"
            )
            raise ValueError(msg) from exc
        if not incremental and not stopping.converged and self.n_iter_ == params["max_iter"]:
            warnings.warn(
                f"Stochastic Optimizer: Maximum iterations ({params['max_iter']}) reached and "
                "the optimization hasn't converged yet.",
                ConvergenceWarning,
                stacklevel=3,
            )
        if validation is not None and self._best_parameters is not None:
            for p, best in zip(model.parameters(), self._best_parameters, strict=True):
                p.data = best
        self._best_parameters = None
        return self

    def _split(self, X: Array, y: Any, random_state: Any) -> tuple[Array, Any, tuple[Array, Any]]:
        stratify = y if isinstance(self, ClassifierMixin) else None
        train, val = train_test_split(
            list(range(X.shape[0])),
            random_state=random_state,
            test_size=self.validation_fraction,
            stratify=stratify,
        )
        if len(val) < 2:
            msg = (
                "The validation set is too small. Increase 'validation_fraction' or the size "
                "of your dataset."
            )
            raise ValueError(msg)
        backend = self.model_.backend
        xp = backend.xp

        def rows(idx: list[int]) -> Array:
            with backend.scope():
                return xp.take(X, backend.asarray(idx), axis=0)

        return rows(train), y[train], (rows(val), y[val])

    def _batch_size(self, n_samples: int) -> int:
        if self.batch_size == "auto":
            return min(200, n_samples)
        batch_size = _positive_int(self.batch_size, "batch_size")
        if batch_size > n_samples:
            warnings.warn(
                "Got `batch_size` less than 1 or larger than sample size. It is going to be "
                "clipped",
                UserWarning,
                stacklevel=4,
            )
        return min(batch_size, n_samples)

    # ---- prediction ------------------------------------------------------------------

    def _outputs(self, X: Any) -> Array:
        """The model's outputs for ``X``, on the model's backend."""
        check_is_fitted(self)
        X = self._check_X(X, reset=False)
        return predict(self.model_, X, batch_size=_PREDICT_BATCH)

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "model_")

    @property
    def coefs_(self) -> list[Any]:
        """The weight matrices as NumPy arrays ``(fan_in, fan_out)``, as in scikit-learn."""
        check_is_fitted(self)
        return [self.model_.backend.to_host(m.weight.data).T for m in self._linears()]

    @property
    def intercepts_(self) -> list[Any]:
        """The bias vectors as NumPy arrays ``(fan_out,)``, as in scikit-learn."""
        check_is_fitted(self)
        backend = self.model_.backend
        return [backend.to_host(m.bias.data) for m in self._linears() if m.bias is not None]

    def _linears(self) -> list[Linear]:
        return [m for m in self.model_ if isinstance(m, Linear)]

    @property
    def out_activation_(self) -> str:
        """``"softmax"`` for the classifier, ``"identity"`` for the regressor."""
        check_is_fitted(self)
        return "softmax" if isinstance(self, ClassifierMixin) else "identity"

    # ---- pickling --------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())
        if isinstance(state.get("backend"), Backend):  # it holds a module: keep its name
            state["backend"] = state["backend"].name
        model = state.pop("model_", None)
        solver = state.pop("_solver", None)
        state.pop("_loss", None)
        if model is not None:
            backend = model.backend
            state["_host_model"] = {
                "backend": backend.name,
                "dtype": dtype_name(model.dtype),
                "parameters": {k: backend.to_host(v) for k, v in model.state_dict().items()},
                "optimizers": [_host_state(backend, opt) for opt in solver.optimizers]
                if solver is not None
                else [],
            }
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        host = state.pop("_host_model", None)
        super().__setstate__(state)
        if host is None:
            return
        try:
            backend, dtype = resolve(host["backend"], None, host["dtype"])
        except BackendUnavailableError as exc:
            warnings.warn(
                f"the estimator was trained on backend {host['backend']!r}, which is not "
                f"available here ({exc}); its model is restored on NumPy",
                UserWarning,
                stacklevel=2,
            )
            backend, dtype = resolve("numpy", None, host["dtype"])
        self._build_model(self._units, self._activation, backend, dtype)
        self.model_.load_state_dict(host["parameters"])
        self.backend_ = backend.name
        self._build_solver(self._solver_spec)
        for opt, saved in zip(self._solver.optimizers, host["optimizers"], strict=False):
            opt.load_state_dict(saved)
