"""The docstrings of :class:`MLPClassifier` and :class:`MLPRegressor` (the parameters,
attributes and notes both share are written once, here)."""

from __future__ import annotations

_PARAMETERS = """
    Parameters
    ----------
    hidden_layer_sizes : int or sequence of int, default (100,)
        The width of each hidden layer.
    activation : {"relu", "tanh", "logistic", "identity"}, default "relu"
        The hidden layers' activation; portprop adds ``"leaky_relu"`` (slope 0.01) and
        ``"sigmoid"`` (another name of ``"logistic"``).
    solver : {"adam", "sgd", "lbfgs"}, default "adam"
        scikit-learn's solvers with scikit-learn's update rules; portprop adds
        ``"adamw"`` (decoupled weight decay ``alpha``) and ``"rmsprop"``.
    alpha : float, default 1e-4
        Strength of the L2 penalty :math:`\\frac{\\alpha}{2W}\\sum\\lVert w\\rVert^2`
        (``W``: the batch's total sample weight).
    batch_size : int or "auto", default "auto"
        Samples per step of a stochastic solver; ``"auto"`` is ``min(200, n_samples)``.
    learning_rate : {"constant", "invscaling", "adaptive"}, default "constant"
        The schedule of ``solver="sgd"``: ``invscaling`` sets the rate to
        ``learning_rate_init / (t_ + 1) ** power_t`` after each epoch; ``adaptive``
        divides it by 5 each time ``n_iter_no_change`` epochs miss ``tol``, and stops
        once it is at most 1e-6.
    learning_rate_init : float, default 1e-3
    power_t : float, default 0.5
    max_iter : int, default 200
        Epochs of a stochastic solver; iterations of L-BFGS.
    shuffle : bool, default True
        Visit the samples in a new order each epoch (scikit-learn's shuffles).
    random_state : int, RandomState or None, default None
        Draws the initial weights, the validation split and the shuffles, in
        scikit-learn's order: the same seed gives scikit-learn's initial weights.
    tol : float, default 1e-4
        The improvement that counts; L-BFGS's ``gtol``.
    verbose : bool, default False
        Print scikit-learn's lines (``Iteration 1, loss = 0.69314718``) on standard
        output.
    warm_start : bool, default False
        ``fit`` continues from the current parameters (with a new solver state).
    momentum : float, default 0.9
    nesterovs_momentum : bool, default True
    early_stopping : bool, default False
        Hold out ``validation_fraction`` of the data (stratified for binary targets, as
        in scikit-learn) and stop when its score stalls; the best parameters are kept.
    validation_fraction : float, default 0.1
    beta_1, beta_2, epsilon : float, default 0.9, 0.999, 1e-8
        Adam's.
    n_iter_no_change : int or numpy.inf, default 10
        Epochs without an improvement of ``tol`` before stopping (``np.inf``: never).
    max_fun : int, default 15000
        The most loss evaluations of L-BFGS.
    backend : str or Backend, optional
        Where to train (``"torch:cuda"``, ``"cupy"``, ``"jax"``, ...); by default, the
        backend of ``X`` or the current one.
    device : optional
        A device of the backend's library.
    dtype : {None, "float32", "float64"}, default None
        The dtype of the parameters.  ``None`` follows ``X`` as scikit-learn does:
        float32 data trains in float32, float64 in float64, any other data in float64
        (float32 where the device has no float64).  portprop's own default of float32
        does not apply here: scikit-learn's users expect its precision (its tests
        compare at 1e-7), and float32 is one argument away.
    comm : Communicator or "auto", optional
        Train data-parallel over the ranks of a
        :class:`~portprop.distributed.Communicator`: every rank passes the whole ``X``
        and ``y`` and gets the same fitted estimator (the one process's, up to the
        order of the sums).  ``"auto"``: :func:`portprop.distributed.init` under a
        launcher (``torchrun``, ``mpirun``), one process without.  ``verbose`` prints
        on rank 0 only.  ``clone`` shares the communicator; pickling drops it.
"""

_ATTRIBUTES = """
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when ``X`` had column names.
    n_outputs_ : int
    n_layers_ : int
        Layers, input and output included.
    out_activation_ : str
        ``"softmax"``, ``"logistic"``, ``"identity"`` or ``"exp"``.
    loss_ : float
        The loss of the last epoch (stochastic solvers) or at the L-BFGS solution.
    loss_curve_, best_loss_, validation_scores_, best_validation_score_
        As in scikit-learn (stochastic solvers only).
    n_iter_ : int
    t_ : int
        Training samples seen by the stochastic solvers, over every call.
    coefs_, intercepts_ : list of ndarray
        The parameters ``(fan_in, fan_out)`` and ``(fan_out,)`` as NumPy arrays;
        assigning the list, or one of its items, writes into the model.
    model_ : Sequential
        The portprop network (its output layer gives logits).
    backend_ : str
        The backend the model lives on.
"""

_NOTES = """
    Notes
    -----
    See :mod:`portprop.sklearn` for the data each method accepts and how training
    relates to scikit-learn's.  A ``fit`` or ``partial_fit`` that raises leaves the
    estimator as it was, its parameters included; a solver that produces non-finite
    values raises scikit-learn's ``ValueError("Solver produced non-finite parameter
    weights...")``.
"""

CLASSIFIER_DOC = (
    """A multilayer perceptron classifier trained by portprop, on any backend.

    Drop-in for :class:`sklearn.neural_network.MLPClassifier`: softmax outputs for
    multiclass targets, one logistic output for binary ones, a logistic output per
    label for an indicator matrix (multilabel).
"""
    + _PARAMETERS
    + """
    Attributes
    ----------
    classes_ : ndarray
        The class labels (``arange(n_labels)`` for multilabel targets)."""
    + _ATTRIBUTES
    + _NOTES
)

REGRESSOR_DOC = (
    """A multilayer perceptron regressor trained by portprop, on any backend.

    Drop-in for :class:`sklearn.neural_network.MLPRegressor`.

    Parameters
    ----------
    loss : {"squared_error", "poisson"}, default "squared_error"
        The half squared error with identity outputs, or the half Poisson deviance
        with exponential outputs (the log link; ``y >= 0``)."""
    + _PARAMETERS.replace("\n    Parameters\n    ----------", "", 1)
    + """
    Attributes
    ----------"""
    + _ATTRIBUTES
    + _NOTES
)
