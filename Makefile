# Reproducible Papers. The two commands: `make book` and `make test` (see README.md).
# Both create .venv if missing, install the pinned dependencies and fetch the pinned assets; both are
# incremental: a second run reuses the venv, the asset cache and unchanged chapter outputs.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
STAMP  := $(VENV)/.installed
export PYTHONHASHSEED := 0

CHAPTERS  := $(sort $(basename $(notdir $(wildcard notebooks/[0-9][0-9]_*.md))))
LIB_FILES := $(shell find lib -name '*.py' -o -name '*.yaml' -o -name '*.json')
QUICK_OUT := $(CHAPTERS:%=book/executed/%.ipynb)
PAGES     := $(wildcard book/*.md) book/references.bib _config.yml _toc.yml

.PHONY: help venv assets run book test serve clean lint constraints chromium
.DEFAULT_GOAL := help

help:
	@echo "make book   - install, fetch assets, run every chapter (quick profile), build _build/html"
	@echo "make test   - install, fetch assets, run the whole test suite (smoke profile)"
	@echo "make run    - run the chapters whose sources changed (quick profile)"
	@echo "make serve  - serve _build/html on http://localhost:8000"
	@echo "make lint   - ruff over lib, tests and bench"
	@echo "make clean  - remove build outputs (keeps .venv and the asset cache)"

venv: $(STAMP)

$(STAMP): requirements-torch.txt requirements.txt constraints.txt pyproject.toml
	@$(PYTHON) -c 'import sys; v = sys.version_info; sys.exit(0 if v >= (3, 11) else f"Python 3.11+ is needed, {sys.executable} is {v.major}.{v.minor}: run make PYTHON=python3.11 ...")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements-torch.txt
	$(PY) -m pip install --quiet -r requirements.txt -c constraints.txt
	$(PY) -m pip install --quiet --no-deps -e .
	@# ipykernel writes the spec into a temp folder it leaves behind (empty): give it one we remove.
	@mkdir -p $(VENV)/tmp
	TMPDIR=$(CURDIR)/$(VENV)/tmp $(PY) -m ipykernel install --sys-prefix --name repro --display-name "Python (repro)" >/dev/null
	@rm -rf $(VENV)/tmp
	@# JupyterLab opens the MyST chapter files as notebooks (jupytext) on double-click.
	@mkdir -p $(VENV)/share/jupyter/lab/settings
	@printf '%s\n' '{"@jupyterlab/docmanager-extension:plugin": {"defaultViewers": {"markdown": "Jupytext Notebook", "myst": "Jupytext Notebook"}}}' > $(VENV)/share/jupyter/lab/settings/overrides.json
	@touch $@

assets: $(STAMP)
	@$(PY) -m repro assets fetch --all

book/executed/%.ipynb: notebooks/%.md $(wildcard notebooks/profiles/quick/*.yaml) $(LIB_FILES) $(STAMP) | assets
	$(PY) -m repro run $* --profile quick

run: $(QUICK_OUT)

book/generated/results.md: $(QUICK_OUT)
	@$(PY) -m repro results-page --out $@

# the kernel page's format diagrams, drawn from what compress_24 / to_fragments produce
book/generated/sparse24-format.png: bench/plot_sparse24_format.py lib/repro/kernels/format.py \
		lib/repro/kernels/fragments.py $(STAMP)
	@$(PY) bench/plot_sparse24_format.py --out book/generated

# one warp of the sparse-MMA kernel's loop, from its sm_90a machine code (compiled here, no GPU)
book/generated/spmma-loop.png: bench/plot_spmma_loop.py bench/sp24/sass.py bench/compile_offline.py \
		lib/repro/kernels/gluon_sp24.py $(STAMP)
	@$(PY) bench/plot_spmma_loop.py --out book/generated

_build/html/index.html: $(QUICK_OUT) book/generated/results.md book/generated/sparse24-format.png \
		book/generated/spmma-loop.png $(PAGES) \
		$(wildcard book/_static/* bench/results/*-summary.md bench/results/*.png)
	$(BIN)/jupyter-book build . --warningiserror --keep-going --quiet
	@touch $@

book: _build/html/index.html
	@echo "The book is in _build/html (open _build/html/index.html, or: make serve)"

chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "Installing Debian's chromium for the site screenshot test..."; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "note: chromium is missing; the screenshot test will be skipped. Install it with: sudo apt-get install chromium"; \
	  fi

test: $(STAMP) chromium | assets
	$(PY) -m pytest

lint: $(STAMP)
	$(BIN)/ruff check lib tests bench

serve:
	$(PY) -m http.server --directory _build/html 8000

constraints: $(STAMP)
	@(head -n 2 constraints.txt; $(PY) -m pip freeze --exclude-editable | grep -viE '^(torch|pip|setuptools)==') > constraints.tmp && mv constraints.tmp constraints.txt

clean:
	rm -rf _build book/executed book/generated results
