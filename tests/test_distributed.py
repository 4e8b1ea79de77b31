"""Data-parallel training (portprop.distributed): engines, fit(comm=...), faults.

The multi-process tests start 2 and 3 processes over loopback, with torch.distributed
(gloo, the environment torchrun sets) and with MPI (``mpiexec`` of the ``mpich`` wheel
and mpi4py); each engine that is missing skips its tests with the reason.  Every launch
runs under a timeout and its processes are killed in ``finally``.  One launch runs
several scenarios of tests/_distributed_worker.py (starting an engine costs more than
they do): 2 processes run ``exact,resume-first,kill``, 3 processes
``exact,resume-second,differ,nonfinite``.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _distributed_worker as worker
import numpy as np
import pytest
from conftest import to_numpy

import portprop as pp
from portprop.distributed._comm import host_views
from portprop.distributed._local import LocalCommunicator
from portprop.distributed._replicas import Replicas

WORKER = Path(__file__).with_name("_distributed_worker.py")
LAUNCH_TIMEOUT = 150.0  # seconds for one launch (importing torch alone takes ~15 s here)
RTOL = 1e-12


# --------------------------------------------------------------------------------------
# Launching
# --------------------------------------------------------------------------------------


def _engine_missing(engine: str) -> str:
    """Why ``engine`` cannot run here ("" when it can)."""
    if engine == "torch":
        try:
            import torch.distributed as dist
        except ImportError:
            return "torch is not installed (pip install torch)"
        if not dist.is_available() or not dist.is_gloo_available():
            return "this torch build has no torch.distributed with gloo"
        return ""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return "mpi4py is not installed (pip install mpi4py mpich)"
    if _mpiexec() is None:
        return "no mpiexec found (pip install mpich)"
    return ""


def _mpiexec() -> str | None:
    beside = Path(sys.executable).with_name("mpiexec")
    return str(beside) if beside.exists() else shutil.which("mpiexec")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _launch(engine: str, size: int, scenarios: str, out: Path) -> list[int]:
    """Run the worker on ``size`` processes; their exit statuses (killed ones included)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(WORKER.parent)}
    env.pop(pp.ENV_VAR, None)
    command = [sys.executable, str(WORKER), scenarios, str(out), engine]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        if engine == "torch":
            port = str(_free_port())
            for rank in range(size):
                rank_env = {
                    **env,
                    "RANK": str(rank),
                    "WORLD_SIZE": str(size),
                    "LOCAL_RANK": str(rank),
                    "MASTER_ADDR": "127.0.0.1",
                    "MASTER_PORT": port,
                }
                procs.append(subprocess.Popen(command, env=rank_env, start_new_session=True))
        else:
            mpiexec = _mpiexec()
            assert mpiexec is not None
            launcher = [mpiexec, "-n", str(size), *command]
            procs.append(subprocess.Popen(launcher, env=env, start_new_session=True))
        deadline = time.monotonic() + LAUNCH_TIMEOUT
        return [p.wait(timeout=max(1.0, deadline - time.monotonic())) for p in procs]
    finally:
        for p in procs:  # guaranteed cleanup: each process group, whatever happened
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


@functools.cache
def _runs(engine: str, root: str) -> Path:
    """Both launches of ``engine`` (once per session); the folder of their reports."""
    out = Path(root) / engine
    out.mkdir(parents=True)
    _launch(engine, 2, "exact,resume-first,kill", out)
    _launch(engine, 3, "exact,resume-second,differ,nonfinite", out)
    return out


@pytest.fixture(scope="module", params=["torch", "mpi"])
def runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    why = _engine_missing(request.param)
    if why:
        pytest.skip(f"engine {request.param}: {why}")
    return _runs(request.param, str(tmp_path_factory.mktemp("distributed")))


def _report(out: Path, scenario: str, size: int, rank: int) -> dict[str, Any]:
    path = out / f"{scenario}-{size}-{rank}.json"
    assert path.exists(), f"rank {rank} wrote no report for {scenario!r}"
    return dict(json.loads(path.read_text(encoding="utf-8")))


@functools.cache
def _reference(name: str) -> dict[str, Any]:
    """The single-process run that the ranks must reproduce."""
    return worker.train(None, name, epochs=9, backend="numpy", seed=7)


