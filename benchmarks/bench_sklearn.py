"""portprop.sklearn against sklearn.neural_network: score and fit time, side by side.

Data sets
---------
digits      ``load_digits``, a stratified 75/25 split (``random_state=0``), ``StandardScaler``
            fitted on the training part; ``MLPClassifier(hidden_layer_sizes=(100,))``
regression  ``make_regression(n_samples=2000, n_features=20, noise=10)``, 75/25 split,
            features and target standardized; ``MLPRegressor(hidden_layer_sizes=(100,))``

Each row fits one estimator with the same hyperparameters and seed as scikit-learn's row
(``random_state=0``, ``max_iter=200``, the solver's defaults) and reports the test score
(accuracy or R^2), the epochs or iterations run, and the median fit time of
``--repeats`` fits (in interleaved rounds, so that a slow phase of a shared machine
hits every row alike).  portprop rows run on every backend given (``--backends``, or
``--backend`` with ``--device``); on JAX, CuPy and torch CUDA a fit ends with the
parameters read back, so the time includes the device's work.

With ``--dispatch`` each portprop row also runs the way a GPU user calls it: the data
is moved to the row's backend and device once, before the clock starts, and the fit,
and the score, run under ``sklearn.config_context(array_api_dispatch=True)`` (the
rows are labelled ``+dispatch``).

    python benchmarks/bench_sklearn.py                          # numpy, 3 repeats
    python benchmarks/bench_sklearn.py --backends numpy,torch:cpu --solvers adam,lbfgs
    python benchmarks/bench_sklearn.py --backends torch:cuda,cupy --threads 0
    python benchmarks/bench_sklearn.py --backend torch --device cuda --backend cupy \
        --data digits --solvers adam,lbfgs --dispatch --threads 0
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
import warnings
from typing import Any

import numpy as np
import sklearn
from sklearn.datasets import load_digits, make_regression
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier as SkMLPClassifier
from sklearn.neural_network import MLPRegressor as SkMLPRegressor
from sklearn.preprocessing import StandardScaler

from portprop.backend import backend_of, resolve
from portprop.sklearn import MLPClassifier, MLPRegressor


def digits() -> tuple[Any, ...]:
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.25, stratify=y, random_state=0
    )
    scaler = StandardScaler().fit(X_train)
    return scaler.transform(X_train), scaler.transform(X_test), y_train, y_test


def regression() -> tuple[Any, ...]:
    X, y = make_regression(n_samples=2000, n_features=20, noise=10.0, random_state=0)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0)
    scaler = StandardScaler().fit(X_train)
    mean, std = y_train.mean(), y_train.std()
    return (
        scaler.transform(X_train),
        scaler.transform(X_test),
        (y_train - mean) / std,
        (y_test - mean) / std,
    )


def on_device(data: tuple[Any, ...], backend: str, device: str | None) -> tuple[Any, ...]:
    """The four arrays on ``backend`` and ``device`` (float64 features where it has
    float64, float32 elsewhere), for the ``+dispatch`` rows."""
    target, _ = resolve(backend, device, "float32")
    dtype = "float64" if target.supports("float64") else "float32"
    X_train, X_test, y_train, y_test = data
    y_dtype = dtype if y_train.dtype.kind == "f" else None
    return (
        target.asarray(X_train, dtype=dtype),
        target.asarray(X_test, dtype=dtype),
        target.asarray(y_train, dtype=y_dtype),
        target.asarray(y_test, dtype=y_dtype),
    )


def timed_fit(make: Any, data: tuple[Any, ...], *, dispatch: bool) -> tuple[float, float, int]:
    X_train, X_test, y_train, y_test = data
    estimator = make()
    context = sklearn.config_context(array_api_dispatch=True) if dispatch else None
    with context or contextlib.nullcontext():
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            estimator.fit(X_train, y_train)
        if hasattr(estimator, "model_"):
            # reads the parameters back (under dispatch they stay on the device):
            # waits for the device to finish
            first = estimator.coefs_[0]
            backend_of(first).to_host(first)
        seconds = time.perf_counter() - start
        score = float(estimator.score(X_test, y_test))
    return seconds, score, int(estimator.n_iter_)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="", help="comma-separated portprop backends")
    parser.add_argument(
        "--backend",
        action="append",
        default=[],
        help="a portprop backend (repeatable); with --device, on that device",
    )
    parser.add_argument("--device", default=None, help="the device of every --backend")
    parser.add_argument("--data", default="digits,regression", help="digits, regression")
    parser.add_argument(
        "--dispatch",
        action="store_true",
        help="add rows with the data on the device, under array_api_dispatch=True",
    )
    parser.add_argument("--solvers", default="adam,lbfgs,sgd")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads (0: leave as is)")
    args = parser.parse_args()
    limits: Any = None
    if args.threads:
        from threadpoolctl import threadpool_limits

        limits = threadpool_limits(limits=args.threads)
        try:
            import torch

            torch.set_num_threads(args.threads)
        except ImportError:
            pass
    wanted = [d for d in args.data.split(",") if d]
    sets = {}
    if "digits" in wanted:
        sets["digits"] = (digits(), MLPClassifier, SkMLPClassifier)
    if "regression" in wanted:
        sets["regression"] = (regression(), MLPRegressor, SkMLPRegressor)
    # (label, backend, device) of each portprop row
    targets = [(b, b, None) for b in args.backends.split(",") if b]
    for b in args.backend:
        label = b if args.device is None else f"{b}:{args.device}"
        targets.append((label, b, args.device))
    if not targets:
        targets = [("numpy", "numpy", None)]
    if args.dispatch:
        os.environ["SCIPY_ARRAY_API"] = "1"  # scikit-learn checks it when dispatch is on
    print(f"threads={args.threads or 'default'} repeats={args.repeats}")
    header = f"{'data':<11} {'solver':<7} {'estimator':<32} {'score':>8} {'iters':>6} {'fit s':>8}"
    print(header)
    print("-" * len(header))
    for name, (data, Ours, Theirs) in sets.items():
        for solver in args.solvers.split(","):
            params = {"solver": solver, "max_iter": 200, "random_state": 0}
            if solver == "sgd":
                params["learning_rate_init"] = 0.01
            # label -> (estimator factory, data, under dispatch)
            rows: dict[str, Any] = {
                "scikit-learn": (lambda p=params, T=Theirs: T(**p), data, False)
            }
            for label, backend, device in targets:

                def make(p: Any = params, O: Any = Ours, b: str = backend, d: Any = device) -> Any:
                    return O(backend=b, device=d, **p)

                rows[f"portprop/{label}"] = (make, data, False)
                if args.dispatch:
                    rows[f"portprop/{label}+dispatch"] = (
                        make,
                        on_device(data, backend, device),
                        True,
                    )
            results: dict[str, list[tuple[float, float, int]]] = {k: [] for k in rows}
            for _ in range(args.repeats):
                for label, (make, rows_data, dispatch) in rows.items():
                    results[label].append(timed_fit(make, rows_data, dispatch=dispatch))
            for label, runs in results.items():
                seconds = statistics.median(r[0] for r in runs)
                score, iters = runs[-1][1], runs[-1][2]
                print(
                    f"{name:<11} {solver:<7} {label:<32} {score:>8.4f} {iters:>6} {seconds:>8.3f}"
                )
    if limits is not None:
        limits.unregister()
    np.set_printoptions()


if __name__ == "__main__":
    main()
