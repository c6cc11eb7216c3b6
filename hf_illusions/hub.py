"""Publish hf-illusions artifacts to the Hub: checked folders, uploaded with ``upload_folder``.

Every artifact is already a Hub-shaped folder on disk — a model or a proxy (``save_pretrained`` +
tokenizer + card), the dataset (parquet per split + README with ``configs:``), the Space, the
metric's Space — and ``from_pretrained`` / ``load_dataset`` work on it locally. Pushing is then
only: check that the folder is complete (a card with metadata, the files its loader needs), list
what will go up (``dry_run``), and hand it to ``huggingface_hub``'s ``create_repo`` +
``upload_folder`` unchanged, so what users download is exactly what was tested locally.

The folder checks read the JSON/YAML files directly; the weight checks reuse
:mod:`hf_illusions.checkpoints` (imported when a model or proxy is checked).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import HfApi, RepoCard
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.utils import filter_repo_objects

from hf_illusions.errors import IllusionsError
from hf_illusions.hub_ids import HUB_REPO_IDS

#: Never uploaded: local caches, interrupted writes, training state that is not the model.
IGNORE_PATTERNS = [
    "**/__pycache__/**",
    "__pycache__/**",
    "*.pyc",
    "*.partial",
    "*.partial/**",
    "*.tmp",
    ".gradio/**",
    "flagged/**",
    ".ipynb_checkpoints/**",
    ".git/**",
    ".cache/**",
]


class PushError(IllusionsError, ValueError):
    """A folder that is not ready to publish (missing card, files or metadata)."""


@dataclass
class PushPlan:
    """What a push does: the repo, its type, and the files (relative paths) that go up."""

    kind: str
    folder: Path
    repo_id: str
    repo_type: str
    files: list[str]
    space_sdk: str | None = None
    url: str | None = field(default=None)
    commit: str | None = field(default=None)

    @property
    def total_bytes(self) -> int:
        return sum((self.folder / f).stat().st_size for f in self.files)

    def describe(self) -> str:
        """Human-readable listing (what ``--dry_run`` prints)."""
        lines = [f"{self.kind} {self.folder} -> {self.repo_type} {self.repo_id} ({len(self.files)} files)"]
        lines += [f"  {f}  ({(self.folder / f).stat().st_size:,} bytes)" for f in self.files]
        lines.append(f"  total {self.total_bytes:,} bytes")
        return "\n".join(lines)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise PushError(f"{str(path)!r} is missing or not valid JSON: {err}") from err


def _card(folder: Path, hint: str) -> RepoCard:
    """The folder's README.md as a card; a Hub repo without metadata is not a first-class one."""
    readme = folder / "README.md"
    if not readme.is_file():
        raise PushError(f"{str(folder)!r} has no README.md card; write it first with `{hint}`")
    card = RepoCard.load(readme)
    if not card.data.to_dict():
        raise PushError(f"{str(readme)!r} has no YAML metadata block; re-render it with `{hint}`")
    return card


def _require(folder: Path, names: list[str], what: str) -> None:
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise PushError(f"{str(folder)!r} is not a complete {what}: missing {missing}")


PROXY_TYPES = ("illusion-proxy", "illusion-circuit")  # attention/residual proxies, pruned circuits


def _check_model_type(folder: Path, expected: str | tuple[str, ...], kind: str, other: str) -> None:
    expected = (expected,) if isinstance(expected, str) else expected
    model_type = _read_json(folder / "config.json").get("model_type")
    if model_type not in expected:
        wanted = " or ".join(repr(e) for e in expected)
        raise PushError(
            f"{str(folder)!r} holds a model of type {model_type!r}, not {wanted}; "
            f"push it with `hf-illusions push {other}`"
            if model_type in ("illusion-transformer", *PROXY_TYPES)
            else f"{str(folder)!r} holds a model of type {model_type!r}; `push {kind}` expects {wanted}"
        )


def _check_weights(folder: Path) -> None:
    """The weights load and match the config: the same checks as :func:`~hf_illusions.checkpoints.
    load_checkpoint` (intact safetensors, every tensor the config implies with its shape, nothing
    else; a saved tokenizer with the model's vocabulary), read from the headers without loading.

    Imported here, not at the top: the other checks need neither torch nor transformers.
    """
    from hf_illusions.checkpoints import (
        check_state_matches,
        check_tokenizer,
        classes_of,
        read_config,
        weight_shapes,
    )
    from hf_illusions.errors import CheckpointError

    try:
        config = read_config(folder)
        check_state_matches(config, classes_of(config.model_type)[1], weight_shapes(folder), folder)
        check_tokenizer(folder, config.vocab_size)
    except CheckpointError as err:
        raise PushError(f"will not push {str(folder)!r}: {err}") from None


def check_model_folder(folder: Path) -> None:
    """A trained model — ours, or a transformers causal LM trained here (``train --architecture``):
    weights that load and match the config, a tokenizer, and a card with ``model-index`` results."""
    from hf_illusions.checkpoints import classes_of

    _require(folder, ["config.json", "model.safetensors", "tokenizer.json"], "model folder")
    model_type = _read_json(folder / "config.json").get("model_type")
    if model_type in PROXY_TYPES or classes_of(model_type) is None:
        _check_model_type(folder, "illusion-transformer", "model", "proxy")
    _check_weights(folder)
    card = _card(folder, f"hf-illusions card model {folder}")
    if not card.data.to_dict().get("model-index"):
        raise PushError(f"the card of {str(folder)!r} has no model-index results; `hf-illusions card model`")


ADAPTER_CONFIG, ADAPTER_WEIGHTS = "simplification_config.json", "simplification.safetensors"
ADAPTER_FORMAT = "hf-illusions-simplification"


def check_proxy_folder(folder: Path) -> None:
    """A fitted proxy, its own card included: either one of our whole proxies (the same files as a
    model, a proxy ``model_type`` or a circuit's) or a stock model's adapter (simplification config
    naming its base model on the Hub, and the fitted buffers)."""
    if (folder / ADAPTER_CONFIG).is_file():
        check_adapter_folder(folder)
        return
    _require(folder, ["config.json", "model.safetensors"], "proxy folder")
    _check_model_type(folder, PROXY_TYPES, "proxy", "model")
    _check_weights(folder)
    _card(folder, f"hf-illusions card proxy {folder} --results …")


def check_adapter_folder(folder: Path) -> None:
    """A stock model's proxy adapter: its config must say which base model (Hub id) it goes on.

    A Hub user loads it with ``hf_illusions.load_proxy(repo_id)``, which fetches that base; a base
    recorded as a local path (or none, for a model built in memory) cannot be resolved there.
    """
    _require(folder, [ADAPTER_CONFIG, ADAPTER_WEIGHTS], "proxy adapter folder")
    config = _read_json(folder / ADAPTER_CONFIG)
    if config.get("format") != ADAPTER_FORMAT:
        raise PushError(
            f"{str(folder / ADAPTER_CONFIG)!r} is not a simplification config "
            f"(format {config.get('format')!r})"
        )
    base = config.get("base_model_name_or_path")
    local = not base or Path(base).is_absolute() or base.startswith(".") or Path(base).exists()
    if local or base.count("/") > 1:
        raise PushError(
            f"the adapter in {str(folder)!r} records base model {base!r}, which Hub users cannot load; "
            "re-save it with proxy.save_pretrained(dir, base_model_name_or_path='<hub id of the base>')"
        )
    if not config.get("base_weights_sha256"):
        raise PushError(f"the adapter in {str(folder)!r} records no base weights hash; re-save it")
    from safetensors import SafetensorError, safe_open

    try:  # the header parses and its offsets cover the file: a truncated upload is caught here
        with safe_open(folder / ADAPTER_WEIGHTS, "pt") as handle:
            names = list(handle.keys())
    except (SafetensorError, OSError) as err:
        raise PushError(
            f"will not push {str(folder)!r}: {ADAPTER_WEIGHTS} is truncated or corrupt ({err})"
        ) from None
    if not names:
        raise PushError(f"will not push {str(folder)!r}: {ADAPTER_WEIGHTS} holds no fitted buffers")
    _card(folder, f"hf-illusions card proxy {folder}")


def check_dataset_folder(folder: Path) -> None:
    """Parquet files plus a card whose ``configs:`` name files that exist (what load_dataset reads)."""
    card = _card(folder, f"hf-illusions card dataset {folder}")
    configs = card.data.to_dict().get("configs") or []
    paths = [
        entry["path"]
        for config in configs
        for entry in config.get("data_files", [])
        if isinstance(entry, dict)
    ]
    if not paths:
        raise PushError(f"the card of {str(folder)!r} has no `configs:` data_files; load_dataset needs them")
    _require(folder, paths, "dataset folder (files named in the card's configs)")


def check_space_folder(folder: Path) -> None:
    """A Space: card with ``sdk`` and ``app_file`` (which must exist) and a requirements.txt."""
    meta = _card(folder, "hf-illusions card space").data.to_dict()
    if not meta.get("sdk") or not meta.get("app_file"):
        raise PushError(f"the card of {str(folder)!r} needs `sdk` and `app_file` in its metadata")
    _require(folder, [meta["app_file"], "requirements.txt"], "Space folder")


CHECKS: dict[str, tuple[str, Callable[[Path], None]]] = {
    "model": ("model", check_model_folder),
    "proxy": ("model", check_proxy_folder),
    "dataset": ("dataset", check_dataset_folder),
    "space": ("space", check_space_folder),
    "metric": ("space", check_space_folder),  # an `evaluate` metric is published as a Space
}


def plan_push(kind: str, folder: str | Path, repo_id: str) -> PushPlan:
    """Check ``folder`` for ``kind`` and list the files that would be uploaded (no network)."""
    if kind not in CHECKS:
        raise PushError(f"kind must be one of {sorted(CHECKS)}, got {kind!r}")
    if "/" not in repo_id or repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise PushError(f"--repo_id must look like 'namespace/name', got {repo_id!r}")
    folder = Path(folder)
    if not folder.is_dir():
        raise PushError(f"{str(folder)!r} is not a folder")
    repo_type, check = CHECKS[kind]
    check(folder)
    local = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    files = list(filter_repo_objects(local, ignore_patterns=IGNORE_PATTERNS))
    sdk = RepoCard.load(folder / "README.md").data.to_dict().get("sdk") if repo_type == "space" else None
    return PushPlan(kind, folder, repo_id, repo_type, files, space_sdk=sdk)


def push_folder(
    kind: str,
    folder: str | Path,
    repo_id: str,
    *,
    dry_run: bool = False,
    private: bool | None = None,
    token: str | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    endpoint: str | None = None,
) -> PushPlan:
    """Create ``repo_id`` if needed and upload the checked folder with ``upload_folder``.

    With ``dry_run`` nothing touches the network; the returned plan lists what would go up.
    ``endpoint`` defaults to ``HF_ENDPOINT`` (huggingface.co).
    """
    from huggingface_hub import constants

    plan = plan_push(kind, folder, repo_id)
    if dry_run:
        return plan
    if constants.is_offline_mode():
        raise PushError("offline mode is on (HF_HUB_OFFLINE=1): unset it to push, or use --dry_run to list")
    api = HfApi(endpoint=endpoint, token=token)
    try:
        url = api.create_repo(
            repo_id, repo_type=plan.repo_type, private=private, exist_ok=True, space_sdk=plan.space_sdk
        )
        info = api.upload_folder(
            repo_id=repo_id,
            repo_type=plan.repo_type,
            folder_path=plan.folder,
            revision=revision,
            commit_message=commit_message or f"Upload {kind} with hf-illusions",
            allow_patterns=plan.files,
            ignore_patterns=IGNORE_PATTERNS,
        )
    except HfHubHTTPError as err:  # one line naming the repo and the server's reason
        status = err.response.status_code if err.response is not None else "?"
        hint = " (check --token / HF_TOKEN and its write access)" if status in (401, 403) else ""
        reason = " ".join((err.server_message or str(err)).split())
        raise PushError(f"the Hub refused the push to {repo_id!r}: HTTP {status}, {reason}{hint}") from err
    plan.url, plan.commit = str(url), info.oid
    return plan


__all__ = [
    "HUB_REPO_IDS",
    "IGNORE_PATTERNS",
    "PushError",
    "PushPlan",
    "check_adapter_folder",
    "check_dataset_folder",
    "check_model_folder",
    "check_proxy_folder",
    "check_space_folder",
    "plan_push",
    "push_folder",
]
