# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.polylate-installed

.PHONY: install demo test test-slow bench clean

install: $(STAMP)

# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test]"
	touch $(STAMP)

demo: install
	$(BIN)/polylate demo

test: install
	sh tests/ensure_chromium.sh   # headless Chromium for the search-page test (apt, as root; else it skips)
	$(BIN)/python -m pytest -q

test-slow: install
	$(BIN)/python -m pytest -q -m slow

bench: install
	$(BIN)/pip install -q -e ".[bench]"
	$(BIN)/python benchmarks/encode_throughput.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
