"""`code-illusions`: character-level code completion with systematic-generalization splits.

The code task of Friedman et al. (ICML 2024, §5) — next-character prediction on source code,
scored per prediction type (:mod:`hf_illusions.data.code_labels`) — built offline from the
sources in :mod:`hf_illusions.data.code_corpus`, or from CodeSearchNet files a user has.

Splits (every split is cut at **file** level, then into windows; no window's ids occur twice):

* ``train`` / ``validation`` / ``test_iid``: files of the training packages, split by a seeded
  hash of their path mapped to [0, 1): below ``validation_fraction`` → validation, below
  ``validation_fraction + test_fraction`` → test_iid, else train. A file's split depends on its
  path alone, so a package upgrade that adds or removes files never moves a file across splits.
* ``test_unseen_package``: whole packages (CodeSearchNet: repositories) never seen in training —
  new authors, naming conventions and APIs, so identifiers must be copied from the context rather
  than recalled.
* ``test_other_language``: C headers (CodeSearchNet: functions in another language) — same
  alphabet, different syntax, keywords and layout; the furthest systematic shift.

Examples are windows of ``window_chars`` characters starting at a line start (non-overlapping,
at most ``max_windows_per_file`` per file); ``input_ids`` is ``<bos>`` + one id per character.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

import datasets

from hf_illusions.data import code_corpus as cc
from hf_illusions.data.code_labels import PREDICTION_TYPES, window_types
from hf_illusions.errors import SplitError

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)
PAD_ID, BOS_ID, EOS_ID, UNK_ID = range(4)
#: tab and newline are kept (indentation is a prediction type); every other character outside
#: printable ASCII — non-ASCII letters, emoji, form feeds — becomes ``<unk>`` and is counted.
CHARS = "\t\n" + "".join(chr(c) for c in range(32, 127))
CHAR_TO_ID = {c: i + len(SPECIALS) for i, c in enumerate(CHARS)}
VOCAB_SIZE = len(SPECIALS) + len(CHARS)

TRAIN_SPLIT = "train"
IID_SPLITS = ("validation", "test_iid")
OOD_SPLITS = ("test_unseen_package", "test_other_language")
SPLITS = (TRAIN_SPLIT, *IID_SPLITS, *OOD_SPLITS)

FEATURES = datasets.Features(
    {
        "text": datasets.Value("string"),
        "input_ids": datasets.List(datasets.Value("int32")),
        "prediction_types": datasets.List(datasets.ClassLabel(names=list(PREDICTION_TYPES))),
        "source": datasets.Value("string"),
        "package": datasets.Value("string"),
        "start": datasets.Value("int32"),
    }
)


def encode(text: str) -> list[int]:
    """``<bos>`` + one id per character (``<unk>`` outside :data:`CHARS`); stable across builds."""
    return [BOS_ID, *(CHAR_TO_ID.get(c, UNK_ID) for c in text)]


def decode(ids: list[int]) -> str:
    """Inverse of :func:`encode` for the characters (specials are dropped, ``<unk>`` shows as ``\\ufffd``)."""
    return "".join(
        CHARS[i - len(SPECIALS)] if i >= len(SPECIALS) else ("\ufffd" if i == UNK_ID else "") for i in ids
    )


@dataclass
class CodeSettings:
    """Every knob of one `code-illusions` variant; `CodeConfig` carries it into `datasets`."""

    train_packages: tuple[str, ...] = (
        cc.STDLIB,
        "huggingface_hub",
        "datasets",
        "tqdm",
        "packaging",
        "filelock",
        "fsspec",
    )
    unseen_packages: tuple[str, ...] = ("accelerate", "jinja2")
    other_language: tuple[str, ...] = (cc.PYTHON_INCLUDE,)
    max_files_per_package: int = 300
    max_bytes_per_package: int = 2_000_000
    max_file_bytes: int = 200_000
    window_chars: int = 256
    max_windows_per_file: int = 64
    validation_fraction: float = 0.05
    test_fraction: float = 0.1
    seed: int = 0
    #: CodeSearchNet files; when given they replace the installed-package corpus
    codesearchnet: tuple[str, ...] = ()
    unseen_repo_fraction: float = 0.2
    train_language: str = "python"  # CodeSearchNet: other languages go to test_other_language

    def __post_init__(self) -> None:
        for name in ("train_packages", "unseen_packages", "other_language", "codesearchnet"):
            setattr(self, name, tuple(getattr(self, name)))  # JSON round trips give lists
        if overlap := set(self.train_packages) & set(self.unseen_packages):
            raise SplitError(f"unseen_packages must not contain training packages, got {sorted(overlap)}")
        if self.window_chars < 8:
            raise SplitError(f"window_chars must be >= 8, got {self.window_chars}")
        if self.validation_fraction <= 0 or self.test_fraction <= 0:
            raise SplitError("validation_fraction and test_fraction must be > 0")
        if self.validation_fraction + self.test_fraction >= 1:
            raise SplitError(
                f"validation_fraction + test_fraction must be < 1, got "
                f"{self.validation_fraction} + {self.test_fraction}"
            )
        if min(self.max_files_per_package, self.max_bytes_per_package, self.max_windows_per_file) < 1:
            raise SplitError(
                "max_files_per_package, max_bytes_per_package and max_windows_per_file must be >= 1"
            )


PRESETS: dict[str, CodeSettings] = {
    "code-py": CodeSettings(),
    "tiny": CodeSettings(
        train_packages=(cc.STDLIB, "tqdm", "packaging"),
        unseen_packages=("jinja2",),
        max_files_per_package=8,
        max_bytes_per_package=60_000,
        max_file_bytes=40_000,
        window_chars=128,
        max_windows_per_file=8,
        validation_fraction=0.15,
        test_fraction=0.15,
    ),
}


def window_starts(text: str, length: int, max_windows: int) -> list[int]:
    """Non-overlapping windows of exactly ``length`` characters, each starting at a line start."""
    starts, pos = [], 0
    while pos + length <= len(text) and len(starts) < max_windows:
        starts.append(pos)
        nl = text.find("\n", pos + length - 1)  # next window starts after the line this one ends in
        if nl < 0:
            break
        pos = nl + 1
    return starts


def split_draw(seed: int, source: str) -> float:
    """A file's uniform draw in [0, 1) for the train / validation / test_iid cut (seeded SHA-256)."""
    return int(cc.seeded_rank(seed, "split", source)[:13], 16) / 16**13


