#!/usr/bin/env bash
# Runs the demo app (examples/demo.py) from the project's virtual environment (.venv, made
# on first use), with the extra that the chosen store needs.
#
# Environment:
#   SESSIONKIT_STORE  memory:// (default), cookie, or a store URL such as
#                     redis://127.0.0.1:6379/0, postgresql://..., mongodb://...,
#                     memcached://127.0.0.1:11211
#   SESSIONKIT_KEY    the cookie store's key (default: a fresh one per run of this script)
#   HOST, PORT        where to listen (default 127.0.0.1 and 8080; PORT=0 picks a free port)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh

# The extras of setup.cfg that each store URL scheme needs; a value that is no store installs
# nothing here and demo.py says, in one line, which values it accepts.
store="${SESSIONKIT_STORE:-memory://}"
case "${store%%://*}" in
    redis | rediss | unix | redis+sentinel) extras=(redis) ;;
    postgres | postgresql) extras=(postgres) ;;
    mongodb | mongodb+srv) extras=(mongo) ;;
    memcached) extras=(memcached) ;;
    *) extras=() ;;
esac
sessionkit_venv "${extras[@]}"
if [[ "$store" == cookie && -z "${SESSIONKIT_KEY:-}" ]]; then
    # A local demo only: a real deployment gives every process the same stored key.
    SESSIONKIT_KEY="$("$VENV_PYTHON" -m aiohttp_sessionkit keygen)"
    export SESSIONKIT_KEY
fi
exec "$VENV_PYTHON" examples/demo.py
