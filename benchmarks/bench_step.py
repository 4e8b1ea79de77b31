"""Time one training step of portprop against its floor, a hand-written step and autograd.

One step is: forward, loss, backward (no gradient for the input), and SGD with
momentum 0.9 and learning rate 0.01.  Every implementation starts from the same
initial weights and trains on the same batch.

Workloads
---------
A       layers 784-512-512-10, batch 256, ReLU, cross-entropy, float32 (matrix-product bound)
B       layers 2-25-25-25-2, batch 100, tanh, MSE on one-hot targets, float32 (Python bound)
w<N>    layers 784-N-N-10, batch 256, ReLU, cross-entropy (scaling in width: 32 ... 2048)
b<N>    layers 784-256-256-10, batch N, ReLU, cross-entropy (scaling in batch: 1 ... 4096)

Rows, for each library (one process per library, see "Fairness")
----------------------------------------------------------------
matmul floor             only the matrix products of a step (forward, grad-input,
                         grad-weight), written into preallocated outputs; under
                         ``jax.jit`` on JAX.  Every ratio ("x floor") is to this row of
                         the same library.
numpy by hand            the step written directly in NumPy (numpy process)
torch by hand            the step in torch under ``no_grad`` with preallocated buffers
                         (``out=``) and in-place updates (torch processes)
torch autograd           ``nn.Sequential`` + ``loss.backward()`` + ``optim.SGD(momentum=0.9)``
autograd + fused SGD     the same with ``SGD(fused=True)``: what a torch user would run
portprop eager           portprop with its workspaces off (``Module.use_workspaces(False)``)
portprop workspaces      portprop with its workspaces on (the default where supported)
portprop compiled        ``pp.compile_step(model, loss, optimizer)``: ``jax.jit`` on JAX,
                         ``torch.compile`` on torch
A row whose API is not in this checkout prints "n/a (not available: ...)"; ``--quick``
leaves out torch's compiled row (compiling takes longer than a smoke run).

Fairness
--------
Each library runs in its own process (``multiprocessing``, spawn), and only one process
works at a time: the others wait on a pipe, so their thread pools are idle.  Rounds are
interleaved across processes and, inside a process, across rows, so that a slow phase of
the machine hits every row alike.  ``--threads N`` caps every pool at N threads (BLAS and
OpenMP through the environment and threadpoolctl, torch intra- and inter-op, XLA through
``XLA_FLAGS`` set before JAX starts) *and* pins each process to N cores with
``os.sched_setaffinity``, so that no library can use more.  The column "cpu/wall" is
the process's CPU time over the wall time of its timed steps: 1.00 means one core.

Timing: each implementation first runs 3 steps whose losses are compared with the
hand-written NumPy ones (column "loss rel.diff"), is warmed up, then its steps are timed
one by one with ``time.perf_counter``; the table reports the median and the interquartile
range.  On JAX, CuPy and CUDA every timed step ends by waiting for the device.  The load
average is printed before and after.

    python benchmarks/bench_step.py --threads 1           # everything, several minutes
    python benchmarks/bench_step.py --quick --threads 1   # a smoke run, under a minute
    python benchmarks/bench_step.py --backends numpy,torch:cpu --workloads B,w32
    python benchmarks/bench_step.py --backends torch:cuda,cupy --workloads b1,b16,b256,b4096
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import multiprocessing as mp
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

# Row names, in the order the tables print them.
FLOOR = "matmul floor"
NUMPY_HAND = "numpy by hand"
TORCH_HAND = "torch by hand"
AUTOGRAD = "torch autograd"
AUTOGRAD_FUSED = "autograd + fused SGD"
PP_EAGER = "portprop eager"
PP_WORKSPACES = "portprop workspaces"
PP_COMPILED = "portprop compiled"
ROW_ORDER = (
    FLOOR,
    NUMPY_HAND,
    TORCH_HAND,
    AUTOGRAD,
    AUTOGRAD_FUSED,
    PP_EAGER,
    PP_WORKSPACES,
    PP_COMPILED,
)
PORTPROP_ROWS = (PP_EAGER, PP_WORKSPACES, PP_COMPILED)


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

    def describe(self) -> str:
        layers = "-".join(map(str, self.sizes))
        return f"{layers}, batch {self.batch}, {self.activation}, {self.loss}, float32"


SCALING_WIDTHS = (32, 128, 512, 2048)
SCALING_BATCHES = (1, 16, 256, 4096)

WORKLOADS = {
    "A": Workload("A", (784, 512, 512, 10), 256, "relu", "cross_entropy"),
    "B": Workload("B", (2, 25, 25, 25, 2), 100, "tanh", "mse"),
    **{
        f"w{n}": Workload(f"w{n}", (784, n, n, 10), 256, "relu", "cross_entropy")
        for n in SCALING_WIDTHS
    },
    **{
        f"b{n}": Workload(f"b{n}", (784, 256, 256, 10), n, "relu", "cross_entropy")
        for n in SCALING_BATCHES
    },
}
QUICK_WORKLOADS = "A,B,w32,b16"


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


def build_portprop_model(w: Workload, backend: str) -> pp.Sequential:
    act = {"relu": pp.ReLU, "tanh": pp.Tanh}[w.activation]
    layers: list[pp.Module] = []
    for i, (n_in, n_out) in enumerate(zip(w.sizes[:-1], w.sizes[1:], strict=True)):
        if i:
            layers.append(act(backend=backend))
        layers.append(pp.Linear(n_in, n_out, backend=backend))
    return pp.Sequential(*layers)


# --------------------------------------------------------------------------------------
# Implementations: each is a step() returning the loss, and a sync() that waits for it
# --------------------------------------------------------------------------------------


def _no_sync() -> None:  # NumPy, torch CPU, array-api-strict: nothing to wait for
    return


@dataclass
class Runner:
    name: str
    step: Callable[[], Any]
    sync: Callable[[], None] = _no_sync
    to_float: Callable[[Any], float] = float
    note: str = ""
    samples: list[float] = field(default_factory=list)
    cpu: float = 0.0  # process CPU time over the timed steps
    wall: float = 0.0  # wall time over the same steps


def device_sync(backend: pp.Backend) -> tuple[Callable[[], None], str]:
    """A function that waits for the device of ``backend``, and a note saying so."""
    if backend.library == "torch" and backend.device.type == "cuda":
        import torch

        def sync() -> None:
            torch.cuda.synchronize(backend.device)

        return sync, "torch.cuda.synchronize each step"
    if backend.library == "cupy":
        device = backend.device

        def sync() -> None:
            device.synchronize()

        return sync, "cupy Device.synchronize each step"
    return _no_sync, ""


def portprop_runners(
    prob: Problem, name: str, only: tuple[str, ...] = PORTPROP_ROWS
) -> tuple[list[Runner], dict[str, str]]:
    """portprop eager, with workspaces and compiled (those of them in ``only``), each on a
    model of its own; and the reason for each that this checkout or backend cannot build."""
    w = prob.workload
    backend = pp.get_backend(backend=name)
    X = pp.asarray(prob.X, backend=backend)
    T = pp.asarray(prob.targets, backend=backend)
    runners: list[Runner] = []
    na: dict[str, str] = {}

    def setup() -> tuple[pp.Sequential, Any, Any]:
        model = build_portprop_model(w, name)
        state = {}
        for i, (W, b) in enumerate(prob.weights):
            state[f"{2 * i}.weight"], state[f"{2 * i}.bias"] = W, b
        model.load_state_dict(state)
        loss = pp.CrossEntropyLoss() if w.loss == "cross_entropy" else pp.MSELoss()
        return model, loss, pp.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)

    sync, note = device_sync(backend)
    if backend.library == "jax":
        import jax

    def to_float(v: Any) -> float:
        return float("nan") if v is None else float(backend.to_host(v))

    def eager(model: pp.Sequential, loss: Any, opt: Any) -> Callable[[], Any]:
        def step() -> Any:
            value = loss.forward(model.forward(X), T)
            model.zero_grad()
            model.backward(loss.backward(), input_grad=False)
            opt.step()
            return value

        return step

    def add(row: str, step: Callable[[], Any], params: list[Any], extra: str) -> None:
        row_sync = sync
        row_note = ", ".join(x for x in (extra, note) if x)
        if backend.library == "jax":

            def row_sync() -> None:
                jax.block_until_ready([p.data for p in params])

            row_note = ", ".join(x for x in (extra, "block_until_ready on the parameters") if x)
        runners.append(Runner(row, step, row_sync, to_float, row_note))

    has_workspaces = hasattr(pp.Module, "use_workspaces")
    # eager: the workspaces off where the API exists
    if PP_EAGER in only:
        model, loss, opt = setup()
        extra = "workspaces off"
        if has_workspaces:
            model.use_workspaces(False)
        else:
            extra = "no Module.use_workspaces in this checkout: the default model"
        add(PP_EAGER, eager(model, loss, opt), model.parameters(), extra)
    # workspaces on
    if PP_WORKSPACES not in only:
        pass
    elif not has_workspaces:
        na[PP_WORKSPACES] = "not available: portprop has no Module.use_workspaces"
    elif not getattr(backend, "has_workspaces", True):
        na[PP_WORKSPACES] = f"{backend.library} arrays cannot be written in place"
    else:
        model, loss, opt = setup()
        try:
            model.use_workspaces(True)
        except Exception as exc:  # noqa: BLE001 - a backend without workspaces says why
            na[PP_WORKSPACES] = f"{type(exc).__name__}: {exc}"
        else:
            add(PP_WORKSPACES, eager(model, loss, opt), model.parameters(), "")
    # compiled
    compile_step = getattr(pp, "compile_step", None)
    if PP_COMPILED not in only:
        pass
    elif compile_step is None:
        na[PP_COMPILED] = "not available: portprop has no compile_step"
    else:
        model, loss, opt = setup()
        try:  # raise, rather than run the eager step under the compiled row's name
            compiled = compile_step(model, loss, opt, fallback="raise")
        except Exception as exc:  # noqa: BLE001 - no compiler here, say why
            na[PP_COMPILED] = f"{type(exc).__name__}: {exc}"
        else:
            add(PP_COMPILED, lambda: compiled(X, T), model.parameters(), "")
    return runners, na


def numpy_hand_runner(prob: Problem) -> Runner:
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

    return Runner(NUMPY_HAND, step)


def _torch_device(name: str) -> Any:
    return pp.get_backend(backend=name).device


def torch_hand_runner(prob: Problem, name: str) -> Runner:
    """The step written by hand in torch, as a performance-minded person would: no
    autograd, every intermediate in a buffer allocated once, updates in place."""
    import torch

    dev = _torch_device(name)
    w = prob.workload
    n = prob.X.shape[0]
    relu = w.activation == "relu"
    params = [(torch.tensor(W, device=dev), torch.tensor(b, device=dev)) for W, b in prob.weights]
    vel = [(torch.zeros_like(W), torch.zeros_like(b)) for W, b in params]
    grads = [(torch.empty_like(W), torch.empty_like(b)) for W, b in params]
    X = torch.tensor(prob.X, device=dev)
    outs = [torch.empty((n, W.shape[0]), device=dev) for W, _ in params]  # S, then H in place
    kept = [torch.empty((n, W.shape[0]), device=dev, dtype=torch.bool) for W, _ in params]
    gouts = [torch.empty((n, W.shape[0]), device=dev) for W, _ in params]  # grad of S_i
    tmp = [torch.empty((n, W.shape[0]), device=dev) for W, _ in params]
    n_out = w.sizes[-1]
    onehot = torch.tensor((prob.labels[:, None] == np.arange(n_out)).astype(np.float32), device=dev)
    T = torch.tensor(prob.targets, device=dev) if w.loss == "mse" else onehot
    last = len(params) - 1

    @torch.no_grad()
    def step() -> Any:
        H = X
        for i, (W, b) in enumerate(params):
            S = outs[i]
            torch.addmm(b, H, W.t(), out=S)
            if i < last:
                if relu:
                    torch.gt(S, 0, out=kept[i])
                    S.relu_()
                else:
                    S.tanh_()
            H = S
        Z, G = outs[last], gouts[last]
        if w.loss == "cross_entropy":
            torch.log_softmax(Z, 1, out=tmp[last])
            loss = tmp[last].view(-1).dot(onehot.view(-1)).mul_(-1.0 / n)
            torch.exp(tmp[last], out=G)
            G.sub_(onehot).mul_(1.0 / n)
        else:
            torch.sub(Z, T, out=tmp[last])
            D = tmp[last].view(-1)
            loss = D.dot(D).mul_(1.0 / D.numel())
            torch.mul(tmp[last], 2.0 / D.numel(), out=G)
        for i in range(last, -1, -1):
            W, b = params[i]
            gW, gb = grads[i]
            torch.mm(G.t(), outs[i - 1] if i else X, out=gW)
            torch.sum(G, 0, out=gb)
            if i:
                Gp = gouts[i - 1]
                torch.mm(G, W, out=Gp)
                if relu:
                    Gp.mul_(kept[i - 1])
                else:
                    Hk = outs[i - 1]
                    torch.mul(Hk, Hk, out=tmp[i - 1]).neg_().add_(1.0)
                    Gp.mul_(tmp[i - 1])
                G = Gp
        flat = [t for pair in params for t in pair]
        v = [t for pair in vel for t in pair]
        g = [t for pair in grads for t in pair]
        torch._foreach_mul_(v, MOMENTUM)
        torch._foreach_add_(v, g)
        torch._foreach_add_(flat, v, alpha=-LR)
        return loss

    backend = pp.get_backend(backend=name)
    sync, note = device_sync(backend)
    return Runner(
        TORCH_HAND,
        step,
        sync,
        lambda v: float(v.item()),
        ", ".join(x for x in ("no_grad, out= buffers, _foreach_ SGD", note) if x),
    )


def torch_autograd_runner(prob: Problem, name: str, *, fused: bool) -> Runner:
    import torch
    from torch import nn

    dev = _torch_device(name)
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
    net = nn.Sequential(*layers).to(dev)
    X = torch.tensor(prob.X, device=dev)
    T = torch.tensor(prob.targets, device=dev)
    loss_fn = nn.CrossEntropyLoss() if w.loss == "cross_entropy" else nn.MSELoss()
    # fused=True raises here where this torch has no fused SGD for the device
    opt = torch.optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM, fused=True if fused else None)

    def step() -> Any:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(X), T)
        loss.backward()
        opt.step()
        return loss

    sync, note = device_sync(pp.get_backend(backend=name))
    return Runner(
        AUTOGRAD_FUSED if fused else AUTOGRAD, step, sync, lambda v: float(v.item()), note
    )


def _floor_layers(prob: Problem) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(input, W, grad of output) of each layer, random but of the step's shapes."""
    rng = np.random.default_rng(SEED + 1)
    n = prob.X.shape[0]
    layers = []
    H = prob.X
    for W, _ in prob.weights:
        G = rng.standard_normal((n, W.shape[0])).astype(np.float32)
        layers.append((H, W, G))
        H = rng.standard_normal((n, W.shape[0])).astype(np.float32)
    return layers


