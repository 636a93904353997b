#!/usr/bin/env bash
# `make test`: the whole suite (slow integration tests included). Fails when any test fails or none ran.
set -uo pipefail
cd "$(dirname "$0")/../.."
export PATH="$PWD/.venv/bin:$PATH"
mkdir -p test-artifacts
# The checks that keep the code's shape (config in pyproject.toml); the import layers are a test
# (tests/architecture). A failing check fails `make test` before the long suite starts.
echo "checks: ruff, mypy"
.venv/bin/ruff check freshrec tests spark_jobs infra || exit 1
.venv/bin/mypy || exit 1
# Two xdist workers: the walkthrough on a full `make up` stack (~20 min, mostly waiting on a canary's traffic and
# Airflow) runs on one while the other works through the rest; a module's (or a stack folder's) tests stay on
# one worker (tests/conftest.py's scheduler).
.venv/bin/python -m pytest tests -p no:cacheprovider -n 2 --dist loadscope --no-loadscope-reorder \
  --junitxml=test-artifacts/junit.xml "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: failing on purpose" >&2
  exit 1
fi
exit "$rc"
