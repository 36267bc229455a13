# veo_nb: `make demo` opens JupyterLab with the quickstart on the embedded
# emulator (offline, no API key); `make test` runs the whole suite.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# JupyterHub's proxy (npm), for the hub end-to-end test; kept inside the venv.
CHP_VERSION ?= 5.3.0
CHP    := $(VENV)/node/node_modules/.bin/configurable-http-proxy

.PHONY: demo test test-fast typecheck docs bench soak emulator clean media

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Without npm the hub test skips (and fails under CI, whose .ci/run installs npm).
$(CHP): | $(BIN)/python
	@if command -v npm >/dev/null 2>&1; then \
	    npm install --silent --no-audit --no-fund --prefix $(VENV)/node \
	        configurable-http-proxy@$(CHP_VERSION); \
	else echo "npm not found: the JupyterHub test needs configurable-http-proxy (apt-get install -y npm)"; fi

# Prints the quickstart's own URL (with its token) and opens it.
demo: $(STAMP)
	$(BIN)/python scripts/demo.py

test: $(STAMP) $(CHP)
	$(BIN)/python -m mypy
	$(BIN)/python -m pytest tests

# mypy --strict over veo_nb/ (settings in pyproject.toml); make test runs it first.
typecheck: $(STAMP)
	$(BIN)/python -m mypy

# The quick loop: everything but the slow tests (browsers, notebooks, processes).
test-fast: $(STAMP)
	$(BIN)/python -m pytest tests -m "not slow"

# The API reference, the README, the notebooks and docs/ARCHITECTURE.md as a static site
# in site/ (open site/index.html); --strict: a warning, a broken cross-reference or a
# name of veo_nb.__all__ without its reference entry fails the build (mkdocs.yml).
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs build --strict

bench: $(STAMP)
	$(BIN)/python -m bench

# The reliability fault mix (faults, lost answers, outages, 2-4 tracker processes on one
# store with SIGKILLs among them) for SOAK_SECONDS seconds (default 600) on each backend of
# SOAK_BACKENDS (default sqlite,postgres); fails if a task, a video or the 30 s rule is lost.
soak: $(STAMP)
	$(BIN)/python scripts/soak.py

emulator: $(STAMP)
	$(BIN)/veo-nb emulator

media: $(STAMP)
	$(BIN)/python scripts/make_media.py

clean:
	rm -rf $(VENV) build site *.egg-info .pytest_cache
