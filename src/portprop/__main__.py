"""``python -m portprop backends``: which backends can run here."""

from __future__ import annotations

import sys

from portprop._backend import describe_backends


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["backends"]:
        print(describe_backends())
        return 0
    print("usage: python -m portprop backends", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
