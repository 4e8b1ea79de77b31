"""``python -m portprop.cli ...``: the same as ``python -m portprop ...``."""

from __future__ import annotations

if __name__ == "__main__":
    from portprop.cli import main

    raise SystemExit(main())
