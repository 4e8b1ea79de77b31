"""The public estimators, :class:`MLPClassifier` and :class:`MLPRegressor`: their
constructors (scikit-learn's parameters and defaults, then portprop's ``backend``,
``device`` and ``dtype``), targets, losses, scores and predictions, and their
docstrings (``_docs``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import ClassifierMixin, RegressorMixin
from sklearn.metrics import accuracy_score, r2_score
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import type_of_target, unique_labels
from sklearn.utils.validation import check_array, check_is_fitted, column_or_1d

from portprop.backend import Backend
from portprop.sklearn._base import _BaseMLP
from portprop.sklearn._docs import CLASSIFIER_DOC, REGRESSOR_DOC
from portprop.sklearn._losses import _REGRESSION_LOSSES, _classifier_loss, _Loss
from portprop.sklearn._solvers import _STOCHASTIC

__all__ = ["MLPClassifier", "MLPRegressor"]

Array = Any


def _column_or_1d(y: Any) -> Any:
    """scikit-learn's rule: a ``(n, 1)`` target becomes 1-D, with a warning."""
    if y.ndim == 2 and y.shape[1] == 1:
        return column_or_1d(y, warn=True)
    return y


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
    _label_binarizer: LabelBinarizer

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
        )

    # ---- targets ---------------------------------------------------------------------

    def _check_y(self, y: Any) -> Any:
        y = check_array(y, ensure_2d=False, dtype=None, input_name="y")
        return _column_or_1d(y)

    def _encode_targets(self, y: Any, *, first: bool, incremental: bool) -> Any:
        """scikit-learn's LabelBinarizer: one-hot rows (multiclass), one 0/1 column
        (binary) or the indicator matrix itself (multilabel)."""
        classes = self.__dict__.pop("_partial_fit_classes", None)
        if incremental and classes is not None and hasattr(self, "classes_"):
            if not np.array_equal(self.classes_, unique_labels(classes)):
                msg = (
                    f"`classes={classes!r}` is not the same as on last call to partial_fit, "
                    f"was: {self.classes_!r}"
                )
                raise ValueError(msg)
        elif incremental and classes is None and not hasattr(self, "classes_"):
            msg = "classes must be passed on the first call to partial_fit."
            raise ValueError(msg)
        if first and (not incremental or classes is not None):
            binarizer = LabelBinarizer()
            multilabel = type_of_target(y).startswith("multilabel")
            binarizer.fit(y if classes is None or multilabel else classes)
            self._label_binarizer = binarizer
            self.classes_ = binarizer.classes_
        else:
            seen = unique_labels(y)
            if self.warm_start and not incremental:
                if set(seen) != set(self.classes_):
                    msg = (
                        "warm_start can only be used where `y` has the same classes as in "
                        f"the previous call to fit. Previously got {self.classes_}, `y` has "
                        f"{seen}"
                    )
                    raise ValueError(msg)
            elif len(np.setdiff1d(seen, self.classes_, assume_unique=True)):
                msg = (
                    f"`y` has classes not in `self.classes_`. `self.classes_` has "
                    f"{self.classes_}. 'y' has {seen}."
                )
                raise ValueError(msg)
        return self._label_binarizer.transform(y)

    def _new_loss(self, n_outputs: int) -> _Loss:
        return _classifier_loss(self._label_binarizer.y_type_, n_outputs)

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
        """The predicted labels ``(n_samples,)`` (an indicator matrix for multilabel)."""
        check_is_fitted(self)
        return self._labels(self._outputs(X))

    def _labels(self, probabilities: Any) -> Any:
        if self.out_activation_ == "softmax":
            return self.classes_[np.argmax(probabilities, axis=1)]
        if self.n_outputs_ == 1:
            probabilities = probabilities.ravel()
        return self._label_binarizer.inverse_transform(probabilities)

    def predict_proba(self, X: Any) -> Any:
        """Class probabilities ``(n_samples, n_classes)``, columns in ``classes_``'s
        order, in the model's dtype."""
        check_is_fitted(self)
        probabilities = self._outputs(X)
        if self.n_outputs_ == 1:
            p = probabilities.ravel()
            return np.vstack([1 - p, p]).T
        return probabilities

    def predict_log_proba(self, X: Any) -> Any:
        """The logarithm of :meth:`predict_proba` (as in scikit-learn)."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

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

    def _encode_targets(self, y: Any, *, first: bool, incremental: bool) -> Any:  # noqa: ARG002
        return y.reshape(-1, 1) if y.ndim == 1 else y

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
        ``(n_samples, n_outputs)``, in the model's dtype."""
        check_is_fitted(self)
        return self._values(self._outputs(X))

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        tags.input_tags.sparse = True
        return tags
