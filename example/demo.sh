#!/usr/bin/env bash
# The README's demo: install Flask-Chimeway into .venv, then play the task board scenario,
# which prints the trace of every notification. SQLite only; no other service is needed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        echo "demo.sh needs Python 3.11 or newer; $python is $("$python" --version 2>&1)." >&2
        echo "Set PYTHON=/path/to/python3.11 and run it again." >&2
        exit 1
    fi
    "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e .
exec .venv/bin/flask --app example.taskboard demo
