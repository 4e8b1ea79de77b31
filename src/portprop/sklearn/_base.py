"""The machinery :class:`MLPClassifier` and :class:`MLPRegressor` share (:class:`_BaseMLP`):
the parameters (checked by scikit-learn's own constraints), the checks of ``X``, ``y``
and ``sample_weight``, building the network, ``fit`` and ``partial_fit`` with either
kind of solver, the fitted attributes laid out as in scikit-learn (``coefs_`` and
``intercepts_`` can be assigned), and pickling.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from numbers import Integral, Real
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, clone, is_classifier
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, Options, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from portprop.backend import Backend, dtype_name, get_backend, resolve
from portprop.distributed import Communicator
from portprop.errors import BackendUnavailableError
from portprop.layers import Identity, LeakyReLU, Linear, ReLU, Sigmoid, Tanh
from portprop.module import Module, Sequential
from portprop.optim import Optimizer
from portprop.sklearn._distributed import _Ranks, resolve_comm, shared_random_state
from portprop.sklearn._inputs import (
    _device_backend,
    _host_input,
    _named,
    _require_2d_like_sklearn,
    _to_host,
    check_fitted_namespace,
    check_sample_weight,
    dispatch_enabled,
    fitted_namespace,
    follow_X,
)
from portprop.sklearn._lbfgs import run_lbfgs
from portprop.sklearn._losses import _Loss
from portprop.sklearn._network import _is_sparse, _Network, _row_slice
from portprop.sklearn._solvers import (
    _SOLVERS,
    _STOCHASTIC,
    _host_state,
    build_optimizers,
    coupled_alpha,
)
from portprop.sklearn._stochastic import NON_FINITE, _copy_parameters, _Data, run_epochs
from portprop.training.validation import (
    check_lengths,
    require_finite,
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


class _ParameterList(list):  # type: ignore[type-arg]
    """``coefs_`` or ``intercepts_``: a list whose item assignment writes into the model
    (``clf.coefs_[0] = W`` changes ``predict``, as in scikit-learn)."""

    def __init__(self, items: Iterable[Any], owner: _BaseMLP, kind: str) -> None:
        super().__init__(items)
        self._owner, self._kind = owner, kind

    def __setitem__(self, index: Any, value: Any) -> None:
        new = list(self)
        new[index] = value
        self._owner._set_parameters(self._kind, new)
        super().__setitem__(index, value)


# --------------------------------------------------------------------------------------
# The estimators
# --------------------------------------------------------------------------------------


class _BaseMLP(BaseEstimator):  # type: ignore[misc]
    """What :class:`MLPClassifier` and :class:`MLPRegressor` share."""

    _parameter_constraints: dict[str, Any] = {  # noqa: RUF012 - scikit-learn's form
        "hidden_layer_sizes": ["array-like", Interval(Integral, 1, None, closed="left")],
        "activation": [StrOptions(set(_ACTIVATIONS))],
        "solver": [StrOptions(set(_SOLVERS))],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "batch_size": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "learning_rate": [StrOptions({"constant", "invscaling", "adaptive"})],
        "learning_rate_init": [Interval(Real, 0, None, closed="neither")],
        "power_t": [Interval(Real, 0, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "shuffle": ["boolean"],
        "random_state": ["random_state"],
        "tol": [Interval(Real, 0, None, closed="left")],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        "momentum": [Interval(Real, 0, 1, closed="both")],
        "nesterovs_momentum": ["boolean"],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "beta_1": [Interval(Real, 0, 1, closed="left")],
        "beta_2": [Interval(Real, 0, 1, closed="left")],
        "epsilon": [Interval(Real, 0, None, closed="neither")],
        "n_iter_no_change": [
            Interval(Integral, 1, None, closed="left"),
            Options(Real, {np.inf}),
        ],
        "max_fun": [Interval(Integral, 1, None, closed="left")],
        "backend": [None, str, Backend],
        "device": "no_validation",
        "dtype": "no_validation",
        "comm": [None, StrOptions({"auto"}), Communicator],
    }

    # set by fit; declared for the type checker
    model_: Sequential
    n_iter_: int
    t_: int
    loss_: float
    loss_curve_: list[float]
    validation_scores_: list[float] | None
    best_validation_score_: float | None
    best_loss_: float | None
    n_outputs_: int
    n_layers_: int
    _no_improvement_count: int
    _best_parameters: list[Array] | None
    _net: _Network
    _optimizers: list[Optimizer]

    def __init__(
        self,
        hidden_layer_sizes: Any,
        activation: str,
        solver: str,
        alpha: float,
        batch_size: int | str,
        learning_rate: str,
        learning_rate_init: float,
        power_t: float,
        max_iter: int,
        shuffle: bool,
        random_state: Any,
        tol: float,
        verbose: bool,
        warm_start: bool,
        momentum: float,
        nesterovs_momentum: bool,
        early_stopping: bool,
        validation_fraction: float,
        beta_1: float,
        beta_2: float,
        epsilon: float,
        n_iter_no_change: float,
        max_fun: int,
        backend: Backend | str | None,
        device: Any,
        dtype: Any,
        comm: Communicator | str | None = None,
    ) -> None:
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.backend = backend
        self.device = device
        self.dtype = dtype
        self.comm = comm

    # ---- hooks of the two estimators ---------------------------------------------------

    def _check_y(self, y: Any) -> Any:
        """scikit-learn's checks of host targets."""
        raise NotImplementedError

    def _check_device_y(self, y: Array) -> Array | None:
        """The checks of :meth:`_check_y` on ``y``'s device (array API dispatch), or
        ``None`` where ``y`` must go to the host for scikit-learn's own checks (and
        messages)."""
        raise NotImplementedError

    def _encode_targets(self, y: Any, *, first: bool, incremental: bool) -> Any:
        """The host targets as a 2-D float matrix ``(n, outputs)``; sets ``classes_``."""
        raise NotImplementedError

    def _new_loss(self, n_outputs: int) -> _Loss:
        raise NotImplementedError

    def _score_on(self, X: Any, y: Any, sample_weight: Any) -> float:
        """The validation score (accuracy or R^2) of held-out rows, NaN when the
        predictions are not finite (as in scikit-learn)."""
        raise NotImplementedError

    # ---- checks ----------------------------------------------------------------------

    def _check_params(self) -> list[int]:
        """The hyperparameters, checked by scikit-learn's constraints (its
        ``InvalidParameterError`` names the parameter, what it accepts and the value),
        and portprop's ``dtype``; returns the hidden layer sizes."""
        self._validate_params()
        hidden = self.hidden_layer_sizes
        sizes = list(hidden) if isinstance(hidden, Iterable) else [hidden]
        if any(isinstance(s, bool) or not isinstance(s, Integral) or s <= 0 for s in sizes):
            msg = f"hidden_layer_sizes must be > 0, got {sizes}."
            raise ValueError(msg)
        if self.dtype is not None and dtype_name(self.dtype) not in ("float32", "float64"):
            msg = f"dtype must be None, 'float32' or 'float64', got {self.dtype!r}"
            raise ValueError(msg)
        return [int(s) for s in sizes]

    def _check_X(self, X: Any, *, reset: bool) -> Any:
        """``X`` for a model: a host array or SciPy CSR/CSC matrix validated by
        scikit-learn, or an array of another backend checked on its device (its values
        are checked for NaN and infinity in one reduction, before training)."""
        X = _host_input(X, "X", numeric=True)
        if len(getattr(X, "shape", ())) > 2:  # scikit-learn's message has no reshape hint
            _require_2d_like_sklearn(X)
        with _named("X"):
            device_backend = _device_backend(X)
            if device_backend is None:
                return validate_data(
                    self,
                    X,
                    reset=reset,
                    accept_sparse=["csr", "csc"],
                    dtype=("float64", "float32"),
                )
            self._check_device_X(X, reset=reset)
            if device_backend.is_float_dtype(X.dtype):
                require_finite(X, "X")
            return X

    def _check_X_y(self, X: Any, y: Any, *, reset: bool) -> tuple[Any, Any]:
        if y is None:
            msg = f"{type(self).__name__} requires y to be passed, but the target y is None"
            raise ValueError(msg)
        y = _host_input(y, "y", numeric=not is_classifier(self))
        X = _host_input(X, "X", numeric=True)
        check_lengths(X, y, "X", "y")
        y = follow_X(X, y)  # under dispatch, as in scikit-learn: y follows X
        X = self._check_X(X, reset=reset)
        on_device = None
        if dispatch_enabled() and _device_backend(y) is not None:
            # array API dispatch: the targets are checked and encoded where they live
            with _named("y"):
                on_device = self._check_device_y(y)
        if on_device is not None:
            return X, on_device
        with _named("y"):
            y = self._check_y(_to_host(y))
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

    def _resolve_backend(self, X: Any, comm: Communicator | None = None) -> tuple[Backend, Any]:
        """The backend (the parameter, else where ``X`` lives, else the current one) and
        the dtype: ``dtype=``, else ``X``'s floating dtype, else float64.  With ``comm``,
        a GPU backend's name is bound to this rank's GPU (``"torch:cuda"`` becomes
        ``"torch:cuda:<local_rank>"``)."""
        backend = self.backend
        if backend is None:
            found = _device_backend(X)
            backend = found if found is not None else get_backend()
        if comm is not None and isinstance(backend, str):
            backend = comm.local_backend(backend) or backend
        dtype = self.dtype
        if dtype is None:
            name = dtype_name(X.dtype)
            dtype = name if name in ("float32", "float64") else "float64"
            resolved, _ = resolve(backend, self.device, "float32")
            if not resolved.supports(dtype):  # e.g. float64 on Apple's MPS
                dtype = "float32"
        return resolve(backend, self.device, dtype)

    def _build(self, units: list[int], backend: Backend, dtype: Any) -> None:
        """A new network and its solver (``self._spec`` holds what rebuilds them)."""
        activation = self._spec["activation"]
        layers: list[Module] = []
        for i in range(len(units) - 1):
            # seed=0: the constructor's draw is overwritten and must not advance the
            # global generator of portprop.manual_seed
            layers.append(Linear(units[i], units[i + 1], seed=0, backend=backend, dtype=dtype))
            if i < len(units) - 2:
                layers.append(_ACTIVATIONS[activation](backend=backend, dtype=dtype))
        self.model_ = Sequential(*layers)
        loss = self._new_loss(units[-1])
        self._net = _Network(self.model_, loss, coupled_alpha(self._spec))
        self._optimizers = build_optimizers(self.model_, self._spec)

    def _initial_weights(self, random_state: Any) -> None:
        """scikit-learn's Glorot-uniform draws, from the same stream, in the same order."""
        factor = 2.0 if self._spec["activation"] in ("logistic", "sigmoid") else 6.0
        for layer in self._net.linears:
            bound = math.sqrt(factor / (layer.in_features + layer.out_features))
            weight = random_state.uniform(-bound, bound, (layer.in_features, layer.out_features))
            bias = random_state.uniform(-bound, bound, layer.out_features)
            layer.weight.data = self.model_.backend.from_host(weight.T, self.model_.dtype)
            assert layer.bias is not None
            layer.bias.data = self.model_.backend.from_host(bias, self.model_.dtype)

    def _spec_of_params(self) -> dict[str, Any]:
        return {
            "activation": self.activation,
            "solver": self.solver,
            "lr": float(self.learning_rate_init),
            "alpha": float(self.alpha),
            "momentum": float(self.momentum),
            "nesterovs_momentum": bool(self.nesterovs_momentum),
            "beta_1": float(self.beta_1),
            "beta_2": float(self.beta_2),
            "epsilon": float(self.epsilon),
            "loss": getattr(self, "loss", None),
        }

    # ---- training --------------------------------------------------------------------

    def _fit(self, X: Any, y: Any, sample_weight: Any, *, incremental: bool) -> _BaseMLP:
        """Train; a call that raises leaves the estimator as it was before it (its
        fitted attributes and its parameters: a ``fit`` that continues a model, with
        ``warm_start`` or ``partial_fit``, keeps a copy of them until it succeeds).
        An interrupt (``KeyboardInterrupt``) ends the epochs early, as in scikit-learn."""
        saved = dict(self.__dict__)
        parameters = None
        if hasattr(self, "model_"):
            parameters = [(p, p.data) for p in self.model_.parameters()]
            backend = self.model_.backend
            with backend.scope():
                parameters = [(p, backend.xp.asarray(d, copy=True)) for p, d in parameters]
            optimizer_state = [_host_state(backend, opt) for opt in self._optimizers]
        try:
            self._fit_unguarded(X, y, sample_weight, incremental=incremental)
        except Exception:
            self.__dict__.clear()
            self.__dict__.update(saved)
            if parameters is not None:
                for p, data in parameters:
                    p.data = data
                    p.grad = None
                for opt, state in zip(self._optimizers, optimizer_state, strict=True):
                    opt.load_state_dict(state)
            raise
        return self

    def _fit_unguarded(self, X: Any, y: Any, sample_weight: Any, *, incremental: bool) -> None:
        hidden = self._check_params()
        if incremental and self.solver not in _STOCHASTIC and is_classifier(self):
            msg = (
                f"partial_fit is only available for stochastic optimizers. {self.solver} "
                "is not stochastic."
            )
            raise AttributeError(msg)
        first = not hasattr(self, "model_") or (not self.warm_start and not incremental)
        X, y = self._check_X_y(X, y, reset=first)
        n_samples = X.shape[0]
        w_host = check_sample_weight(sample_weight, n_samples)
        Y = self._encode_targets(y, first=first, incremental=incremental)
        comm = resolve_comm(self.comm)
        random_state = check_random_state(shared_random_state(comm, self.random_state))
        if first:
            self._spec = self._spec_of_params()
            backend, dtype = self._resolve_backend(X, comm)
            units = [X.shape[1], *hidden, Y.shape[1]]
            self._build(units, backend, dtype)
            self._initial_weights(random_state)
            self._units = units
            self.n_outputs_ = units[-1]
            self.n_layers_ = len(units)
            self.out_activation_ = self._net.loss.out_activation
            self.backend_ = backend.name
            # array API dispatch: X's namespace, which predict must match; coefs_ and
            # intercepts_ stay on the model's device when X was not NumPy
            self._fitted_namespace = fitted_namespace(X)
            self._attributes_on_device = (
                self._fitted_namespace is not None and backend.library != "numpy"
            )
            self.n_iter_ = self.t_ = 0
            self._reset_bookkeeping()
        elif Y.shape[1] != self.n_outputs_:
            msg = f"y has {Y.shape[1]} outputs, but the model has {self.n_outputs_}"
            raise ValueError(msg)
        elif not incremental or not self._optimizers:
            # warm_start: a new solver (as scikit-learn's fit builds), the same weights
            self._spec = {**self._spec_of_params(), "activation": self._spec["activation"]}
            self._net.alpha = coupled_alpha(self._spec)
            self._optimizers = build_optimizers(self.model_, self._spec)
            if self.solver != "lbfgs" and not hasattr(self, "loss_curve_"):
                self._reset_bookkeeping()  # a stochastic solver after lbfgs
        net = self._net
        ranks = None
        if comm is not None:  # the ranks agree, then take rank 0's parameters
            facts = self._rank_facts(X, Y, w_host, incremental=incremental)
            ranks = _Ranks(comm, net, facts)
        data = self._device_data(X, Y, w_host)
        if self.solver == "lbfgs":
            run_lbfgs(self, net, data, ranks)
        else:
            validation = None
            if self.early_stopping:
                if incremental:
                    msg = "partial_fit does not support early_stopping=True"
                    raise ValueError(msg)
                data, validation = self._split(data, y, random_state)
            run_epochs(
                self,
                net,
                self._optimizers,
                data,
                validation,
                incremental=incremental,
                random_state=random_state,
                ranks=ranks,
            )
        self._require_finite_parameters()

    def _rank_facts(self, X: Any, Y: Any, w_host: Any, *, incremental: bool) -> dict[str, object]:
        """What every rank of a ``comm=`` fit must share, beside the model."""
        seed = self.random_state
        return {
            "estimator": type(self).__name__,
            "call": "partial_fit" if incremental else "fit",
            "solver": self.solver,
            "batch_size": self.batch_size,
            "shuffle": self.shuffle,
            "random_state": seed if seed is None or isinstance(seed, Integral) else "an object",
            "X shape": tuple(X.shape),
            "y outputs": tuple(Y.shape)[1:],
            "sample_weight total": None if w_host is None else float(np.sum(w_host)),
        }

    def _reset_bookkeeping(self) -> None:
        self._no_improvement_count = 0
        if self.solver == "lbfgs":
            return
        self.loss_curve_ = []
        self._best_parameters = _copy_parameters(self._net)  # on the device
        if self.early_stopping:
            self.validation_scores_ = []
            self.best_validation_score_ = -math.inf
            self.best_loss_ = None
        else:
            self.validation_scores_ = None
            self.best_validation_score_ = None
            self.best_loss_ = math.inf

    def _device_data(self, X: Any, Y: Any, w_host: Any) -> _Data:
        backend, dtype = self.model_.backend, self.model_.dtype
        if not _is_sparse(X):
            X = backend.asarray(X, dtype=dtype)
            require_finite(X, "X")  # float64 values beyond float32's range, for one
        if _device_backend(Y) is not None:  # encoded on its device (array API dispatch)
            Y = backend.asarray(Y, dtype=dtype, argname="y")
        else:
            Y = backend.asarray(np.asarray(Y, dtype=dtype_name(dtype)), dtype=dtype)
        w = None if w_host is None else backend.asarray(w_host, dtype=dtype)
        return _Data(X, Y, w, w_host)

    def _split(self, data: _Data, y: Any, random_state: Any) -> tuple[_Data, Any]:
        """scikit-learn's validation split (stratified only for one output), by index."""
        stratify = data.Y if is_classifier(self) and self.n_outputs_ == 1 else None
        if stratify is not None:
            stratify = self.model_.backend.to_host(stratify)
        train, val = train_test_split(
            np.arange(data.n),
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

        def rows(a: Any, idx: Any) -> Any:
            if a is None or _is_sparse(a):
                return None if a is None else a[idx]
            with backend.scope():
                return backend.xp.take(a, backend.asarray(idx), axis=0)

        w_host = data.w_host
        part = _Data(
            rows(data.X, train),
            rows(data.Y, train),
            rows(data.w, train),
            None if w_host is None else w_host[train],
        )
        y_val = np.asarray(_to_host(y))[val]  # scored on the host, by scikit-learn
        return part, (rows(data.X, val), y_val, None if w_host is None else w_host[val])

    def _require_finite_parameters(self) -> None:
        backend, xp = self.model_.backend, self.model_.backend.xp
        with backend.scope():
            finite = [xp.all(xp.isfinite(p.data)) for p in self.model_.parameters()]
            ok = bool(xp.all(xp.stack(finite)))
        if not ok:
            raise ValueError(NON_FINITE)

    # ---- prediction ------------------------------------------------------------------

    def _outputs(self, X: Any, *, check_input: bool = True, on_device: bool = False) -> Any:
        """:math:`\\sigma(z)` for ``X`` (probabilities or values), computed on the model's
        backend in batches, as a NumPy array of the model's dtype (``on_device``: as an
        array of the model's backend, never read back)."""
        check_is_fitted(self)
        if check_input:
            X = self._check_X(X, reset=False)
        net, backend = self._net, self.model_.backend
        parts = []
        with backend.scope(), backend.quiet():
            for start in range(0, max(X.shape[0], 1), _PREDICT_BATCH):
                batch = net.as_batch(_row_slice(X, start, start + _PREDICT_BATCH))
                out = net.outputs(batch)
                parts.append(out if on_device else backend.to_host(out))
            if on_device:
                return parts[0] if len(parts) == 1 else backend.xp.concat(parts, axis=0)
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)

    # ---- array API dispatch ------------------------------------------------------------

    def _output_backend(self, X: Any, method: str) -> Backend | None:
        """Where the results for ``X`` go: under ``array_api_dispatch``, the backend of
        an ``X`` of another library than NumPy (which must be the library and device
        ``fit`` got, as scikit-learn requires); else ``None`` (NumPy results)."""
        if not dispatch_enabled():
            return None
        check_is_fitted(self)
        check_fitted_namespace(self, X, method)
        return _device_backend(X)

    def _device_outputs(self, X: Any) -> Array:
        """:meth:`_outputs` on the model's device, never read back."""
        return self._outputs(X, on_device=True)

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "model_")

    # ---- the parameters as scikit-learn lays them out ----------------------------------

    def _attribute(self, data: Array, *, transpose: bool) -> Any:
        """A copy of a parameter as scikit-learn lays it out: on the model's device when
        the estimator was fitted under array API dispatch, else a NumPy array."""
        backend = self.model_.backend
        if not getattr(self, "_attributes_on_device", False):
            host = backend.to_host(data)
            return host.T if transpose else host
        xp = backend.xp
        with backend.scope():
            return xp.asarray(xp.permute_dims(data, (1, 0)) if transpose else data, copy=True)

    @property
    def coefs_(self) -> list[Any]:
        """The weight matrices ``(fan_in, fan_out)``, NumPy arrays (on the model's device
        when fitted under array API dispatch); assignable, as a list or item by item."""
        check_is_fitted(self)
        items = [self._attribute(m.weight.data, transpose=True) for m in self._net.linears]
        return _ParameterList(items, self, "coefs_")

    @coefs_.setter
    def coefs_(self, value: Any) -> None:
        self._set_parameters("coefs_", value)

    @property
    def intercepts_(self) -> list[Any]:
        """The bias vectors ``(fan_out,)``, laid out as :attr:`coefs_`; assignable."""
        check_is_fitted(self)
        biases = [m.bias for m in self._net.linears if m.bias is not None]
        items = [self._attribute(b.data, transpose=False) for b in biases]
        return _ParameterList(items, self, "intercepts_")

    @intercepts_.setter
    def intercepts_(self, value: Any) -> None:
        self._set_parameters("intercepts_", value)

    def _set_parameters(self, kind: str, value: Any) -> None:
        """Write ``coefs_`` or ``intercepts_`` into the model, after checking every shape."""
        check_is_fitted(self)
        linears = self._net.linears
        weights = kind == "coefs_"
        expected = [
            (m.in_features, m.out_features) if weights else (m.out_features,) for m in linears
        ]
        arrays = [_to_host(a) for a in value] if isinstance(value, Iterable) else None
        shapes = None if arrays is None else [tuple(np.shape(a)) for a in arrays]
        if shapes != expected:
            msg = f"{kind} must be a list of arrays of shapes {expected}, got {shapes or value!r}"
            raise ValueError(msg)
        backend, dtype = self.model_.backend, self.model_.dtype
        for m, a in zip(linears, arrays or [], strict=True):
            host = np.asarray(a, dtype=dtype_name(dtype))
            param = m.weight if weights else m.bias
            assert param is not None
            param.data = backend.asarray(
                np.ascontiguousarray(host.T if weights else host), copy=True
            )

    # ---- a communicator parameter (comm=): kept, never copied -----------------------------

    def __sklearn_clone__(self) -> _BaseMLP:
        """scikit-learn's clone, except that a :class:`~portprop.distributed.Communicator`
        (a live process group, which cannot be deep-copied) is shared by the clone."""
        comm = self.comm
        if not isinstance(comm, Communicator):
            return super().__sklearn_clone__()  # type: ignore[no-any-return]
        params = self.get_params(deep=False)
        params["comm"] = None
        new = clone(type(self)(**params))
        new.comm = comm
        return new  # type: ignore[no-any-return]

    # ---- pickling --------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())
        if isinstance(state.get("comm"), Communicator):  # a live process group: not kept
            state["comm"] = None
        if isinstance(state.get("backend"), Backend):  # it holds a module: keep its name
            state["backend"] = state["backend"].name
        model = state.pop("model_", None)
        optimizers = state.pop("_optimizers", [])
        state.pop("_net", None)
        if model is not None:
            backend = model.backend
            state["_best_parameters"] = None
            state["_host_model"] = {
                "backend": backend.name,
                "dtype": dtype_name(model.dtype),
                "parameters": {k: backend.to_host(v) for k, v in model.state_dict().items()},
                "optimizers": [_host_state(backend, opt) for opt in optimizers],
            }
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("comm", None)  # pickled before comm= existed
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
        self._build(self._units, backend, dtype)
        self.model_.load_state_dict(host["parameters"])
        self.backend_ = backend.name
        for opt, saved in zip(self._optimizers, host["optimizers"], strict=False):
            opt.load_state_dict(saved)
