"""Where the `code-illusions` text comes from: installed Python sources, or CodeSearchNet files.

No network here, so the default corpus is source code every machine with hf-illusions has: the
running interpreter's standard library, a fixed list of pure-Python packages hf-illusions depends
on (directly or through `datasets`/`transformers`), and the interpreter's C headers
(``sysconfig.get_paths()["include"]``, shipped with every CPython that can build extensions).
The file list is deterministic for a given installation (candidates in sorted relative-path
order, sampled by a seeded hash rank under per-package caps) and recorded with SHA-256 hashes in
the manifest, so a build on another machine can be compared file by file.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import sysconfig
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from hf_illusions.data.code_labels import FileLabels, LabelError, label_source
from hf_illusions.errors import DatasetError

#: environment variable naming a folder of pinned corpus packages (``pip install --target DIR
#: --no-deps`` of :data:`PINNED_SOURCES`; ``make data`` makes it). When set, packages are read
#: from there instead of from the running environment, so the corpus — and every split — stays the
#: same when an installed package is upgraded.
SOURCES_ENV = "HF_ILLUSIONS_CODE_SOURCES"
#: the versions the shipped code checkpoints were trained on (their ``training_data.json``)
PINNED_SOURCES = {
    "huggingface_hub": "1.33.0",
    "datasets": "5.2.0",
    "tqdm": "4.70.1",
    "packaging": "26.4",
    "filelock": "4.3.1",
    "fsspec": "2026.9.0",
    "accelerate": "1.15.0",
    "jinja2": "3.1.6",
}
STDLIB = "stdlib"
PYTHON_INCLUDE = "python-include"
#: import name -> distribution name, where they differ (for licence metadata)
DISTRIBUTIONS = {"huggingface_hub": "huggingface-hub", "yaml": "pyyaml"}
#: standard-library folders that are test suites, demos or vendored third-party code
STDLIB_EXCLUDE = frozenset(
    {"site-packages", "test", "tests", "idle_test", "__pycache__", "turtledemo", "_bundled"}
)


@dataclass
class Document:
    """One source text with its provenance and its whole-file labels."""

    source: str  # "<package>/<relative path>" (machine-independent)
    package: str
    language: str
    text: str
    labels: FileLabels | None = None
    record: dict = field(default_factory=dict)  # manifest entry (hash, size, licence, status, …)


def seeded_rank(seed: int, *parts: str) -> str:
    """A stable pseudo-random sort key: sampling and splitting never depend on ``hash()`` salting."""
    return hashlib.sha256("/".join([str(seed), *parts]).encode()).hexdigest()


def normalize_text(raw: bytes) -> str:
    """UTF-8 text with ``\\n`` line ends (raises ``UnicodeDecodeError``); a BOM is dropped."""
    return raw.decode("utf-8-sig").replace("\r\n", "\n").replace("\r", "\n")


def pinned_dir() -> Path | None:
    """The folder of pinned corpus packages named by ``$HF_ILLUSIONS_CODE_SOURCES``, if set.

    Raises when it is set but missing, so a typo never silently falls back to other versions.
    """
    value = os.environ.get(SOURCES_ENV)
    if not value:
        return None
    folder = Path(value)
    if not folder.is_dir():
        raise DatasetError(
            f"${SOURCES_ENV}={value!r} is not a folder; create it with `{pin_command(value)}` or unset it"
        )
    return folder


def pin_command(folder: str | Path, names: Iterable[str] = PINNED_SOURCES) -> str:
    """The ``pip install --target`` line that puts the pinned versions of ``names`` into ``folder``."""
    pins = " ".join(f"{n}=={PINNED_SOURCES.get(n, '<version>')}" for n in names)
    return f"pip install --no-deps --target {folder} {pins}"


def _key(name: str) -> str:
    """A distribution name as metadata lookups compare it (``huggingface-hub`` = ``huggingface_hub``)."""
    return name.replace("-", "_").lower()


def folder_distributions(folder: Path) -> dict[str, importlib.metadata.Distribution]:
    """The distributions ``pip install --target`` left in ``folder``, by normalised name."""
    return {_key(d.metadata["Name"] or ""): d for d in importlib.metadata.distributions(path=[str(folder)])}


def install_pinned_sources(folder: str | Path) -> Path:
    """``pip install --no-deps --target folder`` of :data:`PINNED_SOURCES` (only what is missing).

    Point ``$HF_ILLUSIONS_CODE_SOURCES`` at the folder when building: the corpus then reads these
    versions whatever the environment has installed. Wheels come from the package index (or pip's
    cache); nothing is imported from them.
    """
    import subprocess
    import sys

    folder = Path(folder)
    have = folder_distributions(folder) if folder.is_dir() else {}
    missing = [
        f"{name}=={version}"
        for name, version in PINNED_SOURCES.items()
        if getattr(have.get(_key(DISTRIBUTIONS.get(name, name))), "version", None) != version
    ]
    if missing:
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--upgrade", "--target"]
        done = subprocess.run([*cmd, str(folder), *missing], capture_output=True, text=True)
        if done.returncode != 0:
            raise DatasetError(
                f"could not install the pinned corpus sources {missing} into {str(folder)!r}: "
                f"{done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}"
            )
    return folder


def _distribution(name: str) -> importlib.metadata.Distribution | None:
    """The distribution of corpus source ``name``: from the pinned folder when set, else installed."""
    dist = DISTRIBUTIONS.get(name, name)
    folder = pinned_dir()
    if folder is not None:
        return folder_distributions(folder).get(_key(dist))
    try:
        return importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def package_root(name: str) -> tuple[Path, str, str, str]:
    """``(root folder, glob pattern, language, licence)`` of a corpus source name."""
    if name == STDLIB:
        return Path(sysconfig.get_paths()["stdlib"]), "**/*.py", "python", "PSF-2.0"
    if name == PYTHON_INCLUDE:
        return Path(sysconfig.get_paths()["include"]), "**/*.h", "c", "PSF-2.0"
    folder = pinned_dir()
    if folder is not None:
        if not (folder / name).is_dir():
            raise DatasetError(
                f"package {name!r} is not in ${SOURCES_ENV}={str(folder)!r}; install it there with "
                f"`{pin_command(folder, [name])}`"
            )
        return folder / name, "**/*.py", "python", package_license(DISTRIBUTIONS.get(name, name))
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError(
            f"package {name!r} is not installed as a package folder; choose installed packages"
        )
    root = Path(next(iter(spec.submodule_search_locations)))
    return root, "**/*.py", "python", package_license(DISTRIBUTIONS.get(name, name))


def source_version(name: str) -> str:
    """The version a corpus source was read at: the interpreter's for the standard library and C
    headers, the installed distribution's otherwise. Recorded in ``manifest.json`` because the
    corpus — and so every split — changes when an installed package is upgraded."""
    if name in (STDLIB, PYTHON_INCLUDE):
        return f"python {platform.python_version()}"
    found = _distribution(name)
    return found.version if found is not None else "unknown"


def package_license(dist: str) -> str:
    """Licence from the distribution's metadata (``License-Expression``, ``License`` or a classifier)."""
    found = _distribution(dist)
    if found is None:
        return "unknown"
    meta = found.metadata
    for key in ("License-Expression", "License"):
        value = (meta.get(key) or "").strip()
        if value and len(value) < 80 and "\n" not in value:
            return value
    classifiers = [
        c.split("::")[-1].strip() for c in meta.get_all("Classifier") or [] if c.startswith("License ::")
    ]
    return classifiers[0] if classifiers else "unknown"


