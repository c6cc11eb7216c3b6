"""JSON files that are safe to trust: plain types only, and never half-written.

Reports are read back (resuming a reproduction, rendering cards, rerunning from a config), so a
file must either be whole or absent: :func:`write_json` writes a temporary file and renames it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def jsonable(obj: Any) -> Any:
    """Plain JSON types; NaN/inf (e.g. an empty ``long_distance`` group) become ``null``."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def read_json(path: Path) -> dict | None:
    """The file's JSON, or ``None`` if it is missing or not valid JSON (then it is recomputed)."""
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def write_json(path: str | Path, payload: Any) -> None:
    """Write then rename, so an interrupted run never leaves a truncated file that looks finished."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(jsonable(payload), indent=2) + "\n")
    tmp.replace(path)
