"""The public estimators, :class:`MLPClassifier` and :class:`MLPRegressor`: their
constructors (scikit-learn's parameters and defaults, then portprop's ``backend``,
``device``, ``dtype`` and ``comm``), targets, losses, scores and predictions, and their
docstrings (``_docs``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn import config_context
from sklearn.base import ClassifierMixin, RegressorMixin
from sklearn.metrics import accuracy_score, r2_score
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import type_of_target, unique_labels
from sklearn.utils.validation import check_array, check_is_fitted, column_or_1d

from portprop.backend import Backend
from portprop.distributed import Communicator
from portprop.sklearn._base import _BaseMLP
from portprop.sklearn._docs import CLASSIFIER_DOC, REGRESSOR_DOC
from portprop.sklearn._inputs import _device_backend, _to_host
from portprop.sklearn._losses import _REGRESSION_LOSSES, _classifier_loss, _Loss
from portprop.sklearn._solvers import _STOCHASTIC
from portprop.training.validation import require_finite

__all__ = ["MLPClassifier", "MLPRegressor"]

Array = Any


def _column_or_1d(y: Any) -> Any:
    """scikit-learn's rule: a ``(n, 1)`` target becomes 1-D, with a warning."""
    if y.ndim == 2 and y.shape[1] == 1:
        return column_or_1d(y, warn=True)
    return y


def _distinct(xp: Any, y: Array) -> Array:
    """The sorted distinct values of ``y`` (the standard leaves their order open, and
    sorts only numbers: booleans are sorted as integers)."""
    values = xp.unique_values(y)
    if xp.isdtype(values.dtype, "bool"):
        return xp.astype(xp.sort(xp.astype(values, xp.int8)), values.dtype)
    return xp.sort(values)


def _positions(xp: Any, known: Array, y: Array) -> Array:
    """Where each label of ``y`` falls in the sorted ``known`` (``searchsorted``; torch
    has no search over booleans, so they are compared as integers)."""
    if known.dtype != y.dtype:
        y = xp.astype(y, known.dtype)
    if xp.isdtype(known.dtype, "bool"):
        known, y = xp.astype(known, xp.int8), xp.astype(y, xp.int8)
    return xp.searchsorted(known, y)


def _is_stochastic(estimator: Any) -> bool:
    if estimator.solver not in _STOCHASTIC:
        msg = (
            f"partial_fit is only available for stochastic optimizers. {estimator.solver} "
            "is not stochastic."
        )
        raise AttributeError(msg)
    return True


