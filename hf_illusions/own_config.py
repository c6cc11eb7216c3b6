"""What an evaluation of your own model on your own text is: one :class:`OwnDataConfig`.

The counterpart of :class:`~hf_illusions.config.ReproductionConfig` for ``hf-illusions evaluate
--simplifier`` and :func:`~hf_illusions.own_data.evaluate_own_model`: the model and the text data
(folders or Hub ids), the simplifier and its setting, the windows, the samples of fitted and scored
windows with their seed (a :class:`~hf_illusions.config.SampleConfig`), and where the report goes.
The report writes it into ``results.json`` under ``"config"``, and ``hf-illusions evaluate --config
reports/own_model/results.json`` (or ``evaluate_own(OwnDataConfig.from_results(…))``) runs it again.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from hf_illusions.config import (
    ConfigFile,
    SampleConfig,
    check_int,
    field_names,
    int_tuple,
    set_field,
    str_tuple,
)
from hf_illusions.errors import SettingsError

#: simplifiers that fit any attention-interface model, and the one setting each is swept by
SETTING = {"svd": "rank", "kmeans": "k", "onehot": None}
#: how :func:`~hf_illusions.own_data.evaluate_own_model` names the sample's fields
SAMPLE_ARGUMENTS = {"n_fit": "n_fit_sequences", "max_windows": "max_eval_sentences", "seed": "seed"}


@dataclass(frozen=True)
class OwnDataConfig(ConfigFile):
    """Everything that determines an evaluation of your own model (see the module docstring).

    Args:
        model / data: a folder or Hub id each (the model with its tokenizer; text in ``text_column``).
        out: the report folder.
        simplifier: ``"svd"`` (with ``rank``), ``"kmeans"`` (with ``k``) or ``"onehot"``;
            ``layers`` / ``heads``: what it simplifies (default all).
        fit_split / splits / reference: the split fitted on, the splits scored (default every other
            one) and the in-distribution split gaps are taken against (default the first scored).
        window / add_bos: tokens per window, BOS included; whether windows start with BOS
            (default: when the tokenizer has one).
        sample: ``n_fit_sequences`` fitting windows, ``max_eval_sentences`` scored windows per split
            (``None``: all), and the seed of both draws.
        n_resamples: bootstrap resamples (default :data:`~hf_illusions.statistics.N_RESAMPLES`).
        max_batch_tokens / device / dtype / device_map: how the run goes (see ``evaluate_own_model``).
    """

    KIND: ClassVar[str] = "own-data evaluation"
    COMMAND: ClassVar[str] = "hf-illusions evaluate --simplifier"
    NESTED: ClassVar[dict[str, type]] = {"sample": SampleConfig}
    PATHS: ClassVar[tuple[str, ...]] = ("model", "data", "out")
    LOCAL: ClassVar[tuple[str, ...]] = ("out",)  # the model and the data may be Hub ids

    model: str
    data: str
    out: str = "reports/own_model"
    simplifier: str = "svd"
    rank: int | None = None
    k: int | None = None
    layers: tuple[int, ...] | None = None
    heads: tuple[int, ...] | None = None
    text_column: str = "text"
    fit_split: str = "train"
    splits: tuple[str, ...] | None = None
    reference: str | None = None
    window: int = 128
    add_bos: bool | None = None
    sample: SampleConfig = field(default_factory=SampleConfig)
    n_resamples: int | None = None
    max_batch_tokens: int = 16384
    device: str | None = None
    dtype: str | None = None
    device_map: str | None = None

    def __post_init__(self) -> None:
        for name in ("model", "data", "out", "text_column", "fit_split"):
            value = getattr(self, name)
            if not isinstance(value, str | os.PathLike) or not os.fspath(value):
                raise SettingsError(f"{name} must be a non-empty path or name, got {value!r}")
            set_field(self, name, os.fspath(value))
        if self.simplifier not in SETTING:
            raise SettingsError(f"simplifier must be one of {sorted(SETTING)}, got {self.simplifier!r}")
        key = SETTING[self.simplifier]
        if key is not None and getattr(self, key) is None:
            raise SettingsError(f"the {self.simplifier!r} simplifier needs --{key} (e.g. --{key} 8)")
        for name in ("rank", "k", "n_resamples"):
            if getattr(self, name) is not None:
                check_int(getattr(self, name), name, minimum=1, none_ok=True)
        for name in ("layers", "heads"):
            if getattr(self, name) is not None:
                set_field(self, name, int_tuple(getattr(self, name), name, minimum=0))
        if self.splits is not None:
            set_field(self, "splits", str_tuple(self.splits, "splits"))
        check_int(self.max_batch_tokens, "max_batch_tokens", minimum=1)

    @classmethod
    def create(cls, **settings: Any) -> OwnDataConfig:
        """A config from flat keyword arguments: its fields, and the sample's under either name
        (``n_fit_sequences`` or ``n_fit``, ``max_eval_sentences`` or ``max_windows``, ``seed``)."""
        aliases = {SAMPLE_ARGUMENTS[k]: k for k in settings if k in SAMPLE_ARGUMENTS}  # field -> as given
        own, parts = cls._route({SAMPLE_ARGUMENTS.get(k, k): v for k, v in settings.items()})
        try:
            sample = SampleConfig(**parts["sample"])
        except SettingsError as err:  # named as the caller named it
            text = str(err)
            for field_name, given in aliases.items():
                text = text.replace(field_name, given)
            raise SettingsError(text) from None
        return cls(**own, sample=sample)

    @classmethod
    def from_call(cls, arguments: Mapping[str, Any]) -> OwnDataConfig | None:
        """The config of an :func:`~hf_illusions.own_data.evaluate_own_model` call, or ``None`` when
        the call passed objects a file cannot hold (a loaded model or dataset, a tokenizer, a
        labeller, a simplifier instance, a device map dict)."""
        plain = (str, os.PathLike)
        if not (isinstance(arguments["model"], plain) and isinstance(arguments["data"], plain)):
            return None
        if not isinstance(arguments["simplifier"], str) or isinstance(arguments.get("device_map"), dict):
            return None
        if arguments.get("tokenizer") is not None or arguments.get("labeller") is not None:
            return None
        names = field_names(cls) | set(SAMPLE_ARGUMENTS)
        settings = {k: v for k, v in arguments.items() if k in names and v is not None}
        return cls.create(**{"out": "reports/own_model", **settings})

    def arguments(self) -> dict[str, Any]:
        """The keyword arguments of :func:`~hf_illusions.own_data.evaluate_own_model` it stands for."""
        own = {name: getattr(self, name) for name in field_names(type(self)) - {"model", "data", "sample"}}
        return own | {name: getattr(self.sample, field) for name, field in SAMPLE_ARGUMENTS.items()}
