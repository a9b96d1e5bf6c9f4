# `make demo` and `make test` create .venv when it is missing and install the project into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.14.1 torchvision==0.29.1
# uv, at Flower's own pin (flwr depends on it), installs in seconds what pip takes minutes
# over. It does not read pip's configuration, so the extra indexes pip is configured with
# (where a machine keeps torch's files on disk) are handed to it, compared version by version
# with PyPI as pip does (uv's default takes a package only from the first index that has it).
# Bytecode is compiled at install, as pip does: where PYTHONDONTWRITEBYTECODE is set (as here),
# every process would otherwise compile torch's modules from source at each import.
PIP_INDEXES := $(shell $(PYTHON) -m pip config get global.extra-index-url 2>/dev/null)

FASHION_MNIST := /usr/share/datasets/fashion-mnist

.PHONY: demo test bench install clean fashion-mnist

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet 'uv>=0.13.5,<0.14'
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python \
	  $(if $(PIP_INDEXES),--extra-index-url "$(PIP_INDEXES)" --index-strategy unsafe-best-match) $(TORCH) -e '.[test]'
	$(BIN)/python -m compileall -q -x '/(\.venv|\.git|results|data-cache)/' .
	touch $@

install: $(VENV)/.installed fashion-mnist

# dataset=fashion-mnist reads Debian's dataset-fashion-mnist (the original IDX files): installed
# here when missing and apt is usable as root; otherwise a note says how (digits needs nothing).
fashion-mnist:
	@if [ ! -d $(FASHION_MNIST) ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
	      { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1; } || \
	      echo "note: apt-get could not install dataset-fashion-mnist; dataset=fashion-mnist needs its files"; \
	  else \
	    echo "note: dataset=fashion-mnist needs Debian's dataset-fashion-mnist (as root: apt-get install dataset-fashion-mnist)"; \
	  fi; \
	fi

demo: install
	$(BIN)/spikefed compare demo

# Two workers, each with its own local Ray cluster (tests/conftest.py); tests marked with the
# same xdist_group (a shared module fixture, Flower's fixed local ports) run on one worker.
TEST_WORKERS ?= 2

test: install
	$(BIN)/python -m pytest -ra --durations=15 -n $(TEST_WORKERS) --dist loadgroup

# Every benchmark at full size (about 20 minutes on 2 cores); tables in docs/benchmarks/.
bench: install
	$(BIN)/spikefed bench --out docs/benchmarks

clean:
	rm -rf $(VENV) results
