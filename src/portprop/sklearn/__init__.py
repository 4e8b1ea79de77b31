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

Modules
-------
- ``_estimators``: :class:`MLPClassifier` and :class:`MLPRegressor` (targets, losses,
  scores, predictions) and their docstrings.
- ``_base``: ``_BaseMLP``, what both share: the checks of parameters, ``X`` and ``y``,
  building the network and its solver, ``fit``/``partial_fit`` through
  :func:`portprop.fit`, prediction, fitted attributes and pickling.
- ``_solvers``: what :func:`portprop.fit` runs for them: the solver table, the losses
  in scikit-learn's form, the optimizers plus scikit-learn's L2 penalty, the per-epoch
  stopping rule, and the optimizer state in host memory.
"""

from __future__ import annotations

from portprop.sklearn._estimators import MLPClassifier, MLPRegressor

__all__ = ["MLPClassifier", "MLPRegressor"]
