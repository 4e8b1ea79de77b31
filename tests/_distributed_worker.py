"""One rank of the multi-process tests of tests/test_distributed.py.

Run by a launcher (torch: the environment variables of torchrun; MPI: ``mpiexec``)::

    python tests/_distributed_worker.py SCENARIO[,SCENARIO...] OUTDIR [ENGINE] [BACKEND]

For each scenario, each rank writes ``OUTDIR/<scenario>-<size>-<r>.json`` (what it
saw) and, for the scenarios that train, ``OUTDIR/<scenario>-<size>-<r>.npz`` (its parameters).  Several
scenarios share one launch: starting the engine costs more than they do.  The problems and the models are built
by the functions below, which the tests import to compute the single-process reference.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

import portprop as pp
from portprop.distributed._replicas import fingerprint

SAMPLES = 101  # with batches of 20, the last batch has 1 sample: some ranks get none
BATCH = 20
FEATURES, CLASSES = 5, 3


def problem(samples: int = SAMPLES) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((samples, FEATURES))
    y = (X[:, 0] + X[:, 1] ** 2 > 0.5).astype(np.int64) + (X[:, 2] > 1.0)
    return X, y


def model(seed: int, backend: str = "numpy", hidden: int = 16) -> pp.Sequential:
    pp.manual_seed(seed)
    with pp.use_backend(backend):
        return pp.Sequential(
            pp.Linear(FEATURES, hidden, dtype="float64"),
            pp.Tanh(),
            pp.Linear(hidden, hidden, dtype="float64"),
            pp.Tanh(),
            pp.Linear(hidden, CLASSES, dtype="float64"),
        )


def optimizer(name: str, net: pp.Sequential) -> pp.Optimizer:
    if name == "sgd":
        return pp.SGD(net.parameters(), lr=0.1, momentum=0.9)
    return pp.Adam(net.parameters(), lr=0.01)


def host(net: pp.Module) -> dict[str, np.ndarray]:
    return {n: net.backend.to_host(p.data) for n, p in net.named_parameters()}


class Hashes(pp.Callback):
    """The parameters' digest after every epoch."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        assert self.state is not None
        self.seen.append(fingerprint(self.state.model))


def train(comm: object, name: str, epochs: int, backend: str, seed: int) -> dict[str, object]:
    X, y = problem()
    # every rank builds its own initial weights: fit must broadcast rank 0's
    net = model(seed=getattr(comm, "rank", 0), backend=backend)
    opt = optimizer(name, net)
    hashes = Hashes()
    history = pp.fit(
        net,
        pp.CrossEntropyLoss(),
        opt,
        X,
        y,
        epochs=epochs,
        batch_size=BATCH,
        seed=seed,
        metrics=("loss", "accuracy"),
        callbacks=[hashes],
        verbose=0,
        comm=comm,  # type: ignore[arg-type]
    )
    return {"history": history.history, "hashes": hashes.seen, "params": host(net)}


def main() -> None:
    out = Path(sys.argv[2])
    engine = sys.argv[3] if len(sys.argv) > 3 else None
    backend = sys.argv[4] if len(sys.argv) > 4 else "numpy"
    comm = pp.distributed.init(engine=engine, timeout=float(os.environ.get("WORKER_TIMEOUT", "5")))
    for scenario in sys.argv[1].split(","):
        run_scenario(comm, scenario, out, backend)
    comm.close()


