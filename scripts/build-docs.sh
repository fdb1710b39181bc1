#!/usr/bin/env bash
# Builds the documentation site (docs/ -> docs/_build/html) with warnings as errors: a broken
# reference, a docstring that does not render or a page outside the table of contents fails.
# -E -a: a full rebuild every time, so warnings of unchanged pages are not hidden by the cache.
# Needs the docs extra: pip install -e ".[docs,all]" (scripts/test.sh does it in .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
"${PYTHON:-python3}" -m sphinx -E -a -W --keep-going -n -q -b html docs docs/_build/html "$@"