def assign_splits(
    docs: list[cc.Document], settings: CodeSettings, unseen: tuple[str, ...]
) -> dict[str, list[cc.Document]]:
    """File-level split assignment (see the module docstring); records the split in each manifest entry."""
    out: dict[str, list[cc.Document]] = {s: [] for s in SPLITS}
    pool = []
    for doc in docs:
        if doc.package in unseen:
            out["test_unseen_package"].append(doc)
        elif doc.language != settings.train_language or doc.package in settings.other_language:
            out["test_other_language"].append(doc)
        else:
            pool.append(doc)
    # Each file's split is a function of its own path and the seed only (a seeded hash mapped to
    # [0, 1) against the fractions), never of which other files exist: upgrading an installed
    # package adds or removes files but never moves an existing file between train and test.
    cuts = (
        (settings.validation_fraction, "validation"),
        (settings.validation_fraction + settings.test_fraction, "test_iid"),
    )
    for doc in sorted(pool, key=lambda d: split_draw(settings.seed, d.source)):
        draw = split_draw(settings.seed, doc.source)
        out[next((split for cut, split in cuts if draw < cut), TRAIN_SPLIT)].append(doc)
    # A tiny corpus (a few CodeSearchNet files) can leave a split empty: it then takes one file from
    # the largest of the other two. This only happens with a handful of files.
    for split in (TRAIN_SPLIT, "validation", "test_iid"):
        donor = max((TRAIN_SPLIT, "validation", "test_iid"), key=lambda s: len(out[s]))
        if not out[split] and len(out[donor]) > 1:
            out[split].append(out[donor].pop(0 if split != TRAIN_SPLIT else -1))
    for split, members in out.items():
        members.sort(key=lambda d: d.source)
        for doc in members:
            doc.record["split"] = split
    return out


def collect_documents(settings: CodeSettings) -> tuple[list[cc.Document], tuple[str, ...]]:
    """``(documents, held-out packages)``: the installed-package corpus, or CodeSearchNet files with
    held-out repositories (a seeded-hash sample of ``unseen_repo_fraction`` of the repositories)."""
    if settings.codesearchnet:
        docs = cc.from_codesearchnet(settings.codesearchnet)
        repos = sorted(
            {d.package for d in docs if d.language == settings.train_language},
            key=lambda r: cc.seeded_rank(settings.seed, "repo", r),
        )
        return docs, tuple(sorted(repos[: max(1, round(settings.unseen_repo_fraction * len(repos)))]))
    docs = []
    for name in (*settings.train_packages, *settings.unseen_packages, *settings.other_language):
        docs.extend(
            cc.discover(
                name,
                settings.seed,
                settings.max_files_per_package,
                settings.max_bytes_per_package,
                settings.max_file_bytes,
            )
        )
    return docs, settings.unseen_packages


