# The two README commands: `make reproduce` and `make test`. Each installs what it needs into .venv
# (torch first, from the local CPU wheel, then the package) and is cheap to re-run.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_EVALUATE_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 \
	GRADIO_ANALYTICS_ENABLED=False TRANSFORMERS_NO_ADVISORY_WARNINGS=1 MPLBACKEND=Agg
PYTEST_ARGS ?=

.PHONY: install reproduce test test-slow lint format clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

reproduce: install
	$(OFFLINE) $(BIN)/hf-illusions reproduce dyck

test: install
	$(OFFLINE) $(BIN)/python -m pytest $(PYTEST_ARGS)

test-slow: install
	$(OFFLINE) $(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) dyck-illusions reports/dyck runs .pytest_cache
