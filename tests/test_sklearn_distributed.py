"""The scikit-learn estimators trained data-parallel (``comm=``, issue 10).

Two processes over loopback with torch.distributed (gloo), started by the launcher of
tests/test_distributed.py (with its timeout, and its processes killed in ``finally``),
run the fits of tests/_sklearn_distributed_worker.py in float64: adam (classifier,
early stopping), sgd (regressor, invscaling) and lbfgs (classifier), all with sample
weights and 101 samples in batches of 20, so that one rank has no row of the last batch.
Each rank must give the single process's ``coefs_`` to 1e-12, and the ranks must be
bitwise identical.  Without torch those tests skip; the one-process tests always run.
"""

from __future__ import annotations

import functools
import json
import pickle
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

import _sklearn_distributed_worker as worker
import test_distributed as launcher
from sklearn.base import clone
from sklearn.utils._param_validation import InvalidParameterError

import portprop as pp
from portprop.distributed._local import LocalCommunicator

WORKER = Path(__file__).with_name("_sklearn_distributed_worker.py")
SIZE = 2
EXACT = ("adam", "sgd", "lbfgs")
STOCHASTIC = ("adam", "sgd", "unseeded")


@functools.cache
def _launched(root: str) -> Path:
    """One launch of 2 processes running every run (once per session)."""
    out = Path(root)
    with mock.patch.object(launcher, "WORKER", WORKER):
        statuses = launcher._launch("torch", SIZE, ",".join(worker.RUNS), out)
    assert statuses == [0] * SIZE, f"the ranks exited with {statuses}"
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    why = launcher._engine_missing("torch")
    if why:
        pytest.skip(f"engine torch: {why}")
    return _launched(str(tmp_path_factory.mktemp("sklearn_distributed")))


def _rank(out: Path, run: str, rank: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    stem = out / f"{run}-{SIZE}-{rank}"
    with np.load(stem.with_suffix(".npz")) as arrays:
        params = {k: arrays[k] for k in arrays.files}
    return params, json.loads(stem.with_suffix(".json").read_text(encoding="utf-8"))


def _parameters(est: Any) -> dict[str, np.ndarray]:
    found = {f"coef{i}": np.asarray(a) for i, a in enumerate(est.coefs_)}
    found.update({f"intercept{i}": np.asarray(a) for i, a in enumerate(est.intercepts_)})
    return found


@functools.cache
def _reference(run: str) -> tuple[dict[str, np.ndarray], Any]:
    est = worker.fit(run)
    return _parameters(est), est


# --------------------------------------------------------------------------------------
# Two processes
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("run", EXACT)
def test_two_ranks_reproduce_one_process(runs, run):
    want, ref = _reference(run)
    for rank in range(SIZE):
        got, report = _rank(runs, run, rank)
        assert got.keys() == want.keys()
        for key, value in want.items():
            scale = float(np.max(np.abs(value)))
            error = float(np.max(np.abs(got[key] - value))) / scale
            assert error <= 1e-12, f"{run}, rank {rank}, {key}: relative error {error:.3g}"
        assert report["n_iter"] == ref.n_iter_
        np.testing.assert_allclose(report["loss"], ref.loss_, rtol=1e-12)
        if run != "lbfgs":
            np.testing.assert_allclose(report["loss_curve"], ref.loss_curve_, rtol=1e-12)
    if run == "adam":  # early stopping: the same validation scores on every rank
        scores = [_rank(runs, run, r)[1]["validation_scores"] for r in range(SIZE)]
        assert scores[0] == ref.validation_scores_
        assert all(s == scores[0] for s in scores)


@pytest.mark.parametrize("run", [*EXACT, "unseeded"])
def test_ranks_are_bitwise_identical(runs, run):
    # "unseeded": random_state=None; rank 0's draws (weights, shuffling seed) rule
    first, first_report = _rank(runs, run, 0)
    for rank in range(1, SIZE):
        got, report = _rank(runs, run, rank)
        for key, value in first.items():
            assert np.array_equal(got[key], value), f"{run}, rank {rank}: {key} differs"
        assert report["loss_curve"] == first_report["loss_curve"]
        assert report["n_iter"] == first_report["n_iter"]


@pytest.mark.parametrize("run", STOCHASTIC)
def test_verbose_prints_on_rank_zero_only(runs, run):
    printed = [_rank(runs, run, r)[1]["printed"] for r in range(SIZE)]
    assert printed == [True] + [False] * (SIZE - 1)


# --------------------------------------------------------------------------------------
# One process
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("run", EXACT)
def test_a_local_communicator_changes_nothing(backend64, run):
    # the comm= path (split, one reduction, penalty after it) on one rank is bitwise
    # the plain fit, on every backend
    fits = [worker.fit(run, comm, backend=backend64.name) for comm in (None, LocalCommunicator())]
    plain, local = (_parameters(e) for e in fits)
    for key, value in plain.items():
        assert np.array_equal(local[key], value), f"{run}: {key} differs"
    assert fits[1].n_iter_ == fits[0].n_iter_
    assert fits[1].loss_ == fits[0].loss_


def test_comm_auto_without_a_launcher_is_one_process():
    plain, auto = worker.fit("sgd"), worker.fit("sgd", "auto")
    for key, value in _parameters(plain).items():
        assert np.array_equal(_parameters(auto)[key], value), key


def test_the_comm_parameter_clones_pickles_and_is_checked():
    comm = LocalCommunicator()
    est = pp.sklearn.MLPClassifier(comm=comm, max_iter=2)
    assert est.get_params()["comm"] is comm
    twin = clone(est)
    assert twin.comm is comm, "clone must share the communicator, not copy it"
    assert twin.get_params()["max_iter"] == 2
    assert clone(est.set_params(comm="auto")).comm == "auto"
    est.set_params(comm=comm)
    restored = pickle.loads(pickle.dumps(est))
    assert restored.comm is None, "a live communicator must not travel in a pickle"
    X, y, _ = worker.problem("classifier")
    with pytest.raises(InvalidParameterError, match=r"'comm' parameter .* Got 'mpi'"):
        pp.sklearn.MLPClassifier(comm="mpi").fit(X, y)


def test_a_closed_communicator_is_refused_and_leaves_the_estimator_unchanged():
    comm = LocalCommunicator()
    comm.close()
    X, y, _ = worker.problem("classifier")
    est = pp.sklearn.MLPClassifier(comm=comm, max_iter=2)
    with pytest.raises(pp.DistributedError, match="closed"):
        est.fit(X, y)
    assert not hasattr(est, "model_")
