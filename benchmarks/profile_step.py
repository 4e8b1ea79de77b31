"""Where does portprop's time go on the small, Python-bound workload B?

Three views of one training step (forward, loss, backward, SGD with momentum):

1. phases: the step cut into its six calls, timed with ``time.perf_counter`` (median
   over many steps), next to the same phases of the hand-written NumPy step;
2. ablations: each public call against the private call or the plain expression under
   it, so that the difference is the cost of one layer of portprop (argument checks,
   backend lookup, dispatch), in microseconds without profiler overhead (the best of
   several ``timeit`` repeats, which a busy machine disturbs least);
3. cProfile: the functions of one step by own time (``tottime``) and call count.
   cProfile inflates every Python call, so read its times as shares, not as microseconds.

    python benchmarks/profile_step.py                    # numpy and torch:cpu
    python benchmarks/profile_step.py --backends numpy --no-cprofile
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

import bench_step as bs

import portprop as pp
from portprop import functional as F

MU, LR = bs.MOMENTUM, bs.LR


def best_us(fn: Callable[[], Any], number: int = 300, repeat: int = 15) -> float:
    """The best of ``repeat`` means over ``number`` calls, in microseconds."""
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


class Setup:
    """A portprop model, loss and optimizer on one backend, trained a few steps so that
    every buffer exists."""

    def __init__(self, prob: bs.Problem, name: str) -> None:
        self.backend = pp.get_backend(backend=name)
        self.model = bs.build_portprop_model(prob.workload, name)
        state = {}
        for i, (W, b) in enumerate(prob.weights):
            state[f"{2 * i}.weight"], state[f"{2 * i}.bias"] = W, b
        self.model.load_state_dict(state)
        self.X = pp.asarray(prob.X, backend=self.backend)
        self.T = pp.asarray(prob.targets, backend=self.backend)
        ce = prob.workload.loss == "cross_entropy"
        self.loss = pp.CrossEntropyLoss() if ce else pp.MSELoss()
        self.params = self.model.parameters()
        self.opt = pp.SGD(self.params, lr=LR, momentum=MU)
        for _ in range(30):
            self.step()

    def step(self) -> None:
        self.loss.forward(self.model.forward(self.X), self.T)
        self.model.zero_grad()
        self.model.backward(self.loss.backward(), input_grad=False)
        self.opt.step()


PHASES = (
    "model.forward",
    "loss.forward",
    "model.zero_grad",
    "loss.backward",
    "model.backward",
    "opt.step",
)


def phases(s: Setup, prob: bs.Problem, steps: int) -> list[str]:
    times: dict[str, list[float]] = {k: [] for k in PHASES}
    pc = time.perf_counter
    model, loss, opt, X, T = s.model, s.loss, s.opt, s.X, s.T
    for i in range(steps + 20):
        t0 = pc()
        out = model.forward(X)
        t1 = pc()
        loss.forward(out, T)
        t2 = pc()
        model.zero_grad()
        t3 = pc()
        g = loss.backward()
        t4 = pc()
        model.backward(g, input_grad=False)
        t5 = pc()
        opt.step()
        t6 = pc()
        if i >= 20:
            for k, a, b in zip(
                PHASES, (t0, t1, t2, t3, t4, t5), (t1, t2, t3, t4, t5, t6), strict=True
            ):
                times[k].append(b - a)
    hand = hand_phases(prob, steps)
    scale, unit = (1e3, "ms") if prob.workload.key == "A" else (1e6, "us")
    lines = [f"{'phase':<16} {'portprop ' + unit:>12} {'numpy by hand ' + unit:>17}"]
    total = 0.0
    for k in PHASES:
        med = statistics.median(times[k])
        total += med
        by_hand = f"{hand[k] * scale:.3f}" if k in hand else "(in loss.forward)"
        if k == "model.zero_grad":
            by_hand = "-"
        lines.append(f"{k:<16} {med * scale:>12.3f} {by_hand:>17}")
    lines.append(f"{'sum of medians':<16} {total * scale:>12.3f} {hand['sum'] * scale:>17.3f}")
    return lines


def hand_phases(prob: bs.Problem, steps: int) -> dict[str, float]:
    """The hand-written NumPy step of bench_step, cut at the same places (the gradient
    of the loss is computed in ``loss.forward``; median seconds)."""
    w = prob.workload
    X, y, T = prob.X, prob.labels, prob.targets
    params = [(W.copy(), b.copy()) for W, b in prob.weights]
    vel = [(np.zeros_like(W), np.zeros_like(b)) for W, b in params]
    last, n, rows = len(params) - 1, X.shape[0], np.arange(X.shape[0])
    relu = w.activation == "relu"
    keys = ("model.forward", "loss.forward", "model.backward", "opt.step")
    times: dict[str, list[float]] = {k: [] for k in keys}
    pc = time.perf_counter
    for it in range(steps + 20):
        t0 = pc()
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
        t1 = pc()
        if w.loss == "cross_entropy":
            m = H.max(axis=1, keepdims=True)
            E = np.exp(H - m)
            ssum = E.sum(axis=1, keepdims=True)
            np.mean(np.log(ssum[:, 0]) + m[:, 0] - H[rows, y])
            G = E / ssum
            G[rows, y] -= 1.0
            G /= n
        else:
            D = H - T
            np.mean(D * D)
            G = D * (2.0 / D.size)
        t2 = pc()
        grads = []
        for i in range(last, -1, -1):
            W, _ = params[i]
            grads.append((G.T @ inputs[i], G.sum(axis=0)))
            if i:
                G = G @ W
                G *= kept[i - 1] if relu else 1.0 - kept[i - 1] * kept[i - 1]
        t3 = pc()
        for i, (gW, gb) in enumerate(reversed(grads)):
            (W, b), (vW, vb) = params[i], vel[i]
            vW *= MU
            vW += gW
            W -= LR * vW
            vb *= MU
            vb += gb
            b -= LR * vb
        t4 = pc()
        if it >= 20:
            for k, a, b in zip(keys, (t0, t1, t2, t3), (t1, t2, t3, t4), strict=True):
                times[k].append(b - a)
    out = {k: statistics.median(v) for k, v in times.items()}
    out["sum"] = sum(out.values())
    return out


def ablations(s: Setup, prob: bs.Problem) -> list[str]:
    """Public call vs what it wraps, or the same formula as NumPy or torch code would write
    it; every pair is timed back to back."""
    b, xp, model, loss, opt = s.backend, s.backend.xp, s.model, s.loss, s.opt
    X, T = s.X, s.T
    out = model.forward(X)
    loss.forward(out, T)
    g = loss.backward()
    lin = model.layers[-1]
    act = model.layers[-2]
    kept = act._kept  # the tanh output or the ReLU mask of the last hidden layer
    H = lin._X  # the input of the last layer
    W = lin.weight.data
    big = max(
        range(len(s.params)),
        key=lambda i: (
            s.params[i].data.shape[0]
            * (s.params[i].data.shape[1] if s.params[i].data.ndim == 2 else 1)
        ),
    )
    p, st = s.params[big], opt.state[big]
    # private names: a pair whose internals moved prints "n/a" below instead of failing
    v, scratch, gW = st.get("momentum_buffer"), st.get("scratch"), p.grad
    relu = prob.workload.activation == "relu"
    fmask = xp.astype(kept, H.dtype) if relu else None

    def hand_sgd() -> None:
        for q, sq in zip(s.params, opt.state, strict=True):
            vb = sq["momentum_buffer"]
            vb *= MU
            vb += q.grad
            q.data -= LR * vb

    def zero() -> None:
        for q in s.params:
            q.grad = None

    pairs: list[tuple[str, Callable[[], Any], str, Callable[[], Any]]] = [
        (
            "model.forward(X)",
            lambda: model.forward(X),
            "model._forward(X)",
            lambda: model._forward(X),
        ),
        (
            "loss.forward(out, T)",
            lambda: loss.forward(out, T),
            "loss._forward(xp, out, T)",
            lambda: loss._forward(xp, out, T),
        ),
        (
            "  backend_of(out, T)",
            lambda: pp.backend_of(out, T, names=("pred", "target")),
            "  backend.owns(out)",
            lambda: b.owns(out),
        ),
        (
            "  xp.isdtype(dtype, 'real floating')",
            lambda: xp.isdtype(out.dtype, "real floating"),
            "  out.dtype == model.dtype",
            lambda: out.dtype == model.dtype,
        ),
        ("model.zero_grad()", model.zero_grad, "opt.zero_grad()", opt.zero_grad),
        ("  model.parameters()", model.parameters, "  loop p.grad = None", zero),
        (
            "model.backward(g, input_grad=False)",
            lambda: model.backward(g, input_grad=False),
            "model._backward(g, False)",
            lambda: model._backward(g, False),
        ),
        (
            "  Linear._backward (last layer)",
            lambda: lin._backward(g, True),
            "  G.T@X; xp.sum(G, 0); G@W",
            lambda: (g.T @ H, xp.sum(g, axis=0), g @ W),
        ),
        (
            "  F.bias_gradient(backend.sum, G)",
            lambda: F.bias_gradient(b.sum, g),
            "  G.sum(axis=0) (method)",
            lambda: g.sum(axis=0),
        ),
    ]
    if relu:
        pairs += [
            (
                "  F.relu(xp, S) [xp.where]",
                lambda: F.relu(xp, H),
                "  m = S > 0; S * float(m)",
                lambda: _relu_mul(xp, H),
            ),
            (
                "  F.relu_backward(G@W) [xp.where]",
                lambda: F.relu_backward(xp, g @ W, kept),
                "  G@W * float_mask",
                lambda: (g @ W) * fmask,
            ),
        ]
    else:
        pairs.append(
            (
                "  F.tanh_backward(G@W, Y)",
                lambda: F.tanh_backward(g @ W, kept),
                "  G = G@W; G *= 1 - Y*Y",
                lambda: _tanh_inplace(g @ W, kept),
            ),
        )
    pairs += [
        ("opt.step()", opt.step, f"SGD by hand ({len(s.params)} params)", hand_sgd),
        (
            "  opt._backend_and_scratch(p, st)",
            lambda: opt._backend_and_scratch(p, st),
            "  (nothing)",
            lambda: None,
        ),
        (
            "  backend.add_scaled(v, 1.0, g, s)",
            lambda: b.add_scaled(v, 1.0, gW, scratch),
            "  v += g",
            lambda: _iadd(v, gW),
        ),
        (
            "  backend.add_scaled(w, -lr, v, s)",
            lambda: b.add_scaled(p.data, -LR, v, scratch),
            "  w -= lr * v",
            lambda: _isub_scaled(p.data, v),
        ),
    ]
    number = 20 if prob.workload.key == "A" else 300
    width = max(len(a) for a, *_ in pairs)
    width2 = max(len(c) for _, _, c, _ in pairs)
    title = f"{'portprop call':<{width}} {'us':>8}   {'what it wraps / by hand':<{width2}} "
    lines = [f"{title}{'us':>8} {'diff':>8}"]
    for name_a, fa, name_b, fb in pairs:
        try:
            ta, tb = best_us(fa, number=number), best_us(fb, number=number)
        except Exception as exc:  # noqa: BLE001 - internals renamed since: say so, go on
            lines.append(f"{name_a:<{width}} n/a ({type(exc).__name__}: {exc})")
            continue
        lines.append(
            f"{name_a:<{width}} {ta:>8.2f}   {name_b:<{width2}} {tb:>8.2f} {ta - tb:>8.2f}"
        )
    lines.append(f"(SGD rows: the largest parameter, shape {tuple(p.data.shape)})")
    return lines


def _relu_mul(xp: Any, S: Any) -> Any:
    mask = xp.astype(S > 0, S.dtype)
    return S * mask, mask


def _tanh_inplace(G: Any, Y: Any) -> Any:
    G *= 1.0 - Y * Y
    return G


def _iadd(v: Any, g: Any) -> Any:
    v += g
    return v


def _isub_scaled(w: Any, v: Any) -> Any:
    w -= LR * v
    return w


def profile(s: Setup, steps: int, top: int) -> list[str]:
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(steps):
        s.step()
    prof.disable()
    stats = pstats.Stats(prof)
    rows = []
    for (path, line, fn), (_, ncalls, tt, ct, _) in stats.stats.items():  # type: ignore[attr-defined]
        short = path.split("site-packages/")[-1].split("src/")[-1]
        rows.append((tt / steps * 1e6, ct / steps * 1e6, ncalls / steps, f"{short}:{line}({fn})"))
    rows.sort(reverse=True)
    total = sum(r[0] for r in rows)
    lines = [
        f"profiled step: {total:.0f} us (inflated by cProfile)",
        f"{'tottime us':>10} {'share':>6} {'cumtime us':>10} {'calls':>6}  function",
    ]
    for tt, ct, n, name in rows[:top]:
        lines.append(f"{tt:>10.1f} {tt / total:>6.1%} {ct:>10.1f} {n:>6.1f}  {name}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="numpy,torch:cpu")
    parser.add_argument("--workload", choices=sorted(bs.WORKLOADS), default="B")
    parser.add_argument("--steps", type=int, help="timed steps (default: A 100, B 2000)")
    parser.add_argument("--threads", type=int, help="as in bench_step.py")
    parser.add_argument("--top", type=int, default=30, help="rows of the cProfile table")
    parser.add_argument("--no-cprofile", action="store_true")
    args = parser.parse_args(argv)
    prob = bs.make_problem(bs.WORKLOADS[args.workload])
    steps = args.steps or (100 if args.workload == "A" else 2000)
    bs.available_backends()
    if args.threads is not None:
        bs.limit_threads(args.threads)
    print(bs.header())
    print(f"load average: {bs._load()}")
    for name in args.backends.split(","):
        s = Setup(prob, name.strip())
        w = prob.workload
        print(f"\n=== portprop/{s.backend.name}, workload {w.key} ({w.describe()}) ===")
        print("\n".join(phases(s, prob, steps)))
        print()
        print("\n".join(ablations(s, prob)))
        if not args.no_cprofile:
            print()
            print("\n".join(profile(s, steps, args.top)))
    print(f"load average: {bs._load()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
