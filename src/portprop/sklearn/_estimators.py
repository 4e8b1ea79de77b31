"""The public estimators, :class:`MLPClassifier` and :class:`MLPRegressor`: their
targets, losses, scores and predictions, and their docstrings (the parameters,
attributes and notes both share are written once, here).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

from sklearn.base import ClassifierMixin, RegressorMixin
from sklearn.metrics import r2_score
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import assert_all_finite
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import check_array, check_is_fitted, column_or_1d

from portprop import functional as F
from portprop.backend import get_backend
from portprop.sklearn._base import _PREDICT_BATCH, _BaseMLP
from portprop.sklearn._solvers import _CrossEntropy, _HalfSquaredError
from portprop.training import predict

__all__ = ["MLPClassifier", "MLPRegressor"]

Array = Any


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
