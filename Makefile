# One way in. `make test` works from a fresh clone: it creates .venv and installs everything.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
NODE_INSTALLED := node_modules/.installed
BUF := node_modules/.bin/buf
# `make serve` listens here; `make serve CONTENT=0.0.0.0:6001 CJ=0.0.0.0:6002` elsewhere
CONTENT ?= 127.0.0.1:50051
CJ ?= 127.0.0.1:50052

.PHONY: install test lint generate vendor-protos bench fuzz protoset demo serve clean

install: $(INSTALLED) $(NODE_INSTALLED)

$(INSTALLED): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

$(NODE_INSTALLED): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Two workers: most tests wait on real servers and subprocesses, so two halve the suite on 2 cores
# (22.5 to 12 minutes). `pytest` alone still runs it in one process.
test: install
	$(PY) -m pytest -q -n 2

lint: install
	$(PY) -m ruff check .
	$(PY) -m mypy cj_svc/engine cj_svc/workflow runner/client.py mesh_server mesh_common
	$(PY) scripts/generate.py --check
	$(BUF) lint
	$(BUF) format --diff --exit-code
	scripts/buf_breaking.sh

generate: install
	$(PY) scripts/generate.py

vendor-protos: $(INSTALLED)
	PYTHON=$(PY) scripts/vendor_validate_proto.sh

bench: install
	@set -e; for script in bench/*.py; do echo "== $$script"; $(PY) $$script; done

fuzz: install
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-20000} $(PY) -m pytest -q tests/reliability/test_fuzz.py

protoset: install
	$(BUF) build -o cj-mesh.protoset
	@echo "wrote cj-mesh.protoset (use: grpcurl -protoset cj-mesh.protoset ...)"

demo: $(INSTALLED)
	scripts/demo.sh

serve: $(INSTALLED)
	CONTENT=$(CONTENT) CJ=$(CJ) scripts/serve.sh

clean:
	rm -rf $(VENV) node_modules var .pytest_cache
