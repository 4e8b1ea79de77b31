"""Time one training step of portprop against plain NumPy and torch autograd.

One step is: forward, loss, backward (no gradient for the input), and SGD with
momentum 0.9 and learning rate 0.01.  Every implementation starts from the same
initial weights and trains on the same batch.

Workloads
---------
A  layers 784-512-512-10, batch 256, ReLU, cross-entropy, float32 (matrix-product bound)
B  layers 2-25-25-25-2, batch 100, tanh, MSE on one-hot targets, float32 (Python bound)

Rows
----
portprop/<backend>   portprop on every backend :func:`portprop.backends` finds here
numpy (by hand)      the same step written directly in NumPy, as a competent person would
torch autograd       ``nn.Sequential`` + ``loss.backward()`` + ``optim.SGD(momentum=0.9)``
matmul floor         only the matrix products of a step, in NumPy

Each implementation first runs 3 steps whose losses are compared with the hand-written
NumPy ones (so that every row computes the same thing), then, fresh, is warmed up
(``--warmup``, at least 20 steps), then its steps are timed one by one with
``time.perf_counter`` in interleaved rounds (so that a slow phase of the machine hits
every row alike), up to ``--repeats`` steps or ``--budget`` seconds.  The table reports
the median and the interquartile range.  On JAX, CuPy and torch CUDA every timed step
ends by waiting for the device.

The header prints the versions, thread pools, the OpenBLAS environment variables and the
load average: on a small shared machine, other processes make threaded BLAS and torch
stall now and then (a wide IQR); ``--threads 1`` makes the rows less sensitive to that.

    python benchmarks/bench_step.py                   # everything, 2-3 minutes on 2 cores
    python benchmarks/bench_step.py --quick           # a smoke run, about 30 s
    python benchmarks/bench_step.py --threads 1       # single-threaded BLAS and torch
    python benchmarks/bench_step.py --backends numpy,torch:cpu --workloads B --repeats 5000
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

import portprop as pp

LR = 0.01
MOMENTUM = 0.9
SEED = 0

ENV_VARS = (
    "OPENBLAS_CORETYPE",
    "OPENBLAS_L2_SIZE",
    "OPENBLAS_NUM_THREADS",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "PORTPROP_BACKEND",
    "JAX_ENABLE_X64",
    "XLA_FLAGS",
)


# --------------------------------------------------------------------------------------
# Workloads
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    key: str
    sizes: tuple[int, ...]
    batch: int
    activation: str  # "relu" or "tanh"
    loss: str  # "cross_entropy" or "mse"
    repeats: int  # timed steps per implementation (default)
    quick_repeats: int

    def describe(self) -> str:
        layers = "-".join(map(str, self.sizes))
        return f"{layers}, batch {self.batch}, {self.activation}, {self.loss}, float32"


WORKLOADS = {
    "A": Workload("A", (784, 512, 512, 10), 256, "relu", "cross_entropy", 150, 20),
    "B": Workload("B", (2, 25, 25, 25, 2), 100, "tanh", "mse", 3000, 300),
}


@dataclass
class Problem:
    """The host data and initial weights that every implementation starts from."""

    workload: Workload
    X: np.ndarray  # (batch, in) float32
    labels: np.ndarray  # (batch,) int64
    targets: np.ndarray  # cross-entropy: the labels; MSE: float32 one-hot
    weights: list[tuple[np.ndarray, np.ndarray]]  # [(W (out, in), b (out,)), ...]


def make_problem(w: Workload) -> Problem:
    rng = np.random.default_rng(SEED)
    n_in, n_out = w.sizes[0], w.sizes[-1]
    if w.key == "B":  # the lecture's disk problem, as in examples/train_disk.py
        X = rng.uniform(0.0, 1.0, size=(w.batch, n_in))
        labels = (((X - 0.5) ** 2).sum(axis=1) < pp.datasets.DISK_RADIUS**2).astype(np.int64)
    else:
        X = rng.standard_normal((w.batch, n_in))
        labels = rng.integers(0, n_out, size=w.batch, dtype=np.int64)
    X = X.astype(np.float32)
    if w.loss == "mse":
        targets = (labels[:, None] == np.arange(n_out)).astype(np.float32)
    else:
        targets = labels
    pp.manual_seed(SEED)
    model = build_portprop_model(w, "numpy")
    host = [np.array(p.data, copy=True) for p in model.parameters()]
    weights = [(host[i], host[i + 1]) for i in range(0, len(host), 2)]
    return Problem(w, X, labels, targets, weights)


# --------------------------------------------------------------------------------------
# Implementations: each is a step() returning the loss, and a sync() that waits for it
# --------------------------------------------------------------------------------------


@dataclass
class Runner:
    name: str
    step: Callable[[], Any]
    sync: Callable[[], None] = lambda: None
    to_float: Callable[[Any], float] = float
    note: str = ""
    samples: list[float] = field(default_factory=list)


def build_portprop_model(w: Workload, backend: str) -> pp.Sequential:
    act = {"relu": pp.ReLU, "tanh": pp.Tanh}[w.activation]
    layers: list[pp.Module] = []
    for i, (n_in, n_out) in enumerate(zip(w.sizes[:-1], w.sizes[1:], strict=True)):
        if i:
            layers.append(act(backend=backend))
        layers.append(pp.Linear(n_in, n_out, backend=backend))
    return pp.Sequential(*layers)


def portprop_runner(prob: Problem, name: str) -> Runner:
    w = prob.workload
    backend = pp.get_backend(backend=name)
    model = build_portprop_model(w, name)
    state = {}
    for i, (W, b) in enumerate(prob.weights):
        state[f"{2 * i}.weight"], state[f"{2 * i}.bias"] = W, b
    model.load_state_dict(state)
    X = pp.asarray(prob.X, backend=backend)
    T = pp.asarray(prob.targets, backend=backend)
    loss = pp.CrossEntropyLoss() if w.loss == "cross_entropy" else pp.MSELoss()
    params = model.parameters()
    opt = pp.SGD(params, lr=LR, momentum=MOMENTUM)

    def step() -> Any:
        value = loss.forward(model.forward(X), T)
        model.zero_grad()
        model.backward(loss.backward(), input_grad=False)
        opt.step()
        return value

    def sync() -> None:  # NumPy, torch CPU, array-api-strict: nothing to wait for
        return

    note = ""
    if backend.library == "jax":
        import jax

        def sync() -> None:
            jax.block_until_ready([p.data for p in params])

        note = "block_until_ready on every parameter, each step"
    elif backend.library == "torch" and backend.device.type == "cuda":
        import torch

        def sync() -> None:
            torch.cuda.synchronize(backend.device)

        note = "torch.cuda.synchronize each step"
    elif backend.library == "cupy":
        device = backend.device

        def sync() -> None:
            device.synchronize()

        note = "cupy Device.synchronize each step"

    return Runner(
        f"portprop/{backend.name}",
        step,
        sync,
        to_float=lambda v: float(backend.to_host(v)),
        note=note,
    )


def numpy_runner(prob: Problem) -> Runner:
    """The step written by hand in NumPy."""
    w = prob.workload
    X, y, T = prob.X, prob.labels, prob.targets
    params = [(W.copy(), b.copy()) for W, b in prob.weights]
    velocity = [(np.zeros_like(W), np.zeros_like(b)) for W, b in params]
    n = X.shape[0]
    rows = np.arange(n)
    relu = w.activation == "relu"
    last = len(params) - 1

    def step() -> Any:
        # forward: keep each layer's input, and the mask (ReLU) or output (tanh)
        H, inputs, kept = X, [], []
        for i, (W, b) in enumerate(params):
            inputs.append(H)
            S = H @ W.T + b
            if i == last:
                H = S
            elif relu:
                mask = S > 0
                H = S * mask
                kept.append(mask)
            else:
                H = np.tanh(S)
                kept.append(H)
        Z = H
        # loss and its gradient with respect to Z
        if w.loss == "cross_entropy":
            m = Z.max(axis=1, keepdims=True)
            E = np.exp(Z - m)
            s = E.sum(axis=1, keepdims=True)
            loss = np.mean(np.log(s[:, 0]) + m[:, 0] - Z[rows, y])
            G = E / s
            G[rows, y] -= 1.0
            G /= n
        else:
            D = Z - T
            loss = np.mean(D * D)
            G = D * (2.0 / D.size)
        # backward, with the SGD update of each layer as soon as its gradient is known
        for i in range(last, -1, -1):
            W, b = params[i]
            vW, vb = velocity[i]
            gW = G.T @ inputs[i]
            gb = G.sum(axis=0)
            if i:
                G = G @ W
                G *= kept[i - 1] if relu else 1.0 - kept[i - 1] * kept[i - 1]
            vW *= MOMENTUM
            vW += gW
            W -= LR * vW
            vb *= MOMENTUM
            vb += gb
            b -= LR * vb
        return loss

    return Runner("numpy (by hand)", step)


def torch_runner(prob: Problem) -> Runner:
    import torch
    from torch import nn

    w = prob.workload
    layers: list[nn.Module] = []
    for i, (W, b) in enumerate(prob.weights):
        if i:
            layers.append(nn.ReLU() if w.activation == "relu" else nn.Tanh())
        linear = nn.Linear(W.shape[1], W.shape[0])
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(W))
            linear.bias.copy_(torch.from_numpy(b))
        layers.append(linear)
    net = nn.Sequential(*layers)
    X = torch.from_numpy(prob.X.copy())
    T = torch.from_numpy(prob.targets.copy())
    loss_fn = nn.CrossEntropyLoss() if w.loss == "cross_entropy" else nn.MSELoss()
    opt = torch.optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM)

    def step() -> Any:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(X), T)
        loss.backward()
        opt.step()
        return loss

    return Runner("torch autograd (cpu)", step, to_float=lambda v: float(v.item()))


def floor_runner(prob: Problem) -> Runner:
    """Only the matrix products of one step: S = X @ W.T, G.T @ X, and G @ W except for
    the first layer."""
    rng = np.random.default_rng(SEED + 1)
    n = prob.X.shape[0]
    layers = []
    H = prob.X
    for W, _ in prob.weights:
        G = rng.standard_normal((n, W.shape[0])).astype(np.float32)
        layers.append((H, W, G))
        H = rng.standard_normal((n, W.shape[0])).astype(np.float32)

    def step() -> float:
        for H, W, _ in layers:
            H @ W.T
        for i in range(len(layers) - 1, -1, -1):
            H, W, G = layers[i]
            G.T @ H
            if i:
                G @ W
        return float("nan")

    return Runner("matmul floor (numpy)", step)


# --------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------


def check_losses(runners: list[Runner], failed: dict[str, str], steps: int = 3) -> dict[str, float]:
    """Relative difference of each runner's loss to the hand-written NumPy one over the
    first ``steps`` steps (the runners are fresh: every one starts from the same weights).

    A runner whose step raises is recorded in ``failed`` and left out of the timing.
    """
    losses = {}
    for r in runners:
        values = []
        try:
            for _ in range(steps):
                v = r.step()
                r.sync()
                values.append(r.to_float(v))
        except Exception as exc:  # noqa: BLE001 - report it and time the others
            failed[r.name] = f"{type(exc).__name__}: {exc}"
            continue
        losses[r.name] = np.array(values)
    ref = losses["numpy (by hand)"]
    return {
        name: float(np.max(np.abs(v - ref) / np.maximum(np.abs(ref), 1e-30)))
        for name, v in losses.items()
    }


def time_runners(
    runners: list[Runner], repeats: int, warmup: int, rounds: int, budget: float
) -> None:
    """Time ``repeats`` steps of every runner, in ``rounds`` interleaved rounds; a runner
    whose timed steps exceed ``budget`` seconds in all stops early (slow backends on a
    busy machine), after at least 3 steps a round."""
    for r in runners:
        for _ in range(warmup):
            r.step()
        r.sync()
    per_round = [repeats // rounds + (i < repeats % rounds) for i in range(rounds)]
    round_budget = budget / rounds
    perf = time.perf_counter
    # One full collection now, and everything alive moved out of the collector's sight,
    # so that the collections the steps trigger cost what they cost in a training loop.
    gc.collect()
    gc.freeze()
    for k, count in enumerate(per_round):
        order = runners[k % len(runners) :] + runners[: k % len(runners)]
        for r in order:
            step, sync, samples = r.step, r.sync, r.samples
            deadline = perf() + round_budget
            for i in range(count):
                t0 = perf()
                step()
                sync()
                t1 = perf()
                samples.append(t1 - t0)
                if t1 > deadline and i >= 2:
                    break
    gc.unfreeze()


def summarize(samples: list[float]) -> tuple[float, float]:
    q1, med, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    return med, q3 - q1


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------


def header() -> str:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    lines = [
        f"python {sys.version.split()[0]} on {platform.platform()}",
        f"cpu: {_cpu_model()}; os.cpu_count()={os.cpu_count()}, usable cores={usable}",
        f"portprop {pp.__version__} ({Path(pp.__file__).parent}; {_git_state()})",
        f"numpy {np.__version__}",
    ]
    try:
        import torch

        lines.append(
            f"torch {torch.__version__}: get_num_threads()={torch.get_num_threads()}, "
            f"get_num_interop_threads()={torch.get_num_interop_threads()}"
        )
    except ImportError:
        lines.append("torch: not installed")
    lines += [
        f"{dist} {_version(dist)}" for dist in ("jax", "array-api-strict", "array-api-compat")
    ]
    env = ", ".join(f"{k}={os.environ[k]!r}" if k in os.environ else f"{k} unset" for k in ENV_VARS)
    lines.append(f"env: {env}")
    try:
        from threadpoolctl import threadpool_info

        for info in threadpool_info():
            extra = ""
            if "architecture" in info:
                extra = f", architecture {info['architecture']}"
            if info.get("threading_layer"):
                extra += f", threading {info['threading_layer']}"
            lines.append(
                f"threadpool: {info.get('internal_api')} {info.get('version')} "
                f"num_threads={info.get('num_threads')}{extra} "
                f"({Path(info.get('filepath', '')).name})"
            )
    except ImportError:
        lines.append("threadpoolctl: not installed (BLAS thread counts not shown)")
    return "\n".join(lines)


def _git_state() -> str:
    """The commit of the checkout portprop is imported from, and whether src/ differs."""
    root = Path(pp.__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "not a git checkout"
    return f"commit {commit}" + (", src/ has uncommitted changes" if dirty else "")


def _version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def _busy() -> str:
    """A warning when other processes kept the cores busy, else ``""``."""
    try:
        one_minute = os.getloadavg()[0]
    except OSError:
        return ""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    # this script itself keeps about one core busy
    if cores and one_minute > 1.0 + 0.5 * cores:
        return f"load average {one_minute:.2f} on {cores} cores: other processes were running"
    return ""


def _load() -> str:
    try:
        return ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def limit_threads(n: int) -> None:
    """Cap the BLAS and OpenMP pools of this process at ``n`` threads."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        msg = "--threads needs threadpoolctl: pip install threadpoolctl"
        raise SystemExit(msg) from None
    _LIMITS.append(threadpool_limits(limits=n))
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(n)


