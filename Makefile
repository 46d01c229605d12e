# Two commands for a newcomer: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test soak fuzz lint bench bench-large bench-quick bench-core bench-producer bench-s3 bench-refresh clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[all,dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/quickstart.py

lint: $(STAMP)
	$(PY) -m ruff check feedkit producer consumer tests benchmarks examples
	$(PY) -m mypy feedkit producer consumer

test: $(STAMP) lint
	$(PY) -m pytest -q --durations=8 -m "not slow"

# The fuzz tests with 50 times the examples CI runs, randomised (tests/fuzz/support.py)
fuzz: $(STAMP)
	FEEDKIT_FUZZ=deep $(PY) -m pytest -q --durations=8 tests/fuzz

# 8 reader threads and 2 reader processes against 500 producer cycles (a few minutes)
soak: $(STAMP)
	$(PY) -m pytest -q -s -m slow tests/soak

bench: $(STAMP)
	$(PY) benchmarks/suite.py --size full

bench-large: $(STAMP)
	$(PY) benchmarks/suite.py --size large

bench-quick: $(STAMP)
	$(PY) benchmarks/suite.py --size quick

bench-core: $(STAMP)
	$(PY) benchmarks/bench_core.py

bench-producer: $(STAMP)
	$(PY) benchmarks/bench_producer.py

bench-s3: $(STAMP)
	$(PY) benchmarks/bench_s3.py

bench-refresh: $(STAMP)
	$(PY) benchmarks/bench_refresh.py

clean:
	rm -rf $(VENV) build *.egg-info