def floor_runner(prob: Problem, name: str) -> Runner:
    """Only the matrix products of one step: S = H @ W.T, G.T @ H, and G @ W except for
    the first layer, into preallocated outputs where the library has ``out=``."""
    host = _floor_layers(prob)
    backend = pp.get_backend(backend=name)
    lib = backend.library
    if lib == "jax":
        import jax

        arrays = [tuple(pp.asarray(a, backend=backend) for a in layer) for layer in host]

        @jax.jit
        def products(layers: list[tuple[Any, ...]]) -> list[Any]:
            out = [H @ W.T for H, W, _ in layers]
            for i in range(len(layers) - 1, -1, -1):
                H, W, G = layers[i]
                out.append(G.T @ H)
                if i:
                    out.append(G @ W)
            return out

        last: list[Any] = []

        def step() -> float:
            last[:] = products(arrays)
            return float("nan")

        def sync() -> None:
            jax.block_until_ready(last)

        return Runner(FLOOR, step, sync, note="under jax.jit, block_until_ready each step")
    if lib in ("numpy", "torch", "cupy"):
        if lib == "numpy":
            xp_mm: Any = np.matmul
            layers = host
        elif lib == "torch":
            import torch

            xp_mm = torch.mm
            layers = [tuple(torch.tensor(a, device=backend.device) for a in la) for la in host]
        else:
            import cupy

            xp_mm = cupy.matmul
            with backend.device:
                layers = [tuple(cupy.asarray(a) for a in la) for la in host]
        zeros = backend.xp.zeros
        dt, dev = backend.xp.float32, backend.device
        fwd = [zeros((H.shape[0], W.shape[0]), dtype=dt, device=dev) for H, W, _ in layers]
        gws = [zeros(W.shape, dtype=dt, device=dev) for _, W, _ in layers]
        gins = [zeros(H.shape, dtype=dt, device=dev) for H, _, _ in layers]

        def step() -> float:
            for i, (H, W, _) in enumerate(layers):
                xp_mm(H, W.T, out=fwd[i])
            for i in range(len(layers) - 1, -1, -1):
                H, W, G = layers[i]
                xp_mm(G.T, H, out=gws[i])
                if i:
                    xp_mm(G, W, out=gins[i])
            return float("nan")

        sync, note = device_sync(backend)
        return Runner(FLOOR, step, sync, note=", ".join(x for x in ("out= buffers", note) if x))
    # array-api-strict: the namespace's matmul, no out=
    xp = backend.xp
    layers_x = [tuple(pp.asarray(a, backend=backend) for a in la) for la in host]

    def step_x() -> float:
        for H, W, _ in layers_x:
            xp.matmul(H, xp.matrix_transpose(W))
        for i in range(len(layers_x) - 1, -1, -1):
            H, W, G = layers_x[i]
            xp.matmul(xp.matrix_transpose(G), H)
            if i:
                xp.matmul(G, W)
        return float("nan")

    return Runner(FLOOR, step_x)


