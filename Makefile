# The two README commands: `make reproduce` and `make test`. Each installs what it needs into .venv
# (torch first, from the local CPU wheel, then the package) and is cheap to re-run.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_EVALUATE_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 \
	GRADIO_ANALYTICS_ENABLED=False TRANSFORMERS_NO_ADVISORY_WARNINGS=1 MPLBACKEND=Agg
PYTEST_ARGS ?=
CHROMIUM ?= /usr/bin/chromium
# Idle OpenMP threads sleep instead of spinning: on a 2-core machine shared with other jobs, torch's
# spinning second thread made evaluation ~2x slower (measured; see reports/bench/README.md).
THREADS := OMP_WAIT_POLICY=PASSIVE
# reports evaluated at once (one per core; `make reproduce JOBS=1` on a busy machine)
JOBS ?= 2
RUN := $(OFFLINE) $(THREADS) OMP_NUM_THREADS=1 $(BIN)/hf-illusions
# every shipped training seed is evaluated: checkpoints/dyck-seed*, dyck-sparse-seed*, code-seed*
DYCK_SEEDS := $(sort $(wildcard checkpoints/dyck-seed*))
SPARSE_SEEDS := $(sort $(wildcard checkpoints/dyck-sparse-seed*))
CODE_SEEDS := $(sort $(wildcard checkpoints/code-seed*))
# Dyck models of transformers' own Llama class (train --architecture llama): rotary positions
LLAMA_MODELS := $(sort $(wildcard checkpoints/dyck-llama*))
LLAMA_REPORTS := $(patsubst checkpoints/%,report-%,$(LLAMA_MODELS))
# Longest first, so the two cores stay busy to the end (make -j starts them in this order): the three
# full sweeps, then the seed sweeps. The dense and sparse Dyck reports read the same data folder:
# with code second, the first Dyck report has verified (and cached) it before the second starts.
REPORTS := report-dyck report-code report-dyck-sparse $(LLAMA_REPORTS) \
	$(patsubst checkpoints/%,report-%,$(CODE_SEEDS) $(DYCK_SEEDS) $(SPARSE_SEEDS))
BENCH_STAMP := $(VENV)/.installed-bench
BENCHMARKS := train proxy intervention data fit_eval scaling any_model

.PHONY: install browser reproduce data report-dyck report-dyck-sparse report-code test test-slow test-python bench space lint format clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Every shipped checkpoint: the main seed of each model kind with the full sweep, the extra training
# seeds with each family's representative settings (--sweep seed); then the paper's findings across
# seeds (reports/findings), the committed summaries (reports/summary) and the README's results block.
# The data is built first (once), then the seven reports run two at a time, one per core.
reproduce: install data
	$(MAKE) --no-print-directory -j$(JOBS) $(REPORTS)
	$(RUN) findings --readme README.md \
		--group dyck reports/dyck $(DYCK_SEEDS:checkpoints/%=reports/%) \
		--group dyck-sparse reports/dyck-sparse $(SPARSE_SEEDS:checkpoints/%=reports/%) \
		--group code reports/code $(CODE_SEEDS:checkpoints/%=reports/%) \
		$(if $(LLAMA_MODELS),--group dyck-llama $(LLAMA_MODELS:checkpoints/%=reports/%))

# The code corpus is read from pinned package versions (installed into $(CODE_SOURCES), not from the
# venv's own, which pip may upgrade), so a fresh machine rebuilds the exact splits the shipped code
# models were trained on (checked against their training_data.json by `reproduce`).
CODE_SOURCES := $(VENV)/code-sources
data: install
	test -f dyck-illusions/README.md || $(RUN) data build dyck --data_config dyck-20-10 --out dyck-illusions
	test -f code-illusions/README.md || { $(RUN) data sources --out $(CODE_SOURCES) && \
		HF_ILLUSIONS_CODE_SOURCES=$(CODE_SOURCES) $(RUN) data build code --out code-illusions; }

report-dyck:
	$(RUN) reproduce dyck
report-dyck-sparse:
	$(RUN) reproduce dyck --model checkpoints/dyck-sparse --out reports/dyck-sparse
