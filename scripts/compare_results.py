"""Are two reports' numbers the same? Compares two ``results.json`` files byte for byte after
dropping what legitimately differs between two identical runs (dates, wall times, the folders'
own paths) and any ``--ignore``d top-level field (one added on purpose).

    python scripts/compare_results.py reports/a/results.json reports/b/results.json --ignore config

Exit status 0 and ``identical`` when they match; 1 and the first differing paths otherwise.
Used to check that a refactor left a reproduction's results unchanged.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hf_illusions.reproduction.run import VOLATILE_FIELDS, stable_results


def differences(a: object, b: object, path: str = "") -> list[str]:
    """Paths where ``a`` and ``b`` differ (keys in one only, different values)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{path}/{k}: only in {'first' if k in a else 'second'}" for k in sorted(set(a) ^ set(b))]
        for k in a:
            if k in b:
                out += differences(a[k], b[k], f"{path}/{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        pairs = enumerate(zip(a, b, strict=True))
        return [d for i, (x, y) in pairs for d in differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"[:300]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    parser.add_argument(
        "--ignore", action="append", default=[], help="a field added on purpose (dropped at any depth)"
    )
    args = parser.parse_args(argv)
    a, b = (json.loads(p.read_text()) for p in (args.first, args.second))
    ignore = frozenset(args.ignore)
    a, b = stable_results(a, ignore), stable_results(b, ignore)
    if json.dumps(a, indent=2) == json.dumps(b, indent=2):
        print(f"identical: {args.first} == {args.second} (ignoring {sorted(VOLATILE_FIELDS | ignore)})")
        return 0
    diffs = differences(a, b) or ["same values, different key order"]
    print("\n".join(diffs[:20]))
    return 1


if __name__ == "__main__":
    sys.exit(main())