def library_runners(
    prob: Problem, name: str, rows: tuple[str, ...] = ROW_ORDER
) -> tuple[list[Runner], dict[str, str]]:
    """The rows (of ``rows``) of the library of backend ``name``, and why the missing ones
    are missing."""
    lib = pp.get_backend(backend=name).library
    na: dict[str, str] = {}
    runners: list[Runner] = []
    builders: list[tuple[str, Callable[[], Runner]]] = [(FLOOR, lambda: floor_runner(prob, name))]
    if lib == "numpy":
        builders.append((NUMPY_HAND, lambda: numpy_hand_runner(prob)))
    if lib == "torch":
        builders += [
            (TORCH_HAND, lambda: torch_hand_runner(prob, name)),
            (AUTOGRAD, lambda: torch_autograd_runner(prob, name, fused=False)),
            (AUTOGRAD_FUSED, lambda: torch_autograd_runner(prob, name, fused=True)),
        ]
    for row, build in builders:
        if row not in rows:
            continue
        try:
            runners.append(build())
        except Exception as exc:  # noqa: BLE001 - report it and time the others
            na[row] = f"{type(exc).__name__}: {exc}"
    try:
        more, more_na = portprop_runners(prob, name, tuple(r for r in PORTPROP_ROWS if r in rows))
    except Exception as exc:  # noqa: BLE001
        more, more_na = [], {row: f"{type(exc).__name__}: {exc}" for row in PORTPROP_ROWS}
    return runners + more, {**na, **more_na}