class MLPClassifier(ClassifierMixin, _BaseMLP):  # type: ignore[misc]
    __doc__ = CLASSIFIER_DOC

    classes_: Any
    _label_binarizer: LabelBinarizer | None
    _y_type: str

    def __init__(
        self,
        hidden_layer_sizes: Any = (100,),
        activation: str = "relu",
        *,
        solver: str = "adam",
        alpha: float = 0.0001,
        batch_size: int | str = "auto",
        learning_rate: str = "constant",
        learning_rate_init: float = 0.001,
        power_t: float = 0.5,
        max_iter: int = 200,
        shuffle: bool = True,
        random_state: Any = None,
        tol: float = 1e-4,
        verbose: bool = False,
        warm_start: bool = False,
        momentum: float = 0.9,
        nesterovs_momentum: bool = True,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
        n_iter_no_change: float = 10,
        max_fun: int = 15000,
        backend: Backend | str | None = None,
        device: Any = None,
        dtype: Any = None,
        comm: Communicator | str | None = None,
    ) -> None:
        super().__init__(
            hidden_layer_sizes=hidden_layer_sizes,
            activation=activation,
            solver=solver,
            alpha=alpha,
            batch_size=batch_size,
            learning_rate=learning_rate,
            learning_rate_init=learning_rate_init,
            power_t=power_t,
            max_iter=max_iter,
            shuffle=shuffle,
            random_state=random_state,
            tol=tol,
            verbose=verbose,
            warm_start=warm_start,
            momentum=momentum,
            nesterovs_momentum=nesterovs_momentum,
            early_stopping=early_stopping,
            validation_fraction=validation_fraction,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            n_iter_no_change=n_iter_no_change,
            max_fun=max_fun,
            backend=backend,
            device=device,
            dtype=dtype,
            comm=comm,
        )

    # ---- targets ---------------------------------------------------------------------

    def _check_y(self, y: Any) -> Any:
        y = check_array(y, ensure_2d=False, dtype=None, input_name="y")
        return _column_or_1d(y)

    def _check_device_y(self, y: Array) -> Array | None:
        """Labels on their device: a vector (or a column, with scikit-learn's warning) of
        integers, booleans or whole floating numbers; anything else (an indicator matrix,
        fractional or non-finite values, a single class) goes to scikit-learn on the host."""
        backend = _device_backend(y)
        assert backend is not None
        xp = backend.xp
        y = _column_or_1d(y)
        if y.ndim != 1:
            return None
        with backend.scope():
            if xp.isdtype(y.dtype, "real floating"):
                if not bool(xp.all(y == xp.round(y))):  # one flag read back, not the data
                    return None
            elif not xp.isdtype(y.dtype, ("integral", "bool")):
                return None
            if _distinct(xp, y).shape[0] < 2:  # LabelBinarizer's one-class rules
                return None
        return y

    def _encode_targets(self, y: Any, *, first: bool, incremental: bool) -> Any:
        """scikit-learn's LabelBinarizer: one-hot rows (multiclass), one 0/1 column
        (binary) or the indicator matrix itself (multilabel)."""
        classes = self.__dict__.pop("_partial_fit_classes", None)
        self._check_partial_fit_classes(classes, incremental=incremental)
        if _device_backend(y) is not None:
            return self._encode_on_device(y, classes, first=first, incremental=incremental)
        if first and (not incremental or classes is not None):
            binarizer = LabelBinarizer()
            multilabel = type_of_target(y).startswith("multilabel")
            binarizer.fit(y if classes is None or multilabel else classes)
            self._label_binarizer = binarizer
            self._y_type = binarizer.y_type_
            self.classes_ = binarizer.classes_
        else:
            seen = unique_labels(y)
            if self._label_binarizer is None:  # classes_ found on a device before
                self._host_binarizer()
            if self.warm_start and not incremental:
                if set(seen) != set(_to_host(self.classes_)):
                    msg = (
                        "warm_start can only be used where `y` has the same classes as in "
                        f"the previous call to fit. Previously got {self.classes_}, `y` has "
                        f"{seen}"
                    )
                    raise ValueError(msg)
            elif len(np.setdiff1d(seen, _to_host(self.classes_), assume_unique=True)):
                msg = (
                    f"`y` has classes not in `self.classes_`. `self.classes_` has "
                    f"{self.classes_}. 'y' has {seen}."
                )
                raise ValueError(msg)
        assert self._label_binarizer is not None
        return self._label_binarizer.transform(y)

    def _check_partial_fit_classes(self, classes: Any, *, incremental: bool) -> None:
        """scikit-learn's rules for ``partial_fit``'s ``classes``: needed on the first
        call, the same as before on the others."""
        if incremental and classes is not None and hasattr(self, "classes_"):
            if not np.array_equal(_to_host(self.classes_), unique_labels(classes)):
                msg = (
                    f"`classes={classes!r}` is not the same as on last call to partial_fit, "
                    f"was: {self.classes_!r}"
                )
                raise ValueError(msg)
        elif incremental and classes is None and not hasattr(self, "classes_"):
            msg = "classes must be passed on the first call to partial_fit."
            raise ValueError(msg)

    def _host_binarizer(self) -> None:
        """The LabelBinarizer of ``classes_`` found on a device (for host targets later)."""
        binarizer = LabelBinarizer()
        binarizer.fit(_to_host(self.classes_))
        self._label_binarizer = binarizer

    def _encode_on_device(self, y: Array, classes: Any, *, first: bool, incremental: bool) -> Array:
        """LabelBinarizer's encoding where ``y`` lives (array API dispatch): ``classes_``
        are the sorted distinct labels (an array of ``y``'s library and device), each label
        is found in them by ``searchsorted``, and the one-hot rows are a comparison with
        ``arange`` (binary: the column of the second class).  Only flags are read back."""
        backend = _device_backend(y)
        assert backend is not None
        xp = backend.xp
        with backend.scope():
            if first and (not incremental or classes is not None):
                if classes is None:
                    found = _distinct(xp, y)
                else:
                    found = backend.asarray(np.asarray(unique_labels(classes)), argname="classes")
                    found = xp.astype(found, y.dtype)
                self.classes_ = found
                self._label_binarizer = None
                self._y_type = "binary" if found.shape[0] <= 2 else "multiclass"
            else:
                self._check_known_labels(y, incremental=incremental)
            known = backend.asarray(self.classes_, argname="classes_")
            index = _positions(xp, known, y)
            if known.shape[0] <= 2:
                return xp.reshape(index == 1, (-1, 1))
            columns = xp.arange(known.shape[0], dtype=index.dtype, device=backend.device)
            return xp.reshape(index, (-1, 1)) == xp.reshape(columns, (1, -1))

    def _check_known_labels(self, y: Array, *, incremental: bool) -> None:
        """scikit-learn's checks of the labels of a ``partial_fit`` or a warm start, on
        ``y``'s device; the labels are read back only for an error's message."""
        backend = _device_backend(y)
        assert backend is not None
        xp = backend.xp
        known = backend.asarray(self.classes_, argname="classes_")
        labels = xp.astype(y, known.dtype) if known.dtype != y.dtype else y
        at = _positions(xp, known, labels)
        at = xp.where(at < known.shape[0], at, xp.zeros_like(at))
        missing = not bool(xp.all(xp.take(known, at, axis=0) == labels))
        if self.warm_start and not incremental:
            seen = _distinct(xp, labels)
            if missing or seen.shape[0] != known.shape[0]:
                msg = (
                    "warm_start can only be used where `y` has the same classes as in "
                    f"the previous call to fit. Previously got {_to_host(self.classes_)}, "
                    f"`y` has {backend.to_host(seen)}"
                )
                raise ValueError(msg)
        elif missing:
            msg = (
                f"`y` has classes not in `self.classes_`. `self.classes_` has "
                f"{_to_host(self.classes_)}. 'y' has {backend.to_host(_distinct(xp, y))}."
            )
            raise ValueError(msg)

    def _new_loss(self, n_outputs: int) -> _Loss:
        return _classifier_loss(self._y_type, n_outputs)

    def _score_on(self, X: Any, y: Any, sample_weight: Any) -> float:
        probabilities = self._outputs(X, check_input=False)
        if not np.isfinite(probabilities).all():
            return float("nan")
        return float(accuracy_score(y, self._labels(probabilities), sample_weight=sample_weight))

    # ---- the estimator API -----------------------------------------------------------

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> MLPClassifier:
        """Fit the model to ``X`` ``(n_samples, n_features)`` (dense or SciPy CSR/CSC)
        and labels ``y`` ``(n_samples,)``, or an indicator matrix ``(n_samples,
        n_labels)`` for multilabel problems; returns ``self``."""
        self._fit(X, y, sample_weight, incremental=False)
        return self

    @available_if(_is_stochastic)  # type: ignore[untyped-decorator]
    def partial_fit(
        self,
        X: Any,
        y: Any,
        sample_weight: Any = None,
        classes: Sequence[Any] | None = None,
    ) -> MLPClassifier:
        """One epoch over ``(X, y)``, continuing from the current network and the
        solver's state; the first call needs every class in ``classes``."""
        self._partial_fit_classes = classes
        try:
            self._fit(X, y, sample_weight, incremental=True)
        finally:
            self.__dict__.pop("_partial_fit_classes", None)
        return self

    def predict(self, X: Any) -> Any:
        """The predicted labels ``(n_samples,)`` (an indicator matrix for multilabel);
        under array API dispatch, an array of ``X``'s library and device."""
        check_is_fitted(self)
        target = self._output_backend(X, "predict")
        if target is None:
            return self._labels(self._outputs(X))
        return self._device_labels(self._device_outputs(X), target)

    def _labels(self, probabilities: Any) -> Any:
        if self.out_activation_ == "softmax":
            return _to_host(self.classes_)[np.argmax(probabilities, axis=1)]
        if self.n_outputs_ == 1:
            probabilities = probabilities.ravel()
        if self._label_binarizer is None:
            self._host_binarizer()
        assert self._label_binarizer is not None
        return self._label_binarizer.inverse_transform(probabilities)

    def _device_labels(self, probabilities: Array, target: Backend) -> Array:
        """:meth:`_labels` on the model's device (LabelBinarizer's rules: the argmax, or
        the threshold 0.5), the labels then taken from ``classes_`` there; labels that no
        array library holds (strings) come back as NumPy."""
        backend = self.model_.backend
        xp = backend.xp
        with backend.scope():
            if self.out_activation_ == "softmax":
                index = xp.argmax(probabilities, axis=1)
            else:
                above = xp.astype(probabilities > 0.5, xp.int64)
                if self._y_type.startswith("multilabel"):
                    return target.asarray(above)
                index = xp.reshape(above, (-1,))
            if isinstance(self.classes_, np.ndarray) and self.classes_.dtype.kind not in "biuf":
                return self.classes_[backend.to_host(index)]  # strings live on the host
            classes = backend.asarray(self.classes_, argname="classes_")
            return target.asarray(xp.take(classes, index, axis=0))

    def predict_proba(self, X: Any) -> Any:
        """Class probabilities ``(n_samples, n_classes)``, columns in ``classes_``'s
        order, in the model's dtype; under array API dispatch, an array of ``X``'s
        library and device."""
        check_is_fitted(self)
        target = self._output_backend(X, "predict_proba")
        if target is None:
            probabilities = self._outputs(X)
            if self.n_outputs_ == 1:
                p = probabilities.ravel()
                return np.vstack([1 - p, p]).T
            return probabilities
        return target.asarray(self._device_proba(X))

    def _device_proba(self, X: Any) -> Array:
        backend = self.model_.backend
        probabilities = self._device_outputs(X)
        if self.n_outputs_ != 1:
            return probabilities
        xp = backend.xp
        with backend.scope():
            p = probabilities[:, 0]
            return xp.stack([1 - p, p], axis=1)

    def predict_log_proba(self, X: Any) -> Any:
        """The logarithm of :meth:`predict_proba` (as in scikit-learn)."""
        target = self._output_backend(X, "predict_log_proba")
        if target is None:
            with np.errstate(divide="ignore"):
                return np.log(self.predict_proba(X))
        check_is_fitted(self)
        backend = self.model_.backend
        probabilities = self._device_proba(X)
        with backend.scope(), backend.quiet():
            return target.asarray(backend.xp.log(probabilities))

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        tags.input_tags.sparse = True
        return tags


