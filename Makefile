# Two commands for a newcomer: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# The Rust crate (native/) compiles into feedkit/_native*.so when pip installs the
# package; NATIVE_STAMP rebuilds it in place after a change under native/.
NATIVE_SRC := $(shell find native -name target -prune -o -type f \( -name '*.rs' -o -name 'Cargo.*' \) -print)
NATIVE_STAMP := $(VENV)/.native-stamp
CARGO_ENV := PYO3_PYTHON=$(abspath $(PY)) CARGO_TERM_COLOR=never

.PHONY: demo test soak fuzz lint rust-check bench bench-large bench-quick bench-core bench-producer bench-storage bench-s3 bench-refresh bench-redis-server clean

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

# The core part's Redis peer starts Debian's redis-server itself. It is installed here only
# when it is missing and apt-get is usable (as root); otherwise, or if the install fails,
# the Redis rows are skipped with a note and the rest of the suite runs.
bench-redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" -eq 0 ]; then \
	    echo "installing Debian's redis-server (the benchmarks' Redis peer)"; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	        --no-install-recommends redis-server >/dev/null; } \
	      || echo "redis-server did not install: the Redis rows will be skipped"; \
	  else \
	    echo "no redis-server, and apt-get is not usable here: the Redis rows will be skipped"; \
	  fi; }

bench: $(NATIVE_STAMP) bench-redis-server
	$(PY) benchmarks/suite.py --size full

bench-large: $(NATIVE_STAMP) bench-redis-server
	$(PY) benchmarks/suite.py --size large

bench-quick: $(NATIVE_STAMP) bench-redis-server
	$(PY) benchmarks/suite.py --size quick

bench-core: $(NATIVE_STAMP) bench-redis-server
	$(PY) benchmarks/bench_core.py

bench-producer: $(NATIVE_STAMP)
	$(PY) benchmarks/bench_producer.py

# Bytes per record of state files and blobs vs Parquet-zstd, lmdb and a dict (1M records;
# FORMAT=2 passes --format 2 to the Producer)
bench-storage: $(NATIVE_STAMP)
	$(PY) benchmarks/bench_storage.py $(if $(FORMAT),--format $(FORMAT))

bench-s3: $(NATIVE_STAMP)
	$(PY) benchmarks/bench_s3.py

bench-refresh: $(NATIVE_STAMP)
	$(PY) benchmarks/bench_refresh.py

clean:
	rm -rf $(VENV) build *.egg-info native/target feedkit/_native*.so
