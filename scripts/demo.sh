#!/usr/bin/env bash
# Installs the package and runs the demo app on the in-process MemoryStore
# (set SESSIONKIT_STORE to a store URL, or to "cookie", for another store).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -e .
exec python3 examples/demo.py
