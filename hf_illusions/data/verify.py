"""Re-derive every split property of a Dyck dataset folder from its stored tokens alone.

The stored ``length``/``max_depth``/``structure`` columns are *not* trusted: each is recomputed
from ``tokens`` with the same pure functions the builder used, then compared, and the split
definitions (DESIGN.md, "Dyck task") are checked against the recomputed values.
"""

from __future__ import annotations

from pathlib import Path

from hf_illusions.data import dyck
from hf_illusions.data import dyck_language as dl
from hf_illusions.data.hub_folder import load_folder, read_settings
from hf_illusions.errors import DyckError, SplitError


def verify_dyck_folder(path: str | Path, max_reports: int = 20) -> dict:
    """Check a folder written by ``hf-illusions data build dyck``; returns a JSON-ready report.

    ``report["violations"]`` lists human-readable problems (empty when the data is sound);
    ``report["checks"]`` counts what was checked.
    """
    path = Path(path)
    ds = load_folder(path)  # first: a missing folder gets "does not exist", not "no settings file"
    settings = read_settings(path)
    missing = [s for s in dyck.SPLITS if s not in ds]
    if missing:
        raise SplitError(f"{str(path)!r} lacks splits {missing}; expected {list(dyck.SPLITS)}")

    vocab = settings.vocab
    violations: list[str] = []
    checks: dict[str, int] = {}

    def flag(message: str) -> None:
        if len(violations) < max_reports:
            violations.append(message)
        checks["violations"] = checks.get("violations", 0) + 1

    parsed: dict[str, list[tuple[int, ...]]] = {}
    for split in dyck.SPLITS:
        rows = []
        for i, ex in enumerate(ds[split]):
            where = f"{split}[{i}]"
            try:
                codes = dl.parse_tokens(ex["tokens"], vocab)
            except DyckError as err:
                flag(f"{where}: not a Dyck sentence: {err}")
                continue
            if ex["tokens"][0] != dl.BOS or ex["tokens"][-1] != dl.EOS:
                flag(f"{where}: tokens must start with {dl.BOS} and end with {dl.EOS}")
            if list(ex["input_ids"]) != dl.codes_to_ids(codes):
                flag(f"{where}: input_ids do not match tokens")
            recomputed = dyck.make_example(codes, settings)
            for key in ("length", "max_depth", "structure"):
                if ex[key] != recomputed[key]:
                    flag(f"{where}: stored {key}={ex[key]!r} but tokens give {recomputed[key]!r}")
            if len(ex["tokens"]) > settings.max_tokens:
                flag(f"{where}: {len(ex['tokens'])} tokens exceeds max_tokens={settings.max_tokens}")
            rows.append(tuple(codes))
        parsed[split] = rows
        checks[f"{split}_sentences"] = len(rows)

    n = settings.n_types
    train = set(parsed["train"])
    seen = {s for codes in parsed["train"] for s in dl.structure(codes, n)}
    checks["seen_skeletons"] = len(seen)
    for codes in parsed["train"]:
        if dl.max_depth(codes, n) > settings.train_depth:
            flag(f"train: a sentence has depth {dl.max_depth(codes, n)} > train_depth={settings.train_depth}")
    owner: dict[tuple[int, ...], str] = {}
    for split in dyck.EVAL_SPLITS:
        accept = dyck.split_predicate(split, settings, seen)
        for i, codes in enumerate(parsed[split]):
            where = f"{split}[{i}]"
            if codes in train:
                flag(f"{where}: sentence also occurs in train")
            if codes in owner:
                flag(f"{where}: sentence also occurs in {owner[codes]}")
            owner.setdefault(codes, split)
            if not accept(list(codes)):
                flag(f"{where}: does not satisfy the definition of {split}")
            if split != "test_unseen_depth" and dl.max_depth(codes, n) > settings.train_depth:
                flag(f"{where}: depth exceeds train_depth={settings.train_depth}")
    checks.setdefault("violations", 0)
    return {"path": str(path), "ok": checks["violations"] == 0, "checks": checks, "violations": violations}
