"""Step time of each precision (issue 12): float32, bfloat16 and float16 with float32
master weights (:class:`portprop.MixedPrecision`).

Workload A: layers 784-512-512-10, ReLU, cross-entropy, batch 256, Adam.  One step is
forward, loss, backward, optimizer step (and, in low precision, the casts and the loss
scaling).  Prints a table: the median of ``--repeats`` timings of ``--steps`` steps each,
after ``--warmup`` steps.

    python benchmarks/bench_precision.py --backend torch            # CPU
    python benchmarks/bench_precision.py --backend torch:cuda       # the GPU
    python benchmarks/bench_precision.py --backend numpy --precisions fp32 fp16
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

import numpy as np

import portprop as pp

SIZES = (784, 512, 512, 10)
BATCH = 256


def _sync(backend: pp.Backend, x: object) -> None:
    """Wait for the device (reading one value back does, on every library)."""
    backend.to_host(backend.xp.astype(x, backend.float_dtype()))


def time_precision(
    backend: pp.Backend, precision: str, steps: int, warmup: int, repeats: int
) -> float:
    """The median seconds per step of ``precision``."""
    pp.manual_seed(0)
    layers: list[pp.Module] = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(SIZES)):
        layers.append(pp.Linear(n_in, n_out, backend=backend))
        if i < len(SIZES) - 2:
            layers.append(pp.ReLU())
    model = pp.Sequential(*layers)
    optimizer = pp.Adam(model.parameters(), lr=1e-3)
    loss = pp.CrossEntropyLoss()
    mp = pp.MixedPrecision(model, precision)
    rng = np.random.default_rng(0)
    X = backend.asarray(rng.random((BATCH, SIZES[0]), dtype=np.float32))
    y = backend.asarray(rng.integers(0, SIZES[-1], BATCH).astype(np.int64))

    def step() -> None:
        out = mp.forward(X)
        loss.forward(out, y)
        model.zero_grad()
        mp.backward(loss.backward())
        mp.step(optimizer)

    with backend.scope():
        for _ in range(warmup):
            step()
        _sync(backend, model.parameters()[0].data)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(steps):
                step()
            _sync(backend, model.parameters()[0].data)
            times.append((time.perf_counter() - start) / steps)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16", "fp16"])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    backend = pp.get_backend(backend=args.backend)
    print(f"workload A {'-'.join(map(str, SIZES))}, batch {BATCH}, Adam, on {backend.name}")
    print(f"{'precision':<10} {'ms/step':>10} {'vs fp32':>8}")
    base = None
    for precision in args.precisions:
        seconds = time_precision(backend, precision, args.steps, args.warmup, args.repeats)
        base = seconds if precision == "fp32" else base
        ratio = f"{seconds / base:.2f}x" if base else "-"
        print(f"{precision:<10} {seconds * 1e3:>10.2f} {ratio:>8}", flush=True)


if __name__ == "__main__":
    main()