def discover(name: str, seed: int, max_files: int, max_bytes: int, max_file_bytes: int) -> list[Document]:
    """The capped, deterministic file sample of one source, read and labelled.

    Candidates are sorted relative paths (excluding test suites for the standard library, empty
    files and files over ``max_file_bytes``); they are taken in seeded-hash order until ``max_files`` or
    ``max_bytes`` is reached, so a cap samples the whole package rather than its first folder.
    Files that are not UTF-8 or that the lexer rejects are kept in the list with a ``status`` and
    no labels (they produce no windows).
    """
    root, pattern, language, licence = package_root(name)
    if not root.is_dir():
        raise DatasetError(f"source {name!r}: folder {str(root)!r} does not exist on this machine")
    candidates = []
    for path in sorted(root.glob(pattern), key=lambda p: p.relative_to(root).as_posix()):
        rel = path.relative_to(root)
        if name == STDLIB and STDLIB_EXCLUDE.intersection(rel.parts):
            continue
        if path.is_file() and 0 < path.stat().st_size <= max_file_bytes:
            candidates.append(rel.as_posix())
    chosen, total = [], 0
    for rel in sorted(candidates, key=lambda r: seeded_rank(seed, name, r)):
        size = (root / rel).stat().st_size
        if len(chosen) >= max_files or total + size > max_bytes:
            continue
        chosen.append(rel)
        total += size
    return [read_document(root / rel, f"{name}/{rel}", name, language, licence) for rel in sorted(chosen)]


