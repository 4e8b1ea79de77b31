"""scikit-learn estimators: :class:`MLPClassifier` and :class:`MLPRegressor`.

They follow :mod:`sklearn.neural_network`'s estimators of the same names (parameters,
fitted attributes, stopping rule, warnings) and train a portprop :class:`~portprop.Sequential`
with :func:`portprop.fit`, on any backend::

    from portprop.sklearn import MLPClassifier

    clf = MLPClassifier(backend="torch:cuda").fit(X_train, y_train)
    clf.score(X_test, y_test)

scikit-learn is an optional dependency (``pip install 'portprop[sklearn]'``); ``import
portprop`` does not import this module.

Input data
----------
``X`` and ``y`` may be NumPy arrays, lists, pandas frames or sparse-free array-likes,
validated by :func:`sklearn.utils.validation.validate_data` (NaN, infinity, complex
data and strings are refused as scikit-learn refuses them; object arrays of numbers,
integers and booleans are converted), or arrays of any portprop backend (torch, CuPy,
JAX, array-api-strict), which are checked on their own device (2-D, real, finite; the
finiteness by :func:`portprop.fit` or :func:`portprop.predict`, in one reduction) and
never copied to the host.  Targets are read on the host: class labels are encoded there
(``classes_``), and regression targets are small.  The estimators' Notes list every
rule.

With ``backend=None`` the model lives where portprop's rules put it: on the backend of
``X`` when ``X`` is an array of a backend other than NumPy, else on the current
backend (:func:`portprop.use_backend`, ``PORTPROP_BACKEND``, else NumPy).

``predict``, ``predict_proba`` and ``predict_log_proba`` always return **NumPy arrays**
(scikit-learn's convention, whatever the backend): probabilities and regression values
in float64, class labels of ``classes_``'s dtype.

Training, and how it relates to scikit-learn
--------------------------------------------
- Network: ``Linear`` layers with the chosen ``activation`` between them and a linear
  output layer.  Weights and intercepts are drawn as scikit-learn draws them (Glorot
  uniform, :math:`\\pm\\sqrt{6 / (n_{in} + n_{out})}`, or :math:`\\sqrt{2 / \\cdot}` for
  the logistic activation), from the same ``random_state`` stream, in float64 on the
  host, then cast to ``dtype``: the initial weights equal scikit-learn's.
- Classifier: softmax outputs, one per class, and :class:`~portprop.CrossEntropyLoss`
  (mean over the batch).  Binary problems use two softmax outputs, where scikit-learn
  uses one logistic output (the same model: ``out_activation_`` is ``"softmax"``).
  Multilabel targets are not supported.
- Regressor: identity outputs and scikit-learn's half squared error
  :math:`\\frac{1}{2n}\\sum_i \\lVert f(x_i) - y_i \\rVert^2` per batch of ``n`` samples
  (an :class:`~portprop.MSELoss` scaled by ``n_outputs / 2``), whose gradient is
  scikit-learn's.  As scikit-learn does, ``loss_curve_`` reports it divided by the
  number of outputs (the mean over every element, halved), so that ``tol`` means the
  same in both.
- ``alpha`` (``adam``, ``sgd``, ``rmsprop``): scikit-learn's L2 penalty.  Each batch of
  ``n`` samples adds :math:`\\frac{\\alpha}{2n}\\sum \\lVert W \\rVert^2` over the
  weight matrices (not the intercepts) to the mean batch loss, that is, a weight decay
  of :math:`\\alpha / n` on the weights' gradients before the optimizer's step (the last,
  smaller batch of an epoch uses its own ``n``, as scikit-learn does).  ``loss_curve_``
  includes the penalty, as scikit-learn's does.
- ``alpha`` with ``solver="adamw"``: the decoupled weight decay :math:`\\lambda` of
  :class:`~portprop.AdamW` (``w <- (1 - lr * alpha) w`` at every step), on the weights
  only; it is not part of the reported loss.  torch's default is ``1e-2``.
- Solvers follow torch's definitions (:mod:`portprop.optim`): ``"adam"`` equals
  scikit-learn's Adam up to where :math:`\\varepsilon` enters the denominator;
  ``"sgd"`` uses Nesterov momentum when ``momentum > 0`` (scikit-learn's default
  ``nesterovs_momentum=True``) and a constant learning rate; ``"rmsprop"`` and
  ``"adamw"`` have no scikit-learn counterpart.
- Stopping: as scikit-learn, each epoch either the training loss (``early_stopping=
  False``) or the validation score (accuracy or :math:`R^2` on a ``validation_fraction``
  split, stratified for classifiers) must improve by ``tol``; after more than
  ``n_iter_no_change`` epochs without it, training stops.  Reaching ``max_iter`` first
  warns with :class:`~sklearn.exceptions.ConvergenceWarning`.  With ``early_stopping``,
  the parameters of the best validation score are restored at the end.
- ``dtype``: ``"float32"`` by default, portprop's default, which every backend and
  device supports and GPUs compute fastest; on digits it reaches scikit-learn's
  accuracy.  ``"float64"`` reproduces scikit-learn's precision (JAX needs
  ``JAX_ENABLE_X64=1`` for it).

Pickling moves the parameters and the optimizer's state to host memory; unpickling
rebuilds the model on the backend it was trained on (on NumPy, with a warning, where
that backend is unavailable).  A ``backend`` parameter given as a
:class:`~portprop.Backend` is pickled as its name.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import operator
import re
import sys
import warnings
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import r2_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import assert_all_finite, check_random_state
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import check_array, check_is_fitted, column_or_1d, validate_data

from portprop import functional as F
from portprop._backend import Backend, _is_array, backend_of, dtype_name, get_backend, resolve
from portprop.errors import BackendUnavailableError, TrainingDivergedError, UnknownBackendError
from portprop.layers import Identity, LeakyReLU, Linear, ReLU, Sigmoid, Tanh
from portprop.losses import CrossEntropyLoss, MSELoss
from portprop.module import Module, Parameter, Sequential, rank_hint
from portprop.optim import SGD, Adam, AdamW, Optimizer, RMSprop
from portprop.training import (
    Callback,
    _as_array,
    _first_value,
    _kind,
    _require_numbers,
    fit,
    predict,
)

__all__ = ["MLPClassifier", "MLPRegressor"]

Array = Any

_ACTIVATIONS: dict[str, type[Module]] = {
    "identity": Identity,
    "leaky_relu": LeakyReLU,
    "logistic": Sigmoid,
    "relu": ReLU,
    "sigmoid": Sigmoid,
    "tanh": Tanh,
}
_SOLVERS = ("adam", "adamw", "rmsprop", "sgd")
_PREDICT_BATCH = 4096


# --------------------------------------------------------------------------------------
# The pieces that portprop.fit runs
# --------------------------------------------------------------------------------------


class _CrossEntropy(CrossEntropyLoss):
    """Cross-entropy (mean over the batch) that remembers the size of its last batch."""

    batch_size = 0

    def _forward(self, xp: Any, pred: Array, target: Array) -> Array:
        self.batch_size = pred.shape[0]
        return super()._forward(xp, pred, target)


class _HalfSquaredError(MSELoss):
    r"""scikit-learn's regression loss :math:`\frac{1}{2n}\sum (f(x) - y)^2`, summed over
    the outputs and averaged over the ``n`` samples of the batch (whose size it keeps)."""

    batch_size = 0

    def _forward(self, xp: Any, pred: Array, target: Array) -> Array:  # noqa: ARG002
        self.batch_size = pred.shape[0]
        self._c = 0.5 / pred.shape[0]
        assert self._backend is not None
        value, self._diff = F.mse_loss(self._backend.sum, pred, target, self._c)
        return value


class _Solver:
    r"""The optimizer(s) that :func:`portprop.fit` steps, plus scikit-learn's penalty.

    With ``coupled_alpha`` :math:`\alpha > 0`, each step first adds :math:`\alpha / n`
    times each weight matrix to its gradient (``n``: the batch size the loss saw) and
    sums :math:`\frac{\alpha}{2}\lVert W \rVert^2` on the device, the penalty's share of
    the epoch's summed loss; :meth:`take_penalty` reads it back once per epoch.
    """

    def __init__(
        self,
        optimizers: list[Optimizer],
        weights: list[Parameter],
        coupled_alpha: float,
        loss: _CrossEntropy | _HalfSquaredError,
        backend: Backend,
    ) -> None:
        self.optimizers = optimizers
        self.params = [p for opt in optimizers for p in opt.params]
        self.weights = weights
        self.coupled_alpha = coupled_alpha
        self.loss = loss
        self.backend = backend
        self._squares: Array | None = None  # sum of ||W||^2 over weights and steps

    @property
    def lr(self) -> float:
        return self.optimizers[0].lr

    def step(self) -> None:
        alpha = self.coupled_alpha
        if alpha > 0.0:
            backend, xp = self.backend, self.backend.xp
            decay = alpha / self.loss.batch_size
            with backend.scope():
                for w in self.weights:
                    if w.grad is None:
                        continue
                    square = xp.sum(w.data * w.data)
                    self._squares = square if self._squares is None else self._squares + square
                    w.grad = backend.add_scaled(w.grad, decay, w.data)
        for opt in self.optimizers:
            opt.step()

    def take_penalty(self) -> float:
        """The penalty summed since the last call (one read-back), and reset it."""
        total = 0.0 if self._squares is None else float(self._squares)
        self._squares = None
        return 0.5 * self.coupled_alpha * total


class _Stopping(Callback):
    """scikit-learn's bookkeeping and stopping rule, run by :func:`portprop.fit` after
    each epoch (see ``_update_no_improvement_count`` in scikit-learn)."""

    def __init__(
        self,
        estimator: _BaseMLP,
        solver: _Solver,
        n_train: int,
        validation: tuple[Array, Any] | None,
        scores: list[float],
        incremental: bool,
        loss_scale: float,
    ) -> None:
        self.estimator = estimator
        self.scores = scores
        self.loss_scale = loss_scale
        self.solver = solver
        self.n_train = n_train
        self.validation = validation
        self.incremental = incremental
        self.converged = False

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:  # noqa: ARG002
        est = self.estimator
        loss = logs["loss"] * self.loss_scale + self.solver.take_penalty() / self.n_train
        est.n_iter_ += 1
        est.t_ += self.n_train
        est.loss_curve_.append(loss)
        if est.verbose:
            sys.stderr.write(f"Iteration {est.n_iter_}, loss = {loss:.8f}\n")
        if self.validation is not None:
            score = est._validation_score(*self.validation)
            self.scores.append(score)
            if est.verbose:
                sys.stderr.write(f"Validation score: {score:f}\n")
            if score < est._best_score + est.tol:
                est._no_improvement_count += 1
            else:
                est._no_improvement_count = 0
            if score > est._best_score:
                est._best_score = est.best_validation_score_ = score
                est._best_parameters = _copy_parameters(est.model_)
        else:
            if loss > est._best_loss - est.tol:
                est._no_improvement_count += 1
            else:
                est._no_improvement_count = 0
            est._best_loss = est.best_loss_ = min(est._best_loss, loss)
        if est._no_improvement_count > est.n_iter_no_change:
            what = "Validation score" if self.validation is not None else "Training loss"
            if est.verbose:
                sys.stderr.write(
                    f"{what} did not improve more than tol={est.tol:f} for "
                    f"{est.n_iter_no_change} consecutive epochs. Stopping.\n"
                )
            self.converged = True
            if self.state is not None and not self.incremental:
                self.state.stop_training = True


def _copy_parameters(model: Module) -> list[Array]:
    xp = model.backend.xp
    with model.backend.scope():
        return [xp.asarray(p.data, copy=True) for p in model.parameters()]


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


def _n_samples(x: Any) -> int | None:
    """The length of ``x`` if it is cheap to know, else ``None`` (checked later)."""
    shape = getattr(x, "shape", None)
    if shape is not None:
        return int(shape[0]) if len(shape) > 0 and shape[0] is not None else None
    try:
        return len(x)
    except TypeError:
        return None


def _host_input(x: Any, argname: str, *, numeric: bool) -> Any:
    """Lists and tuples as NumPy arrays (ragged ones refused with a message that names
    ``argname``); with ``numeric``, arrays of strings or complex numbers refused.

    Object arrays and pandas objects are left to scikit-learn, which converts object
    arrays of numbers and keeps the column names of data frames.
    """
    if isinstance(x, list | tuple):
        x = _as_array(x, argname)
    if numeric and _is_array(x):
        kind = _kind(x)
        if kind == "complex":
            msg = (
                f"Complex data not supported: {argname} has dtype {dtype_name(x.dtype)}; "
                f"pass {argname}.real if the imaginary parts are meaningless"
            )
            raise ValueError(msg)
        if kind == "strings":
            msg = (
                f"{argname} must hold numbers, got strings (dtype {dtype_name(x.dtype)}, the "
                f"first is {_first_value(x)}): could not convert string to float"
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
        n_x, n_y = _n_samples(X), _n_samples(y)
        if n_x is not None and n_y is not None and n_x != n_y:
            msg = f"X and y must hold as many samples: X has {n_x}, y has {n_y}"
            raise ValueError(msg)
        X = self._check_X(X, reset=reset)
        with _named("y"):
            y = self._check_y_host(_to_host(y))
        return X, y

    def _check_device_X(self, X: Array, *, reset: bool) -> None:
        """What scikit-learn checks of a host ``X``, but free: nothing is read back."""
        _require_2d_like_sklearn(X)
        _require_numbers(X, "X", "features")
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


def _host_state(backend: Backend, optimizer: Optimizer) -> dict[str, Any]:
    saved = optimizer.state_dict()
    saved["state"] = [
        {k: v if k == "step" else backend.to_host(v) for k, v in s.items()} for s in saved["state"]
    ]
    return saved


_PARAMETERS_DOC = """
    Parameters
    ----------
    hidden_layer_sizes : int or sequence of int, default (100,)
        The width of each hidden layer.
    activation : {"relu", "tanh", "logistic" or "sigmoid", "leaky_relu", "identity"}, \
