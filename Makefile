# tmt: `make demo` and `make test` are the two commands a newcomer needs.
# Each creates .venv when missing, installs the package, installs the system
# packages (espeak-ng, flite, libsndfile1, sox, chromium) when missing and we are root.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.tmt-installed
SYSPKGS := espeak-ng flite libsndfile1 sox shellcheck default-jre-headless chromium
PYTEST_ARGS ?=

.PHONY: install sysdeps test demo serve bench lint docs clean help

help:
	@echo "make demo     - run the embedded scenes demo (recipes/scenes/run.sh --preset quick)"
	@echo "make test     - run the test suite (unit + integration, CPU)"
	@echo "make serve    - serve the demo's model at http://127.0.0.1:8000/ (after make demo)"
	@echo "make bench    - run the benchmarks in benchmarks/ (tables on stdout, json in benchmarks/results/)"
	@echo "make install  - create .venv and install tmt with the dev, judges and serve extras"
	@echo "make lint     - ruff, mypy and shellcheck (CI runs it before the tests)"
	@echo "make docs     - regenerate docs/cli.md from the CLI's --help"

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	@echo "installing tmt and its pinned stack (torch wheels are a few GB; first install takes minutes)" >&2
	$(PIP) install --quiet --progress-bar off -e '.[dev,judges,serve]'
	@touch $(STAMP)

install: $(STAMP) sysdeps

sysdeps:
	@missing=""; \
	for p in espeak-ng flite sox shellcheck chromium; do command -v $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	command -v java >/dev/null 2>&1 || missing="$$missing default-jre-headless"; \
	ldconfig -p 2>/dev/null | grep -q libsndfile.so || missing="$$missing libsndfile1"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = "0" ]; then \
	    echo "installing system packages:$$missing" >&2; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSPKGS) >/dev/null) \
	      || { echo "error: apt-get could not install$$missing" >&2; exit 1; }; \
	  else \
	    echo "error: missing system packages:$$missing. Install them as root:" >&2; \
	    echo "  sudo apt-get update && sudo apt-get install -y $(SYSPKGS)" >&2; \
	    exit 1; \
	  fi; \
	fi

test: install
	$(PY) -m pytest tests -q $(PYTEST_ARGS)

demo: install
	PATH="$(abspath $(VENV))/bin:$$PATH" bash recipes/scenes/run.sh --preset quick

# the demo's outputs (recipes/scenes/run.sh --preset quick)
DEMO_EXP ?= exp/scenes-quick/exp
SERVE_ARGS ?=

serve: install
	@test -f $(DEMO_EXP)/tmt/model.pt || { echo "error: no model in $(DEMO_EXP)/tmt; run make demo first (or DEMO_EXP=...)" >&2; exit 1; }
	$(VENV)/bin/tmt serve -m $(DEMO_EXP)/tmt $$(test -d $(DEMO_EXP)/vocoder && echo --vocoder $(DEMO_EXP)/vocoder) $(SERVE_ARGS)

bench: install
	@mkdir -p benchmarks/results
	@for b in benchmarks/*.py; do echo "== $$b" >&2; $(PY) $$b || exit 1; done

lint: install
	$(VENV)/bin/ruff check tmt tests benchmarks
	$(VENV)/bin/mypy
	shellcheck -x recipes/*/run.sh

docs: $(STAMP)
	$(PY) docs/gen_cli.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
