# veo_nb: `make demo` opens JupyterLab with the quickstart on the embedded
# emulator (offline, no API key); `make test` runs the whole suite.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test bench soak emulator clean media

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	cd notebooks && VEO_DEMO=1 ../$(BIN)/jupyter lab --ServerApp.ip=127.0.0.1 \
	    $$( [ "$$(id -u)" = 0 ] && echo --allow-root ) 01_quickstart.ipynb

test: $(STAMP)
	$(BIN)/python -m pytest tests

bench: $(STAMP)
	$(BIN)/python -m bench

# The reliability fault mix (faults, restarts, SIGKILLed trackers) for
# SOAK_SECONDS seconds (default 600); fails if a task, a video or the 30 s rule is lost.
soak: $(STAMP)
	$(BIN)/python scripts/soak.py

emulator: $(STAMP)
	$(BIN)/veo-nb emulator

media: $(STAMP)
	$(BIN)/python scripts/make_media.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