# --------------------------------------------------------------------------------------
# Timing, inside a worker process
# --------------------------------------------------------------------------------------


def check_losses(
    runners: list[Runner], failed: dict[str, str], steps: int = 3
) -> dict[str, list[float]]:
    """The losses of the first ``steps`` steps of each runner (fresh: every one starts
    from the same weights).  A runner whose step raises is recorded in ``failed``."""
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
        losses[r.name] = values
    return losses


def warm_up(runners: list[Runner], steps: int, budget: float) -> None:
    """``steps`` untimed steps of each runner, or fewer (at least 2) past ``budget`` s."""
    for r in runners:
        deadline = time.perf_counter() + budget
        for i in range(steps):
            r.step()
            r.sync()
            if i >= 1 and time.perf_counter() > deadline:
                break


def time_round(runners: list[Runner], k: int, count: int, budget: float) -> None:
    """One round: up to ``count`` timed steps of each runner, in an order rotated by ``k``,
    each runner stopping after ``budget`` seconds (at least one step)."""
    perf, cpu = time.perf_counter, time.process_time
    order = runners[k % len(runners) :] + runners[: k % len(runners)]
    # One full collection now, and everything alive moved out of the collector's sight,
    # so that the collections the steps trigger cost what they cost in a training loop.
    gc.collect()
    gc.freeze()
    for r in order:
        step, sync, samples = r.step, r.sync, r.samples
        c0, w0 = cpu(), perf()
        deadline = w0 + budget
        for _ in range(count):
            t0 = perf()
            step()
            sync()
            t1 = perf()
            samples.append(t1 - t0)
            if t1 > deadline:
                break
        r.cpu += cpu() - c0
        r.wall += perf() - w0
    gc.unfreeze()


def _pin(threads: int) -> str:
    """Cap every pool of this process at ``threads`` and pin it to that many cores."""
    note = ""
    if hasattr(os, "sched_getaffinity"):
        cores = sorted(os.sched_getaffinity(0))[:threads]
        os.sched_setaffinity(0, cores)
        note = f"pinned to cores {cores}"
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        note += "; threadpoolctl missing: BLAS capped by the environment only"
    else:
        _LIMITS.append(threadpool_limits(limits=threads))
    return note


