"""One rank of the multi-process tests of tests/test_sklearn_distributed.py.

Started by tests/test_distributed.py's launcher (the environment of torchrun)::

    python tests/_sklearn_distributed_worker.py RUN[,RUN...] OUTDIR [ENGINE]

For each run of :data:`RUNS`, each rank fits the estimator with ``comm=`` and writes
``OUTDIR/<run>-<size>-<rank>.npz`` (``coefs_`` and ``intercepts_``) and ``.json``
(``n_iter_``, ``loss_``, ``loss_curve_``, ``validation_scores_``, and whether it printed
anything with ``verbose=True``).  :func:`estimator` and :func:`problem` build the same
fits for the single-process reference of the tests.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

import portprop as pp
from portprop.sklearn import MLPClassifier, MLPRegressor

SAMPLES = 101  # with batches of 20, the last batch has 1 sample: one rank has none of it
FEATURES = 5

#: run name -> (estimator, its keyword arguments); all float64, few iterations
RUNS: dict[str, tuple[str, dict[str, Any]]] = {
    "adam": ("classifier", {"solver": "adam", "max_iter": 8, "early_stopping": True}),
    "sgd": ("regressor", {"solver": "sgd", "max_iter": 8, "learning_rate": "invscaling"}),
    "lbfgs": ("classifier", {"solver": "lbfgs", "max_iter": 15}),
    "unseeded": ("classifier", {"solver": "adam", "max_iter": 3, "random_state": None}),
}


def problem(kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``X``, ``y`` and sample weights (the same on every rank)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((SAMPLES, FEATURES))
    w = rng.uniform(0.5, 2.0, SAMPLES)
    if kind == "classifier":
        y = (X[:, 0] + X[:, 1] ** 2 > 0.5).astype(np.int64) + (X[:, 2] > 1.0)
    else:
        y = X[:, 0] - 2.0 * X[:, 1] * X[:, 2]
    return X, y, w


def estimator(run: str, comm: Any = None) -> MLPClassifier | MLPRegressor:
    kind, params = RUNS[run]
    cls = MLPClassifier if kind == "classifier" else MLPRegressor
    settings = {
        "hidden_layer_sizes": (16, 8),
        "batch_size": 20,
        "alpha": 1e-3,
        "random_state": 3,
        "backend": "numpy",
        "dtype": "float64",
        "comm": comm,
        **params,
    }
    return cls(**settings)


def fit(
    run: str, comm: Any = None, *, verbose: bool = False, backend: str = "numpy"
) -> MLPClassifier | MLPRegressor:
    kind, _ = RUNS[run]
    X, y, w = problem(kind)
    est = estimator(run, comm)
    est.set_params(verbose=verbose, backend=backend)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: few iterations on purpose
        return est.fit(X, y, sample_weight=w)


def main() -> None:
    out = Path(sys.argv[2])
    engine = sys.argv[3] if len(sys.argv) > 3 else None
    comm = pp.distributed.init(engine=engine, timeout=30.0)
    for run in sys.argv[1].split(","):
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            est = fit(run, comm, verbose=True)
        stem = out / f"{run}-{comm.size}-{comm.rank}"
        arrays = {f"coef{i}": a for i, a in enumerate(est.coefs_)}
        arrays.update({f"intercept{i}": a for i, a in enumerate(est.intercepts_)})
        np.savez(stem.with_suffix(".npz"), **arrays)
        report = {
            "n_iter": est.n_iter_,
            "loss": est.loss_,
            "loss_curve": getattr(est, "loss_curve_", None),
            "validation_scores": getattr(est, "validation_scores_", None),
            "printed": printed.getvalue() != "",
        }
        stem.with_suffix(".json").write_text(json.dumps(report), encoding="utf-8")
    comm.close()


if __name__ == "__main__":
    main()
