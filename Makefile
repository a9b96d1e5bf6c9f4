# `make demo` and `make test` create .venv when it is missing and install the project into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is installed first, pinned, so pip takes the build already on disk where there is one.
TORCH ?= torch==2.14.1 torchvision==0.29.1

.PHONY: demo test bench install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/spikefed run

test: install
	$(BIN)/python -m pytest -ra --durations=15

# Every benchmark at full size (about 20 minutes on 2 cores); tables in docs/benchmarks/.
bench: install
	$(BIN)/spikefed bench --out docs/benchmarks

clean:
	rm -rf $(VENV) results