_LIMITS: list[Any] = []  # keeps the threadpoolctl limits alive


def worker_main(conn: Any, name: str, threads: int | None) -> None:
    """Serve one library in this process: build its rows, time rounds on request."""
    warnings.filterwarnings("ignore", message=".*int64.*", category=UserWarning)
    note = _pin(threads) if threads is not None else ""
    try:
        backend = pp.get_backend(backend=name)
        if backend.library == "torch":
            import torch

            if threads is not None:
                torch.set_num_threads(threads)
                torch.set_num_interop_threads(threads)
            note += f"; torch threads {torch.get_num_threads()}/{torch.get_num_interop_threads()}"
        if threads is not None:
            note = _pin(threads)  # again: the pools that importing the library opened
    except Exception as exc:  # noqa: BLE001 - the parent reports it
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", note.lstrip("; ")))
    runners: list[Runner] = []
    while True:
        msg = conn.recv()
        kind = msg[0]
        if kind == "setup":
            _, key, warmup, warmup_budget, wanted = msg
            runners = []
            gc.collect()
            prob = make_problem(WORKLOADS[key])
            runners, na = library_runners(prob, name, wanted)
            failed: dict[str, str] = {}
            losses = check_losses(runners, failed)
            runners = [r for r in runners if r.name not in failed]
            try:
                warm_up(runners, warmup, warmup_budget)
            except Exception as exc:  # noqa: BLE001
                conn.send(("error", f"warm-up: {type(exc).__name__}: {exc}"))
                runners = []
                continue
            info = {r.name: r.note for r in runners}
            conn.send(("ok", info, losses, na, failed))
        elif kind == "round":
            _, k, count, budget = msg
            for r in runners:
                r.samples, r.cpu, r.wall = [], 0.0, 0.0
            try:
                time_round(runners, k, count, budget)
            except Exception as exc:  # noqa: BLE001
                conn.send(("error", f"{type(exc).__name__}: {exc}"))
                continue
            conn.send(("ok", {r.name: (r.samples, r.cpu, r.wall) for r in runners}))
        else:  # "exit"
            conn.close()
            return


# --------------------------------------------------------------------------------------
# The parent: one worker per library, one at a time
# --------------------------------------------------------------------------------------


@dataclass
class Row:
    """What the parent knows of one row of one library on one workload."""

    library: str
    name: str
    samples: list[float] = field(default_factory=list)
    cpu: float = 0.0
    wall: float = 0.0
    note: str = ""
    loss_diff: float = float("nan")
    missing: str = ""  # "n/a (...)" or "FAILED ..."

    def median(self) -> float:
        return statistics.median(self.samples) if self.samples else float("nan")

    def iqr(self) -> float:
        if len(self.samples) < 2:
            return float("nan")
        q1, _, q3 = statistics.quantiles(self.samples, n=4, method="inclusive")
        return q3 - q1


class Worker:
    """A process that serves one library."""

    def __init__(self, name: str, threads: int | None) -> None:
        ctx = mp.get_context("spawn")
        self.name = name
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=worker_main, args=(child, name, threads), daemon=True)
        self.process.start()
        child.close()
        self.note = ""
        self.error = ""
        reply = self.ask(None, timeout=300)
        if reply[0] == "ready":
            self.note = reply[1]

    def ask(self, msg: tuple[Any, ...] | None, timeout: float = 3600) -> tuple[Any, ...]:
        if self.error:
            return ("error", self.error)
        try:
            if msg is not None:
                self.conn.send(msg)
            if not self.conn.poll(timeout):
                self.error = f"no answer within {timeout:.0f} s"
                self.process.kill()
                return ("error", self.error)
            reply: tuple[Any, ...] = self.conn.recv()
        except (EOFError, OSError) as exc:
            self.error = (
                f"the worker process died ({type(exc).__name__}; exit code {self.process.exitcode})"
            )
            return ("error", self.error)
        if reply[0] == "error" and msg is None:
            self.error = reply[1]
        return reply

    def close(self) -> None:
        if not self.error:
            with contextlib.suppress(OSError):
                self.conn.send(("exit",))
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()