@dataclass
class CodeCorpus:
    """Every split's examples plus the manifest (one record per file) and build counts."""

    examples: dict[str, list[dict]]
    manifest: list[dict]
    counts: dict[str, int] = field(default_factory=dict)
    unseen_packages: tuple[str, ...] = ()


def build_corpus(settings: CodeSettings) -> CodeCorpus:
    """Documents → file-level splits → windows, dropping windows whose ids already occurred."""
    docs, unseen = collect_documents(settings)
    split_docs = assign_splits(docs, settings, unseen)
    taken: set[tuple[int, ...]] = set()
    examples: dict[str, list[dict]] = {}
    counts = {"duplicate_windows_dropped": 0, "unk_chars": 0, "windows_with_unk": 0}
    for split in SPLITS:
        rows = []
        for doc in split_docs[split]:
            doc.record["windows"] = 0
            if doc.labels is None:
                continue
            for start in window_starts(doc.text, settings.window_chars, settings.max_windows_per_file):
                text = doc.text[start : start + settings.window_chars]
                ids = encode(text)
                key = tuple(ids)
                if key in taken:
                    counts["duplicate_windows_dropped"] += 1
                    continue
                taken.add(key)
                n_unk = ids.count(UNK_ID)
                counts["unk_chars"] += n_unk
                counts["windows_with_unk"] += n_unk > 0
                doc.record["windows"] += 1
                rows.append(
                    {
                        "text": text,
                        "input_ids": ids,
                        "prediction_types": window_types(doc.labels, start, start + settings.window_chars),
                        "source": doc.source,
                        "package": doc.package,
                        "start": start,
                    }
                )
        if not rows and split not in OOD_SPLITS:
            raise SplitError(f"split {split!r} has no windows; add packages or raise the per-package caps")
        examples[split] = rows
        counts[f"{split}_windows"] = len(rows)
        counts[f"{split}_files"] = len(split_docs[split])
    manifest = sorted((d.record for docs in split_docs.values() for d in docs), key=lambda r: r["path"])
    counts["files_lexer_failed"] = sum(r["status"] != "ok" for r in manifest)
    return CodeCorpus(examples, manifest, counts, unseen)


def present_splits(corpus: CodeCorpus) -> list[str]:
    """Splits with at least one window (an OOD split can be empty for CodeSearchNet input)."""
    return [s for s in SPLITS if corpus.examples.get(s)]


class CodeConfig(datasets.BuilderConfig):
    """A `BuilderConfig` holding one `CodeSettings`."""

    def __init__(self, settings: CodeSettings | None = None, **kwargs):
        self.settings = settings or CodeSettings()
        super().__init__(version=datasets.Version("1.0.0"), **kwargs)


_DESCRIPTION = """Character windows of Python source code labelled with a prediction type per character, with
held-out-file (IID), held-out-package and other-language splits, for testing whether simplified models stay
faithful off the training distribution (Friedman et al., ICML 2024, code completion)."""

_CITATION = """@inproceedings{friedman2024illusions,
  title={Interpretability Illusions in the Generalization of Simplified Models},
  author={Friedman, Dan and Lampinen, Andrew and Dixon, Lucas and Chen, Danqi and Ghandeharioun, Asma},
  booktitle={International Conference on Machine Learning (ICML)},
  year={2024}
}
@article{husain2019codesearchnet,
  title={CodeSearchNet Challenge: Evaluating the State of Semantic Code Search},
  author={Husain, Hamel and Wu, Ho-Hsiang and Gazit, Tiferet and Allamanis, Miltiadis and Brockschmidt, Marc},
  journal={arXiv preprint arXiv:1909.09436},
  year={2019}
}"""


class CodeIllusions(datasets.GeneratorBasedBuilder):
    """Builder over :func:`build_corpus`; reads local files only, never downloads."""

    BUILDER_CONFIG_CLASS = CodeConfig
    BUILDER_CONFIGS = [
        CodeConfig(name=name, settings=settings, description=f"code preset {name!r}")
        for name, settings in PRESETS.items()
    ]
    DEFAULT_CONFIG_NAME = "code-py"

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(description=_DESCRIPTION, features=FEATURES, citation=_CITATION)

    def _split_generators(self, dl_manager) -> list[datasets.SplitGenerator]:
        self.corpus = build_corpus(self.config.settings)
        return [
            datasets.SplitGenerator(name=split, gen_kwargs={"split": split})
            for split in present_splits(self.corpus)
        ]

    def _generate_examples(self, split: str) -> Iterator[tuple[int, dict]]:
        yield from enumerate(self.corpus.examples[split])


def settings_dict(settings: CodeSettings) -> dict:
    """JSON-ready record of how a dataset was made (stored in the card and the folder)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(settings).items()}
