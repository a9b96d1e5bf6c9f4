# `make demo` and `make test` create .venv when it is missing and install the project into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is installed first, pinned, so pip takes the build already on disk where there is one.
TORCH ?= torch==2.14.1 torchvision==0.29.1

FASHION_MNIST := /usr/share/datasets/fashion-mnist

.PHONY: demo test bench install clean fashion-mnist

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[test]'
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
	$(BIN)/spikefed run

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
