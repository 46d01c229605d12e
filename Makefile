# Two commands for a newcomer: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# The Rust crate (native/) compiles into feedkit/_native*.so when pip installs the
# package; NATIVE_STAMP rebuilds it in place after a change under native/.
NATIVE_SRC := $(shell find native -path native/target -prune -o -type f \( -name '*.rs' -o -name 'Cargo.*' \) -print)
NATIVE_STAMP := $(VENV)/.native-stamp
CARGO_ENV := PYO3_PYTHON=$(abspath $(PY)) CARGO_TERM_COLOR=never

.PHONY: demo test soak fuzz lint rust-check bench bench-large bench-quick bench-core bench-producer bench-s3 bench-refresh clean

$(STAMP): pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[all,dev]"
	touch $(STAMP) $(NATIVE_STAMP)

$(NATIVE_STAMP): $(STAMP) $(NATIVE_SRC)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(NATIVE_STAMP)

demo: $(NATIVE_STAMP)
	$(PY) examples/quickstart.py

# The crate's own tests (core/: the format, probe, msgpack, hashing) and clippy
rust-check: $(NATIVE_STAMP)
	cd native && $(CARGO_ENV) cargo test --release --workspace --quiet
	cd native && $(CARGO_ENV) cargo clippy --release --workspace --all-targets --quiet -- -D warnings

lint: $(NATIVE_STAMP)
	$(PY) -m ruff check feedkit producer consumer tests benchmarks examples
	$(PY) -m mypy feedkit producer consumer

test: $(NATIVE_STAMP) lint rust-check
	$(PY) -m pytest -q --durations=8 -m "not slow"

# The fuzz tests with 50 times the examples CI runs, randomised (tests/fuzz/support.py)
fuzz: $(NATIVE_STAMP)
	FEEDKIT_FUZZ=deep $(PY) -m pytest -q --durations=8 tests/fuzz

# 8 reader threads and 2 reader processes against 500 producer cycles (a few minutes)
soak: $(NATIVE_STAMP)
	$(PY) -m pytest -q -s -m slow tests/soak

bench: $(NATIVE_STAMP)
	$(PY) benchmarks/suite.py --size full

bench-large: $(NATIVE_STAMP)
	$(PY) benchmarks/suite.py --size large

bench-quick: $(NATIVE_STAMP)
	$(PY) benchmarks/suite.py --size quick

bench-core: $(NATIVE_STAMP)
	$(PY) benchmarks/bench_core.py

bench-producer: $(NATIVE_STAMP)
	$(PY) benchmarks/bench_producer.py

bench-s3: $(NATIVE_STAMP)
	$(PY) benchmarks/bench_s3.py

bench-refresh: $(NATIVE_STAMP)
	$(PY) benchmarks/bench_refresh.py

clean:
	rm -rf $(VENV) build *.egg-info native/target feedkit/_native*.so