default "relu"
        The hidden layers' activation (``leaky_relu`` has slope 0.01).
    solver : {"adam", "adamw", "sgd", "rmsprop"}, default "adam"
        The optimizer, with torch's definitions (see the module notes).
    alpha : float, default 1e-4
        Strength of the L2 penalty on the weights, as in scikit-learn (for ``"adamw"``:
        the decoupled weight decay).
    batch_size : int or "auto", default "auto"
        Samples per step; ``"auto"`` is ``min(200, n_samples)``.
    learning_rate_init : float, default 1e-3
        The learning rate.
    max_iter : int, default 200
        The most epochs ``fit`` runs.
    shuffle : bool, default True
        Visit the samples in a new order each epoch.
    random_state : int, RandomState or None, default None
        Draws the initial weights, the validation split and the shuffling seeds.
    tol : float, default 1e-4
        The improvement of the loss (or validation score) that counts.
    verbose : bool, default False
        Print the loss of each epoch on standard error.
    early_stopping : bool, default False
        Hold out ``validation_fraction`` of the data and stop when its score stalls.
    validation_fraction : float, default 0.1
        The held-out fraction with ``early_stopping``.
    n_iter_no_change : int, default 10
        Epochs without an improvement of ``tol`` before stopping.
    momentum : float, default 0.9
        Nesterov momentum of ``solver="sgd"``.
    backend : str or Backend, optional
        Where to train (``"torch:cuda"``, ``"cupy"``, ``"jax"``, ...); by default, the
        backend of ``X`` or the current one.
    device : optional
        A device of the backend's library.
    dtype : {"float32", "float64"}, default "float32"
        The dtype the model computes in.
