"""`dyck-illusions`: Dyck-(20,10) with systematic-generalization splits, as a `datasets` builder.

The sampler and the structure functions live in :mod:`hf_illusions.data.dyck_language`; this
module decides *which* draws go into *which* split (rejection sampling, DESIGN.md "Dyck task")
and wraps that in a ``GeneratorBasedBuilder`` with one ``BuilderConfig`` per variant.

Split recipe (Murty et al. 2023's splits, as used by Friedman et al. 2024):

* ``train``: ``n_train`` draws, duplicates allowed; its skeleton set defines "seen structure".
* every other split: fresh draws from its own seeded stream, never a train sentence, and disjoint
  from every split built before it (order: ``EVAL_SPLITS``), so no sentence is scored twice.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

import datasets

from hf_illusions.data import dyck_language as dl
from hf_illusions.errors import SplitError

TRAIN_SPLIT = "train"
EVAL_SPLITS = (
    "validation",
    "test_iid",
    "test_seen_struct",
    "test_unseen_struct_short",
    "test_unseen_struct_long",
    "test_unseen_depth",
)
SPLITS = (TRAIN_SPLIT, *EVAL_SPLITS)
TEST_SPLITS = EVAL_SPLITS[1:]

FEATURES = datasets.Features(
    {
        "tokens": datasets.List(datasets.Value("string")),
        "input_ids": datasets.List(datasets.Value("int32")),
        "length": datasets.Value("int32"),
        "max_depth": datasets.Value("int32"),
        "structure": datasets.List(datasets.Value("string")),
    }
)


@dataclass
class DyckSettings:
    """Every knob of one Dyck variant; `DyckConfig` carries it into `datasets`."""

    n_types: int = 20
    train_depth: int = 10
    depth_test_bound: int = 15
    min_length: int = 4
    max_tokens: int = 512  # BOS + brackets + EOS
    short_threshold: int = 32  # brackets; unseen-structure short is <=, long is >
    n_train: int = 200_000
    eval_sizes: dict[str, int] = field(
        default_factory=lambda: {"validation": 1000, **{s: 2000 for s in TEST_SPLITS}}
    )
    seed: int = 0
    max_draws_per_example: int = 2000  # give up (SplitError) rather than loop forever

    def __post_init__(self) -> None:
        dl.DyckVocab(self.n_types)  # validates n_types
        if self.train_depth < 1:
            raise SplitError(f"train_depth must be >= 1, got {self.train_depth}")
        if self.depth_test_bound <= self.train_depth:
            raise SplitError(
                f"depth_test_bound ({self.depth_test_bound}) must exceed train_depth ({self.train_depth})"
            )
        if self.max_tokens < self.min_length + 2:
            raise SplitError(
                f"max_tokens ({self.max_tokens}) must leave room for min_length ({self.min_length}) + BOS/EOS"
            )
        if self.n_train < 1:
            raise SplitError(f"n_train must be >= 1, got {self.n_train}")
        unknown = set(self.eval_sizes) - set(EVAL_SPLITS)
        if unknown:
            raise SplitError(
                f"eval_sizes names unknown splits {sorted(unknown)}; expected {list(EVAL_SPLITS)}"
            )
        for name in EVAL_SPLITS:
            if self.eval_sizes.get(name, 0) < 1:
                raise SplitError(f"eval_sizes[{name!r}] must be >= 1, got {self.eval_sizes.get(name)}")

    @property
    def max_brackets(self) -> int:
        return self.max_tokens - 2

    @property
    def vocab(self) -> dl.DyckVocab:
        return dl.DyckVocab(self.n_types)


PRESETS: dict[str, DyckSettings] = {
    "dyck-20-10": DyckSettings(),
    "tiny": DyckSettings(
        n_train=2000, max_tokens=128, eval_sizes={"validation": 64, **{s: 64 for s in TEST_SPLITS}}
    ),
}


def make_example(codes: list[int], settings: DyckSettings) -> dict:
    """One row of the dataset: tokens, ids and the bookkeeping fields every split test needs."""
    return {
        "tokens": dl.codes_to_tokens(codes, settings.vocab),
        "input_ids": dl.codes_to_ids(codes),
        "length": len(codes),
        "max_depth": dl.max_depth(codes, settings.n_types),
        "structure": dl.structure(codes, settings.n_types),
    }


def split_predicate(
    split: str, settings: DyckSettings, seen_skeletons: set[str]
) -> Callable[[list[int]], bool]:
    """The definition of ``split`` as a test on one fresh draw (train membership is checked apart)."""
    n = settings.n_types

    def unseen(codes: list[int]) -> bool:
        return any(s not in seen_skeletons for s in dl.structure(codes, n))

    predicates: dict[str, Callable[[list[int]], bool]] = {
        "validation": lambda c: True,
        "test_iid": lambda c: True,
        "test_seen_struct": lambda c: not unseen(c),
        "test_unseen_struct_short": lambda c: len(c) <= settings.short_threshold and unseen(c),
        "test_unseen_struct_long": lambda c: len(c) > settings.short_threshold and unseen(c),
        "test_unseen_depth": lambda c: dl.max_depth(c, n) > settings.train_depth,
    }
    if split not in predicates:
        raise SplitError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
    return predicates[split]


def stream_rng(settings: DyckSettings, split: str) -> random.Random:
    """One independent, seeded stream per split: resizing one split never changes another."""
    return random.Random(f"dyck-illusions/{settings.seed}/{split}")


def generate_splits(settings: DyckSettings, progress: bool = False) -> dict[str, list[list[int]]]:
    """All splits as lists of bracket-code sentences (deterministic in ``settings``)."""
    from tqdm.auto import tqdm

    rng = stream_rng(settings, TRAIN_SPLIT)
    sample_kwargs = dict(
        n_types=settings.n_types, min_length=settings.min_length, max_length=settings.max_brackets
    )
    train = [
        dl.sample_sentence(rng, max_depth=settings.train_depth, **sample_kwargs)
        for _ in tqdm(range(settings.n_train), desc="train", disable=not progress, mininterval=1)
    ]
    taken = {tuple(c) for c in train}
    seen_skeletons = {s for c in train for s in dl.structure(c, settings.n_types)}
    out = {TRAIN_SPLIT: train}
    for split in EVAL_SPLITS:
        rng = stream_rng(settings, split)
        depth = settings.depth_test_bound if split == "test_unseen_depth" else settings.train_depth
        accept = split_predicate(split, settings, seen_skeletons)
        size = settings.eval_sizes[split]
        rows: list[list[int]] = []
        for _ in range(size * settings.max_draws_per_example):
            codes = dl.sample_sentence(rng, max_depth=depth, **sample_kwargs)
            key = tuple(codes)
            if key not in taken and accept(codes):
                taken.add(key)
                rows.append(codes)
                if len(rows) == size:
                    break
        else:
            raise SplitError(
                f"could not fill split {split!r}: {len(rows)}/{size} sentences after "
                f"{size * settings.max_draws_per_example} draws; lower eval_sizes[{split!r}] or raise n_train"
            )
        out[split] = rows
    return out


class DyckConfig(datasets.BuilderConfig):
    """A `BuilderConfig` holding one `DyckSettings`."""

    def __init__(self, settings: DyckSettings | None = None, **kwargs):
        self.settings = settings or DyckSettings()
        super().__init__(version=datasets.Version("1.0.0"), **kwargs)


_DESCRIPTION = """Dyck-(20,10) bracket sentences (Hewitt et al. 2020 sampler, Murty et al. 2023 splits) with
in-distribution and systematic-generalization test splits, for testing whether simplified models stay
faithful off the training distribution (Friedman et al., ICML 2024)."""

_CITATION = """@inproceedings{friedman2024illusions,
  title={Interpretability Illusions in the Generalization of Simplified Models},
  author={Friedman, Dan and Lampinen, Andrew and Dixon, Lucas and Chen, Danqi and Ghandeharioun, Asma},
  booktitle={International Conference on Machine Learning (ICML)},
  year={2024}
}
@inproceedings{murty2023grokking,
  title={Grokking of Hierarchical Structure in Vanilla Transformers},
  author={Murty, Shikhar and Sharma, Pratyusha and Andreas, Jacob and Manning, Christopher D.},
  booktitle={ACL},
  year={2023}
}"""


class DyckIllusions(datasets.GeneratorBasedBuilder):
    """Builder over :func:`generate_splits`; nothing is downloaded, everything is sampled from the seed."""

    BUILDER_CONFIG_CLASS = DyckConfig
    BUILDER_CONFIGS = [
        DyckConfig(name=name, settings=settings, description=f"Dyck preset {name!r}")
        for name, settings in PRESETS.items()
    ]
    DEFAULT_CONFIG_NAME = "dyck-20-10"

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(description=_DESCRIPTION, features=FEATURES, citation=_CITATION)

    def _split_generators(self, dl_manager) -> list[datasets.SplitGenerator]:
        self._sentences = generate_splits(self.config.settings, progress=True)
        return [datasets.SplitGenerator(name=split, gen_kwargs={"split": split}) for split in SPLITS]

    def _generate_examples(self, split: str) -> Iterator[tuple[int, dict]]:
        for i, codes in enumerate(self._sentences[split]):
            yield i, make_example(codes, self.config.settings)


def settings_dict(settings: DyckSettings) -> dict:
    """JSON-ready record of how a dataset was made (stored in the card and the folder)."""
    return asdict(settings)