def measure(
    workers: list[Worker], w: Workload, args: argparse.Namespace, ref: list[float]
) -> list[Row]:
    """Set up ``w`` in every worker, then time interleaved rounds, one worker at a time."""
    rows: dict[tuple[str, str], Row] = {}
    ready = []
    for wk in workers:
        wanted = args.rows
        if args.quick and not args.rows_given and wk.name.startswith("torch"):
            wanted = tuple(r for r in wanted if r != PP_COMPILED)
            rows[(wk.name, PP_COMPILED)] = Row(
                wk.name,
                PP_COMPILED,
                missing="n/a (left out by --quick: torch.compile takes longer than a smoke "
                "run; --rows includes it)",
            )
        reply = wk.ask(("setup", w.key, args.warmup, args.budget / 2, wanted))
        if reply[0] != "ok":
            rows[(wk.name, "*")] = Row(wk.name, "(all rows)", missing=f"FAILED {reply[1]}")
            continue
        _, info, losses, na, failed = reply
        for row_name, note in info.items():
            row = Row(wk.name, row_name, note=note)
            values = losses.get(row_name)
            if values and not np.isnan(values).any():
                v, r = np.asarray(values), np.asarray(ref)
                row.loss_diff = float(np.max(np.abs(v - r) / np.maximum(np.abs(r), 1e-30)))
            rows[(wk.name, row_name)] = row
        for row_name, reason in na.items():
            rows[(wk.name, row_name)] = Row(wk.name, row_name, missing=f"n/a ({reason})")
        for row_name, reason in failed.items():
            rows[(wk.name, row_name)] = Row(wk.name, row_name, missing=f"FAILED {reason}")
        ready.append(wk)
    per_round = max(1, args.repeats // args.rounds)
    round_budget = args.budget / args.rounds
    for k in range(args.rounds):
        for wk in ready[k % len(ready) :] + ready[: k % len(ready)] if ready else []:
            reply = wk.ask(("round", k, per_round, round_budget))
            if reply[0] != "ok":
                rows[(wk.name, "*")] = Row(wk.name, "(all rows)", missing=f"FAILED {reply[1]}")
                continue
            for row_name, (samples, cpu, wall) in reply[1].items():
                row = rows[(wk.name, row_name)]
                row.samples += samples
                row.cpu += cpu
                row.wall += wall
    order = {n: i for i, n in enumerate(ROW_ORDER)}
    names = [wk.name for wk in workers]
    return sorted(
        rows.values(), key=lambda r: (names.index(r.library), order.get(r.name, len(order)))
    )


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------


def _fmt_time(seconds: float) -> str:
    if np.isnan(seconds):
        return "-"
    if seconds >= 1e-2:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} us"


def _ratio(a: float, b: float) -> str:
    return "-" if np.isnan(a) or np.isnan(b) or b <= 0 else f"{a / b:.2f}x"


def floors(rows: list[Row]) -> dict[str, float]:
    return {r.library: r.median() for r in rows if r.name == FLOOR and r.samples}


def numpy_hand(rows: list[Row]) -> float:
    return next((r.median() for r in rows if r.name == NUMPY_HAND and r.samples), float("nan"))


def table(w: Workload, rows: list[Row]) -> str:
    fl, hand = floors(rows), numpy_hand(rows)
    lib_w = max([len("library"), *(len(r.library) for r in rows)])
    name_w = max(len(n) for n in ROW_ORDER)
    head = (
        f"{'library':<{lib_w}}  {'implementation':<{name_w}}  {'steps':>5}  {'median':>10}  "
        f"{'IQR':>10}  {'x floor':>7}  {'x np hand':>9}  {'cpu/wall':>8}  {'loss rel.diff':>13}"
    )
    lines = [f"Workload {w.key}: {w.describe()}", head, "-" * len(head)]
    for r in rows:
        if r.missing:
            lines.append(f"{r.library:<{lib_w}}  {r.name:<{name_w}}  {r.missing}")
            continue
        med = r.median()
        cpu = f"{r.cpu / r.wall:.2f}" if r.wall > 0 else "-"
        diff = "-" if np.isnan(r.loss_diff) else f"{r.loss_diff:.1e}"
        lines.append(
            f"{r.library:<{lib_w}}  {r.name:<{name_w}}  {len(r.samples):>5}  "
            f"{_fmt_time(med):>10}  {_fmt_time(r.iqr()):>10}  "
            f"{_ratio(med, fl.get(r.library, float('nan'))):>7}  {_ratio(med, hand):>9}  "
            f"{cpu:>8}  {diff:>13}"
        )
    notes = [f"  {r.library} {r.name}: {r.note}" for r in rows if r.note and not r.missing]
    if notes:
        lines += ["notes:", *notes]
    return "\n".join(lines)


def summary(results: dict[str, list[Row]]) -> str:
    """Every workload side by side: ratio to the library's own floor, and the median."""
    keys = list(results)
    seen: list[tuple[str, str]] = []
    cells: dict[tuple[str, str, str], str] = {}
    for key, rows in results.items():
        fl = floors(rows)
        for r in rows:
            ident = (r.library, r.name)
            if ident not in seen and r.name != "(all rows)":
                seen.append(ident)
            if r.missing:
                cells[(*ident, key)] = "n/a" if r.missing.startswith("n/a") else "FAILED"
            elif r.name == FLOOR:
                cells[(*ident, key)] = _fmt_time(r.median())
            else:
                cells[(*ident, key)] = (
                    f"{_ratio(r.median(), fl.get(r.library, float('nan')))} {_fmt_time(r.median())}"
                )
    label_w = max(len(f"{lib} {name}") for lib, name in seen) if seen else 10
    cell_w = max([14, *(len(c) for c in cells.values())])
    head = f"{'':<{label_w}}" + "".join(f"  {k:>{cell_w}}" for k in keys)
    lines = [
        "Summary: x own library's floor, and median per step (the floor row: its median)",
        head,
        "-" * len(head),
    ]
    for lib, name in seen:
        line = f"{lib + ' ' + name:<{label_w}}"
        line += "".join(f"  {cells.get((lib, name, k), ''):>{cell_w}}" for k in keys)
        lines.append(line)
    return "\n".join(lines)


def _best_portprop(rows: list[Row], lib: str) -> tuple[float, str]:
    """The fastest portprop row of one library (the one a user would pick), and its name."""
    timed = [(r.median(), r.name) for r in rows if r.library == lib and r.name in PORTPROP_ROWS]
    timed = [t for t in timed if not np.isnan(t[0])]
    return min(timed) if timed else (float("nan"), "")


