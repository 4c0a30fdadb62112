# Tollgate: `make run` starts both services on SQLite; `make test` runs the whole suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BUF := tools/node_modules/.bin/buf
PROTOS := $(shell find proto -name '*.proto')
VENV_STAMP := $(VENV)/.installed
# tollgate/ itself is a namespace package (no __init__.py), shared with the client distribution.
GEN_DIRS := $(patsubst proto/%,%,$(wildcard proto/tollgate/*))
GEN_STAMP := tollgate/.generated
TOOLS_STAMP := tools/node_modules/.installed

.PHONY: help run test lint unit proto bench contract-baseline demo-check clean client-wheel

help:
	@echo "make run    - build, migrate, load the demo and start both services"
	@echo "make test   - build, lint and run the whole suite (SQLite and PostgreSQL)"
	@echo "make lint   - ruff (lint and format check) and mypy"
	@echo "make unit   - the fixture-free unit tier alone (no database, no server)"
	@echo "make proto  - regenerate the Python stubs from proto/"
	@echo "make client-wheel - build the tollgate-client wheel (recorder and stubs) into dist/"
	@echo "make bench  - run the benchmarks (PostgreSQL)"

$(VENV_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $@

# Generated code has one command and lives beside the code it serves (tollgate/usage/v1, tollgate/policy/v1,
# tollgate/audit/v1: one directory per proto package, never committed, never edited). The *_connect.py modules are
# the Connect (HTTP/JSON, gRPC-Web) applications, for google.protobuf messages, synchronous (WSGI).
$(GEN_STAMP): $(PROTOS) $(VENV_STAMP)
	rm -rf $(GEN_DIRS)
	$(PY) -m grpc_tools.protoc -Iproto --python_out=. --pyi_out=. --grpc_python_out=. \
		--plugin=protoc-gen-connectrpc=$(VENV)/bin/protoc-gen-connectrpc \
		--connectrpc_out=. --connectrpc_opt=protobuf=google,io=sync $(PROTOS)
	find $(GEN_DIRS) -type d -exec touch {}/__init__.py \;
	touch $@

$(TOOLS_STAMP): tools/package.json tools/package-lock.json
	# npm install, not ci: the lockfile cannot list buf's binaries for other platforms on this npm.
	cd tools && npm install --no-audit --no-fund --loglevel=error
	touch $@

proto: $(GEN_STAMP)

.PHONY: build

build: $(GEN_STAMP) $(TOOLS_STAMP)

run: build
	$(PY) -m scripts.run_local

test: build lint
	$(PY) -m scripts.run_tests

# Ruff and mypy read their settings from pyproject.toml.
lint: build
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

unit: build
	$(PY) -m pytest -q -p no:cacheprovider tests/usage/unit tests/policy/unit tests/shared/unit

bench: build
	$(PY) -m bench

# The Python client's own distribution (clients/python), built from tollgate/clients and the stubs above.
client-wheel: $(GEN_STAMP)
	$(PY) clients/python/build_wheel.py --out dist

contract-baseline: $(TOOLS_STAMP)
	$(BUF) build -o contracts/baseline.binpb

clean:
	rm -rf $(VENV) $(GEN_DIRS) $(GEN_STAMP) tools/node_modules var dist .mypy_cache .ruff_cache