report-code:
	$(RUN) reproduce code
report-dyck-seed%: FORCE
	$(RUN) reproduce dyck --model checkpoints/dyck-seed$* --out reports/dyck-seed$* --sweep seed
report-dyck-sparse-seed%: FORCE
	$(RUN) reproduce dyck --model checkpoints/dyck-sparse-seed$* --out reports/dyck-sparse-seed$* --sweep seed
report-code-seed%: FORCE
	$(RUN) reproduce code --model checkpoints/code-seed$* --out reports/code-seed$* --sweep seed
# the full sweep: rotary queries/keys need higher SVD ranks than ours to look faithful (rank 32 is in it)
$(LLAMA_REPORTS): report-%: FORCE
	$(RUN) reproduce dyck --model checkpoints/$* --out reports/$*
FORCE:

# The Space's browser test drives Debian's chromium with Playwright (no `playwright install`).
# Installed here when missing and apt-get is usable; otherwise that test fails and says how to install it.
browser:
	@test -x $(CHROMIUM) || ! command -v apt-get >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
		echo "could not install chromium (apt-get failed); tests/test_space.py needs $(CHROMIUM)"

test: install browser
	$(OFFLINE) $(BIN)/python -m pytest $(PYTEST_ARGS)

test-slow: install
	$(OFFLINE) $(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

# `make test-python PY=3.13`: the fast suite under another Python, in its own .venv-py3.13 (cheap to
# re-run: a stamp file, as for .venv). The interpreter: the newest pyenv 3.13.x, else python3.13 on
# PATH. The local torch wheel is for 3.11 only, so there pip takes torch 2.13.0 from PyPI: the CUDA
# build (~3 GB with its nvidia-* packages), which runs on the CPU. CI stays on 3.11 (`make test`).
PY ?=
# newest pyenv $(1).N (not a free-threaded 3.13.0t), else python$(1) on PATH, else a clear error
find_python = py=$$(ls -d "$$(pyenv root 2>/dev/null)"/versions/$(1).*/bin/python 2>/dev/null | \
		grep -E '/$(subst .,\.,$(1))\.[0-9]+/bin/python$$' | sort -V | tail -n 1); \
	test -x "$$py" || py=$$(command -v python$(1)) || \
	{ echo "test-python: no Python $(1) found (pyenv install $(1), or put python$(1) on PATH)" >&2; exit 1; }

test-python: browser
	@test -n "$(PY)" || { echo "usage: make test-python PY=3.13 (or 3.12, 3.11)" >&2; exit 1; }
	$(MAKE) --no-print-directory .venv-py$(PY)/.installed
	$(OFFLINE) .venv-py$(PY)/bin/python -m pytest $(PYTEST_ARGS)

.venv-py%/.installed: pyproject.toml
	@$(call find_python,$*); test -x .venv-py$*/bin/python || \
		{ echo "$$py -m venv .venv-py$*"; "$$py" -m venv .venv-py$*; }
	$(@D)/bin/python -c 'import sys; v = "%d.%d" % sys.version_info[:2]; assert v == "$*", v'
	$(@D)/bin/pip install --quiet --upgrade pip
	$(@D)/bin/pip install --quiet torch==2.13.0
	$(@D)/bin/pip install --quiet -e '.[dev]'
	touch $@

# Full-size benchmarks (~10 min): reports/bench/<name>.json + README.md. Never fails on speed;
# `make test` runs each in --smoke mode (tests/test_bench_smoke.py).
$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	for name in $(BENCHMARKS); do \
		$(OFFLINE) $(THREADS) TQDM_DISABLE=1 $(BIN)/python scripts/bench_$$name.py || exit 1; \
	done

# `make space MODEL=<folder>` serves another Dyck model (ours, or a Llama / GPT-2 one from `train --architecture`)
space: install
	$(OFFLINE) $(BIN)/python spaces_app/app.py $(if $(MODEL),--model $(MODEL))

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports  # the layering contracts in pyproject.toml

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .venv-py* dyck-illusions code-illusions reports/dyck* reports/code* reports/findings runs .pytest_cache
