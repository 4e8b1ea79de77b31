"""The progress display of :func:`~portprop.fit` (``verbose``).

:class:`Progress` shows, when standard error is a terminal and tqdm is installed
(``verbose=1``), a tqdm bar per epoch with the running loss, then the epoch's metrics on
the line below, as Keras does, wrapped between metrics to the terminal's width so that
each stays whole (80 columns where the terminal does not say); or else one summary line
per epoch on standard error (``verbose=1`` without a terminal, or ``verbose=2``); or
nothing (``verbose=0``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
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


def _terminal_size() -> tuple[int, int]:
    """The columns and lines of standard error's terminal: what the terminal says, else
    ``$COLUMNS`` and ``$LINES`` or standard output's terminal, else 80 by 24 (a terminal
    of unknown size says 0 by 0, which tqdm would take for no room at all)."""
    size = os.terminal_size((0, 0))
    with contextlib.suppress(AttributeError, ValueError, OSError):
        size = os.get_terminal_size(sys.stderr.fileno())
    if size.columns <= 0 or size.lines <= 0:
        size = shutil.get_terminal_size()
    return (size.columns if size.columns > 0 else 80), (size.lines if size.lines > 0 else 24)


def _metrics(logs: dict[str, float]) -> list[str]:
    return [f"{k}: {v:.4g}" for k, v in logs.items()]


def _format(logs: dict[str, float]) -> str:
    return " - ".join(_metrics(logs))


def _wrapped(items: list[str], width: int) -> str:
    """``items`` joined by " - ", in lines of at most ``width`` characters where they
    fit, broken between items (never inside one)."""
    lines: list[str] = []
    for item in items:
        if lines and len(lines[-1]) + 3 + len(item) <= width:
            lines[-1] += " - " + item
        else:
            lines.append(item)
    return "\n".join(lines)


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
        self.width = 79
        self.last_postfix = 0.0

    def begin_epoch(self, epoch: int) -> None:
        if self.tqdm is not None:
            # The size is read here, once per epoch, rather than by tqdm on each refresh
            # (dynamic_ncols), which takes a terminal of unknown size for one of no room
            # and then prints nothing but an empty line per epoch.
            columns, lines = _terminal_size()
            self.width = columns - 1  # a full last column would wrap on some terminals
            self.bar = self.tqdm(
                total=self.steps,
                desc=f"Epoch {epoch + 1}/{self.epochs}",
                unit="batch",
                leave=True,
                ncols=self.width,
                nrows=lines,
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
            # the bar keeps the time and the rate; the metrics, which a bar's width
            # would cut, go on their own lines below it
            self.bar.set_postfix_str("", refresh=False)
            self.bar.close()
            self.bar = None
            sys.stderr.write(_wrapped(_metrics(logs), self.width) + "\n")
            sys.stderr.flush()
        elif self.verbose:
            line = f"Epoch {epoch + 1}/{self.epochs} - {seconds:.2f}s - {_format(logs)}\n"
            sys.stderr.write(line)
            sys.stderr.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
