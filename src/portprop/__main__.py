"""``python -m portprop ...``: the ``portprop`` command (see :mod:`portprop.cli`)."""

from __future__ import annotations

from portprop.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
