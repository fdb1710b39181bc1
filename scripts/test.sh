#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs the package with its drivers and test
# tools, the test servers (Redis, PostgreSQL, FerretDB), then runs ruff, mypy and pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -e ".[all,test]"
bash scripts/install-test-deps.sh
ruff check aiohttp_sessionkit tests examples benchmarks
mypy
python3 -m pytest "$@"