def _get(rows: list[Row], lib: str, name: str) -> float:
    return next(
        (r.median() for r in rows if r.library == lib and r.name == name and r.samples),
        float("nan"),
    )


def targets_report(results: dict[str, list[Row]]) -> str:
    """The targets of issue 13 that this run measured, each with its verdict."""
    lines = ["Targets (issue 13; portprop = its fastest row of that library):"]

    def check(label: str, value: float, ref: float, limit: float, what: str) -> None:
        if np.isnan(value) or np.isnan(ref):
            return
        ratio = value / ref
        verdict = "met" if ratio <= limit else "NOT met"
        lines.append(f"  {label}: {ratio:.3f}x {what} (target <= {limit:.2f}x) -> {verdict}")

    big = {"A", "w512", "w2048", "b256", "b4096"}
    for key, rows in results.items():
        fl = floors(rows)
        hand = numpy_hand(rows)
        pp_np, n_np = _best_portprop(rows, "numpy")
        if key == "B":
            check(f"B numpy ({n_np})", pp_np, hand, 0.90, "numpy by hand")
        if key in big:
            check(f"{key} numpy ({n_np})", pp_np, hand, 1.00, "numpy by hand")
            check(
                f"{key} numpy ({n_np})", pp_np, fl.get("numpy", float("nan")), 1.18, "numpy floor"
            )
        if key in ("w32", "b16"):
            check(f"{key} numpy ({n_np})", pp_np, hand, 0.90, "numpy by hand")
        for lib in sorted({r.library for r in rows if r.library.startswith("torch")}):
            pp_t, n_t = _best_portprop(rows, lib)
            fused, plain = _get(rows, lib, AUTOGRAD_FUSED), _get(rows, lib, AUTOGRAD)
            gpu = lib != "torch:cpu"
            if key == "B" and not gpu:
                check(f"B {lib} ({n_t})", pp_t, fused, 0.40, "autograd + fused SGD")
                check(f"B {lib} ({n_t})", pp_t, plain, 0.35, "torch autograd")
            if key in ("A", "w2048", "b4096") and not gpu:
                check(f"{key} {lib} ({n_t})", pp_t, fl.get(lib, float("nan")), 1.10, "torch floor")
            if key.startswith(("w", "b")) and key != "B":
                check(f"{key} {lib} ({n_t})", pp_t, fused, 1.00, "autograd + fused SGD")
                if gpu:
                    check(f"{key} {lib} ({n_t})", pp_t, plain, 1.00, "torch autograd")
            if key in ("w32", "b16") and not gpu:
                check(f"{key} {lib} ({n_t})", pp_t, hand, 0.90, "numpy by hand")
            if gpu and key == "b4096":
                check(f"b4096 {lib} ({n_t})", pp_t, fl.get(lib, float("nan")), 1.20, "floor")
        for lib in sorted({r.library for r in rows if r.library.startswith("cupy")}):
            pp_c, n_c = _best_portprop(rows, lib)
            if key == "b4096":
                check(f"b4096 {lib} ({n_c})", pp_c, fl.get(lib, float("nan")), 1.20, "floor")
        jax_c = _get(rows, "jax", PP_COMPILED)
        if key == "A":
            check("A jax compiled", jax_c, fl.get("numpy", float("nan")), 1.00, "numpy floor")
        if key == "B":
            check("B jax compiled", jax_c, hand, 1.50, "numpy by hand")
    if len(lines) == 1:
        lines.append("  (none measured: run more libraries or workloads)")
    return "\n".join(lines)


def header() -> str:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    lines = [
        f"python {sys.version.split()[0]} on {platform.platform()}",
        f"cpu: {_cpu_model()}; os.cpu_count()={os.cpu_count()}, usable cores={usable}",
        f"portprop {pp.__version__} ({Path(pp.__file__).parent}; {_git_state()})",
        f"numpy {np.__version__}",
    ]
    lines += [
        f"{dist} {_version(dist)}"
        for dist in ("torch", "jax", "cupy", "array-api-strict", "array-api-compat")
    ]
    env = ", ".join(f"{k}={os.environ[k]!r}" if k in os.environ else f"{k} unset" for k in ENV_VARS)
    lines.append(f"env: {env}")
    features = [
        f"Module.use_workspaces {'yes' if hasattr(pp.Module, 'use_workspaces') else 'no'}",
        f"compile_step {'yes' if hasattr(pp, 'compile_step') else 'no'}",
    ]
    lines.append(f"portprop features: {', '.join(features)}")
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
    for candidate in (dist, f"{dist}-cuda12x", f"{dist}-cuda11x"):
        try:
            return version(candidate)
        except PackageNotFoundError:  # noqa: PERF203 - a handful of names
            continue
    return "not installed"


def _load() -> str:
    try:
        return ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def limit_threads(n: int) -> None:
    """Cap the BLAS and OpenMP pools and torch's pool of *this* process at ``n`` threads
    (for scripts that time in-process, such as profile_step.py)."""
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


