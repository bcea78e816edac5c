# Two set-up commands do everything on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.swelab-installed
PYTHON ?= python3
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c

.PHONY: install demo test lint system-deps clean-outputs

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet "pip>=23.2"
	$(PY) -m pip install --progress-bar on -e ".[dev]"
	@bash tests/install_llama_portable.sh $(PY)
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (swelab)" >/dev/null
	@touch $(STAMP)

# Debian packages the sandbox and the report test need; installed when missing and root, else explained.
system-deps:
	@bash tests/ensure_bwrap.sh
	@command -v ip >/dev/null || bash tests/apt_install.sh iproute2  # the evaluation namespace's routes
	@bash tests/ensure_chromium.sh

demo: install
	$(VENV)/bin/swelab run params/demo.yaml

test: install system-deps
	$(PY) -m pytest --nbval-lax tests notebooks

lint: install
	$(VENV)/bin/ruff check lib tests

clean-outputs:
	find outputs -mindepth 1 -maxdepth 1 ! -name .gitkeep -exec rm -rf {} +
