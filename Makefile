# leitstand — the two commands for a fresh machine: `make dev` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

# The port: `make dev PORT=...`, else PORT from the environment, else from .env, else 8788.
PORT ?= $(or $(shell sed -n 's/^PORT=//p' .env 2>/dev/null | tail -n 1),8788)
# The token: the environment's, else the one in .env, else `dev` (the service reads the other
# settings from the environment and .env itself).
TOKEN := $${LEITSTAND_TOKEN:-$$(sed -n 's/^LEITSTAND_TOKEN=//p' .env 2>/dev/null | tail -n 1)}

.PHONY: dev venv venv-dev ingest-test test test-python test-rust lint openapi clean bench bench-soak bench-peers fuzz

$(VENV)/.runtime: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

venv: $(VENV)/.runtime
venv-dev: $(VENV)/.dev

## Create the venv, install, and run the service on $(PORT) (token from the env, .env, or `dev`).
dev: venv
	@token="$(TOKEN)"; LEITSTAND_TOKEN="$${token:-dev}" \
	  exec $(VENV)/bin/uvicorn app:app --host 0.0.0.0 --port $(PORT) --no-access-log \
	    --http leitstand.headertimeout:HeaderTimeoutProtocol --no-proxy-headers

## Send one event to a running `make dev` and show the answer.
ingest-test:
	@token="$(TOKEN)"; curl -sS --fail-with-body -X POST "http://localhost:$(PORT)/v1/ingest?domain=aussen" \
	     -H "Content-Type: application/json" \
	     -H "X-Auth: $${token:-dev}" \
	     -d '{"event": "ingest-test", "status": "ok"}'
	@echo

## Create the venv, install everything the tests need, and run the whole suite.
test: venv-dev
	bash scripts/test-deps.sh
	$(MAKE) lint
	$(PY) -m pytest
	$(MAKE) test-rust

## The Rust producer crate: rustfmt, clippy and cargo test for each feature set. Needs cargo
## (rustup); crates come from crates.io. The integration test runs the real server from the venv.
## Three sets cover each feature on and off: blocking alone (https and a spool refused), async
## with tls and spool but without blocking, and everything (both clients).
RUST_CRATE := clients/rust/leitstand_producer
RUST_FEATURE_SETS := "" "--no-default-features --features async,tls,spool" "--all-features"
test-rust: venv
	@export PATH="$$HOME/.cargo/bin:$$PATH"; command -v cargo >/dev/null || \
	  { echo "cargo not found: install Rust with rustup (https://rustup.rs)" >&2; exit 1; }
	cd $(RUST_CRATE) && PATH="$$HOME/.cargo/bin:$$PATH" cargo fmt --check
	cd $(RUST_CRATE) && export PATH="$$HOME/.cargo/bin:$$PATH" && \
	for features in $(RUST_FEATURE_SETS); do \
	  echo "== cargo clippy/test $${features:-(default features)}"; \
	  cargo clippy --locked --all-targets $$features -- -D warnings && \
	  cargo test --locked $$features || exit 1; \
	done

## ruff on everything, mypy (strict, see pyproject.toml) on leitstand/.
lint: venv-dev
	$(VENV)/bin/ruff check leitstand testing tests tools bench app.py
	$(VENV)/bin/mypy

## Long fuzz run (schemathesis against the live server, hypothesis properties); minutes, not seconds.
FUZZ_EXAMPLES ?= 1000
PROPERTY_EXAMPLES ?= 2000
fuzz: venv-dev
	LEITSTAND_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) LEITSTAND_FUZZ_SEED=random \
	  HYPOTHESIS_EXAMPLES=$(PROPERTY_EXAMPLES) \
	  $(PY) -m pytest tests/test_fuzz_schemathesis.py tests/test_properties.py

## Benchmarks (docs/benchmarks.md): durable leitstand under wrk next to the HTTP and disk floors,
## ~10 min; installs wrk (apt) and bench/requirements.txt. BENCH_ARGS="--seconds 5" etc.
bench: venv
	bash bench/install.sh
	$(PY) -m bench.run $(BENCH_ARGS)

## RSS of one worker under load: after 1 minute vs after 5 (about 6 minutes).
bench-soak: venv
	bash bench/install.sh
	$(PY) -m bench.run --soak $(BENCH_ARGS)

## leitstand next to a real peer (Benthos core v4.60.0, built with Go by bench/peers/build.sh) under
## the same wrk load, 3 runs per case (~5 min); writes bench/peers.md into docs/benchmarks.md.
bench-peers: venv
	bash bench/install.sh
	bash bench/peers/build.sh
	$(PY) -m bench.peers_bench $(BENCH_ARGS)

## Regenerate docs/openapi.yaml from the app.
openapi: venv-dev
	$(PY) -m leitstand.openapi > docs/openapi.yaml

clean:
	rm -rf $(VENV) .pytest_cache
