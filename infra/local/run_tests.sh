#!/usr/bin/env bash
# `make test`: the whole suite (slow integration tests included). Fails when any test fails or none ran.
set -uo pipefail
cd "$(dirname "$0")/../.."
export PATH="$PWD/.venv/bin:$PATH"
mkdir -p test-artifacts
.venv/bin/python -m pytest tests -p no:cacheprovider --junitxml=test-artifacts/junit.xml "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: failing on purpose" >&2
  exit 1
fi
exit "$rc"
