# Two commands for a fresh machine: `make demo` and `make test`.
# Each builds its own virtual environment with pinned versions (constraints.txt).
# torch is installed first and pinned to 2.13.0: on the reference machines that is a CPU wheel
# on local disk, and a plain `pip install torch` would fetch a multi-GB CUDA build.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.vistok-installed

.PHONY: demo test test-all bench venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/vistok demo --out demo-out

test: $(STAMP)
	$(PY) -m pytest -q

test-all: $(STAMP)
	$(PY) -m pytest -q -m ''

bench: $(STAMP)
	$(PIP) install --quiet -c constraints.txt 'torch==2.13.0' -e '.[bench]'
	$(PY) bench/lfq.py
	$(PY) bench/tokenizer.py
	$(PY) bench/sampling.py

clean:
	rm -rf $(VENV) demo-out
