# FreshRec developer entry points. Every target installs into .venv first when needed.
SHELL := /bin/bash
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EDGE_STAMP := edge/node_modules/.package-lock.json
export FRESHREC_HOME ?= $(CURDIR)/.freshrec
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: install up down status test test-walkthrough demo bench sysdeps simulator-stop

# Reinstall only when pyproject.toml changed (the stamp is older) or the venv is missing.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, exactly pinned: on the dev/CI box pip takes the local CPU wheel; a looser
	# spec (or letting another package pull it) would download GBs of CUDA wheels.
	$(BIN)/python -m pip install -q "torch==2.13.0"
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP) sysdeps $(EDGE_STAMP)

# The edge client's onnxruntime-web from npm, exactly as edge/package-lock.json pins it (redone when it changes).
$(EDGE_STAMP): edge/package-lock.json | sysdeps
	cd edge && npm ci --no-audit --no-fund --ignore-scripts

# Debian packages the product and its tests use, installed only when missing.
sysdeps:
	@bash infra/local/sysdeps.sh

up: install
	@bash infra/local/up.sh

down:
	@bash infra/local/down.sh

# Stop only the traffic simulator of `make up` (its clicks change live recommendations as they come).
simulator-stop:
	@bash -c 'source infra/local/_common.sh && stop_service simulator 30 && echo "simulator stopped"'

status:
	@bash infra/local/status.sh

test: install
	@bash infra/local/run_tests.sh

test-walkthrough: install
	$(BIN)/python -m pytest tests/infra/test_walkthrough.py -p no:cacheprovider -m walkthrough

demo: install
	@bash infra/local/demo.sh

bench: install
	$(BIN)/freshrec bench all