"""

_NOTES_DOC = """
    Notes
    -----
    Every check runs before any training step, and each message names the argument
    (``X`` or ``y``) with what was expected and what was found; where scikit-learn's
    own message does not name it, ``"X: "`` or ``"y: "`` is put in front.

    - ``X`` must be 2-D (the message says how to reshape it), with at least one sample
      and one feature, as many samples as ``y``, and, after ``fit``, the number of
      features seen by ``fit`` (``"X has 4 features, but MLPClassifier is expecting
      3 features as input."``); ragged lists are refused (``ValueError``).
    - NaN and infinity in ``X`` or ``y`` are refused (``ValueError("Input X contains
      NaN...")``).
    - Strings and complex numbers in ``X`` (or in a regressor's ``y``) are refused with
      a ``ValueError``, as scikit-learn refuses them; Boolean, integer and object
      arrays of numbers are converted to the model's dtype (integers beyond
      :math:`2^{24}` are rounded in float32).  Class labels may be of any kind.
    - Data of any floating dtype is cast to the model's ``dtype``: float64 data for the
      float32 default is cast, on every backend alike.
    - ``predict``, ``predict_proba``, ``predict_log_proba`` and ``score`` before
      ``fit`` raise :class:`~sklearn.exceptions.NotFittedError`.
    - A ``fit`` or ``partial_fit`` that raises leaves the estimator as it was: a failed
      ``fit`` of a fitted estimator keeps its previous model.  Only a ``partial_fit``
      whose training diverged keeps the parameters of its last finite step, as
      :func:`portprop.fit` does.
"""

_ATTRIBUTES_DOC = """
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when ``X`` had column names.
    n_outputs_ : int
        Outputs of the network.
    n_layers_ : int
        Layers, input and output included (as in scikit-learn).
    loss_curve_ : list of float
        The loss of each epoch (mean over the samples, penalty included).
    best_loss_ : float or None
        The lowest loss of ``loss_curve_``; ``None`` with ``early_stopping``.
    validation_scores_ : list of float or None
        With ``early_stopping``, the score of each epoch on the held-out data.
    best_validation_score_ : float or None
    n_iter_ : int
        Epochs run by the last ``fit`` (1 after ``partial_fit``).
    t_ : int
        Training samples seen, over every call.
    model_ : Sequential
        The trained portprop network (its output layer gives logits or values).
    backend_ : str
        The name of the backend the model lives on.
    coefs_, intercepts_ : list of ndarray
        The parameters, as NumPy arrays laid out as in scikit-learn.
    out_activation_ : str
"""


class MLPClassifier(ClassifierMixin, _BaseMLP):  # type: ignore[misc]
    __doc__ = (
        """A multilayer perceptron classifier trained by portprop, on any backend.

    Drop-in for :class:`sklearn.neural_network.MLPClassifier` (stochastic solvers): a
    softmax output per class and the cross-entropy loss.  See :mod:`portprop.sklearn`.
"""
        + _PARAMETERS_DOC
        + """
    Attributes
    ----------
    classes_ : ndarray
        The class labels; ``predict`` returns them and ``predict_proba``'s columns follow
        their order."""
        + _ATTRIBUTES_DOC
        + _NOTES_DOC
    )

    def _check_y_host(self, y: Any) -> Any:
        y = column_or_1d(y, warn=True)
        assert_all_finite(y, input_name="y")
        return y

    def _validate_targets(self, y: Any, *, first: bool, classes: Any) -> Any:
        check_classification_targets(y)
        kind = type_of_target(y)
        if kind not in ("binary", "multiclass"):
            msg = f"{type(self).__name__} supports binary and multiclass targets, got {kind!r}"
            raise ValueError(msg)
        if first:
            encoder = LabelEncoder().fit(y if classes is None else classes)
            self.classes_ = encoder.classes_
            self._encoder = encoder
        elif classes is not None and list(classes) != list(self.classes_):
            msg = (
                f"`classes={list(classes)!r}` is not the same as on last call to "
                f"partial_fit, was: {list(self.classes_)!r}"
            )
            raise ValueError(msg)
        return self._encoder.transform(y)

    def _n_outputs(self, y: Any) -> int:  # noqa: ARG002
        return len(self.classes_)

    def _new_loss(self) -> _CrossEntropy:
        return _CrossEntropy()

    def _validation_score(self, X_val: Array, y_val: Any) -> float:
        labels = self._encoded_predictions(X_val)
        return float((labels == y_val).mean())

    def _encoded_predictions(self, X: Array) -> Any:
        backend = self.model_.backend
        out = predict(self.model_, X, batch_size=_PREDICT_BATCH)
        with backend.scope():
            return backend.to_host(backend.xp.argmax(out, axis=1))

    def fit(self, X: Any, y: Any) -> MLPClassifier:
        """Train a new network on ``X`` ``(n_samples, n_features)`` and labels ``y``
        ``(n_samples,)`` for up to ``max_iter`` epochs; returns ``self``."""
        self._fit(X, y, incremental=False)
        return self

    def partial_fit(self, X: Any, y: Any, classes: Sequence[Any] | None = None) -> MLPClassifier:
        """One epoch over ``(X, y)``, continuing from the current network (and the
        optimizer's state); the first call needs every class in ``classes``."""
        if not hasattr(self, "model_") and classes is None:
            msg = "classes must be passed on the first call to partial_fit."
            raise ValueError(msg)
        self._fit(X, y, incremental=True, classes=classes)
        return self

    def predict(self, X: Any) -> Any:
        """The predicted class labels, a NumPy array ``(n_samples,)``."""
        check_is_fitted(self)
        X = self._check_X(X, reset=False)
        return self.classes_[self._encoded_predictions(X)]

    def predict_proba(self, X: Any) -> Any:
        """Class probabilities, a NumPy float64 array ``(n_samples, n_classes)``.

        The softmax of the model's logits, computed on the host in float64 from the
        logits as the model gives them: each row sums to 1 to float64 rounding, however
        large the logits."""
        outputs = self._outputs(X)  # checks that the estimator is fitted, and X
        logits = self.model_.backend.to_host(outputs).astype("float64")
        return F.softmax(get_backend(logits).xp, logits)

    def predict_log_proba(self, X: Any) -> Any:
        """The logarithm of :meth:`predict_proba` (as in scikit-learn)."""
        probs = self.predict_proba(X)
        return _log(probs)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = False
        return tags


def _log(a: Any) -> Any:
    """Elementwise natural logarithm of a NumPy array (``log(0) = -inf``, as in sklearn)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return get_backend(a).xp.log(a)


class MLPRegressor(RegressorMixin, _BaseMLP):  # type: ignore[misc]
    __doc__ = (
        """A multilayer perceptron regressor trained by portprop, on any backend.

    Drop-in for :class:`sklearn.neural_network.MLPRegressor` (stochastic solvers):
    identity outputs and the half squared error.  ``y`` may be ``(n_samples,)`` or
    ``(n_samples, n_outputs)``; ``predict`` returns ``(n_samples,)`` when there is one
    output, as scikit-learn does.  See :mod:`portprop.sklearn`.
"""
        + _PARAMETERS_DOC
        + """
    Attributes
    ----------"""
        + _ATTRIBUTES_DOC
        + _NOTES_DOC
    )

    def _check_y_host(self, y: Any) -> Any:
        return check_array(y, ensure_2d=False, dtype=("float64", "float32"), input_name="y")

    def _validate_targets(self, y: Any, *, first: bool, classes: Any) -> Any:  # noqa: ARG002
        if y.ndim not in (1, 2):
            msg = f"y must be 1-D or 2-D, got shape {y.shape}"
            raise ValueError(msg)
        if not first and self._n_outputs(y) != self.n_outputs_:
            msg = f"y has {self._n_outputs(y)} outputs, but the model has {self.n_outputs_}"
            raise ValueError(msg)
        return y

    def _n_outputs(self, y: Any) -> int:
        return 1 if y.ndim == 1 else int(y.shape[1])

    def _new_loss(self) -> _HalfSquaredError:
        return _HalfSquaredError()

    def _reported_loss_scale(self) -> float:
        # scikit-learn reports the half squared error averaged over the outputs too
        return 1.0 / self.n_outputs_

    def _validation_score(self, X_val: Array, y_val: Any) -> float:
        return float(r2_score(y_val, self._predict_on_host(X_val)))

    def _predict_on_host(self, X: Array) -> Any:
        backend = self.model_.backend
        out = backend.to_host(predict(self.model_, X, batch_size=_PREDICT_BATCH))
        out = out.astype("float64")
        return out.reshape(-1) if self.n_outputs_ == 1 else out

    def fit(self, X: Any, y: Any) -> MLPRegressor:
        """Train a new network on ``X`` ``(n_samples, n_features)`` and targets ``y``
        ``(n_samples,)`` or ``(n_samples, n_outputs)``; returns ``self``."""
        self._fit(X, y, incremental=False)
        return self

    def partial_fit(self, X: Any, y: Any) -> MLPRegressor:
        """One epoch over ``(X, y)``, continuing from the current network (and the
        optimizer's state)."""
        self._fit(X, y, incremental=True)
        return self

    def predict(self, X: Any) -> Any:
        """Predicted values, a NumPy float64 array ``(n_samples,)`` with one output,
        else ``(n_samples, n_outputs)``."""
        check_is_fitted(self)
        X = self._check_X(X, reset=False)
        return self._predict_on_host(X)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags
