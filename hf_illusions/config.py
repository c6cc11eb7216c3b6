"""What a reproduction is: one :class:`ReproductionConfig` says which model, which data, which
simplifier settings, which sample of sentences, which seeds and where the report goes.

Every way of starting a study builds one and hands it to :func:`hf_illusions.reproduction.reproduce`:
the command line (``hf-illusions reproduce``), the Python API (``hi.ReproductionConfig.for_task``),
the benchmarks and the Space (which fits the report's sweep). The report writes it into
``results.json`` under ``"config"`` (paths relative to the report folder), so a report says exactly
how it was made, and ``ReproductionConfig.from_results("reports/dyck/results.json")`` — or
``hf-illusions reproduce --config reports/dyck/results.json`` — runs it again.

The sweeps and presets a config is made from are :mod:`hf_illusions.presets`. Nothing here imports
torch or the rest of the package: a config is plain data, checked when it is made (an impossible
setting fails before any model is loaded).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar

from hf_illusions.errors import PathError, SettingsError
from hf_illusions.paths import portable_path
from hf_illusions.presets import (
    ATTENTION_PROXIES,
    CODE_FAMILIES,
    DEFAULT_CIRCUIT_SLACKS,
    DEFAULT_IB_KS,
    DEFAULT_KMEANS_KS,
    DEFAULT_SVD_RANKS,
    EVAL_SENTENCES,
    FAMILIES,
    FUNCTION_DEFAULTS,
    QUICK,
    SEED_SWEEPS,
    TASK_DEFAULTS,
    TASKS,
)


@dataclass(frozen=True)
class SweepConfig:
    """The simplifier families that run and the settings each one sweeps.

    Args:
        families: families to run (subset of :data:`FAMILIES`); ``None``: the task's default — every
            family for Dyck (minus those that need our own model, said so in results.json), and
            :data:`CODE_FAMILIES` for code.
        svd_ranks / kmeans_ks: the paper's sweeps (ranks above the model's ``d_head`` are capped).
        onehot: one-hot attention in every layer, and in each layer alone.
        interaction_basis_ks / circuit_slacks: beyond the paper (Dyck): kept interaction-basis
            directions, and pruned circuits' allowed loss increase over the model's own (nats).
        copy_head_ranks: code: SVD ranks of the copying head simplified alone.
        layers: simplify only these layers (Dyck; default all).
        fit_seed: seed of every fit's randomness (k-means initialization and reservoir samples).
        attention_metrics: attention JSD / argmax agreement for every proxy (``True``), none
            (``False``) or the named proxies only; no other number depends on it.
    """

    families: tuple[str, ...] | None = None
    svd_ranks: tuple[int, ...] = DEFAULT_SVD_RANKS
    kmeans_ks: tuple[int, ...] = DEFAULT_KMEANS_KS
    onehot: bool = True
    interaction_basis_ks: tuple[int, ...] = ()
    circuit_slacks: tuple[float, ...] = ()
    copy_head_ranks: tuple[int, ...] = ()
    layers: tuple[int, ...] | None = None
    fit_seed: int = 0
    attention_metrics: bool | tuple[str, ...] = True

    def __post_init__(self) -> None:
        if self.families is not None:
            set_field(self, "families", check_families(str_tuple(self.families, "families")))
        for name in ("svd_ranks", "kmeans_ks", "interaction_basis_ks", "copy_head_ranks"):
            set_field(self, name, int_tuple(getattr(self, name), name, minimum=1))
        if self.layers is not None:
            set_field(self, "layers", int_tuple(self.layers, "layers", minimum=0))
        slacks = tuple(self.circuit_slacks)
        if not all(_is_number(s) and math.isfinite(s) and s > 0 for s in slacks):
            raise SettingsError(f"circuit_slacks must be finite numbers > 0 (nats), got {list(slacks)}")
        set_field(self, "circuit_slacks", tuple(float(s) for s in slacks))
        check_int(self.fit_seed, "fit_seed", minimum=0)
        if not isinstance(self.onehot, bool):
            raise SettingsError(f"onehot must be True or False, got {self.onehot!r}")
        if not isinstance(self.attention_metrics, bool):
            set_field(self, "attention_metrics", str_tuple(self.attention_metrics, "attention_metrics"))


@dataclass(frozen=True)
class SampleConfig:
    """Which rows are fitted on and scored: sizes of the seeded samples and their seed.

    Args:
        n_fit_sequences: training sequences every simplifier fits on (a seeded sample of ``train``).
        max_eval_sentences: sentences (code: windows) scored per test split, a seeded sample
            (stratified by package for code); ``None`` scores every one.
        seed: seed of both samples (results.json records the rows drawn).
    """

    n_fit_sequences: int = 1000
    max_eval_sentences: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        check_int(self.n_fit_sequences, "n_fit_sequences", minimum=1)
        if self.max_eval_sentences is not None:
            check_int(self.max_eval_sentences, "max_eval_sentences", minimum=1, none_ok=True)
        check_int(self.seed, "seed", minimum=0)


class ConfigFile:
    """What the configs a ``results.json`` records share: flat keyword settings routed to their
    nested parts, plain-JSON round trips with paths relative to the report, and reading back.

    A subclass (a frozen dataclass) says what it is called (``KIND``), which command reruns it
    (``COMMAND``), its nested dataclasses (``NESTED``), which fields are paths (``PATHS``) and which
    of those are always local folders (``LOCAL``; the others may also be a Hub id).
    """

    KIND: ClassVar[str]
    COMMAND: ClassVar[str]
    NESTED: ClassVar[dict[str, type]] = {}
    PATHS: ClassVar[tuple[str, ...]] = ()
    LOCAL: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def _route(cls, settings: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        """Flat settings split into this class's own fields and each nested part's."""
        known = {name: field_names(kind) for name, kind in cls.NESTED.items()}
        own = field_names(cls) - set(cls.NESTED)
        unknown = sorted(set(settings) - own - set().union(*known.values()))
        if unknown:
            allowed = sorted(own.union(*known.values()))
            raise SettingsError(f"unknown {cls.KIND} settings {unknown}; known: {allowed}")
        parts = {name: {k: v for k, v in settings.items() if k in names} for name, names in known.items()}
        return {k: v for k, v in settings.items() if k in own}, parts

    def replace(self, **changes: Any) -> Any:
        """A copy with flat ``changes`` (fields of this config or of its nested parts)."""
        own, parts = self._route(changes)
        nested = {name: replace(getattr(self, name), **part) for name, part in parts.items()}
        return replace(self, **own, **nested)  # type: ignore[type-var]

    def to_dict(self, relative_to: str | Path | None = None) -> dict[str, Any]:
        """Plain JSON data; with ``relative_to`` (the report folder) local paths are written relative
        to it, so the file names no folder of the machine that made it and still resolves."""
        out = asdict(self)  # type: ignore[call-overload]
        if relative_to is not None:
            for name in self.PATHS:
                if getattr(self, name) is not None:
                    out[name] = _relative(getattr(self, name), relative_to, local=name in self.LOCAL)
        return json.loads(json.dumps(out))  # tuples -> lists, exactly what the file holds

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], base: str | Path | None = None) -> Any:
        """The inverse of :meth:`to_dict`; relative local paths are resolved against ``base``."""
        if not isinstance(data, Mapping):
            raise SettingsError(f"a {cls.KIND} config must be a JSON object, got {type(data).__name__}")
        known = field_names(cls)
        unknown = sorted(set(data) - known)
        if unknown:
            raise SettingsError(f"unknown {cls.KIND} config fields {unknown}; known: {sorted(known)}")
        values = dict(data)
        for name, kind in cls.NESTED.items():
            part = values.get(name, {})
            if not isinstance(part, Mapping) or set(part) - field_names(kind):
                expected = sorted(field_names(kind))
                raise SettingsError(f"config field {name!r} must be an object with fields {expected}")
            values[name] = kind(**part)
        if base is not None:
            for name in cls.PATHS:
                if isinstance(values.get(name), str):
                    values[name] = _resolve(values[name], Path(base))
        try:
            return cls(**values)
        except TypeError as err:  # a missing field
            raise SettingsError(f"incomplete {cls.KIND} config: {err}") from None

    @classmethod
    def from_results(cls, path: str | Path) -> Any:
        """The config a report was made with (its ``results.json``, or the report folder)."""
        path = Path(path)
        file = path / "results.json" if path.is_dir() else path
        try:
            results = json.loads(file.read_text())
        except FileNotFoundError:
            raise PathError(f"{str(file)!r} does not exist: give a report's results.json") from None
        except (OSError, json.JSONDecodeError) as err:
            raise PathError(f"{str(file)!r} is not a readable results.json: {err}") from None
        if not isinstance(results, dict) or "config" not in results:
            raise SettingsError(
                f"{str(file)!r} records no 'config' (written before reports recorded theirs, or not a "
                f"{cls.KIND}'s results.json): make it again with `{cls.COMMAND}`"
            )
        return cls.from_dict(results["config"], base=file.parent)


@dataclass(frozen=True)
class ReproductionConfig(ConfigFile):
    """Everything that determines a reproduction: build one, pass it to :func:`~hf_illusions.reproduction`.

    Args:
        task: ``"dyck"`` or ``"code"`` (which data, which positions are scored, which report).
        model: the original model (a folder: ours, or a transformers causal LM such as Llama).
        data: its dataset folder, built with preset ``data_config`` when missing.
        out: the report folder; an existing one is resumed (``resume``).
        sweep / sample: the simplifier settings and the sentences (see their classes).
        allow_other_training_data: score even if ``data`` holds another train split than the
            model was trained on (its test splits may then hold training text).
        max_batch_tokens / progress / resume / save_proxies: how the run goes, not what it measures
            (not part of a split's fingerprint): memory per forward pass, progress bars, reuse of
            finished splits, and keeping the fitted proxies in ``<out>/proxies/``.

    >>> from hf_illusions.config import ReproductionConfig
    >>> config = ReproductionConfig.for_task("dyck", sweep="seed", model="checkpoints/dyck-seed1")
    >>> config.sweep.svd_ranks, config.sample.max_eval_sentences
    ((4, 8, 16), 1000)
    >>> ReproductionConfig.from_dict(config.to_dict()) == config
    True
    """

    KIND: ClassVar[str] = "reproduction"
    COMMAND: ClassVar[str] = "hf-illusions reproduce"
    NESTED: ClassVar[dict[str, type]] = {"sweep": SweepConfig, "sample": SampleConfig}
    PATHS: ClassVar[tuple[str, ...]] = ("model", "data", "out")
    LOCAL: ClassVar[tuple[str, ...]] = ("data", "out")  # the data and report are folders, made if missing

    task: str
    model: str
    data: str
    data_config: str
    out: str
    sweep: SweepConfig = field(default_factory=SweepConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    allow_other_training_data: bool = False
    max_batch_tokens: int = 16384
    progress: bool = True
    resume: bool = True
    save_proxies: bool = False

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise SettingsError(f"task must be one of {list(TASKS)}, got {self.task!r}")
        for name in ("model", "data", "data_config", "out"):
            value = getattr(self, name)
            if not isinstance(value, str | os.PathLike) or not os.fspath(value):
                raise SettingsError(f"{name} must be a non-empty path or name, got {value!r}")
            set_field(self, name, os.fspath(value))
        check_int(self.max_batch_tokens, "max_batch_tokens", minimum=1)
        sweep = self.sweep
        if self.task == "code":  # the extensions and per-layer sweeps are Dyck's
            other = [f for f in sweep.families or () if f not in CODE_FAMILIES]
            given = {
                "interaction_basis_ks": sweep.interaction_basis_ks,
                "circuit_slacks": sweep.circuit_slacks,
            }
            given |= {"layers": sweep.layers, "families": other}
            wrong = [name for name, value in given.items() if value]
            if wrong:
                raise SettingsError(
                    f"{wrong} do not apply to the code reproduction (families: {list(CODE_FAMILIES)})"
                )
        elif sweep.copy_head_ranks:
            raise SettingsError("copy_head_ranks apply to the code reproduction only (its copying head)")

    @classmethod
    def create(cls, task: str, **settings: Any) -> ReproductionConfig:
        """A config from flat keyword arguments: any field of this class, :class:`SweepConfig` or
        :class:`SampleConfig` (``svd_ranks=…``, ``max_eval_sentences=…``); unnamed ones keep their
        defaults, and the task's paths default to :data:`TASK_DEFAULTS`."""
        if task not in TASKS:
            raise SettingsError(f"task must be one of {list(TASKS)}, got {task!r}")
        own, parts = cls._route(settings)
        for name, default in TASK_DEFAULTS[task].items():
            if own.get(name) is None:
                own[name] = default
        own.pop("task", None)
        return cls(
            task=task, **own, sweep=SweepConfig(**parts["sweep"]), sample=SampleConfig(**parts["sample"])
        )

    @classmethod
    def for_task(
        cls, task: str, sweep: str = "full", quick: bool = False, **overrides: Any
    ) -> ReproductionConfig:
        """What ``hf-illusions reproduce TASK`` runs (so ``make reproduce``), with ``overrides``.

        ``sweep="full"``: every setting, attention metrics for :data:`ATTENTION_PROXIES`;
        ``sweep="seed"``: :data:`SEED_SWEEPS`, for extra training seeds. Both score
        :data:`EVAL_SENTENCES` per split. ``quick``: :data:`QUICK`, a smoke run. ``overrides``
        are flat settings as in :meth:`create` (they win over the presets).
        """
        if task not in TASKS:
            raise SettingsError(f"task must be one of {list(TASKS)}, got {task!r}")
        if sweep not in ("full", "seed"):
            raise SettingsError(f"sweep must be 'full' or 'seed', got {sweep!r}")
        preset: dict[str, Any] = {**FUNCTION_DEFAULTS[task], "max_eval_sentences": EVAL_SENTENCES[task]}
        if task == "dyck":
            preset |= {"interaction_basis_ks": DEFAULT_IB_KS, "circuit_slacks": DEFAULT_CIRCUIT_SLACKS}
        if sweep == "seed":
            preset |= SEED_SWEEPS[task]
        else:
            preset["attention_metrics"] = ATTENTION_PROXIES[task]
        if quick:
            preset |= QUICK[task]
        return cls.create(task, **{**preset, **overrides})


def check_families(simplifiers: Sequence[str]) -> tuple[str, ...]:
    """The simplifier families asked for, checked against :data:`FAMILIES` (order kept)."""
    chosen = [s.strip() for s in simplifiers if s.strip()]
    unknown = [s for s in chosen if s not in FAMILIES]
    if unknown or not chosen:
        raise SettingsError(
            f"simplifiers must be a non-empty subset of {list(FAMILIES)}, got {list(simplifiers)}"
        )
    return tuple(dict.fromkeys(chosen))


def field_names(cls: type) -> set[str]:
    """The field names of a dataclass."""
    return {f.name for f in fields(cls)}


def set_field(obj: Any, name: str, value: Any) -> None:
    """Set a field of a frozen dataclass (only to normalize it in ``__post_init__``)."""
    object.__setattr__(obj, name, value)  # normalizing a frozen dataclass in __post_init__


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_int(value: Any, name: str, minimum: int, none_ok: bool = False) -> None:
    """Raise :class:`SettingsError` naming ``name`` unless ``value`` is an integer ≥ ``minimum``."""
    either = " or None" if none_ok else ""
    if not isinstance(value, int) or isinstance(value, bool):
        raise SettingsError(f"{name} must be an integer >= {minimum}{either}, got {value!r}")
    if value < minimum:
        raise SettingsError(f"{name} must be >= {minimum}{either}, got {value!r}")


def int_tuple(values: Any, name: str, minimum: int) -> tuple[int, ...]:
    """A sequence of integers ≥ ``minimum`` as a tuple (else :class:`SettingsError` naming ``name``)."""
    if isinstance(values, str | bytes) or not isinstance(values, Sequence):
        raise SettingsError(f"{name} must be a sequence of integers >= {minimum}, got {values!r}")
    for value in values:
        check_int(value, f"every value of {name}", minimum)
    return tuple(values)


def str_tuple(values: Any, name: str) -> tuple[str, ...]:
    """A name or a sequence of names as a tuple (else :class:`SettingsError` naming ``name``)."""
    if isinstance(values, str):
        return (values,)
    if not isinstance(values, Sequence) or not all(isinstance(v, str) for v in values):
        raise SettingsError(f"{name} must be a list of names, got {values!r}")
    return tuple(values)


def _relative(path: str, start: str | Path, local: bool) -> str:
    """A local path relative to ``start``; a model that is not a local path (a Hub id) as given."""
    if not local and not os.path.isabs(path) and not os.path.exists(path):
        return path
    return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(start))).as_posix()


def _resolve(path: str, base: Path) -> str:
    """``path`` as :meth:`ReproductionConfig.to_dict` wrote it (relative to ``base``), from the working
    directory; a name that is no path under ``base`` (a Hub id) stays as it is."""
    if os.path.isabs(path):
        return path
    candidate = base / path
    if path.startswith(".") or candidate.exists():
        return portable_path(os.path.normpath(os.path.abspath(candidate)))
    return path