def _assert_close(got: np.ndarray, want: np.ndarray, what: str) -> None:
    scale = float(np.max(np.abs(want)))
    error = float(np.max(np.abs(got - want))) / scale
    assert error <= RTOL, f"{what}: relative error {error:.3g} > {RTOL}"


# --------------------------------------------------------------------------------------
# Several processes
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [2, 3])
@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_ranks_reproduce_one_process(runs, size, name):
    # 54 steps of float64 training; 101 samples in batches of 20: the last batch has
    # one sample, so all but one rank have none of it
    ref = _reference(name)
    for rank in range(size):
        got = np.load(runs / f"exact-{size}-{rank}.npz")
        for key, want in ref["params"].items():
            _assert_close(got[f"{name}/{key}"], want, f"rank {rank} of {size}, {key}")
        history = _report(runs, "exact", size, rank)[name]["history"]
        for key, values in ref["history"].items():
            np.testing.assert_allclose(history[key], values, rtol=RTOL, err_msg=key)


@pytest.mark.parametrize("size", [2, 3])
def test_ranks_are_bitwise_identical_after_every_epoch(runs, size):
    for name in ("sgd", "adam"):
        seen = [_report(runs, "exact", size, r)[name]["hashes"] for r in range(size)]
        assert len(seen[0]) == 9
        assert all(s == seen[0] for s in seen), f"{name}: the epochs' hashes differ: {seen}"
        final = [np.load(runs / f"exact-{size}-{r}.npz") for r in range(size)]
        for key in final[0].files:
            assert all(np.array_equal(f[key], final[0][key]) for f in final), key


def test_resuming_on_another_number_of_processes(runs):
    # 3 epochs on 2 processes, a checkpoint, 3 more epochs on 3 processes == one process
    net = worker.model(seed=0)
    opt = worker.optimizer("adam", net)
    X, y = worker.problem()
    for seed in (7, 8):
        pp.fit(net, pp.CrossEntropyLoss(), opt, X, y, epochs=3, batch_size=worker.BATCH,
               seed=seed, verbose=0)  # fmt: skip
    want = worker.host(net)
    for rank in range(3):
        got = np.load(runs / f"resume-second-3-{rank}.npz")
        for key, value in want.items():
            _assert_close(got[key], value, f"rank {rank}, {key}")


def test_a_dead_rank_raises_a_typed_error_on_the_others(runs):
    report = _report(runs, "kill", 2, 0)  # rank 1 was killed (torch) or hangs (MPI)
    engine = runs.name
    assert report["error"] is not None, "rank 0 trained on without rank 1"
    assert report["error_engine"] == engine
    assert report["error_rank"] == 0
    assert f"{engine} engine, rank 0 of 2" in report["error"]
    assert report["seconds"] < 5.0 + 10.0  # the timeout is 5 s
    if engine == "torch":  # the rendezvous store tells which rank is gone
        assert report["error"].endswith("(rank 1 did not answer)")


def test_ranks_that_differ_are_refused(runs):
    for rank in range(3):
        report = _report(runs, "differ", 3, rank)
        model_error, data_error = report["errors"]
        assert "rank 1 differs from rank 0 in architecture" in model_error
        assert "Linear(5, 17" in model_error
        assert "rank 2 differs from rank 0 in len(X): expected '101'" in data_error
        assert "got '100'" in data_error
        assert report["model_unchanged"]
        assert report["data_unchanged"]


def test_a_non_finite_loss_on_one_rank_stops_every_rank(runs):
    reports = [_report(runs, "nonfinite", 3, r) for r in range(3)]
    assert reports[0]["error"] == [1, 2, "loss"]
    assert all(r["error"] == reports[0]["error"] for r in reports)
    assert all(r["hash"] == reports[0]["hash"] for r in reports)


# --------------------------------------------------------------------------------------
# One process
# --------------------------------------------------------------------------------------


