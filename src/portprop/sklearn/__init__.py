"""scikit-learn estimators: :class:`MLPClassifier` and :class:`MLPRegressor`.

A drop-in for :mod:`sklearn.neural_network`'s estimators of the same names: every
parameter with its default, every fitted attribute (``coefs_`` and ``intercepts_``
assignable), the ``"adam"``, ``"sgd"`` and ``"lbfgs"`` solvers with scikit-learn's update
rules, learning-rate schedules, initial weights, shuffles, stopping rule, warnings and
``verbose`` lines, plus portprop's ``backend``, ``device`` and ``dtype``::

    from portprop.sklearn import MLPClassifier

    clf = MLPClassifier(solver="lbfgs", random_state=0).fit(X_train, y_train)
    clf = MLPClassifier(backend="torch:cuda", dtype="float32").fit(X_train, y_train)

With the same ``random_state``, a float64 fit follows scikit-learn's to rounding.
scikit-learn is an optional dependency (``pip install 'portprop[sklearn]'``); ``import
portprop`` does not import this module.

Input data
----------
``X`` may be a NumPy array, a list, a pandas frame, a SciPy sparse matrix or array
(CSR/CSC), validated by :func:`sklearn.utils.validation.validate_data`, or an array of
any portprop backend (torch, CuPy, JAX, array-api-strict), checked on its own device
and never copied to the host.  Sparse ``X`` is multiplied as it is by the first layer on
NumPy, and densified batch by batch on other backends.  Targets and ``sample_weight``
are read on the host: labels are encoded there (``classes_``).

With ``backend=None`` the model lives on the backend of ``X`` when ``X`` is an array of
a backend other than NumPy, else on the current backend (:func:`portprop.use_backend`,
``PORTPROP_BACKEND``, else NumPy).  ``predict``, ``predict_proba`` and
``predict_log_proba`` return NumPy arrays, in the dtype of the parameters.

The dtype of the parameters follows ``X`` as in scikit-learn (float32 stays float32,
float64 stays float64, other data gives float64), unless ``dtype=`` is given: portprop's
float32 default does not apply to these estimators, whose users expect scikit-learn's
precision.

How they train
--------------
- Network: ``Linear`` layers with ``activation`` between them and a linear output
  layer whose activation comes with the loss: softmax and the cross-entropy
  (multiclass), one logistic output per label and the binary cross-entropy (binary,
  multilabel), identity and half the squared error or :math:`e^z` and half the Poisson
  deviance (``MLPRegressor(loss=...)``).  Initial weights are scikit-learn's Glorot
  draws, from the same ``random_state`` stream, in float64 on the host.
- Loss of a batch: the ``sample_weight``-weighted mean plus
  :math:`\\frac{\\alpha}{2W}\\sum\\lVert W\\rVert^2` (``W``: the batch's total weight),
  scikit-learn's, computed on the backend.
- Solvers: ``"sgd"`` and ``"adam"`` are scikit-learn's rules (``_optimizers``);
  ``"lbfgs"`` is SciPy's L-BFGS-B on the flat parameter vector with portprop's
  gradients (``_lbfgs``); ``"adamw"`` and ``"rmsprop"`` are portprop's own additions.

Pickling moves the parameters and the optimizer's state to host memory; unpickling
rebuilds the model on the backend it was trained on (on NumPy, with a warning, where
that backend is unavailable).

Modules
-------
- ``_estimators``: the two estimators (constructors, targets, predictions); ``_docs``
  their docstrings.
- ``_base``: ``_BaseMLP``, what both share: parameters, checks, building, ``fit``.
- ``_inputs``: checks of data that scikit-learn's do not make, and ``sample_weight``.
- ``_losses``: output activations and losses with sample weights.
- ``_network``: one forward and backward pass with the penalty, sparse ``X`` included.
- ``_optimizers``: scikit-learn's SGD and Adam as portprop optimizers.
- ``_solvers``: which optimizers each ``solver`` steps.
- ``_stochastic``: the epochs, stopping rule and schedules; ``_lbfgs``: L-BFGS.
"""

from __future__ import annotations

from portprop.sklearn._estimators import MLPClassifier, MLPRegressor

__all__ = ["MLPClassifier", "MLPRegressor"]