class MLPRegressor(RegressorMixin, _BaseMLP):  # type: ignore[misc]
    __doc__ = REGRESSOR_DOC

    def __init__(
        self,
        loss: str = "squared_error",
        hidden_layer_sizes: Any = (100,),
        activation: str = "relu",
        *,
        solver: str = "adam",
        alpha: float = 0.0001,
        batch_size: int | str = "auto",
        learning_rate: str = "constant",
        learning_rate_init: float = 0.001,
        power_t: float = 0.5,
        max_iter: int = 200,
        shuffle: bool = True,
        random_state: Any = None,
        tol: float = 1e-4,
        verbose: bool = False,
        warm_start: bool = False,
        momentum: float = 0.9,
        nesterovs_momentum: bool = True,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
        n_iter_no_change: float = 10,
        max_fun: int = 15000,
        backend: Backend | str | None = None,
        device: Any = None,
        dtype: Any = None,
        comm: Communicator | str | None = None,
    ) -> None:
        super().__init__(
            hidden_layer_sizes=hidden_layer_sizes,
            activation=activation,
            solver=solver,
            alpha=alpha,
            batch_size=batch_size,
            learning_rate=learning_rate,
            learning_rate_init=learning_rate_init,
            power_t=power_t,
            max_iter=max_iter,
            shuffle=shuffle,
            random_state=random_state,
            tol=tol,
            verbose=verbose,
            warm_start=warm_start,
            momentum=momentum,
            nesterovs_momentum=nesterovs_momentum,
            early_stopping=early_stopping,
            validation_fraction=validation_fraction,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            n_iter_no_change=n_iter_no_change,
            max_fun=max_fun,
            backend=backend,
            device=device,
            dtype=dtype,
            comm=comm,
        )
        self.loss = loss

    _parameter_constraints = {  # noqa: RUF012 - scikit-learn's form
        **_BaseMLP._parameter_constraints,
        "loss": [StrOptions(set(_REGRESSION_LOSSES))],
    }

    def _check_y(self, y: Any) -> Any:
        y = check_array(y, ensure_2d=False, dtype=("float64", "float32"), input_name="y")
        if y.ndim not in (1, 2):
            msg = f"y must be 1-D or 2-D, got shape {y.shape}"
            raise ValueError(msg)
        if self.loss == "poisson" and (y < 0).any():
            msg = f"y must be >= 0 for loss='poisson', got a minimum of {y.min()!r}"
            raise ValueError(msg)
        return _column_or_1d(y)

    def _check_device_y(self, y: Array) -> Array | None:
        """Targets on their device: 1-D or 2-D, finite, floating (integers become
        float64, or float32 where the device has no float64), ``>= 0`` for Poisson."""
        backend = _device_backend(y)
        assert backend is not None
        xp = backend.xp
        if y.ndim not in (1, 2):
            msg = f"y must be 1-D or 2-D, got shape {tuple(y.shape)}"
            raise ValueError(msg)
        with backend.scope():
            if not xp.isdtype(y.dtype, "real floating"):
                if not xp.isdtype(y.dtype, ("integral", "bool")):
                    return None  # complex and others: scikit-learn's message
                wide = "float64" if backend.supports("float64") else "float32"
                y = xp.astype(y, backend.float_dtype(wide))
            require_finite(y, "y", "output")
            if self.loss == "poisson" and bool(xp.any(y < 0)):
                msg = f"y must be >= 0 for loss='poisson', got a minimum of {float(xp.min(y))!r}"
                raise ValueError(msg)
        return _column_or_1d(y)

    def _encode_targets(self, y: Any, *, first: bool, incremental: bool) -> Any:  # noqa: ARG002
        if y.ndim != 1:
            return y
        backend = _device_backend(y)
        return y.reshape(-1, 1) if backend is None else backend.xp.reshape(y, (-1, 1))

    def _new_loss(self, n_outputs: int) -> _Loss:
        return _REGRESSION_LOSSES[self._spec["loss"]](n_outputs)

    def _score_on(self, X: Any, y: Any, sample_weight: Any) -> float:
        predicted = self._values(self._outputs(X, check_input=False))
        if not np.isfinite(predicted).all():
            return float("nan")
        return float(r2_score(y, predicted, sample_weight=sample_weight))

    def _values(self, outputs: Any) -> Any:
        return outputs.ravel() if self.n_outputs_ == 1 else outputs

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> MLPRegressor:
        """Fit the model to ``X`` ``(n_samples, n_features)`` (dense or SciPy CSR/CSC)
        and targets ``y`` ``(n_samples,)`` or ``(n_samples, n_outputs)``; returns
        ``self``."""
        self._fit(X, y, sample_weight, incremental=False)
        return self

    def partial_fit(self, X: Any, y: Any, sample_weight: Any = None) -> MLPRegressor:
        """One epoch over ``(X, y)`` with a stochastic solver, continuing from the current
        network and the solver's state (with ``"lbfgs"``, as in scikit-learn, a whole
        L-BFGS run from the current parameters)."""
        self._fit(X, y, sample_weight, incremental=True)
        return self

    def predict(self, X: Any) -> Any:
        """Predicted values ``(n_samples,)`` with one output, else
        ``(n_samples, n_outputs)``, in the model's dtype; under array API dispatch, an
        array of ``X``'s library and device."""
        check_is_fitted(self)
        target = self._output_backend(X, "predict")
        if target is None:
            return self._values(self._outputs(X))
        outputs = self._device_outputs(X)
        if self.n_outputs_ == 1:
            outputs = self.model_.backend.xp.reshape(outputs, (-1,))
        return target.asarray(outputs)

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """:math:`R^2` of :meth:`predict` against ``y`` (scikit-learn's ``r2_score``).
        Under array API dispatch, JAX arrays are scored on the host: ``r2_score`` writes
        into its arrays, which JAX refuses."""
        target = self._output_backend(X, "score")
        if target is None or target.writable:
            return float(super().score(X, y, sample_weight))
        predicted = _to_host(self.predict(X))
        with config_context(array_api_dispatch=False):
            return float(r2_score(_to_host(y), predicted, sample_weight=_to_host(sample_weight)))

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        tags.input_tags.sparse = True
        return tags
