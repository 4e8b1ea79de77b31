"""The progress display of :func:`~portprop.fit` (``verbose``).

:class:`Progress` shows a tqdm bar per epoch, with the loss and metrics in its postfix,
when standard error is a terminal and tqdm is installed (``verbose=1``), or else one
summary line per epoch on standard error (``verbose=1`` without a terminal, or
``verbose=2``), or nothing (``verbose=0``).
"""

from __future__ import annotations

import sys
import time
from typing import Any

from portprop.training.metrics import Totals

__all__ = ["Progress"]

#: Seconds between two updates of the running loss shown by the progress bar.
_POSTFIX_INTERVAL = 0.5


def _stderr_is_terminal() -> bool:
    try:
        return bool(sys.stderr.isatty())
    except (AttributeError, ValueError):
        return False


def _format(logs: dict[str, float]) -> str:
    return " - ".join(f"{k}: {v:.4g}" for k, v in logs.items())


class Progress:
    """A tqdm bar per epoch, or one line per epoch, or nothing (see the module notes)."""

    def __init__(self, verbose: int, epochs: int, steps: int) -> None:
        self.verbose, self.epochs, self.steps = verbose, epochs, steps
        self.tqdm: Any = None
        if verbose == 1 and _stderr_is_terminal():
            try:
                from tqdm import tqdm  # noqa: PLC0415 - optional, loaded when shown
            except ImportError:
                tqdm = None
            self.tqdm = tqdm
        self.bar: Any = None
        self.last_postfix = 0.0

    def begin_epoch(self, epoch: int) -> None:
        if self.tqdm is not None:
            self.bar = self.tqdm(
                total=self.steps,
                desc=f"Epoch {epoch + 1}/{self.epochs}",
                unit="batch",
                leave=True,
                dynamic_ncols=True,
                file=sys.stderr,
            )
            self.last_postfix = time.perf_counter()

    def batch_done(self, totals: Totals) -> None:
        if self.bar is None:
            return
        self.bar.update(1)
        now = time.perf_counter()
        if now - self.last_postfix > _POSTFIX_INTERVAL:
            # The divergence check has just synchronized, so this read is cheap.
            self.bar.set_postfix(loss=f"{totals.running_loss():.4g}", refresh=False)
            self.last_postfix = now

    def end_epoch(self, epoch: int, logs: dict[str, float], seconds: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(_format(logs), refresh=True)
            self.bar.close()
            self.bar = None
        elif self.verbose:
            line = f"Epoch {epoch + 1}/{self.epochs} - {seconds:.2f}s - {_format(logs)}\n"
            sys.stderr.write(line)
            sys.stderr.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