_LIMITS: list[Any] = []  # keeps the threadpoolctl limits alive


def _cpu_model() -> str:
    try:
        with Path("/proc/cpuinfo").open(encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def table(w: Workload, runners: list[Runner], errors: dict[str, float]) -> str:
    stats = {r.name: summarize(r.samples) for r in runners}
    ref_np = stats["numpy (by hand)"][0]
    ref_torch = stats.get("torch autograd (cpu)", (float("nan"), 0.0))[0]
    scale, unit = (1e3, "ms") if ref_np >= 1e-3 else (1e6, "us")
    width = max(len(r.name) for r in runners)
    head = (
        f"{'implementation':<{width}}  {'steps':>5}  {'median ' + unit:>11}  {'IQR ' + unit:>9}  "
        f"{'x numpy':>8}  {'x torch':>8}  {'loss rel.diff':>13}"
    )
    lines = [
        f"Workload {w.key}: {w.describe()}",
        head,
        "-" * len(head),
    ]
    for r in runners:
        med, iqr = stats[r.name]
        err = errors.get(r.name)
        err_text = "-" if err is None or np.isnan(err) else f"{err:.1e}"
        lines.append(
            f"{r.name:<{width}}  {len(r.samples):>5}  {med * scale:>11.3f}  {iqr * scale:>9.3f}  "
            f"{med / ref_np:>8.3f}  {med / ref_torch:>8.3f}  {err_text:>13}"
        )
    notes = [f"  {r.name}: {r.note}" for r in runners if r.note]
    if notes:
        lines += ["notes:", *notes]
    return "\n".join(lines)


def targets_report(results: dict[str, dict[str, float]]) -> str:
    lines = ["Targets:"]
    for key, med in results.items():
        np_ref, torch_ref = med.get("numpy (by hand)"), med.get("torch autograd (cpu)")
        pp_np, pp_torch = med.get("portprop/numpy"), med.get("portprop/torch:cpu")
        if pp_np is not None and np_ref is not None:
            ratio = pp_np / np_ref
            verdict = "met" if ratio <= 1.10 else "NOT met"
            lines.append(
                f"  {key}: portprop/numpy within 1.10x of numpy: {ratio:.3f}x -> {verdict}"
            )
        if pp_torch is not None and torch_ref is not None:
            ratio = pp_torch / torch_ref
            verdict = "met" if ratio < 1.0 else "NOT met"
            lines.append(
                f"  {key}: portprop/torch:cpu faster than torch autograd: {ratio:.3f}x -> {verdict}"
            )
    if len(lines) == 1:
        lines.append("  (not measured: the portprop/numpy or portprop/torch:cpu row is missing)")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------


def available_backends() -> tuple[list[str], list[str]]:
    """Backend names portprop can run here (one per device worth timing), and notes on
    the ones it cannot."""
    names, skipped = [], []
    for status in pp.backends():
        if not status.available:
            skipped.append(f"{status.name}: {status.reason}")
            continue
        if status.name == "torch":
            names += [f"torch:{d}" for d in status.devices if d == "cpu" or d.startswith("cuda")]
        elif status.name == "cupy":
            names += [f"cupy:{d}" for d in status.devices]
        else:  # one device is enough: numpy, jax's default device, array_api_strict's CPU
            names.append(status.name)
    return names, skipped


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repeats: a smoke run")
    parser.add_argument(
        "--repeats",
        type=int,
        help="timed steps per implementation and workload "
        f"(default: {', '.join(f'{k} {w.repeats}' for k, w in WORKLOADS.items())})",
    )
    parser.add_argument(
        "--budget",
        type=float,
        help="seconds of timed steps per implementation and workload, after which it stops "
        "early (default 6, 1 with --quick)",
    )
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps first (>= 20)")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved timing rounds")
    parser.add_argument(
        "--backends",
        help="comma-separated portprop backends (default: every available one), "
        "e.g. numpy,torch:cpu,jax,array_api_strict,torch:cuda,cupy:0",
    )
    parser.add_argument("--workloads", default="A,B", help="comma-separated: A, B")
    parser.add_argument(
        "--threads",
        type=int,
        help="limit BLAS/OpenMP pools (threadpoolctl), torch.set_num_threads and, unless "
        "XLA_FLAGS is set, JAX's CPU pool to this many threads (default: leave every library "
        "as it starts)",
    )
    parser.add_argument("--no-torch", action="store_true", help="skip the torch autograd row")
    parser.add_argument("--json", metavar="PATH", help="also write the raw medians here")
    args = parser.parse_args(argv)
    if args.warmup < 20:
        parser.error(f"--warmup must be at least 20, got {args.warmup}")
    if args.repeats is not None and args.repeats < 4:
        parser.error(f"--repeats must be at least 4, got {args.repeats}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    unknown = [k for k in args.workloads.split(",") if k not in WORKLOADS]
    if unknown:
        parser.error(f"--workloads takes A and/or B, got {unknown}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    load_before = _load()
    if args.threads is not None and "XLA_FLAGS" not in os.environ:
        # read when JAX starts its CPU client, that is below: its pool is sized here
        eigen = "true" if args.threads > 1 else "false"
        os.environ["XLA_FLAGS"] = (
            f"--xla_cpu_multi_thread_eigen={eigen} intra_op_parallelism_threads={args.threads}"
        )
    found, skipped = available_backends()  # imports every library that portprop can use
    if args.threads is not None:
        limit_threads(args.threads)
    print(header())
    print(f"load average before: {load_before}")
    if args.backends:
        wanted = [b.strip() for b in args.backends.split(",") if b.strip()]
        names = []
        for name in wanted:
            try:
                pp.get_backend(backend=name)
            except (pp.BackendUnavailableError, pp.UnknownBackendError) as exc:
                skipped.append(f"{name}: {exc}")
                continue
            names.append(name)
    else:
        names = found
    try:
        import torch  # noqa: F401
    except ImportError:
        has_torch = False
        skipped.append("torch autograd: torch is not installed")
    else:
        has_torch = not args.no_torch
    print(f"portprop backends timed: {', '.join(names) or 'none'}")
    for line in skipped:
        print(f"  skipped {line}")
    print()

    results: dict[str, dict[str, float]] = {}
    for key in args.workloads.split(","):
        w = WORKLOADS[key]
        repeats = args.repeats or (w.quick_repeats if args.quick else w.repeats)
        rounds = min(args.rounds, repeats)
        budget = args.budget if args.budget is not None else (1.0 if args.quick else 6.0)
        prob = make_problem(w)

        failed: dict[str, str] = {}

        def build(prob: Problem = prob, failed: dict[str, str] = failed) -> list[Runner]:
            runners = []
            for name in names:
                if f"portprop/{name}" in failed:
                    continue
                try:
                    runners.append(portprop_runner(prob, name))
                except Exception as exc:  # noqa: BLE001 - report it and time the others
                    failed[f"portprop/{name}"] = f"{type(exc).__name__}: {exc}"
            runners.append(numpy_runner(prob))
            if has_torch:
                runners.append(torch_runner(prob))
            runners.append(floor_runner(prob))
            return runners

        with warnings.catch_warnings():
            # jax turns the int64 labels into int32 (x64 off), and says so
            warnings.filterwarnings("ignore", message=".*int64.*", category=UserWarning)
            errors = check_losses(build(), failed)
            runners = [r for r in build() if r.name not in failed]
            time_runners(runners, repeats, args.warmup, rounds, budget)
        print(table(w, runners, errors))
        for name, reason in failed.items():
            print(f"  FAILED {name}: {reason}")
        print()
        results[key] = {r.name: summarize(r.samples)[0] for r in runners}

    busy = _busy()
    if busy:
        print(f"WARNING: {busy}; the timings below the header are unreliable (rerun when idle).")
    print(targets_report(results))
    print(
        "\nx numpy / x torch: median time divided by that of 'numpy (by hand)' / "
        "'torch autograd (cpu)' (below 1 is faster).\nloss rel.diff: largest relative "
        "difference of the loss to 'numpy (by hand)' over the first 3 steps."
    )
    print(f"load average after: {_load()} (1, 5, 15 min; above 0 means other processes ran)")
    print(f"total wall time {time.perf_counter() - start:.1f} s")
    if args.json:
        with Path(args.json).open("w", encoding="utf-8") as f:
            json.dump({"header": header(), "median_seconds": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
