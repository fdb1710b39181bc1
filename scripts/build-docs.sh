#!/usr/bin/env bash
# Builds the documentation site (docs/ -> docs/_build/html) with warnings as errors: a broken
# reference, a docstring that does not render or a page outside the table of contents fails.
# -E -a: a full rebuild every time, so warnings of unchanged pages are not hidden by the cache.
#
# Environment:
#   PYTHON  an interpreter that has the docs and all extras (scripts/test.sh passes its own);
#           without it, the project's .venv is used and given them (see scripts/venv.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-}"
if [[ -z "$python" ]]; then
    source scripts/venv.sh
    sessionkit_venv all docs
    python="$VENV_PYTHON"
fi
"$python" -m sphinx -E -a -W --keep-going -n -q -b html docs docs/_build/html "$@"
