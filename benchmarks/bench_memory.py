"""Memory of one training step: portprop against the hand-written NumPy step and torch autograd.

Workload: layers 784-2048-2048-10, batch 4096, ReLU, cross-entropy, float32, SGD with
momentum 0.9 (the step of ``bench_step.py``).  Each row runs in a fresh process, which
warms its libraries up on a tiny model, makes the data, reads the *base*, builds its
model and optimizer, then runs ``--steps`` steps.  Of the last step it reports, in MB
above the base:

peak during a step   the resident set's high-water mark over the step (Linux
                     ``VmHWM``, reset before the step through ``/proc/self/clear_refs``)
kept between steps   the resident set after the step, once garbage is collected

The base holds the data and the initial weights on the host; each row's copy of the
parameters (on its device), its momentum buffers and whatever else it keeps between steps
count as kept (parameters and momentum alone are 45 MB here).  The processes run with ``MALLOC_MMAP_THRESHOLD_`` fixed at 128 KiB, so that the C allocator
hands a freed array back to the system at once and the resident set follows the live
arrays (glibc otherwise raises the threshold and keeps freed arrays mapped).  On CUDA
(``--device cuda``) the torch rows read ``torch.cuda.max_memory_allocated`` and
``torch.cuda.memory_allocated`` instead.

    python benchmarks/bench_memory.py               # about a minute on 2 cores
    python benchmarks/bench_memory.py --quick       # batch 512: a smoke run
    python benchmarks/bench_memory.py --device cuda --rows "portprop/torch,torch autograd"
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import bench_step as bs

import portprop as pp

SIZES = (784, 2048, 2048, 10)
ROWS = (
    "numpy by hand",
    "portprop/numpy",
    "portprop/numpy eager",
    "torch autograd",
    "autograd + fused SGD",
    "portprop/torch",
    "portprop/torch eager",
)
MB = 1024 * 1024


def _status(field: str) -> int:
    """A ``kB`` field of /proc/self/status, in bytes."""
    with Path("/proc/self/status").open(encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    msg = f"/proc/self/status has no {field} line"
    raise RuntimeError(msg)


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5", encoding="ascii")


class HostMeter:
    """Resident set size of this process, with a resettable high-water mark."""

    def current(self) -> int:
        gc.collect()
        return _status("VmRSS")

    def reset_peak(self) -> None:
        _reset_peak()

    def peak(self) -> int:
        return _status("VmHWM")


class CudaMeter:
    """torch's CUDA caching allocator: bytes held by live tensors."""

    def __init__(self, device: Any) -> None:
        import torch

        self.torch, self.device = torch, device

    def current(self) -> int:
        gc.collect()
        self.torch.cuda.synchronize(self.device)
        return int(self.torch.cuda.memory_allocated(self.device))

    def reset_peak(self) -> None:
        self.torch.cuda.synchronize(self.device)
        self.torch.cuda.reset_peak_memory_stats(self.device)

    def peak(self) -> int:
        self.torch.cuda.synchronize(self.device)
        return int(self.torch.cuda.max_memory_allocated(self.device))


def build(row: str, prob: bs.Problem, device: str) -> Callable[[], Any]:
    """The step of ``row``, with its model, optimizer and data already built."""
    torch_name = f"torch:{device}"
    if row == "numpy by hand":
        return bs.numpy_hand_runner(prob).step
    if row in ("torch autograd", "autograd + fused SGD"):
        return bs.torch_autograd_runner(prob, torch_name, fused=row != "torch autograd").step
    name = "numpy" if row.startswith("portprop/numpy") else torch_name
    wanted = bs.PP_EAGER if row.endswith("eager") else bs.PP_WORKSPACES
    runners, na = bs.portprop_runners(prob, name, only=(wanted,))
    if not runners:
        msg = f"{row}: {na.get(wanted)}"
        raise RuntimeError(msg)
    return runners[0].step