def test_init_without_a_launcher_is_one_local_process(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    with pp.distributed.init() as comm:
        assert (comm.engine, comm.rank, comm.size) == ("local", 0, 1)
        comm.barrier()
    comm.close()  # idempotent
    with pytest.raises(pp.DistributedError, match="is closed"):
        comm.barrier()


def test_detect_reads_the_launchers_environment():
    torchrun = {"RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "h", "LOCAL_RANK": "1"}
    assert pp.distributed.detect(torchrun) == "torch"
    assert pp.distributed.detect({"PMI_SIZE": "4", "PMI_RANK": "0"}) == "mpi"
    assert pp.distributed.detect({"OMPI_COMM_WORLD_SIZE": "2"}) == "mpi"
    assert pp.distributed.detect({"RANK": "0"}) == "local"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"engine": "nccl"}, "engine must be one of 'torch', 'mpi', 'local' or None, got 'nccl'"),
        ({"timeout": 0}, "timeout must be a number of seconds > 0 or None, got 0"),
        ({"timeout": "5"}, "timeout must be a number of seconds > 0 or None, got '5'"),
    ],
)
def test_init_refuses_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        pp.distributed.init(**kwargs)


@pytest.mark.parametrize(
    ("engine", "module", "package"),
    [("mpi", "mpi4py", "pip install mpi4py"), ("torch", "torch.distributed", "pip install torch")],
)
def test_a_missing_engine_names_the_package(monkeypatch, engine, module, package):
    monkeypatch.setitem(sys.modules, module, None)  # makes the import fail
    with pytest.raises(pp.DistributedError, match=package) as info:
        pp.distributed.init(engine=engine)
    assert "\n" not in str(info.value)
    assert info.value.engine == engine


def test_fit_refuses_what_is_not_a_communicator():
    net = worker.model(seed=0)
    X, y = worker.problem()
    before = worker.host(net)
    with pytest.raises(
        TypeError, match=r"comm must be a portprop\.distributed Communicator, got str"
    ):
        pp.fit(net, pp.CrossEntropyLoss(), worker.optimizer("sgd", net), X, y, comm="gloo")  # type: ignore[arg-type]
    for key, value in worker.host(net).items():
        assert np.array_equal(value, before[key])


def test_fit_with_one_local_process_is_fit(backend64):
    X, y = worker.problem()
    results = []
    for comm in (None, LocalCommunicator()):
        net = worker.model(seed=0, backend=backend64.name)
        history = pp.fit(net, pp.CrossEntropyLoss(), worker.optimizer("adam", net), X, y,
                         epochs=2, batch_size=worker.BATCH, seed=3, verbose=0, comm=comm)  # fmt: skip
        results.append((worker.host(net), history.history))
    (p0, h0), (p1, h1) = results
    assert h0 == h1
    for key, value in p0.items():
        assert np.array_equal(value, p1[key]), key
    assert getattr(net, "_after_layer_backward", None) is None  # the hook is gone


class _Rank(LocalCommunicator):
    """A rank of a pretended communicator: only :meth:`Replicas.part` asks for more."""

    def __init__(self, rank: int, size: int) -> None:
        super().__init__()
        self.rank, self.size = rank, size


@pytest.mark.parametrize("size", [1, 2, 3, 4])
@pytest.mark.parametrize("batch", [1, 2, 3, 7, 20])
def test_each_global_batch_is_split_contiguously_and_unevenly(size, batch):
    net = worker.model(seed=0)
    parts = [Replicas(_Rank(r, size), net, pp.MSELoss()).part(40, 40 + batch) for r in range(size)]
    assert parts[0][0] == 40
    assert parts[-1][1] == 40 + batch
    assert all(a[1] == b[0] for a, b in itertools.pairwise(parts))
    sizes = [hi - lo for lo, hi in parts]
    assert max(sizes) - min(sizes) <= 1
    assert sizes == sorted(sizes, reverse=True)


def test_sequential_backward_calls_the_hook_after_each_layer_from_the_last():
    net = worker.model(seed=0)
    X, _ = worker.problem(4)
    out = net.forward(X)
    called: list[tuple[int, bool]] = []
    net._after_layer_backward = lambda i: called.append(
        (i, net[i].parameters()[0].grad is not None if net[i].parameters() else True)
    )  # type: ignore[attr-defined]
    net.backward(np.ones_like(out), input_grad=False)
    assert [i for i, _ in called] == [4, 3, 2, 1, 0]
    assert all(final for _, final in called)  # the layer's gradients exist when called