def run_scenario(comm: pp.distributed.Communicator, scenario: str, out: Path, backend: str) -> None:
    rank = comm.rank
    report: dict[str, object] = {"rank": rank, "size": comm.size, "engine": comm.engine}
    arrays: dict[str, np.ndarray] = {}
    try:
        if scenario == "exact":
            for name in ("sgd", "adam"):
                run = train(comm, name, epochs=9, backend=backend, seed=7)  # 54 steps
                arrays.update({f"{name}/{k}": v for k, v in run.pop("params").items()})  # type: ignore[attr-defined]
                report[name] = run
        elif scenario.startswith("resume"):
            # resume-first: 3 epochs, rank 0 saves; resume-second: load, 3 epochs more
            path = out.parent / "resume.ckpt"
            X, y = problem()
            net = model(seed=rank, backend=backend)
            opt = optimizer("adam", net)
            if scenario == "resume-second":
                pp.load_into(path, net, opt)
            seed = 7 if scenario == "resume-first" else 8
            pp.fit(net, pp.CrossEntropyLoss(), opt, X, y, epochs=3, batch_size=BATCH,
                   seed=seed, verbose=0, comm=comm)  # fmt: skip
            if scenario == "resume-first" and rank == 0:
                pp.save(path, net, opt)
            comm.barrier()
            arrays.update(host(net))
        elif scenario == "differ":
            X, y = problem()
            errors = []
            for what in ("model", "data"):
                net = model(seed=0, hidden=17 if what == "model" and rank == 1 else 16)
                Xr, yr = (X[:-1], y[:-1]) if what == "data" and rank == 2 % comm.size else (X, y)
                before = fingerprint(net)
                try:
                    pp.fit(net, pp.CrossEntropyLoss(), optimizer("sgd", net), Xr, yr,
                           batch_size=BATCH, seed=1, verbose=0, comm=comm)  # fmt: skip
                    errors.append("no error")
                except pp.DistributedError as exc:
                    errors.append(str(exc))
                report[f"{what}_unchanged"] = before == fingerprint(net)
            report["errors"] = errors
        elif scenario == "nonfinite":
            X, y = problem()
            if rank == 1:  # the first sample of rank 1's part of batch 2 (samples 20..39)
                X = X.copy()
                X[BATCH + BATCH // comm.size + (BATCH % comm.size > 0), 0] = 1e300
            net = pp.Sequential(pp.Linear(FEATURES, 8, dtype="float64"), pp.ReLU(),
                                pp.Linear(8, 1, dtype="float64"))  # fmt: skip
            target = y.astype(np.float64)
            try:
                pp.fit(net, pp.MSELoss(), pp.SGD(net.parameters(), lr=0.01), X, target,
                       batch_size=BATCH, shuffle=False, verbose=0, comm=comm)  # fmt: skip
                report["error"] = None
            except pp.TrainingDivergedError as exc:
                report["error"] = [exc.epoch, exc.batch, exc.quantity]
            report["hash"] = fingerprint(net)
        elif scenario == "kill":
            net = model(seed=0, backend=backend)
            X, y = problem(2000)

            class Die(pp.Callback):
                def on_batch_end(self, batch: int, logs: dict[str, float]) -> None:
                    if batch == 3 and rank == 1:
                        if comm.engine == "mpi":  # a hung rank: MPI would kill a dead one's peers
                            time.sleep(12)
                            os._exit(0)
                        os.kill(os.getpid(), signal.SIGKILL)

            started = time.monotonic()
            try:
                pp.fit(net, pp.CrossEntropyLoss(), optimizer("sgd", net), X, y, epochs=50,
                       batch_size=BATCH, seed=1, verbose=0, comm=comm, callbacks=[Die()])  # fmt: skip
                report["error"] = None
            except pp.DistributedError as exc:
                report["error"] = str(exc)
                report["error_engine"], report["error_rank"] = exc.engine, exc.rank
            report["seconds"] = time.monotonic() - started
            (out / f"{scenario}-{comm.size}-{rank}.json").write_text(
                json.dumps(report), encoding="utf-8"
            )
            os._exit(0)  # the engine cannot shut down cleanly with a peer gone
        else:
            msg = f"unknown scenario {scenario!r}"
            raise ValueError(msg)
    finally:
        if arrays:
            np.savez(out / f"{scenario}-{comm.size}-{rank}.npz", **arrays)
        (out / f"{scenario}-{comm.size}-{rank}.json").write_text(
            json.dumps(report), encoding="utf-8"
        )


if __name__ == "__main__":
    main()