def thread_env(n: int) -> None:
    """Set the environment that caps every library's pool at ``n`` threads, read when a
    worker process starts (before it imports any array library)."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)
    if "XLA_FLAGS" not in os.environ:
        eigen = "true" if n > 1 else "false"
        os.environ["XLA_FLAGS"] = (
            f"--xla_cpu_multi_thread_eigen={eigen} intra_op_parallelism_threads={n}"
        )


def _cpu_model() -> str:
    try:
        with Path("/proc/cpuinfo").open(encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


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
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help=f"a smoke run: workloads {QUICK_WORKLOADS}, short"
    )
    parser.add_argument("--repeats", type=int, help="most timed steps per row (default 2000)")
    parser.add_argument(
        "--budget",
        type=float,
        help="seconds of timed steps per row and workload (default 2, 0.1 with --quick)",
    )
    parser.add_argument("--warmup", type=int, help="untimed steps first (default 20, 3 quick)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 10, 3 quick)")
    parser.add_argument(
        "--backends",
        help="comma-separated portprop backends, one process each (default: every "
        "available one), e.g. numpy,torch:cpu,jax,array_api_strict,torch:cuda,cupy:0",
    )
    parser.add_argument(
        "--workloads",
        help=f"comma-separated, of {', '.join(WORKLOADS)}; 'all' for every one "
        f"(default all, {QUICK_WORKLOADS} with --quick)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="cap every library's pools at this many threads and pin each process to "
        "that many cores (default: leave every library as it starts)",
    )
    parser.add_argument(
        "--rows",
        help=f"comma-separated rows to time (default all): {', '.join(ROW_ORDER)}; "
        "the floor is always timed",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the raw medians here")
    args = parser.parse_args(argv)
    args.rows_given = bool(args.rows)
    if args.rows:
        wanted = [r.strip() for r in args.rows.split(",") if r.strip()]
        unknown_rows = [r for r in wanted if r not in ROW_ORDER]
        if unknown_rows:
            parser.error(f"--rows takes {', '.join(ROW_ORDER)}; got {unknown_rows}")
        args.rows = tuple(r for r in ROW_ORDER if r in wanted or r == FLOOR)
    else:
        args.rows = ROW_ORDER
    quick = args.quick
    args.repeats = args.repeats if args.repeats is not None else (200 if quick else 2000)
    args.budget = args.budget if args.budget is not None else (0.1 if quick else 2.0)
    args.warmup = args.warmup if args.warmup is not None else (3 if quick else 20)
    args.rounds = args.rounds if args.rounds is not None else (3 if quick else 10)
    if args.workloads in (None, "all"):
        args.workloads = (
            QUICK_WORKLOADS if quick and args.workloads is None else ",".join(WORKLOADS)
        )
    for opt, low in (("repeats", 1), ("warmup", 2), ("rounds", 1), ("threads", 1)):
        value = getattr(args, opt)
        if value is not None and value < low:
            parser.error(f"--{opt} must be at least {low}, got {value}")
    if args.budget <= 0:
        parser.error(f"--budget must be positive, got {args.budget}")
    unknown = [k for k in args.workloads.split(",") if k not in WORKLOADS]
    if unknown:
        parser.error(f"--workloads takes {', '.join(WORKLOADS)} or all, got {unknown}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    load_before = _load()
    if args.threads is not None:
        thread_env(args.threads)
    if args.backends:
        names = [b.strip() for b in args.backends.split(",") if b.strip()]
        skipped: list[str] = []
    else:
        names, skipped = available_backends()  # imports every library portprop can use
    print(header())
    print(f"load average before: {load_before}")
    print(
        f"threads: {args.threads if args.threads is not None else 'as each library starts'}; "
        f"budget {args.budget} s per row and workload in {args.rounds} rounds, "
        f"warm-up {args.warmup} steps"
    )
    workers = []
    for name in names:
        wk = Worker(name, args.threads)
        if wk.error:
            skipped.append(f"{name}: {wk.error}")
            wk.close()
            continue
        print(f"process for {name}: pid {wk.process.pid}{', ' + wk.note if wk.note else ''}")
        workers.append(wk)
    for line in skipped:
        print(f"  skipped {line}")
    print()

    results: dict[str, list[Row]] = {}
    try:
        for key in args.workloads.split(","):
            w = WORKLOADS[key]
            ref_runner = numpy_hand_runner(make_problem(w))
            ref = [float(ref_runner.step()) for _ in range(3)]
            rows = measure(workers, w, args, ref)
            results[key] = rows
            print(table(w, rows))
            print(flush=True)
    finally:
        for wk in workers:
            wk.close()
    print(summary(results))
    print()
    shares = [r.cpu / r.wall for rows in results.values() for r in rows if r.wall > 0]
    if shares and statistics.median(shares) < 0.8:
        print(
            f"WARNING: the timed processes got {statistics.median(shares):.2f} of a core "
            "(median cpu/wall): other processes competed for the cores, so the times are "
            "inflated and noisy; rerun on an idle machine.\n"
        )
    print(targets_report(results))
    print(
        "\nx floor: median over that of the same library's 'matmul floor'; x np hand: over "
        "'numpy by hand' (below 1 is faster).\ncpu/wall: process CPU time over wall time "
        "of the timed steps (1.00: one core busy).\nloss rel.diff: largest relative "
        "difference of the loss to 'numpy by hand' over the first 3 steps."
    )
    print(f"load average before: {load_before}")
    print(f"load average after:  {_load()} (1, 5, 15 min)")
    print(f"total wall time {time.perf_counter() - start:.1f} s")
    if args.json:
        out = {
            "header": header(),
            "threads": args.threads,
            "load_before": load_before,
            "load_after": _load(),
            "median_seconds": {
                key: {f"{r.library} {r.name}": r.median() for r in rows if r.samples}
                for key, rows in results.items()
            },
        }
        with Path(args.json).open("w", encoding="utf-8") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
