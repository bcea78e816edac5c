# Two set-up commands do everything on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.swelab-installed
PYTHON ?= python3
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c

.PHONY: install demo test lint system-deps system-deps-tex clean-outputs

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet "pip>=23.2"
	$(PY) -m pip install --progress-bar on -e ".[dev,cluster,service-pg]"
	@bash tests/install_llama_portable.sh $(PY)
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (swelab)" >/dev/null
	@touch $(STAMP)

# Debian packages the sandbox and the report test need; installed when missing and root, else explained.
system-deps:
	@bash tests/ensure_bwrap.sh
	@command -v ip >/dev/null || bash tests/apt_install.sh iproute2  # the evaluation namespace's routes
	@{ command -v prlimit && command -v unshare; } >/dev/null || bash tests/apt_install.sh util-linux  # limits, netns
	@if test -x $(PY); then $(PY) -c "from swelab import sandbox; p = sandbox.sandbox_problem(evaluation=True); \
		print('sandbox: ' + (('UNAVAILABLE: ' + p) if p else 'ok; limits: ' + sandbox.limits_in_force()))"; fi
	@{ command -v gcc && command -v g++ && command -v pkg-config && command -v dot; } >/dev/null \
		|| bash tests/apt_install.sh build-essential pkg-config graphviz  # environment builds: sdists, sphinx 7.2+
	@{ test -x /usr/lib/ccache/gcc && command -v gs && test -e /usr/include/libqhull_r/libqhull_r.h \
		&& pkg-config --exists freetype2 cairo; } >/dev/null 2>&1 \
		|| bash tests/apt_install.sh ccache ghostscript libfreetype-dev libqhull-dev libcairo2-dev  # compiled repos
	@bash tests/ensure_chromium.sh
	@{ command -v initdb || ls /usr/lib/postgresql/*/bin/initdb; } >/dev/null 2>&1 || bash tests/apt_install.sh postgresql  # store tests

# Opt-in (about 170 MB): Debian's TeX, as the official matplotlib image apt-installs it, for the matplotlib rows
# whose tests run TeX (usetex, pgf); without it those tests fail and so does the row's gold (docs/FIDELITY.md).
system-deps-tex:
	@{ command -v xelatex && command -v lualatex && command -v dvipng; } >/dev/null \
		|| bash tests/apt_install.sh texlive texlive-latex-extra texlive-fonts-recommended texlive-xetex \
		texlive-luatex cm-super dvipng

demo: install
	$(VENV)/bin/swelab run params/demo.yaml

test: install system-deps
	$(PY) -m pytest --nbval-lax tests notebooks

# ruff, and no committed notebook may carry outputs or execution counts (the notebooks stay thin narratives)
lint: install
	$(VENV)/bin/ruff check lib tests
	$(PY) tests/check_notebooks_clean.py notebooks

clean-outputs:
	find outputs -mindepth 1 -maxdepth 1 ! -name .gitkeep -exec rm -rf {} +