def child(row: str, batch: int, steps: int, device: str) -> dict[str, Any]:
    """Run ``row`` in this process and measure it."""
    w = bs.Workload("mem", SIZES, batch, "relu", "cross_entropy")
    prob = bs.make_problem(w)
    cuda = device != "cpu" and not row.startswith(("numpy", "portprop/numpy"))
    meter: HostMeter | CudaMeter = HostMeter()
    if cuda:
        meter = CudaMeter(pp.get_backend(backend=f"torch:{device}").device)
    # Warm the row's libraries on a tiny model (imports, thread pools, lazy state), so
    # that what they allocate once is in the base.
    tiny = build(
        row, bs.make_problem(bs.Workload("tiny", (4, 3, 2), 2, "relu", "cross_entropy")), device
    )
    tiny()
    tiny()
    del tiny
    # The base: the host data and initial weights only; the row's own copy of the
    # parameters, its momentum and whatever it keeps count in "kept", as in every row.
    base = meter.current()
    step = build(row, prob, device)
    t0 = time.perf_counter()
    for _ in range(steps - 1):
        step()
    gc.collect()
    meter.reset_peak()
    step()
    if cuda:
        meter.current()  # waits for the device
    seconds = (time.perf_counter() - t0) / steps
    peak = meter.peak()
    kept = meter.current()
    return {
        "row": row,
        "meter": "cuda allocator" if cuda else "host RSS",
        "base_mb": base / MB,
        "peak_mb": (peak - base) / MB,
        "kept_mb": (kept - base) / MB,
        "seconds_per_step": seconds,
    }


def run_row(row: str, args: argparse.Namespace) -> dict[str, Any]:
    """``row`` in a fresh process; its measurements, or an ``error``."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072")
    if args.threads is not None:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[var] = str(args.threads)
    cmd = [
        sys.executable,
        __file__,
        "--child",
        row,
        "--batch",
        str(args.batch),
        "--steps",
        str(args.steps),
        "--device",
        args.device,
    ]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env=env, timeout=args.timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return {"row": row, "error": f"timed out after {args.timeout} s"}
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"row": row, "error": f"exit code {proc.returncode}: {tail}"}
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 512, 2 steps: a smoke run")
    parser.add_argument("--batch", type=int, help="batch size (default 4096, 512 with --quick)")
    parser.add_argument("--steps", type=int, help="steps per row, the last measured (default 3)")
    parser.add_argument("--rows", help=f"comma-separated, of: {', '.join(ROWS)} (default all)")
    parser.add_argument("--device", default="cpu", help="torch rows' device: cpu or cuda[:N]")
    parser.add_argument("--threads", type=int, help="cap BLAS/OpenMP pools (environment)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per row")
    parser.add_argument("--json", metavar="PATH", help="also write the results here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.batch is None:
        args.batch = 512 if args.quick else 4096
    if args.steps is None:
        args.steps = 2 if args.quick else 3
    for opt, low in (("batch", 1), ("steps", 2)):
        if getattr(args, opt) < low:
            parser.error(f"--{opt} must be at least {low}, got {getattr(args, opt)}")
    if args.child:
        print(json.dumps(child(args.child, args.batch, args.steps, args.device)))
        return 0
    rows = [r.strip() for r in args.rows.split(",")] if args.rows else list(ROWS)
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        parser.error(f"--rows takes {', '.join(ROWS)}; got {unknown}")
    if args.device == "cpu" and not Path("/proc/self/clear_refs").exists():
        print("this needs Linux /proc (VmHWM, clear_refs) to measure host memory")
        return 1
    print(bs.header())
    load_before = bs._load()
    print(f"load average before: {load_before}")
    layers = "-".join(map(str, SIZES))
    print(
        f"\nMemory: {layers}, batch {args.batch}, ReLU, cross-entropy, float32, SGD momentum; "
        f"step {args.steps} of {args.steps}, each row in a fresh process; MB above the base"
    )
    head = (
        f"{'row':<22}  {'meter':<14}  {'base MB':>8}  {'peak MB':>8}  {'kept MB':>8}  {'s/step':>7}"
    )
    print(head)
    print("-" * len(head))
    results = []
    for row in rows:
        r = run_row(row, args)
        results.append(r)
        if "error" in r:
            print(f"{row:<22}  FAILED {r['error']}")
            continue
        print(
            f"{row:<22}  {r['meter']:<14}  {r['base_mb']:>8.0f}  {r['peak_mb']:>8.0f}  "
            f"{r['kept_mb']:>8.0f}  {r['seconds_per_step']:>7.2f}",
            flush=True,
        )
    by = {r["row"]: r for r in results if "error" not in r}
    print("\nTargets (issue 13):")
    for mine, ref, limit in (
        ("portprop/numpy", "numpy by hand", 1.05),
        ("portprop/torch", "torch autograd", 1.00),
    ):
        if mine in by and ref in by and by[ref]["peak_mb"] > 0:
            ratio = by[mine]["peak_mb"] / by[ref]["peak_mb"]
            verdict = "met" if ratio <= limit else "NOT met"
            print(f"  peak {mine} / {ref}: {ratio:.2f}x (target <= {limit:.2f}x) -> {verdict}")
    print(f"load average before: {load_before}")
    print(f"load average after:  {bs._load()}")
    if args.json:
        with Path(args.json).open("w", encoding="utf-8") as f:
            json.dump({"batch": args.batch, "device": args.device, "rows": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