def test_host_views_share_memory_or_write_back(backend64):
    xp = backend64.xp
    a = xp.asarray([1.0, 2.0, 3.0], dtype=backend64.float_dtype("float64"), device=backend64.device)
    arrays = [a]
    views, write_back = host_views(arrays, backend64)
    views[0][...] = [4.0, 5.0, 6.0]
    write_back()
    assert np.array_equal(to_numpy(arrays[0]), [4.0, 5.0, 6.0])
    assert backend64.owns(arrays[0])
    if backend64.library in ("numpy", "array_api_strict") or backend64.name == "torch:cpu":
        assert arrays[0] is a  # no copy: the same array was written


@pytest.mark.parametrize("engine", ["torch", "mpi"])
def test_one_process_collectives_keep_arrays_of_every_backend(backend64, engine, monkeypatch):
    why = _engine_missing(engine)
    if why:
        pytest.skip(f"engine {engine}: {why}")
    if engine == "torch":
        for key, value in {"RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                           "MASTER_PORT": str(_free_port())}.items():  # fmt: skip
            monkeypatch.setenv(key, value)
    xp = backend64.xp
    dtype = backend64.float_dtype("float64")
    with pp.distributed.init(engine=engine, timeout=30) as comm:
        assert (comm.engine, comm.size) == (engine, 1)
        arrays = [xp.asarray([[1.5, -2.0]], dtype=dtype, device=backend64.device)]
        done = comm.allreduce_sum_(arrays, backend64).wait()
        assert done is arrays
        comm.broadcast_(arrays, backend64)
        assert backend64.owns(arrays[0])
        assert arrays[0].dtype == dtype
        assert np.array_equal(to_numpy(arrays[0]), [[1.5, -2.0]])
        assert comm.allgather_text("hello") == ["hello"]
        comm.barrier()


class _Recording(LocalCommunicator):
    """Size 1, noting whether the first layer's gradient existed at each reduction."""

    def __init__(self, first: Any) -> None:
        super().__init__()
        self.first = first
        self.seen: list[bool] = []

    def _allreduce(self, arrays: list[Any], backend: Any) -> pp.distributed.Work:
        self.seen.append(self.first.grad is not None)
        return super()._allreduce(arrays, backend)


def test_reductions_start_during_the_backward_pass():
    net = worker.model(seed=0)
    X, y = worker.problem(8)
    comm = _Recording(net[0].weight)
    replicas = Replicas(comm, net, pp.CrossEntropyLoss(), bucket_bytes=1)
    replicas.attach()
    _, _, value = replicas.step(pp.CrossEntropyLoss(), X, y, 8)
    replicas.detach()
    # one bucket per Linear, the last layer's first: two left before layer 0's backward
    assert comm.seen == [False, False, True]
    assert float(value) > 0.0


def test_the_command_line_trains_on_every_rank_and_writes_once(tmp_path):
    why = _engine_missing("mpi")
    if why:
        pytest.skip(f"engine mpi: {why}")
    mpiexec = _mpiexec()
    assert mpiexec is not None
    saved = tmp_path / "model.ckpt"
    command = [mpiexec, "-n", "2", sys.executable, "-m", "portprop", "train", "--dataset",
               "disk", "--samples", "200", "--epochs", "2", "--save", str(saved)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(command, env=env, start_new_session=True, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=LAUNCH_TIMEOUT)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, stderr
    assert stdout.count("split") == 1  # rank 0's table only
    assert stderr.count("data-parallel: 2 processes (mpi)") == 1
    assert stderr.count("saved the model") == 1
    assert pp.load(saved).model is not None


@pytest.mark.parametrize(
    ("name", "bound"),
    [
        ("torch:cuda", "torch:cuda:2"),
        ("cupy", "cupy:2"),
        ("torch:cuda:0", "torch:cuda:0"),
        ("numpy", "numpy"),
        (None, None),
    ],
)
def test_each_rank_binds_to_its_local_gpu(name, bound):
    comm = _Rank(2, 4)
    comm.local_rank = 2
    assert comm.local_backend(name) == bound