def read_document(path: Path, source: str, package: str, language: str, licence: str) -> Document:
    """Read, hash and label one file; failures become a ``status`` in its manifest record."""
    raw = path.read_bytes()
    record = {
        "path": source,
        "package": package,
        "language": language,
        "license": licence,
        "sha256": hashlib.sha256(raw).hexdigest(),
        "size": len(raw),
        "status": "ok",
    }
    try:
        text = normalize_text(raw)
    except UnicodeDecodeError:
        record["status"] = "not_utf8"
        return Document(source, package, language, "", None, record)
    doc = Document(source, package, language, text, None, record)
    try:
        doc.labels = label_source(text, language)
    except LabelError as err:
        record["status"] = f"lexer_failed: {err}"
    return doc


def from_codesearchnet(paths: Iterable[str | Path], max_functions: int | None = None) -> list[Document]:
    """CodeSearchNet ``jsonl``/``jsonl.gz`` files as documents, one per (repo, file path).

    Each line is one function (fields ``code`` or ``original_string``, ``repo``, ``path``,
    ``language``, ``func_name``). Functions of the same source file are dedented, labelled one by
    one (a method alone is valid Python only once dedented) and joined with a blank line in input
    order, so windows can span functions as they would in the file; a function the lexer rejects
    is dropped and counted in the document's record. ``package`` is the repository, which is what
    the held-out-repository split holds out.
    """
    import numpy as np

    grouped: dict[tuple[str, str], list[dict]] = {}
    n = 0
    for path in sorted(str(p) for p in paths):
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as fh:
            for line_no, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    code = row.get("code") or row["original_string"]
                    key = (row["repo"], row["path"])
                except (json.JSONDecodeError, KeyError) as err:
                    raise DatasetError(
                        f"{path}:{line_no} is not a CodeSearchNet record (needs code/original_string, "
                        f"repo, path): {err}"
                    ) from None
                grouped.setdefault(key, []).append({"code": code, "language": row.get("language", "python")})
                n += 1
                if max_functions is not None and n >= max_functions:
                    break
    docs = []
    for (repo, file_path), functions in sorted(grouped.items()):
        language = functions[0]["language"]
        parts, labels, failed = [], [], 0
        for fn in functions:
            text = normalize_text(textwrap.dedent(fn["code"]).encode()).rstrip("\n") + "\n"
            try:
                labels.append(label_source(text, language))
            except LabelError:
                failed += 1
                continue
            parts.append(text)
        joined = "\n".join(parts)
        record = {
            "path": f"{repo}/{file_path}",
            "package": repo,
            "language": language,
            "license": "see CodeSearchNet",
            "sha256": hashlib.sha256(joined.encode()).hexdigest(),
            "size": len(joined.encode()),
            "status": "ok" if parts else "lexer_failed: every function",
            "functions": len(functions),
            "functions_lexer_failed": failed,
        }
        merged = None
        if parts:
            sep = FileLabels(np.zeros(1, dtype=np.uint8), [])  # the "\n" joining two functions
            merged = concat_labels([x for lab in labels for x in (lab, sep)][:-1])
        docs.append(Document(record["path"], repo, language, joined, merged, record))
    return docs


def concat_labels(parts: list[FileLabels]) -> FileLabels:
    """Labels of texts laid end to end (identifier spans shifted by the preceding lengths)."""
    import numpy as np

    offset, spans = 0, []
    for part in parts:
        spans.extend((a + offset, b + offset, name) for a, b, name in part.identifiers)
        offset += len(part.types)
    return FileLabels(np.concatenate([p.types for p in parts]), spans)
